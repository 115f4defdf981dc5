"""The `deepar-cli` group: parse options, call one library function, report.

One contract for every command: library errors (deepar_cli.errors) become one line,
`Error: ...`, and their exit code, here and only here:

    64 bad usage (click's own usage errors too)   65 bad data or request
    66 missing or broken model folder             73 an output that cannot be written
    78 bad hyperparameters or tuning ranges       1  anything unexpected
    130, 143 interrupted by SIGINT (Ctrl-C), SIGTERM: unfinished outputs discarded

A traceback is shown only with `deepar-cli --debug ...` or DEEPAR_CLI_DEBUG=1.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any, Optional, Sequence

import click

from deepar_cli import __version__, interrupts
from deepar_cli.cli.evaluate import evaluate, plot
from deepar_cli.cli.generate import generate
from deepar_cli.cli.inference import predict, serve
from deepar_cli.cli.train import train
from deepar_cli.cli.tune import tune
from deepar_cli.errors import DeepARCliError, Interrupted, UsageError

EX_USAGE = UsageError.exit_code
DEBUG_ENV = "DEEPAR_CLI_DEBUG"
TRAINING_COMMANDS = ("train", "tune")  # their pools are sized for training (threads.py)


class Group(click.Group):
    """click's group with the project's exit codes and one-line errors."""

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        debug = os.environ.get(DEBUG_ENV, "") not in ("", "0") or "--debug" in args[:next(
            (i for i, arg in enumerate(args) if not arg.startswith("-")), len(args))]
        try:
            with interrupts.raising():
                code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                    **extra)
        except Interrupted as error:  # outputs are atomic: what was not finished is gone
            click.echo(f"Error: {error}; unfinished outputs were discarded", err=True)
            sys.exit(error.exit_code)
        except click.UsageError as error:
            error.exit_code = EX_USAGE
            error.show()
            sys.exit(EX_USAGE)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(130)
        except DeepARCliError as error:
            if debug:
                raise
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)
        except Exception as error:  # a bug: one line unless asked for the traceback
            if debug:
                raise
            click.echo(f"Error: unexpected {type(error).__name__}: {error} (run with "
                       f"--debug or {DEBUG_ENV}=1 for the traceback)", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deepar-cli")
@click.option("--debug", is_flag=True, help="Show the traceback of an unexpected error.")
def main(debug: bool) -> None:
    """Amazon SageMaker's DeepAR workflow, done locally on GluonTS.

    generate -> train -> evaluate / plot / predict / serve, with SageMaker's
    JSON Lines formats and hyperparameters; tune searches the hyperparameters.
    """
    from deepar_cli.threads import use_cores

    # Before any command imports MXNet, which sizes its pools once.
    use_cores(training=click.get_current_context().invoked_subcommand in TRAINING_COMMANDS)


def run() -> None:
    """The `deepar-cli` console script: `main`, then an exit that skips the interpreter's
    last garbage collection, which took 0.25 s of a one-record predict (GluonTS's and
    pandas' objects). Outputs are complete and closed by then."""
    try:
        main()
    finally:
        gc.freeze()


for command in (generate, train, evaluate, plot, predict, serve, tune):
    main.add_command(command)
