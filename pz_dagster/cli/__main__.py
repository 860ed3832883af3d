"""``python -m pz_dagster.cli``: the `pz-dagster` command."""

from pz_dagster.cli.group import main

main()
