"""The `deepar-cli` command: parse options, call one library function, report.

One contract for every command: library errors (deepar_cli.errors) become one line,
`Error: ...`, and their exit code, here and only here:

    64 bad usage (click's own usage errors too)   65 bad data or request
    66 missing or broken model folder             73 an output that cannot be written
    78 bad hyperparameters or tuning ranges       1  anything unexpected
    130, 143 interrupted by SIGINT (Ctrl-C), SIGTERM: unfinished outputs discarded

A traceback is shown only with `deepar-cli --debug ...` or DEEPAR_CLI_DEBUG=1.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

import click

from deepar_cli import __version__, interrupts
from deepar_cli.config.tuning_config import FINAL_MODELS, OBJECTIVES, STRATEGIES
from deepar_cli.errors import DeepARCliError, Interrupted, UsageError

EX_USAGE = UsageError.exit_code
DEBUG_ENV = "DEEPAR_CLI_DEBUG"
PathType = click.Path(path_type=Path)
ExistingPath = click.Path(path_type=Path, exists=True)
MAX_SERIES = 1000  # plot draws one PNG a series: more is a typo, not a plot
TRAINING_COMMANDS = ("train", "tune")  # their pools are sized for training (threads.py)


# --------------------------------------------------------------------------- parameters


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


# --------------------------------------------------------------------------- the group


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


# --------------------------------------------------------------------------- commands


@main.command()
@click.option("--output-dir", type=PathType, default=Path("data"), show_default=True,
              help="Folder for train and test files.")
@click.option("--num-series", type=click.IntRange(1), default=200, show_default=True)
@click.option("--length", type=click.IntRange(2), default=400, show_default=True,
              help="Points per full (test) series.")
@click.option("--period", type=click.IntRange(1), default=24, show_default=True,
              help="Seasonal period.")
@click.option("--freq", default="H", show_default=True, help="SageMaker time_freq.")
@click.option("--start", default="2016-01-01 00:00:00", show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=1, show_default=True,
              help="np.random.seed value.")
@click.option("--prediction-length", type=click.IntRange(1), default=48, show_default=True,
              help="Points held out of train.")
@click.option("--format", "fmt", type=click.Choice(["json", "jsonl", "json.gz", "parquet"]),
              default="json", show_default=True)
@click.option("--num-categories", type=click.IntRange(0), default=0, show_default=True,
              help="Add a `cat` field: series k gets group k mod N (0 = no field).")
@click.option("--num-dynamic-feat", type=click.IntRange(0), default=0, show_default=True,
              help="Add N seasonal `dynamic_feat` series (0 = no field).")
def generate(output_dir: Path, fmt: str, **options: Any) -> None:
    """Write the SageMaker notebook's synthetic train and test channels."""
    from deepar_cli.data.channels import output_suffix, write_records
    from deepar_cli.data.synthetic import SyntheticSpec
    from deepar_cli.data.synthetic import generate as make

    train, test = make(SyntheticSpec(**options))
    suffix = output_suffix(fmt)
    for name, records in (("train", train), ("test", test)):
        path = output_dir / f"{name}{suffix}"
        count = write_records(path, records)
        click.echo(f"wrote {path} ({count} series, {records[0].target.size} points each)")


def _hyperparameter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """One option per SageMaker hyperparameter, under its SageMaker name (dashes work too)."""
    from deepar_cli.config.hyperparameters import SCHEMA

    for name in reversed(list(SCHEMA)):
        spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        command = click.option(*spellings, name, default=None, metavar="VALUE",
                               help="SageMaker hyperparameter (overrides the file).")(command)
    return command


def _progress(quiet: bool) -> Any:
    """GluonTS draws its per-epoch progress bars unless quiet or stderr is not a terminal."""
    from gluonts.env import env

    return env._let(use_tqdm=not quiet and sys.stderr.isatty())


def _load_model(model_dir: Path) -> Any:
    from deepar_cli.model import modelfolder

    return modelfolder.load(model_dir)


AVERAGE_EPOCHS = click.option(
    "--average-epochs", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
    help="Keep the mean of the last N epochs' weights instead of the lowest-loss epoch's "
         "(0: SageMaker's rule); tune: in every trial and the final model.")


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


MAX_MEMORY = click.option(
    "--max-memory", metavar="SIZE", envvar="DEEPAR_MAX_MEMORY", expose_value=False,
    callback=_max_memory,
    help="Memory this may use, e.g. 8G or 500M; a training or forecast estimated to need "
         "more is refused before it starts.  [default: the smaller of the cgroup's limit "
         "and MemAvailable; env: DEEPAR_MAX_MEMORY]")


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
@click.option("--rnn", type=click.Choice(["fused", "gluonts"]), default="fused",
              show_default=True,
              help="LSTM kernel for training: fused (fast; dropout_rate as dropout on each "
                   "layer's output) or gluonts (GluonTS's cell-by-cell unroll with zoneout).")
@AVERAGE_EPOCHS
@_hyperparameter_options
@MAX_MEMORY
def train(train_channel: Path, test_channel: Optional[Path], hp_file: Optional[Path],
          model_dir: Path, seed: int, quiet: bool, log_format: str, log_file: Optional[Path],
          rnn: str, average_epochs: int, **options: Any) -> None:
    """Train DeepAR on a train channel with SageMaker's hyperparameters."""
    from deepar_cli.training import train as run
    from deepar_cli.config import hyperparameters
    from deepar_cli.tune.reporting import Reporter

    hp = hyperparameters.load(hp_file, options)
    with Reporter(log_format, log_file=log_file) as reporter, _progress(quiet):
        run(train_channel, hp, model_dir, test_channel=test_channel, seed=seed, rnn=rnn,
            average_epochs=average_epochs, log=reporter)
    if log_format == "text":
        click.echo(f"model saved to {model_dir}")


@main.command()
@click.option("--model-dir", type=PathType, required=True)
@click.option("--test", "test_channel", type=ExistingPath, required=True,
              help="Test channel: full series; the last prediction_length points are scored.")
@click.option("--output-dir", type=PathType, default=None,
              help="Where metrics.json and per_series.csv go (default: MODEL_DIR/evaluation).")
@click.option("--quantiles", type=QuantilesParam(), default=None,
              help='Quantiles to score, e.g. "0.1,0.5,0.9" (default: the model\'s '
                   "test_quantiles).")
@click.option("--num-samples", type=NumSamples, default=None,
              help="Sample paths per series (default: the model's num_eval_samples).")
@click.option("--windows", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Rolling backtest windows, each prediction_length further back.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(model_dir: Path, test_channel: Path, output_dir: Optional[Path],
             quantiles: Optional[Tuple[str, ...]], num_samples: Optional[int], windows: int,
             seed: int, quiet: bool) -> None:
    """Backtest a model on a test channel with the GluonTS Evaluator."""
    from deepar_cli.evaluation.backtest import evaluate_channel, format_table

    model = _load_model(model_dir)
    output_dir = output_dir or model_dir / "evaluation"
    with _progress(quiet):
        result = evaluate_channel(model, test_channel, output_dir, seed=seed,
                                  quantiles=[float(q) for q in quantiles] if quantiles else None,
                                  num_samples=num_samples, windows=windows)
    click.echo(format_table(result))
    click.echo(f"wrote {output_dir / 'metrics.json'} and {output_dir / 'per_series.csv'}")


def _inference_config(config: Any, overrides: dict) -> Tuple[Any, bool]:
    """--config (else $DEEPAR_INFERENCE_CONFIG, else SageMaker's defaults) with single
    options on top; and whether the user configured anything on the command line."""
    from deepar_cli.inference.protocol import config_from_environment

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        base = config if config is not None else config_from_environment()
        return dataclasses.replace(base, **given), config is not None or bool(given)
    except DeepARCliError as error:  # the environment's configuration: a usage error
        raise UsageError(str(error)) from None


@main.command()
@click.option("--model-dir", type=PathType, required=True)
@click.option("--input", "input_path", type=click.Path(path_type=Path, allow_dash=True,
                                                       exists=True),
              required=True, help="JSON Lines of records (.json, .jsonl, .json.gz), one "
                                  "endpoint request, or a folder of such files; - for stdin.")
@click.option("--output", "output_path", type=click.Path(path_type=Path, allow_dash=True),
              required=True, help="Where predictions go; - for stdout. For a folder --input, "
                                  "a folder receiving one <name>.out per input file.")
@click.option("--config", type=InferenceConfigParam(), default=None,
              help="Inference configuration as JSON (default: $DEEPAR_INFERENCE_CONFIG).")
@click.option("--num-samples", type=NumSamples, default=None)
@click.option("--output-types", type=OutputTypesParam(), default=None,
              help='e.g. "mean,quantiles,samples".')
@click.option("--quantiles", type=QuantilesParam(), default=None, help='e.g. "0.1,0.5,0.9".')
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="local: this process; ray: Ray actors, on a local Ray "
                                      "or the cluster at --address (same bytes).")
@click.option("--address", metavar="HOST:PORT",
              help="Ray cluster to join (as `ray start --head` prints it); default: start a "
                   "local Ray.")
@click.option("--workers", type=click.IntRange(1, 100_000), default=None,
              help="Ray workers (default: one per --worker-cpus CPUs of the cluster).")
@click.option("--worker-cpus", type=click.IntRange(1, 1024), default=None,
              help="CPUs, and threads, per Ray worker.  [default: 1]")
@click.option("--shard-lines", type=click.IntRange(1), default=None,
              help="Records per shard handed to a Ray worker.  [default: 1000]")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@MAX_MEMORY
def predict(model_dir: Path, input_path: Path, output_path: Path, config: Any,
            num_samples: Optional[int], output_types: Optional[Tuple[str, ...]],
            quantiles: Optional[Tuple[str, ...]], seed: int, engine: str,
            address: Optional[str], workers: Optional[int], worker_cpus: Optional[int],
            shard_lines: Optional[int], quiet: bool) -> None:
    """Batch transform: SageMaker DeepAR records in, prediction objects out.

    A folder in gives a folder out, one <name>.out per input file, as SageMaker's batch
    transform writes them.
    """
    from deepar_cli.inference.batch import transform

    config, given = _inference_config(config, {"num_samples": num_samples,
                                               "output_types": output_types,
                                               "quantiles": quantiles})
    ray_given = {k: v for k, v in {"address": address, "workers": workers,
                                   "worker_cpus": worker_cpus,
                                   "shard_lines": shard_lines}.items() if v is not None}
    options = None
    if engine == "ray":
        from deepar_cli.inference.ray_engine import RayOptions, check

        options = RayOptions(**ray_given)
        check(options)  # before the model loads: Ray installed, the address answering
    elif ray_given:
        raise UsageError(f"--{next(iter(ray_given)).replace('_', '-')} applies to --engine "
                         "ray only")
    count, files = transform(_load_model(model_dir), input_path, output_path, config,
                             seed=seed, config_given=given, ray=options,
                             progress=not quiet and sys.stderr.isatty() and engine == "local")
    if str(output_path) != "-":
        where = f"{files} files in {output_path}" if input_path.is_dir() else output_path
        click.echo(f"wrote {count} predictions to {where}")


@main.command()
@click.option("--model-dir", type=PathType, required=True, help="A model folder from `train`.")
@click.option("--test", "test_channel", type=ExistingPath, required=True,
              help="Test channel; each series' last prediction_length points are the truth.")
@click.option("--series", type=SeriesParam(), default=None, metavar="SPEC",
              help='0-based series to plot: "0-4", "0,3,7" or "5".  [default: the first 5]')
@click.option("--output-dir", type=PathType, required=True,
              help="Folder for series-<i>.png, forecasts.png and plot.json.")
@click.option("--train", "train_channel", type=ExistingPath,
              help="Forecast from the train record instead; the test record's extra points "
                   "are the truth.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--num-samples", type=NumSamples, default=None,
              help="Sample paths per forecast.  [default: the model's num_eval_samples]")
@click.option("--quiet", is_flag=True, help="Do not list the files written.")
def plot(model_dir: Path, test_channel: Path, series: Optional[List[int]], output_dir: Path,
         train_channel: Optional[Path], seed: int, num_samples: Optional[int],
         quiet: bool) -> None:
    """Draw the notebook's picture: observed target, p50 forecast and p10-p90 band."""
    from deepar_cli.evaluation.plotting import describe
    from deepar_cli.evaluation.plotting import plot as draw

    result = draw(_load_model(model_dir), test_channel, output_dir, series=series,
                  train_channel=train_channel, seed=seed, num_samples=num_samples)
    if not quiet:
        for line in describe(result):
            click.echo(line)


@main.command()
@click.option("--model-dir", type=PathType, required=True, help="A model folder from `train`.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Forecasting processes; each loads the model and answers one request at "
                   "a time.")
@click.option("--timeout", type=click.IntRange(1, 3600), default=60, show_default=True,
              help="Seconds a request may wait for a worker, and then run on it (SageMaker: "
                   "60); past either the client gets 504, and a worker over it is replaced.")
@click.option("--read-timeout", type=click.FloatRange(0.1, 3600), default=10.0,
              show_default=True, help="Seconds for a request's headers, and again for its "
                                      "body, to arrive; past it 408.")
@click.option("--keep-alive", type=click.FloatRange(0, 3600), default=5.0, show_default=True,
              help="Seconds an idle keep-alive connection stays open (above a load "
                   "balancer's idle timeout, if behind one).")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Every request is forecast from this seed, as `predict --seed` does.")
@click.option("--max-payload-mb", type=click.FloatRange(0, 1024, min_open=True), default=6.0,
              show_default=True, help="Larger request bodies get 413 (SageMaker: 6 MB).")
@click.option("--max-connections", type=click.IntRange(1, 100_000), default=1000,
              show_default=True, help="Open connections; past it 503 with Retry-After.")
@click.option("--max-queue", type=click.IntRange(1, 100_000), default=128, show_default=True,
              help="Requests waiting for a worker; past it 503 with Retry-After.")
@click.option("--max-buffer-mb", type=click.FloatRange(1, 1 << 20), default=256.0,
              show_default=True, help="Request bodies held in memory at once (being read or "
                                      "queued); past it 503 with Retry-After.")
@MAX_MEMORY
def serve(model_dir: Path, host: str, port: int, workers: int, timeout: int,
          read_timeout: float, keep_alive: float, seed: int, max_payload_mb: float,
          max_connections: int, max_queue: int, max_buffer_mb: float) -> None:
    """The endpoint: SageMaker's DeepAR GET /ping and POST /invocations over HTTP.

    JSON requests ({"instances": [...], "configuration": {...}}) and JSON Lines of
    records (configuration from $DEEPAR_INFERENCE_CONFIG) are answered byte for byte as
    `predict` answers them. Stops gracefully on SIGTERM or Ctrl-C.
    """
    from deepar_cli.serve.serving import serve as run

    lines_config, _ = _inference_config(None, {})
    run(model_dir, lines_config=lines_config, host=host, port=port, workers=workers,
        seed=seed, timeout=timeout, read_timeout=read_timeout, keep_alive=keep_alive,
        max_payload_mb=max_payload_mb, max_connections=max_connections,
        max_queue=max_queue, max_buffer_mb=max_buffer_mb)


def _tuning_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options that override single fields of the tuning config."""
    for option in reversed([
        click.option("--strategy", type=click.Choice(STRATEGIES),
                     help="Strategy (default: the config's, else Bayesian)."),
        click.option("--objective", type=click.Choice(OBJECTIVES),
                     help="HyperParameterTuningJobObjective.MetricName "
                          "(default: the config's, else test:mean_wQuantileLoss)."),
        click.option("--max-trials", type=click.IntRange(1, 100_000),
                     help="ResourceLimits.MaxNumberOfTrainingJobs, over every process "
                          "sharing the study (default: the config's, else 20)."),
        click.option("--max-parallel", type=click.IntRange(1, 64),
                     help="ResourceLimits.MaxParallelTrainingJobs: trials at once here, "
                          "sharing the cores (default: the config's, else 1)."),
    ]):
        command = option(command)
    return command


@main.command()
@click.option("--train", "train_channel", type=ExistingPath, required=True,
              help="Train channel: a file or a folder of JSON Lines/Parquet files.")
@click.option("--test", "test_channel", type=ExistingPath,
              help="Test channel for the objective (default: the last prediction_length "
                   "points of each training series, held out).")
@click.option("--hyperparameters", "hp_file", type=ExistingPath, required=True,
              help="Static hyperparameters.json: what every trial shares.")
@click.option("--tuning-config", "config_file", type=ExistingPath,
              help="SageMaker HyperParameterTuningJobConfig JSON (default: built-in ranges "
                   "for what the static file leaves out).")
@click.option("--output-dir", type=PathType, required=True,
              help="Folder for the study, trials, best hyperparameters and model.")
@_tuning_options
@click.option("--storage", metavar="URL",
              help="Optuna storage URL several machines share, e.g. "
                   "postgresql+psycopg2://user@host/db with the [postgres] extra (default: "
                   "sqlite in OUTPUT_DIR/study.db).")
@click.option("--study-name", default="deepar-cli-tune", show_default=True)
@click.option("--final-model", type=click.Choice(FINAL_MODELS), default=FINAL_MODELS[0],
              show_default=True,
              help="The model is the trials' models that Caruana's ensemble selection weighs "
                   "on the objective's points (selection); or, after a held-out objective, "
                   "the chosen trials' own models and the best hyperparameters trained once "
                   "more on the whole train channel (trials+refit), only that training "
                   "(refit), or only the trials' models (trials).")
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="K", help="With --final-model trials+refit, refit or trials: mix the "
                                "K best trials' forecasts into one model, if that scores "
                                "better on the objective than the best trial alone.")
@click.option("--holdout-windows", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="W", help="Without --test: hold out the last W x prediction_length "
                                "points and score the objective on those W rolling windows.")
@click.option("--bag", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Train the final model's hyperparameters N times, with seeds SEED ... "
                   "SEED+N-1, and average their quantiles (seed bagging).")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="Scale the final model's spread about its median by the factor in "
                   "[0.5, 1.5] that scores best on the objective's held-out points.")
@AVERAGE_EPOCHS
@click.option("--seed", type=int, default=42, show_default=True,
              help="Every trial's training seed, as `train --seed`.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines as text or as one JSON object a line.")
@click.option("--log-file", type=PathType, help="Also write every log event as JSON lines.")
@MAX_MEMORY
def tune(train_channel: Path, test_channel: Optional[Path], hp_file: Path,
         config_file: Optional[Path], output_dir: Path, quiet: bool, log_format: str,
         log_file: Optional[Path], **options: Any) -> None:
    """SageMaker's automatic model tuning: many `train` runs over ranges, the best kept.

    Bayesian (TPE), Random, Grid or Hyperband search on Optuna; an interrupted or
    shared study resumes from its storage.
    """
    import signal

    from deepar_cli.tune.reporting import Reporter
    from deepar_cli.tune.study import tune as run

    with Reporter(log_format, log_file=log_file) as reporter, _progress(quiet):
        result = run(train_channel, hp_file, output_dir, test_channel=test_channel,
                     config_file=config_file, log=reporter,
                     progress=not quiet and sys.stderr.isatty(), **options)
    if result.signal is not None:
        done = sum(result.counts[k] for k in ("complete", "pruned", "failed"))
        click.echo(f"Error: stopped by {signal.Signals(result.signal).name}; {done} finished "
                   f"trials are saved in the study: run the same command again to resume",
                   err=True)
        sys.exit(128 + result.signal)
    if log_format == "text":
        for path in result.files:
            click.echo(f"wrote {path}")
