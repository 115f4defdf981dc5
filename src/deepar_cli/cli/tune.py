"""`deepar-cli tune`: SageMaker's automatic model tuning."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Optional

import click

from deepar_cli.cli.options import (
    ExistingPath,
    PathType,
    log_options,
    max_memory_option,
    progress_bars,
    quiet_option,
    seed_option,
)
from deepar_cli.config.tuning_config import FINAL_MODELS, OBJECTIVES, STRATEGIES


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


@click.command()
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
                   "on the objective's points (selection), or SageMaker's rule, the best "
                   "trial's model, which after a held-out objective is its hyperparameters "
                   "trained once more on the whole train channel (refit).")
@click.option("--holdout-windows", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="W", help="Without --test: hold out the last W x prediction_length "
                                "points and score the objective on those W rolling windows.")
@seed_option("Every trial's training seed, as `train --seed`.")
@quiet_option()
@log_options
@max_memory_option
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

    with Reporter(log_format, log_file=log_file) as reporter, progress_bars(quiet):
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
