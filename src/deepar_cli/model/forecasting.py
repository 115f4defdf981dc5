"""The one forecast path: sample paths per series, then means and quantiles from samples.

Every command that forecasts (train's test scores, evaluate, plot, predict, serve, tune,
the benchmark) draws through `sample_paths` and summarizes through `summarize`, so the
same model, series and seed give the same numbers, bit for bit, everywhere.

A series' forecast depends on the model, the series and the seed only: the backend's
network draws each series' noise from its own generator, seeded by the seed and a digest
of the series' content (deepar_cli.backends.base.series_seed). Batching, chunking, the
order of other series and the process that forecasts it change nothing, so the work can
be split in any way and gives the same bytes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from deepar_cli.backends.base import Entry, Network
from deepar_cli.data.holdout import drop_last
from deepar_cli.errors import UsageError

# The seed of training and of forecasts when none is given.
DEFAULT_SEED = 42
MAX_NUM_SAMPLES = 10_000


# --------------------------------------------------------------------------- summaries


def sample_mean(samples: np.ndarray) -> np.ndarray:
    """The mean forecast: the mean over sample paths (axis 0), in the samples' dtype."""
    return samples.mean(axis=0, dtype=samples.dtype)


def sample_quantiles(samples: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Quantiles over sample paths, linear between order statistics (numpy's default,
    Hyndman and Fan's type 7): (len(levels), prediction_length), in the samples' dtype.

    Each level is computed on its own from the sorted samples, so a level's values do not
    depend on which other levels are asked for.
    """
    return sorted_quantiles(np.sort(samples, axis=0), levels)


def sorted_quantiles(ordered: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """`sample_quantiles` of samples already sorted along axis 0 (any trailing shape)."""
    last = ordered.shape[0] - 1
    rows = []
    for level in levels:
        position = float(level) * last
        low = int(np.floor(position))
        high = min(low + 1, last)
        fraction = ordered.dtype.type(position - low)
        rows.append(ordered[low] + (ordered[high] - ordered[low]) * fraction)
    return np.stack(rows) if rows else np.empty((0, *ordered.shape[1:]), ordered.dtype)


@dataclass(frozen=True)
class Summary:
    """Mean and quantiles of one series' sample paths."""

    mean: np.ndarray
    quantiles: Dict[float, np.ndarray]


def summarize(samples: np.ndarray, levels: Sequence[float]) -> Summary:
    """The mean and the quantiles at `levels` of (num_samples, prediction_length) samples."""
    return Summary(sample_mean(samples),
                   dict(zip(levels, sample_quantiles(samples, levels))))


def forecast_class() -> type:
    """GluonTS's SampleForecast, with its mean and quantiles taken by this module, so the
    GluonTS Evaluator scores the very quantiles `predict` answers."""
    from gluonts.model.forecast import Quantile, SampleForecast

    class Forecast(SampleForecast):
        @property
        def mean(self) -> np.ndarray:
            return sample_mean(self.samples)

        def quantile(self, q: Any) -> np.ndarray:
            return sample_quantiles(self.samples, [Quantile.parse(q).value])[0]

    return Forecast


def scale_spread(samples: np.ndarray, spread: float) -> np.ndarray:
    """Sample paths with each step's distance from its median scaled by `spread` (tune's
    calibration); the median, and so the p50, stays where it was."""
    if spread == 1.0:
        return samples
    median = np.median(samples, axis=0)
    return median + samples.dtype.type(spread) * (samples - median)


@dataclass(frozen=True)
class Ensemble:
    """One or more networks forecasting as one, with their quantiles averaged (how
    AutoGluon's ensembles combine forecasts), then the spread calibrated.

    Each member draws all `num_samples` paths from its own noise (member 0 what its model
    alone draws). Path i of the ensemble is, at each step, the mean of the members' i-th
    smallest values (weighted, where tune's ensemble selection weighed them), so its
    quantiles are the members' quantiles averaged: unlike pooling the
    paths, this does not widen the forecast by the members' disagreement. With two or more
    members the paths are quantile paths, not trajectories. `spread` then scales each step's
    paths about their median (`scale_spread`).
    """

    members: Tuple[Network, ...]
    spread: float = 1.0
    # The members' weights in the average (tune's ensemble selection); None: equal.
    weights: Optional[Tuple[float, ...]] = None

    @property
    def prediction_length(self) -> int:
        return self.members[0].prediction_length

    def combine(self, samples: Sequence[np.ndarray]) -> np.ndarray:
        """One series' paths from each member's, (num_samples, prediction_length)."""
        if len(samples) == 1:
            paths = samples[0]
        elif self.weights is None:
            paths = np.sort(np.stack(samples), axis=1).mean(axis=0, dtype=samples[0].dtype)
        else:
            paths = np.average(np.sort(np.stack(samples), axis=1), axis=0,
                               weights=self.weights).astype(samples[0].dtype)
        return scale_spread(paths, self.spread)


# A model's forecaster: one backend's network, or an ensemble of them.
Forecaster = Union[Network, Ensemble]


def sample_paths(predictor: Forecaster, entries: Iterable[Entry], *, num_samples: int,
                 seed: int) -> Iterator[Any]:
    """Forecast GluonTS entries: one `Forecast` (samples: (num_samples, prediction_length),
    float32) per entry, in order, starting after the entry's target. Streams: entries are
    read a batch at a time."""
    if not 1 <= num_samples <= MAX_NUM_SAMPLES:
        raise UsageError(f"the number of samples must be in [1, {MAX_NUM_SAMPLES}], "
                         f"got {num_samples}")
    forecast = forecast_class()
    ensemble = predictor if isinstance(predictor, Ensemble) else None
    members = ensemble.members if ensemble is not None else (predictor,)
    entries, *streams = itertools.tee(entries, len(members) + 1)
    drawn = [member.sample_paths(stream, num_samples=num_samples, seed=seed, member=k)
             for k, (member, stream) in enumerate(zip(members, streams))]
    for entry, *parts in zip(entries, *drawn):
        samples = parts[0] if ensemble is None else ensemble.combine(parts)
        yield forecast(samples, start_date=entry["start"] + entry["target"].shape[-1])


# --------------------------------------------------------------------------- held-out points


def hold_out(entry: Entry, points: int) -> Entry:
    """The entry without its last `points` target values (features keep their length, as a
    forecast needs them over the horizon)."""
    return drop_last(entry, points, cut_features=False)


def truth_frame(entry: Entry) -> pd.DataFrame:
    """The whole target as the GluonTS Evaluator wants it: a frame on a PeriodIndex."""
    start = entry["start"]
    index = pd.period_range(start, periods=entry["target"].size, freq=start.freq)
    return pd.DataFrame(entry["target"], index=index)


def forecast_held_out(predictor: Forecaster, entries: Sequence[Entry], points: int, *,
                      num_samples: int, seed: int) -> Iterator[Tuple[Entry, Any]]:
    """(entry, forecast of its last `points` values from the rest) for each entry."""
    cut = (hold_out(e, points) for e in entries)
    return zip(entries, sample_paths(predictor, cut, num_samples=num_samples, seed=seed))
