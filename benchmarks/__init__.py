"""Reproducible benchmarks, each writing JSON under ``benchmarks/results/`` and printing a table.

Run them as modules from the repository root: ``.venv/bin/python -m benchmarks.<name>``. This
package imports nothing: the peers' runners (``benchmarks.peers``) import through it from
virtualenvs that do not have pz-dagster.
"""
