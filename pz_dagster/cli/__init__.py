"""The `pz-dagster` command: ``group`` declares the commands and their options (and imports
nothing heavy, so that `--help` is quick); each command's body is in the module named after
what it does, imported when the command runs."""

from pz_dagster.cli.group import main

__all__ = ["main"]
