"""The options and click parameter types several commands share, each declared once (as
sqlite-utils shares its option decorators), and the helpers the commands share."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import click

from deepar_cli.errors import DeepARCliError, UsageError

PathType = click.Path(path_type=Path)
ExistingPath = click.Path(path_type=Path, exists=True)
MAX_SERIES = 1000  # plot draws one PNG a series: more is a typo, not a plot
DEFAULT_SEED = 42  # the library's (backends); not imported, which would load numpy for --help
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


# --------------------------------------------------------------------------- parameter types


class QuantilesParam(click.ParamType):
    """ "0.1,0.5,0.9" -> ("0.1", "0.5", "0.9"): levels in (0, 1), spelled as given."""

    name = "quantiles"

    def convert(self, value: Any, param: Any, ctx: Any) -> Tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        keys = tuple(part.strip() for part in str(value).split(","))
        for key in keys:
            try:
                level = float(key)
            except ValueError:
                level = float("nan")
            if not 0 < level < 1:
                self.fail(f'"{key}" is not a number in (0, 1); give levels like "0.1,0.5,0.9"',
                          param, ctx)
        return keys


class SeriesParam(click.ParamType):
    """ "0-4", "0,3,7", "5" or a mix ("0-2,7") -> 0-based indices in order, no repeats."""

    name = "series"

    def convert(self, value: Any, param: Any, ctx: Any) -> List[int]:
        if isinstance(value, list):
            return value
        def is_index(text: str) -> bool:  # ASCII digits only: int() refuses "²"
            return text.strip().isascii() and text.strip().isdigit()

        indices: dict = {}
        for part in str(value).split(","):
            low, dash, high = part.strip().partition("-")
            if not is_index(low) or (dash and not is_index(high)):  # "1-" is no range
                self.fail(f'cannot read "{part.strip()}"; give 0-based indices like "0-4", '
                          '"0,3,7" or "5"', param, ctx)
            first, last = int(low), int(high) if dash else int(low)
            if last < first:
                self.fail(f"the range {first}-{last} runs backwards", param, ctx)
            if last - first + 1 + len(indices) > MAX_SERIES:
                self.fail(f"names more than {MAX_SERIES} series; plot fewer at a time",
                          param, ctx)
            indices.update(dict.fromkeys(range(first, last + 1)))
        return list(indices)


class OutputTypesParam(click.ParamType):
    """ "mean,quantiles" -> ("mean", "quantiles")."""

    name = "types"

    def convert(self, value: Any, param: Any, ctx: Any) -> Tuple[str, ...]:
        from deepar_cli.inference.protocol import OUTPUT_TYPES

        if isinstance(value, tuple):
            return value
        kinds = tuple(part.strip() for part in str(value).split(","))
        for kind in kinds:
            if kind not in OUTPUT_TYPES:
                self.fail(f'unknown output type "{kind}"; valid: {", ".join(OUTPUT_TYPES)}',
                          param, ctx)
        return kinds


class InferenceConfigParam(click.ParamType):
    """A SageMaker inference `configuration` as JSON text."""

    name = "json"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from deepar_cli.inference.protocol import InferenceConfig, config_from_json

        if isinstance(value, InferenceConfig):
            return value
        try:
            return config_from_json(value)
        except DeepARCliError as error:
            self.fail(str(error), param, ctx)


NumSamples = click.IntRange(1, 10_000)


# --------------------------------------------------------------------------- shared options


def seed_option(help: Optional[str] = None) -> Decorator:
    """--seed: the seed of a command's training or forecasts (SageMaker's are not seeded;
    every command here is, so that a rerun gives the same numbers)."""
    return click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help=help)


def quiet_option(help: str = "No progress bar.") -> Decorator:
    """--quiet: leave out what only reports progress (plot's: the list of files written)."""
    return click.option("--quiet", is_flag=True, help=help)


def log_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--log-format and --log-file, for the commands that log training events."""
    command = click.option("--log-file", type=PathType,
                           help="Also write every log event as JSON lines.")(command)
    return click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
                        show_default=True,
                        help="Log lines as text or as one JSON object a line.")(command)


def hyperparameter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per SageMaker hyperparameter, under its SageMaker name (dashes work too)."""
    from deepar_cli.config.hyperparameters import SCHEMA

    for name in reversed(list(SCHEMA)):
        spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        command = click.option(*spellings, name, default=None, metavar="VALUE",
                               help="SageMaker hyperparameter (overrides the file).")(command)
    return command


def _max_memory(ctx: Any, param: Any, value: Optional[str]) -> None:
    """Hand the limit to the library through its environment variable, so that serve's
    workers and tune's trials see it too."""
    from deepar_cli.config.memory import MAX_MEMORY_ENV, parse_size

    if value is not None:
        try:
            parse_size(value)
        except UsageError as error:
            raise click.BadParameter(str(error), ctx, param) from None
        os.environ[MAX_MEMORY_ENV] = value


max_memory_option = click.option(
    "--max-memory", metavar="SIZE", envvar="DEEPAR_MAX_MEMORY", expose_value=False,
    callback=_max_memory,
    help="Memory this may use, e.g. 8G or 500M; a training or forecast estimated to need "
         "more is refused before it starts.  [default: the smaller of the cgroup's limit "
         "and MemAvailable; env: DEEPAR_MAX_MEMORY]")


# --------------------------------------------------------------------------- helpers


def progress_bars(quiet: bool) -> Any:
    """GluonTS draws its per-epoch progress bars unless quiet or stderr is not a terminal."""
    from gluonts.env import env

    return env._let(use_tqdm=not quiet and sys.stderr.isatty())


def load_model(model_dir: Path) -> Any:
    from deepar_cli.model import modelfolder

    return modelfolder.load(model_dir)
