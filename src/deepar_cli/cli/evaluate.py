"""`deepar-cli evaluate` and `plot`: a model's backtest scores and its forecasts drawn."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import click

from deepar_cli.cli.options import (
    ExistingPath,
    NumSamples,
    PathType,
    QuantilesParam,
    SeriesParam,
    load_model,
    progress_bars,
    quiet_option,
    seed_option,
)


@click.command()
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
@seed_option()
@quiet_option()
def evaluate(model_dir: Path, test_channel: Path, output_dir: Optional[Path],
             quantiles: Optional[Tuple[str, ...]], num_samples: Optional[int], windows: int,
             seed: int, quiet: bool) -> None:
    """Backtest a model on a test channel with the GluonTS Evaluator."""
    from deepar_cli.evaluation.backtest import evaluate_channel, format_table

    model = load_model(model_dir)
    output_dir = output_dir or model_dir / "evaluation"
    with progress_bars(quiet):
        result = evaluate_channel(model, test_channel, output_dir, seed=seed,
                                  quantiles=[float(q) for q in quantiles] if quantiles else None,
                                  num_samples=num_samples, windows=windows)
    click.echo(format_table(result))
    click.echo(f"wrote {output_dir / 'metrics.json'} and {output_dir / 'per_series.csv'}")


@click.command()
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
@seed_option()
@click.option("--num-samples", type=NumSamples, default=None,
              help="Sample paths per forecast.  [default: the model's num_eval_samples]")
@quiet_option("Do not list the files written.")
def plot(model_dir: Path, test_channel: Path, series: Optional[List[int]], output_dir: Path,
         train_channel: Optional[Path], seed: int, num_samples: Optional[int],
         quiet: bool) -> None:
    """Draw the notebook's picture: observed target, p50 forecast and p10-p90 band."""
    from deepar_cli.evaluation.plotting import describe
    from deepar_cli.evaluation.plotting import plot as draw

    result = draw(load_model(model_dir), test_channel, output_dir, series=series,
                  train_channel=train_channel, seed=seed, num_samples=num_samples)
    if not quiet:
        for line in describe(result):
            click.echo(line)
