"""The `deepar-cli` command: parse options, call one library function, report.

Library errors (deepar_cli.errors) become one-line messages and their own exit codes here,
and only here.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import click

from deepar_cli import __version__
from deepar_cli.errors import DeepARCliError

PathType = click.Path(path_type=Path)
ExistingPath = click.Path(path_type=Path, exists=True)


class _Failure(click.ClickException):
    def __init__(self, error: DeepARCliError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's typed errors into `Error: ...` and the error's exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DeepARCliError as error:
            raise _Failure(error) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deepar-cli")
def main() -> None:
    """Amazon SageMaker's DeepAR workflow, done locally on GluonTS.

    generate -> train -> evaluate / plot / predict / serve, with SageMaker's
    JSON Lines formats and hyperparameters.
    """


@main.command()
@click.option("--output-dir", type=PathType, default=Path("data"), show_default=True,
              help="Folder for train and test files.")
@click.option("--num-series", type=int, default=200, show_default=True)
@click.option("--length", type=int, default=400, show_default=True,
              help="Points per full (test) series.")
@click.option("--period", type=int, default=24, show_default=True, help="Seasonal period.")
@click.option("--freq", default="H", show_default=True, help="SageMaker time_freq.")
@click.option("--start", default="2016-01-01 00:00:00", show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="np.random.seed value.")
@click.option("--prediction-length", type=int, default=48, show_default=True,
              help="Points held out of train.")
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl", "json.gz", "parquet"]),
              default="json", show_default=True)
@click.option("--num-categories", type=int, default=0, show_default=True,
              help="Add a `cat` field: series k gets group k mod N (0 = no field).")
@click.option("--num-dynamic-feat", type=int, default=0, show_default=True,
              help="Add N seasonal `dynamic_feat` series (0 = no field).")
@reports_errors
def generate(output_dir: Path, fmt: str, **options: Any) -> None:
    """Write the SageMaker notebook's synthetic train and test channels."""
    from deepar_cli.records import output_suffix, write_records
    from deepar_cli.synthetic import SyntheticSpec, generate as make

    spec = SyntheticSpec(**options)
    train, test = make(spec)
    suffix = output_suffix(fmt)
    for name, records in (("train", train), ("test", test)):
        path = output_dir / f"{name}{suffix}"
        count = write_records(path, records)
        click.echo(f"wrote {path} ({count} series, {records[0].target.size} points each)")


def _hyperparameter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per SageMaker hyperparameter, under its SageMaker name (dashes work too)."""
    from deepar_cli.hyperparameters import SCHEMA

    for name in reversed(list(SCHEMA)):
        spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        command = click.option(*spellings, name, default=None, metavar="VALUE",
                               help="SageMaker hyperparameter (overrides the file).")(command)
    return command


def _progress(quiet: bool) -> Any:
    """GluonTS draws its per-epoch progress bars unless quiet or stderr is not a terminal."""
    import sys

    from gluonts.env import env

    return env._let(use_tqdm=not quiet and sys.stderr.isatty())


@main.command()
@click.option("--train", "train_channel", type=ExistingPath, required=True,
              help="Train channel: a file or a folder of JSON Lines/Parquet files.")
@click.option("--test", "test_channel", type=ExistingPath,
              help="Test channel, scored after training like SageMaker does.")
@click.option("--hyperparameters", "hp_file", type=ExistingPath,
              help="SageMaker hyperparameters.json (values may be strings).")
@click.option("--model-dir", type=PathType, required=True, help="Where to write the model.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines as text or as one JSON object a line.")
@click.option("--log-file", type=PathType, help="Also write every log event as JSON lines.")
@_hyperparameter_options
@reports_errors
def train(train_channel: Path, test_channel: Path | None, hp_file: Path | None, model_dir: Path,
          seed: int, quiet: bool, log_format: str, log_file: Path | None, **options: Any) -> None:
    """Train DeepAR on a train channel with SageMaker's hyperparameters."""
    from deepar_cli import hyperparameters
    from deepar_cli.reporting import Reporter
    from deepar_cli.training import train as run

    hp = hyperparameters.load(hp_file, options)
    reporter = Reporter(log_format, log_file=log_file)
    try:
        with _progress(quiet):
            run(train_channel, hp, model_dir, test_channel=test_channel, seed=seed,
                log=reporter)
    finally:
        reporter.close()
    if log_format == "text":
        click.echo(f"model saved to {model_dir}")
