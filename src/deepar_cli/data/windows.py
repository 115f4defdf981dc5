"""Training windows: what one pass over the data holds, and the sampler that draws it.

A training window is a split point in a series: the model sees the points before it (as
much as `context_length`, padded when the series is shorter) and learns the next
`prediction_length`. One pass reads every series in `prediction_length` strides from a
random offset, so each observation is a forecast target once per pass, and many short
series and one long series alike are read whole.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Dict, Sequence

import numpy as np
from gluonts.transform.sampler import InstanceSampler

if TYPE_CHECKING:
    from deepar_cli.config.hyperparameters import Hyperparameters


# Like SageMaker ("Small number of time series. Doing 2 passes over dataset ... per
# epoch"), a small data set is read several times per epoch: one long series holds a pass
# of fewer windows than one mini-batch, and one batch an epoch leaves the model untrained.
MIN_BATCHES_PER_EPOCH = 20
# Windows held at once to shuffle a pass (each is a few kB).
MAX_SHUFFLE_BUFFER = 4096


class PassSampler(InstanceSampler):
    """Split points every `stride` steps from a random offset: one pass over a series."""

    stride: int

    def __call__(self, ts: np.ndarray) -> np.ndarray:
        first, last = self._get_bounds(ts)
        if first > last:  # shorter than the forecast horizon: nothing to learn from
            return np.array([], dtype=int)
        points = np.arange(last - np.random.randint(self.stride), first - 1, -self.stride)
        return points[::-1] if points.size else np.random.randint(first, last + 1, size=1)


def pass_sampler(hp: Hyperparameters) -> PassSampler:
    return PassSampler(stride=hp.prediction_length, min_future=hp.prediction_length)


def training_windows(lengths: Sequence[int], hp: Hyperparameters) -> int:
    """The windows PassSampler draws from these series in one pass (on average)."""
    per_series = [(n - hp.prediction_length + 1) / hp.prediction_length for n in lengths]
    return math.ceil(sum(max(1.0, w) for w in per_series if w > 0))


def epoch_plan(lengths: Sequence[int], hp: Hyperparameters) -> Dict[str, int]:
    """SageMaker's epoch: one pass over the training windows, or as many passes as make
    MIN_BATCHES_PER_EPOCH batches when one pass is smaller than that."""
    windows = training_windows(lengths, hp)
    wanted = MIN_BATCHES_PER_EPOCH * hp.mini_batch_size
    passes = 1 if windows >= wanted else math.ceil(wanted / windows)
    return {"training_windows": windows, "passes": passes,
            "batches_per_epoch": math.ceil(passes * windows / hp.mini_batch_size)}
