"""Training GluonTS's MXNet DeepAR with SageMaker's hyperparameters, and rebuilding a
trained network from its hyperparameters and weights."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

from deepar_cli.backends.base import Entry, EpochCallback, WeightsNotWritten
from deepar_cli.backends.mxnet.likelihoods import likelihood
from deepar_cli.backends.mxnet.seeding import seed_everything
from deepar_cli.config.hyperparameters import Hyperparameters
from deepar_cli.data.dataset import Features
from deepar_cli.data.windows import pass_sampler
from deepar_cli.errors import reason


def build_estimator(hp: Hyperparameters, features: Features, num_batches: int,
                    callbacks: List[Any], rnn: str = "fused") -> Any:
    """GluonTS's MXNet DeepAREstimator configured from SageMaker's hyperparameters.

    `rnn="fused"` trains the same network with fused LSTM kernels, imperatively (see
    deepar_cli.backends.mxnet.acceleration); "gluonts" is GluonTS's hybridized cell-by-cell
    unroll.
    """
    from gluonts.mx import DeepAREstimator, Trainer

    from deepar_cli.backends.mxnet.acceleration import fuse

    class FusedDeepAREstimator(DeepAREstimator):
        def create_training_network(self) -> Any:
            return fuse(super().create_training_network())

    use_cat = features.cardinality is not None
    row = likelihood(hp.likelihood)
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
        distr_output=row.distribution_output(),
        scaling=row.scaling,
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
    if average_epochs == 0:
        return []
    from gluonts.mx.trainer.model_averaging import ModelAveraging, SelectNBestMean

    return [ModelAveraging(avg_strategy=SelectNBestMean(
        num_models=average_epochs, metric="epoch_no", maximize=True))]


def _epoch_callback(epochs: EpochCallback) -> Any:
    """`epochs` as a GluonTS trainer callback."""
    from gluonts.mx.trainer.callback import Callback

    class _Callback(Callback):
        def on_train_epoch_start(self, training_network: Any) -> None:
            epochs.epoch_start()

        def on_epoch_end(self, epoch_no: int, epoch_loss: float, **kwargs: Any) -> bool:
            return epochs.epoch_end(epoch_no + 1, float(epoch_loss))

    return _Callback()


@contextlib.contextmanager
def writes(where: Optional[Path] = None) -> Iterator[None]:
    """MXNet reports a write the OS refused (a full disk, a file size limit) as an
    MXNetError with a C++ traceback: make it WeightsNotWritten, at `where` if that is not
    the model folder."""
    from mxnet.base import MXNetError

    try:
        yield
    except MXNetError as exc:
        if "FileStream.Write incomplete" not in str(exc):
            raise
        raise WeightsNotWritten(reason(exc), where) from None


def train_predictor(entries: Sequence[Entry], hp: Hyperparameters, features: Features, *,
                    batches_per_epoch: int, shuffle_buffer: int, seed: int, rnn: str,
                    average_epochs: int, epochs: EpochCallback) -> Any:
    """`Backend.train` for MXNet: the trained GluonTS predictor."""
    seed_everything(seed)
    estimator = build_estimator(hp, features, batches_per_epoch,
                                [_epoch_callback(epochs), *_weight_averaging(average_epochs)],
                                rnn)
    # GluonTS's trainer saves each epoch's parameters in a temporary folder.
    with writes(Path(tempfile.gettempdir())):
        return estimator.train(entries, cache_data=True, shuffle_buffer_length=shuffle_buffer)
