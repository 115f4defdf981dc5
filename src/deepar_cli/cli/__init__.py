"""The command line, thin over the library: `main` (the click group, one exit code per kind
of failure, the one place library errors become messages), `options` (the options and
parameter types the commands share, each declared once) and the commands, one module each
or a few together (`generate`, `train`, `evaluate` with `plot`, `inference` with `predict`
and `serve`, `tune`). May import every layer below it; nothing imports it.
"""

from deepar_cli.cli.main import main, run

__all__ = ["main", "run"]
