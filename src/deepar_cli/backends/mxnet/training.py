"""Train GluonTS's MXNet DeepAR with SageMaker's hyperparameters and write a model folder."""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

from deepar_cli.atomic import atomic_dir
from deepar_cli.backends.mxnet.seeding import DEFAULT_SEED, seed_everything
from deepar_cli.config import memory
from deepar_cli.config.hyperparameters import Hyperparameters
from deepar_cli.data.dataset import (
    Features,
    Source,
    check_likelihood_domain,
    read_with_stats,
    require_held_out,
    require_observed,
    resolve_features,
    source_name,
    to_entries,
)
from deepar_cli.data.windows import MAX_SHUFFLE_BUFFER, epoch_plan, pass_sampler
from deepar_cli.errors import DataError, OutputError, UsageError, reason
from deepar_cli.model import modelfolder

# An event callback: ("dataset" | "hyperparameters" | "plan" | "epoch" | "final" |
# "test_metrics", figures). The CLI turns events into log lines or JSON.
Log = Callable[[str, Dict[str, Any]], None]


def distribution_output(likelihood: str) -> Any:
    """SageMaker's likelihood names -> GluonTS distribution outputs.

    `deterministic-L1` is a Laplace likelihood with a fixed, tiny scale: its negative
    log-likelihood is the L1 loss, and its samples collapse onto the point forecast.
    """
    from gluonts.mx.distribution import (
        BetaOutput,
        GaussianOutput,
        LaplaceFixedVarianceOutput,
        NegativeBinomialOutput,
        StudentTOutput,
    )

    return {
        "student-T": StudentTOutput,
        "gaussian": GaussianOutput,
        "beta": BetaOutput,
        "negative-binomial": NegativeBinomialOutput,
        "deterministic-L1": LaplaceFixedVarianceOutput,
    }[likelihood]()


def build_estimator(hp: Hyperparameters, features: Features, num_batches: int,
                    callbacks: List[Any], rnn: str = "fused") -> Any:
    """GluonTS's MXNet DeepAREstimator configured from SageMaker's hyperparameters.

    `rnn="fused"` trains the same network with fused LSTM kernels, imperatively (see
    deepar_cli.backends.mxnet.acceleration); "gluonts" is GluonTS's hybridized cell-by-cell unroll.
    """
    from gluonts.mx import DeepAREstimator, Trainer

    from deepar_cli.backends.mxnet.acceleration import fuse

    class FusedDeepAREstimator(DeepAREstimator):
        def create_training_network(self) -> Any:
            return fuse(super().create_training_network())

    use_cat = features.cardinality is not None
    estimator_class = FusedDeepAREstimator if rnn == "fused" else DeepAREstimator
    return estimator_class(
        freq=hp.freq,
        prediction_length=hp.prediction_length,
        context_length=hp.context_length,
        num_layers=hp.num_layers,
        num_cells=hp.num_cells,
        dropout_rate=hp.dropout_rate,
        use_feat_static_cat=use_cat,
        cardinality=features.cardinality if use_cat else None,
        embedding_dimension=[hp.embedding_dimension] * len(features.cardinality)
        if use_cat else None,
        use_feat_dynamic_real=features.num_dynamic_feat > 0,
        train_sampler=pass_sampler(hp),
        distr_output=distribution_output(hp.likelihood),
        # The beta likelihood lives on (0, 1): mean scaling would push targets out of it.
        scaling=hp.likelihood != "beta",
        batch_size=hp.mini_batch_size,
        num_parallel_samples=hp.num_eval_samples,
        trainer=Trainer(
            epochs=hp.epochs,
            num_batches_per_epoch=num_batches,
            learning_rate=hp.learning_rate,
            hybridize=rnn != "fused",
            callbacks=callbacks,
        ),
    )


class _SavedWeights:
    """Stands in for the trained network in GluonTS's `create_predictor`, which copies the
    trained network's weights by saving them to a file and loading that file: here the
    file is the model folder's, so the prediction network is GluonTS's own, rebuilt from
    the hyperparameters, and only its weights come from the folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save_parameters(self, target: str) -> None:
        shutil.copyfile(self.path, target)


def rebuild_predictor(weights: Path, hp: Hyperparameters, features: Features) -> Any:
    """The predictor `train` saved, rebuilt from its hyperparameters and features with the
    weights read from `weights` (an MXNet NDArray file, which holds data only): nothing
    the model folder names is imported or called. Raises what MXNet raises for a weights
    file that does not fit the network."""
    estimator = build_estimator(hp, features, 1, [], rnn="gluonts")
    return estimator.create_predictor(estimator.create_transformation(),
                                      _SavedWeights(weights))


def _weight_averaging(average_epochs: int) -> List[Any]:
    """GluonTS's callback that keeps the mean of the last `average_epochs` epochs' weights;
    none for 0, which leaves GluonTS's default, the lowest-loss epoch.

    The epoch loss is measured on each epoch's own batches, so the lowest one is partly luck:
    with the notebook's hyperparameters over five seeds the best epoch's model scored test
    RMSE 0.299-0.359, the mean of the last five epochs 0.301-0.308 (Polyak averaging).
    """
    if average_epochs < 0:
        raise UsageError(f"average_epochs must be at least 0, got {average_epochs}")
    if average_epochs == 0:
        return []
    from gluonts.mx.trainer.model_averaging import ModelAveraging, SelectNBestMean

    return [ModelAveraging(avg_strategy=SelectNBestMean(
        num_models=average_epochs, metric="epoch_no", maximize=True))]


@dataclass
class EpochLogger:
    """GluonTS trainer callback: per-epoch loss, throughput, best-so-far, early stopping."""

    log: Log
    samples_per_epoch: int
    patience: Optional[int]
    history: List[Dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    _tic: float = 0.0

    def as_callback(self) -> Any:
        from gluonts.mx.trainer.callback import Callback

        owner = self

        class _Callback(Callback):
            def on_train_epoch_start(self, training_network: Any) -> None:
                owner._tic = time.perf_counter()

            def on_epoch_end(self, epoch_no: int, epoch_loss: float, **kwargs: Any) -> bool:
                return owner.epoch_end(epoch_no + 1, float(epoch_loss))

        return _Callback()

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
def _writes(model_dir: Path, where: Optional[Path] = None) -> Iterator[None]:
    """MXNet reports a write the OS refused (a full disk, a file size limit) as an
    MXNetError with a C++ traceback: make it an OutputError naming the model folder and
    `where` the write went, if not into the model folder."""
    from mxnet.base import MXNetError

    try:
        yield
    except MXNetError as exc:
        if "FileStream.Write incomplete" not in str(exc):
            raise
        place = "" if where is None else f" in {where}"
        raise OutputError(f"{model_dir}: cannot be written (saving the network's parameters"
                          f"{place} failed: {reason(exc)}; is the disk full?)") from None


def train(train_channel: Source, hp: Hyperparameters, model_dir: Path, *,
          test_channel: Optional[Source] = None, seed: int = DEFAULT_SEED, rnn: str = "fused",
          average_epochs: int = 0, log: Log = lambda event, figures: None) -> Dict[str, Any]:
    """Train on a channel (or a GluonTS dataset), save the model folder atomically, score the
    test channel (or dataset) if any.

    The model keeps the weights of the epoch with the lowest loss (SageMaker's rule), or with
    `average_epochs` N > 0 the mean of the last N epochs' weights.

    Returns the summary written to the model folder's `training.json`.
    """
    from deepar_cli.evaluation import backtest

    modelfolder.prepare(model_dir, [train_channel, test_channel])  # before any work
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

    seed_everything(seed)
    epochs = EpochLogger(log, samples, hp.early_stopping_patience)
    estimator = build_estimator(hp, features, num_batches,
                                [epochs.as_callback(), *_weight_averaging(average_epochs)], rnn)
    tic = time.perf_counter()
    # GluonTS's trainer saves each epoch's parameters in a temporary folder.
    with _writes(model_dir, Path(tempfile.gettempdir())):
        predictor = estimator.train(entries, cache_data=True, shuffle_buffer_length=min(
            plan["training_windows"] * plan["passes"], MAX_SHUFFLE_BUFFER))
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
            modelfolder.write(folder, predictor, hp, features, summary)
        if test_entries is not None:
            # Score the folder as written, so `evaluate` later gives the same figures.
            metrics = backtest.test_scores(modelfolder.load(folder), test_entries, seed=seed)
            summary["data"]["test"] = test_stats.as_dict()
            summary["test_metrics"] = metrics
            modelfolder.write_summary(folder, summary)
            log("test_metrics", metrics)
    return summary
