"""Palimpzest and LOTUS on the legal-discovery query, each run in its own virtualenv
(``install.sh``) as ``python -m benchmarks.peers.run_<peer>`` from the repository root. Only the
standard library and the peer's own packages here: no pz-dagster.
"""
