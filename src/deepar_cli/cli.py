"""The `deepar-cli` command: parse options, call one library function, report.

Library errors (deepar_cli.errors) become one-line messages and their own exit codes here,
and only here.
"""

from __future__ import annotations

import functools
import sys
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
@click.option("--rnn", type=click.Choice(["fused", "gluonts"]), default="fused",
              show_default=True,
              help="LSTM kernel for training: fused (fast; dropout_rate as dropout on each "
                   "layer's output) or gluonts (GluonTS's cell-by-cell unroll with zoneout).")
@_hyperparameter_options
@reports_errors
def train(train_channel: Path, test_channel: Path | None, hp_file: Path | None, model_dir: Path,
          seed: int, quiet: bool, log_format: str, log_file: Path | None, rnn: str,
          **options: Any) -> None:
    """Train DeepAR on a train channel with SageMaker's hyperparameters."""
    from deepar_cli import hyperparameters
    from deepar_cli.reporting import Reporter
    from deepar_cli.training import train as run

    hp = hyperparameters.load(hp_file, options)
    reporter = Reporter(log_format, log_file=log_file)
    try:
        with _progress(quiet):
            run(train_channel, hp, model_dir, test_channel=test_channel, seed=seed, rnn=rnn,
                log=reporter)
    finally:
        reporter.close()
    if log_format == "text":
        click.echo(f"model saved to {model_dir}")


def _comma_list(text: str | None) -> list[str] | None:
    """ "mean, quantiles" -> ["mean", "quantiles"]; None stays None."""
    return [part.strip() for part in text.split(",")] if text else None


def _load_model(model_dir: Path) -> Any:
    from deepar_cli import modelfolder

    return modelfolder.load(model_dir)


@main.command()
@click.option("--model-dir", type=PathType, required=True)
@click.option("--test", "test_channel", type=ExistingPath, required=True,
              help="Test channel: full series; the last prediction_length points are scored.")
@click.option("--output-dir", type=PathType, default=None,
              help="Where metrics.json and per_series.csv go (default: MODEL_DIR/evaluation).")
@click.option("--quantiles", default=None, help='Quantiles to score, e.g. "0.1,0.5,0.9".')
@click.option("--num-samples", type=click.IntRange(1, 10_000), default=None,
              help="Sample paths per series (default: the model's num_eval_samples).")
@click.option("--windows", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Rolling backtest windows, each prediction_length further back.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def evaluate(model_dir: Path, test_channel: Path, output_dir: Path | None, quantiles: str | None,
             num_samples: int | None, windows: int, seed: int, quiet: bool) -> None:
    """Backtest a model on a test channel with the GluonTS Evaluator."""
    from deepar_cli.evaluation import evaluate_channel, format_table, parse_quantiles

    model = _load_model(model_dir)
    levels = parse_quantiles(quantiles) if quantiles else None
    output_dir = output_dir or model_dir / "evaluation"
    with _progress(quiet):
        result = evaluate_channel(model, test_channel, output_dir, seed=seed, quantiles=levels,
                                  num_samples=num_samples, windows=windows)
    click.echo(format_table(result))
    click.echo(f"wrote {output_dir / 'metrics.json'} and {output_dir / 'per_series.csv'}")


@main.command()
@click.option("--model-dir", type=PathType, required=True)
@click.option("--input", "input_path", type=click.Path(path_type=Path, allow_dash=True),
              required=True, help="JSON Lines of records, or one endpoint request; - for stdin.")
@click.option("--output", "output_path", type=click.Path(path_type=Path, allow_dash=True),
              required=True, help="Where predictions go; - for stdout.")
@click.option("--config", "config_json", default=None,
              help="Inference configuration as JSON (default: $DEEPAR_INFERENCE_CONFIG).")
@click.option("--num-samples", type=int, default=None)
@click.option("--output-types", default=None, help='e.g. "mean,quantiles,samples".')
@click.option("--quantiles", default=None, help='e.g. "0.1,0.5,0.9".')
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@reports_errors
def predict(model_dir: Path, input_path: Path, output_path: Path, config_json: str | None,
            num_samples: int | None, output_types: str | None, quantiles: str | None,
            seed: int, quiet: bool) -> None:
    """Batch transform: SageMaker DeepAR records in, prediction objects out."""
    from deepar_cli.inference import run_batch_transform

    count = run_batch_transform(
        _load_model(model_dir), input_path, output_path, config_json=config_json,
        overrides={"num_samples": num_samples,
                   "output_types": _comma_list(output_types),
                   "quantiles": _comma_list(quantiles)},
        seed=seed, progress=not quiet and sys.stderr.isatty())
    if str(output_path) != "-":
        click.echo(f"wrote {count} predictions to {output_path}")


@main.command()
@click.option("--model-dir", type=PathType, required=True, help="A model folder from `train`.")
@click.option("--test", "test_channel", type=ExistingPath, required=True,
              help="Test channel; each series' last prediction_length points are the truth.")
@click.option("--series", "series", default=None, metavar="SPEC",
              help='0-based series to plot: "0-4", "0,3,7" or "5".  [default: the first 5]')
@click.option("--output-dir", type=PathType, required=True,
              help="Folder for series-<i>.png, forecasts.png and plot.json.")
@click.option("--train", "train_channel", type=ExistingPath,
              help="Forecast from the train record instead; the test record's extra points "
                   "are the truth.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--num-samples", type=int, default=None,
              help="Sample paths per forecast.  [default: the model's num_eval_samples]")
@click.option("--quiet", is_flag=True, help="Do not list the files written.")
@reports_errors
def plot(model_dir: Path, test_channel: Path, series: str | None, output_dir: Path,
         train_channel: Path | None, seed: int, num_samples: int | None, quiet: bool) -> None:
    """Draw the notebook's picture: observed target, p50 forecast and p10-p90 band."""
    from deepar_cli.plotting import describe, plot as draw

    result = draw(model_dir, test_channel, output_dir, series=series,
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
              help="Worker processes; each loads the model and answers one request at a time.")
@click.option("--timeout", type=click.IntRange(1, 3600), default=60, show_default=True,
              help="Seconds a request may run (SageMaker: 60); past it the client gets 504 "
                   "and the worker is replaced.")
@click.option("--seed", type=int, default=42, show_default=True,
              help="Every request is forecast from this seed, as `predict --seed` does.")
@click.option("--max-payload-mb", type=click.FloatRange(0, 1024, min_open=True), default=6.0,
              show_default=True, help="Larger request bodies get 413 (SageMaker: 6 MB).")
@reports_errors
def serve(model_dir: Path, host: str, port: int, workers: int, timeout: int, seed: int,
          max_payload_mb: float) -> None:
    """The endpoint: SageMaker's DeepAR GET /ping and POST /invocations over HTTP.

    JSON requests ({"instances": [...], "configuration": {...}}) and JSON Lines of
    records (configuration from $DEEPAR_INFERENCE_CONFIG) are answered byte for byte as
    `predict` answers them. Stops gracefully on SIGTERM or Ctrl-C.
    """
    from deepar_cli.server import serve as run

    run(model_dir, host=host, port=port, workers=workers, timeout=timeout, seed=seed,
        max_payload_mb=max_payload_mb)
