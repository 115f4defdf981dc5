"""The command line: click's group, one exit code per kind of failure, and the commands."""

from deepar_cli.cli.commands import main, run

__all__ = ["main", "run"]
