"""`deepar-cli train`: SageMaker's DeepAR training job."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click

from deepar_cli.cli.options import (
    ExistingPath,
    PathType,
    hyperparameter_options,
    log_options,
    max_memory_option,
    progress_bars,
    quiet_option,
    seed_option,
)


@click.command()
@click.option("--train", "train_channel", type=ExistingPath, required=True,
              help="Train channel: a file or a folder of JSON Lines/Parquet files.")
@click.option("--test", "test_channel", type=ExistingPath,
              help="Test channel, scored after training like SageMaker does.")
@click.option("--hyperparameters", "hp_file", type=ExistingPath,
              help="SageMaker hyperparameters.json (values may be strings).")
@click.option("--model-dir", type=PathType, required=True, help="Where to write the model.")
@seed_option()
@quiet_option()
@log_options
@click.option("--rnn", type=click.Choice(["fused", "gluonts"]), default="fused",
              show_default=True,
              help="LSTM kernel for training: fused (fast; dropout_rate as dropout on each "
                   "layer's output) or gluonts (GluonTS's cell-by-cell unroll with zoneout).")
@click.option("--average-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N", help="Keep the mean of the last N epochs' weights instead of the "
                                "lowest-loss epoch's (0: SageMaker's rule).")
@hyperparameter_options
@max_memory_option
def train(train_channel: Path, test_channel: Optional[Path], hp_file: Optional[Path],
          model_dir: Path, seed: int, quiet: bool, log_format: str, log_file: Optional[Path],
          rnn: str, average_epochs: int, **options: Any) -> None:
    """Train DeepAR on a train channel with SageMaker's hyperparameters."""
    from deepar_cli.config import hyperparameters
    from deepar_cli.training import train as run
    from deepar_cli.tune.reporting import Reporter

    hp = hyperparameters.load(hp_file, options)
    with Reporter(log_format, log_file=log_file) as reporter, progress_bars(quiet):
        run(train_channel, hp, model_dir, test_channel=test_channel, seed=seed, rnn=rnn,
            average_epochs=average_epochs, log=reporter)
    if log_format == "text":
        click.echo(f"model saved to {model_dir}")
