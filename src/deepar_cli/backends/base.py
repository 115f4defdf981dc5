"""The backend interface: what a deep-learning framework does for deepar-cli, typed.

A backend trains a network from resolved hyperparameters and GluonTS data entries, writes
its weights into a model folder and loads them back, and draws seeded sample paths;
everything else (formats, hyperparameters, epochs, test scores, quantiles, ensembles,
serving, tuning) is shared, and reaches the framework through these protocols only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional, Protocol, Sequence, Tuple

import numpy as np

from deepar_cli.config.hyperparameters import Hyperparameters
from deepar_cli.data.dataset import Features
from deepar_cli.errors import ModelError

# A GluonTS data entry: "start" (a pandas Period), "target", and the optional
# "feat_static_cat" and "feat_dynamic_real".
Entry = Dict[str, Any]


class EpochCallback(Protocol):
    """What a backend's training loop reports at each epoch (deepar_cli.training's
    EpochLogger logs it and decides on early stopping)."""

    def epoch_start(self) -> None:
        """An epoch begins."""

    def epoch_end(self, epoch: int, loss: float) -> bool:
        """Epoch `epoch` (counted from 1) ended with mean loss `loss`; False stops training."""


class Network(Protocol):
    """A trained network, ready to forecast: what a model folder's weights load into."""

    @property
    def prediction_length(self) -> int:
        """The points each sample path forecasts."""

    def sample_paths(self, entries: Iterable[Entry], *, num_samples: int, seed: int,
                     member: int = 0) -> Iterator[np.ndarray]:
        """Sample paths of the points after each entry's target, in order: one float32
        array (num_samples, prediction_length) per entry. Streams: entries are read a batch
        at a time.

        Each series draws from its own generator, seeded by `series_seed(seed, entry,
        member)`, so that its paths depend on the network, the series, the seed and the
        ensemble member only, never on the batch, the other series or the process."""

    def write(self, folder: Path) -> None:
        """Write the weights, data only, into the model folder `folder` (the caller makes it
        atomic); raise WeightsNotWritten where the OS refused a write."""


class Backend(Protocol):
    """A deep-learning framework behind deepar-cli, registered in deepar_cli.backends."""

    name: str  # as model.json's "backend" names it
    likelihoods: Tuple[str, ...]  # the SageMaker likelihoods it implements
    files: Tuple[str, ...]  # what its `Network.write` puts into a model folder

    def versions(self) -> Dict[str, str]:
        """The versions of the libraries it runs on, by name (model.json's "versions")."""

    def train(self, entries: Sequence[Entry], hp: Hyperparameters, features: Features, *,
              batches_per_epoch: int, shuffle_buffer: int, seed: int, rnn: str,
              average_epochs: int, epochs: EpochCallback) -> Network:
        """Train a network of `hp` on the entries, seeded by `seed`: `hp.epochs` epochs of
        `batches_per_epoch` mini-batches (windows drawn by deepar_cli.data.windows'
        sampler, shuffled in a buffer of `shuffle_buffer`), reporting each to `epochs`.

        The network keeps the lowest-loss epoch's weights (SageMaker's rule), or with
        `average_epochs` N > 0 the mean of the last N epochs' weights. `rnn` names the
        backend's LSTM implementation. Raises WeightsNotWritten where the OS refused a
        write (of a checkpoint, say)."""

    def load(self, folder: Path, hp: Hyperparameters, features: Features, *,
             accelerated: bool = True) -> Network:
        """The network `Network.write` wrote into `folder`, rebuilt from `hp` and `features`
        with only its weights read from the folder: nothing the folder names is imported or
        called. `accelerated`: with the backend's faster sampling, where it has one (the
        same forecasts). Raises ModelError for weights missing or unfit for the network."""


class WeightsNotWritten(Exception):
    """The OS refused a write of a network's weights (a full disk, a file size limit) at
    `where`, if not in the model folder: the training flow makes it an OutputError naming
    the model folder."""

    def __init__(self, reason: str, where: Optional[Path] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where


def series_seed(seed: int, entry: Entry, member: Optional[int] = None
                ) -> np.random.SeedSequence:
    """The seed of one series' noise: `seed` and a digest of what the network reads. Member
    k > 0 of an ensemble draws its own noise (a spawned sequence); member 0 draws what its
    model alone would."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(entry["start"]).encode())
    for key in ("target", "feat_static_cat", "feat_dynamic_real"):
        if key in entry:
            values = np.ascontiguousarray(entry[key], dtype=np.float32)
            digest.update(key.encode() + str(values.shape).encode() + values.tobytes())
    words = np.frombuffer(digest.digest(), dtype=np.uint32).tolist()
    spawn_key = (member,) if member else ()
    return np.random.SeedSequence([seed % 2**64, *words], spawn_key=spawn_key)


def inside(folder: Path, name: str, what: str) -> Path:
    """`folder / name`, resolved, if it lies strictly inside the model folder `folder`
    (links followed); else ModelError naming it as `what`."""
    root, path = folder.resolve(), (folder / name).resolve()
    if root not in path.parents:
        raise ModelError(f"{folder}: {what} {name!r} lies outside the model folder")
    return path
