"""``python -m pz_dagster.testing --model sim --latency 0.5``: serve the simulator (not a model)."""

from pz_dagster.testing.simulator import main

main()
