"""`train`: SageMaker's training job on a backend, written as a model folder.

Reads and checks the channels, plans the epochs, has the backend train the network,
writes the model folder atomically and scores the test channel through the one forecast
path, logging each step as an event.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from deepar_cli.atomic import atomic_dir
from deepar_cli.backends import DEFAULT_BACKEND, get_backend
from deepar_cli.backends.base import WeightsNotWritten
from deepar_cli.config import memory
from deepar_cli.config.hyperparameters import Hyperparameters
from deepar_cli.data.dataset import (
    Source,
    check_likelihood_domain,
    read_with_stats,
    require_held_out,
    require_observed,
    resolve_features,
    source_name,
    to_entries,
)
from deepar_cli.data.windows import MAX_SHUFFLE_BUFFER, epoch_plan
from deepar_cli.errors import DataError, OutputError, UsageError
from deepar_cli.evaluation import backtest
from deepar_cli.model import modelfolder
from deepar_cli.model.forecasting import DEFAULT_SEED

# An event callback: ("dataset" | "hyperparameters" | "plan" | "epoch" | "final" |
# "test_metrics", figures). The CLI turns events into log lines or JSON.
Log = Callable[[str, Dict[str, Any]], None]


@dataclass
class EpochLogger:
    """The backend's epoch callback: per-epoch loss, throughput, best-so-far, early
    stopping."""

    log: Log
    samples_per_epoch: int
    patience: Optional[int]
    history: List[Dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    _tic: float = 0.0

    def epoch_start(self) -> None:
        self._tic = time.perf_counter()

    def epoch_end(self, epoch: int, loss: float) -> bool:
        seconds = time.perf_counter() - self._tic
        best = loss < self.best_loss
        if best:
            self.best_loss, self.best_epoch = loss, epoch
        row = {
            "epoch": epoch,
            "loss": loss,
            "seconds": round(seconds, 3),
            "samples_per_second": round(self.samples_per_epoch / seconds, 1) if seconds else None,
            "best": best,
        }
        self.history.append(row)
        self.log("epoch", row)
        if self.patience is not None and epoch - self.best_epoch >= self.patience:
            self.log("early_stopping", {"epoch": epoch, "patience": self.patience,
                                        "best_epoch": self.best_epoch})
            return False
        return True


@contextlib.contextmanager
def _writes(model_dir: Path) -> Iterator[None]:
    """A write of the weights the OS refused, as an OutputError naming the model folder."""
    try:
        yield
    except WeightsNotWritten as exc:
        place = "" if exc.where is None else f" in {exc.where}"
        raise OutputError(f"{model_dir}: cannot be written (saving the network's parameters"
                          f"{place} failed: {exc.reason}; is the disk full?)") from None


def train(train_channel: Source, hp: Hyperparameters, model_dir: Path, *,
          test_channel: Optional[Source] = None, seed: int = DEFAULT_SEED, rnn: str = "fused",
          average_epochs: int = 0, backend: str = DEFAULT_BACKEND,
          log: Log = lambda event, figures: None) -> Dict[str, Any]:
    """Train on a channel (or a GluonTS dataset) with `backend`, save the model folder
    atomically, score the test channel (or dataset) if any.

    The model keeps the weights of the epoch with the lowest loss (SageMaker's rule), or with
    `average_epochs` N > 0 the mean of the last N epochs' weights.

    Returns the summary written to the model folder's `training.json`.
    """
    modelfolder.prepare(model_dir, [train_channel, test_channel])  # before any work
    framework = get_backend(backend)
    records, train_stats = read_with_stats(train_channel)
    log("dataset", {"channel": "train", **train_stats.as_dict()})
    require_observed(train_stats, train_channel)
    check_likelihood_domain(hp, train_stats, train_channel)
    features = resolve_features(hp, train_stats)
    test_entries = None
    if test_channel is not None:
        test_records, test_stats = read_with_stats(test_channel)
        log("dataset", {"channel": "test", **test_stats.as_dict()})
        require_held_out(test_records, hp.prediction_length, test_channel,
                         " to hold out its last points")
        test_entries = to_entries(test_records, hp.freq, features)
    entries = to_entries(records, hp.freq, features)
    del records
    log("hyperparameters", {**hp.as_dict(), **features.as_dict(), "seed": seed, "rnn": rnn})

    lengths = [e["target"].size for e in entries]
    if max(lengths) < hp.prediction_length:
        raise DataError(f"{source_name(train_channel)}: every series is shorter than "
                        f"prediction_length ({hp.prediction_length}); there is nothing to "
                        "learn a forecast from")
    plan = epoch_plan(lengths, hp)
    memory.check_training(hp, features.cardinality, features.num_dynamic_feat,
                          num_observations=train_stats.num_observations,
                          training_windows=plan["training_windows"] * plan["passes"],
                          scored=test_channel is not None)
    num_batches = plan["batches_per_epoch"]
    samples = num_batches * hp.mini_batch_size
    log("plan", {**plan, "mini_batch_size": hp.mini_batch_size, "epochs": hp.epochs})
    if average_epochs < 0:
        raise UsageError(f"average_epochs must be at least 0, got {average_epochs}")

    epochs = EpochLogger(log, samples, hp.early_stopping_patience)
    tic = time.perf_counter()
    with _writes(model_dir):
        network = framework.train(
            entries, hp, features, batches_per_epoch=num_batches,
            shuffle_buffer=min(plan["training_windows"] * plan["passes"], MAX_SHUFFLE_BUFFER),
            seed=seed, rnn=rnn, average_epochs=average_epochs, epochs=epochs)
    train_seconds = time.perf_counter() - tic
    trained_samples = len(epochs.history) * samples
    summary: Dict[str, Any] = {
        "data": {"train": train_stats.as_dict()},
        "batches_per_epoch": num_batches,
        "history": epochs.history,
        "best_epoch": epochs.best_epoch,
        "final_loss": epochs.best_loss,
        "train_seconds": round(train_seconds, 3),
        "train_samples_per_second": round(trained_samples / train_seconds, 1),
        "seed": seed,
        "rnn": rnn,
        "average_epochs": average_epochs,
    }
    log("final", {"final_loss": epochs.best_loss, "best_epoch": epochs.best_epoch,
                  "epochs_run": len(epochs.history), "train_seconds": summary["train_seconds"],
                  "train_samples_per_second": summary["train_samples_per_second"]})
    with atomic_dir(model_dir) as folder:
        with _writes(model_dir):
            modelfolder.write(folder, framework, network, hp, features, summary)
        if test_entries is not None:
            # Score the folder as written, so `evaluate` later gives the same figures.
            metrics = backtest.test_scores(modelfolder.load(folder), test_entries, seed=seed)
            summary["data"]["test"] = test_stats.as_dict()
            summary["test_metrics"] = metrics
            modelfolder.write_summary(folder, summary)
            log("test_metrics", metrics)
    return summary
