"""The command line: click's group, one exit code per kind of failure, and the commands,
thin: each parses its options, calls the library and turns the library's typed errors into
one-line messages and exit codes. May import every layer.
"""

from deepar_cli.cli.commands import main, run

__all__ = ["main", "run"]
