"""The MXNet backend: GluonTS's MXNet DeepAR behind deepar_cli.backends.base's interface.

What it writes into a model folder:

    predictor/   GluonTS `Predictor.serialize` output (loadable by plain GluonTS); the
                 backend reads only its weights, prediction_net-0000.params, an MXNet
                 NDArray file (data only)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Sequence

import numpy as np

from deepar_cli.backends.base import Entry, EpochCallback, inside
from deepar_cli.backends.mxnet import sampling
from deepar_cli.backends.mxnet.likelihoods import LIKELIHOODS, Likelihood, likelihood
from deepar_cli.backends.mxnet.training import rebuild_predictor, train_predictor, writes
from deepar_cli.config.hyperparameters import Hyperparameters
from deepar_cli.data.dataset import Features
from deepar_cli.errors import ModelError, reason

WEIGHTS = Path("predictor") / "prediction_net-0000.params"


@dataclass
class MXNetNetwork:
    """A trained GluonTS MXNet DeepAR predictor (a RepresentableBlockPredictor) and the
    likelihood it was trained with."""

    gluonts: Any
    likelihood: Likelihood

    @property
    def prediction_length(self) -> int:
        return int(self.gluonts.prediction_length)

    def sample_paths(self, entries: Iterable[Entry], *, num_samples: int, seed: int,
                     member: int = 0) -> Iterator[np.ndarray]:
        return sampling.sample_paths(self.gluonts, self.likelihood, entries,
                                     num_samples=num_samples, seed=seed, member=member)

    def write(self, folder: Path) -> None:
        predictor_dir = folder / "predictor"
        predictor_dir.mkdir(parents=True, exist_ok=True)
        # GluonTS warns that the network structure is pickled per version; model.json
        # records the versions.
        logging.getLogger().disabled = True
        try:
            with writes():
                self.gluonts.serialize(predictor_dir)
        finally:
            logging.getLogger().disabled = False


class MXNetBackend:
    """GluonTS's MXNet DeepAR, SageMaker's own framework."""

    name = "mxnet"
    likelihoods = tuple(LIKELIHOODS)
    files = ("predictor",)

    def versions(self) -> Dict[str, str]:
        import gluonts
        import mxnet

        return {"gluonts": gluonts.__version__, "mxnet": mxnet.__version__}

    def train(self, entries: Sequence[Entry], hp: Hyperparameters, features: Features, *,
              batches_per_epoch: int, shuffle_buffer: int, seed: int, rnn: str,
              average_epochs: int, epochs: EpochCallback) -> MXNetNetwork:
        predictor = train_predictor(entries, hp, features, batches_per_epoch=batches_per_epoch,
                                    shuffle_buffer=shuffle_buffer, seed=seed, rnn=rnn,
                                    average_epochs=average_epochs, epochs=epochs)
        return MXNetNetwork(predictor, likelihood(hp.likelihood))

    def load(self, folder: Path, hp: Hyperparameters, features: Features, *,
             accelerated: bool = True) -> MXNetNetwork:
        if not (folder / WEIGHTS).exists():
            raise ModelError(f"{folder}: not a deepar-cli model folder ({WEIGHTS} is missing)")
        try:
            predictor = rebuild_predictor(inside(folder, str(WEIGHTS), "the weights file"), hp,
                                          features)
        except ModelError:
            raise
        except Exception as exc:  # MXNet raises several kinds for a file that does not fit
            raise ModelError(f"{folder}: the weights in {WEIGHTS} cannot be loaded "
                             f"({reason(exc)})") from None
        if accelerated:
            from deepar_cli.backends.mxnet.acceleration import accelerate

            accelerate(predictor)
        return MXNetNetwork(predictor, likelihood(hp.likelihood))


BACKEND = MXNetBackend()
