"""The one forecast path: sample paths per series, then means and quantiles from samples.

Every command that forecasts (train's test scores, evaluate, plot, predict, serve, tune,
the benchmark) draws through `sample_paths` and summarizes through `summarize`, so the
same model, series and seed give the same numbers, bit for bit, everywhere.

A series' forecast depends on the model, the series and the seed only: each series draws
its noise from its own generator, seeded by the seed and a digest of the series' content
(start, target, features), and the network's distribution turns that noise into samples
(`SeededOutput`). Batching, chunking, the order of other series and the process that
forecasts it change nothing, so the work can be split in any way and gives the same bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from deepar_cli.data.holdout import drop_last
from deepar_cli.errors import UsageError

# Rows (series x samples) the network forecasts at once. The LSTM operator's rounding of a
# row can depend on how many rows a call holds, never on what the others hold: a short batch
# is padded to a whole one, unless the network keeps rows invariant itself
# (acceleration.FastSamplingNetwork, which pads its decoder's calls to sizes it checked).
ROWS_PER_BATCH = 3200
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


# --------------------------------------------------------------------------- noise


def series_seed(seed: int, entry: Dict[str, Any], member: Optional[int] = None
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


class SeriesNoise:
    """One generator per series of a batch; draws `samples` values per series and step.

    The network repeats each series `samples` times along the batch axis (GluonTS's
    layout), so rows [i * samples, (i + 1) * samples) belong to series i.
    """

    def __init__(self, generators: List[np.random.Generator], samples: int, horizon: int
                 ) -> None:
        self.generators = generators
        self.samples = samples
        self.horizon = horizon
        self.step = 0
        self._standard: Dict[str, Any] = {}

    def runs(self) -> Iterator[Tuple[np.random.Generator, slice]]:
        """(generator, its rows) for each run of consecutive series sharing a generator:
        one per series, except the padding of a short batch, which shares one."""
        first = 0
        for index, generator in enumerate(self.generators):
            if index + 1 == len(self.generators) or self.generators[index + 1] is not generator:
                yield generator, slice(first * self.samples, (index + 1) * self.samples)
                first = index + 1

    def draw(self, sampler: Any, *params: np.ndarray) -> np.ndarray:
        """`sampler(generator, *params_of_its_rows)` for each run of series, stacked back."""
        shape = params[0].shape
        flat = [p.reshape(-1) for p in params]
        out = [sampler(g, *(p[rows] for p in flat)) for g, rows in self.runs()]
        return np.concatenate(out).reshape(shape)

    def standard(self, kind: str, dtype: Any) -> Any:
        """The next step's standard `kind` noise (e.g. "standard_normal"), (rows, 1).

        The whole horizon is drawn at the first step, each series' (horizon, samples) in
        one call: the same numbers, in the same order, as one call per step, without
        waiting on the network at every step."""
        import mxnet as mx

        if kind not in self._standard:
            noise = np.concatenate([  # (series, horizon, samples)
                getattr(g, kind)(size=((rows.stop - rows.start) // self.samples,
                                       self.horizon, self.samples))
                for g, rows in self.runs()])
            self._standard[kind] = mx.nd.array(
                noise.transpose(0, 2, 1).reshape(-1, self.horizon), dtype=dtype)
        column = self._standard[kind].slice_axis(axis=1, begin=self.step, end=self.step + 1)
        self.step += 1
        return column


# Location-scale families: samples are loc + scale * standard noise, computed in MXNet.
_STANDARD = {
    "Gaussian": ("standard_normal", ("mu", "sigma")),
    "Laplace": ("laplace", ("mu", "b")),
}
# The others: base distribution -> (parameter names, draw(generator, *one series' params)),
# drawn in numpy step by step. Each matches the distribution GluonTS samples.
_SAMPLERS = {
    "StudentT": (("mu", "sigma", "nu"), lambda g, mu, sigma, nu: mu + sigma * g.standard_t(nu)),
    "NegativeBinomial": (("mu", "alpha"),
                         lambda g, mu, alpha: g.poisson(g.gamma(1.0 / alpha, alpha * mu))),
    "Beta": (("alpha", "beta"), lambda g, a, b: g.beta(a, b)),
}


class SeededDistribution:
    """A GluonTS distribution whose `sample` draws from per-series generators, then goes
    through the distribution's transforms (e.g. the mean scaling) as GluonTS's does."""

    def __init__(self, distribution: Any, noise: SeriesNoise) -> None:
        self.distribution = distribution
        self.noise = noise

    def sample(self, num_samples: Optional[int] = None, dtype: Any = np.float32) -> Any:
        import mxnet as mx
        from gluonts.mx.distribution import TransformedDistribution

        base, transforms = self.distribution, []
        while isinstance(base, TransformedDistribution):
            transforms = list(base.transforms) + transforms
            base = base.base_distribution
        name = type(base).__name__
        if num_samples is not None or name not in {**_STANDARD, **_SAMPLERS}:
            raise TypeError(f"cannot draw seeded samples from {name}")
        if name in _STANDARD:
            kind, (loc, scale) = _STANDARD[name]
            noise = self.noise.standard(kind, dtype).reshape(getattr(base, loc).shape)
            samples = getattr(base, loc) + getattr(base, scale) * noise
        else:
            fields, sampler = _SAMPLERS[name]
            params = [getattr(base, f).asnumpy().astype(np.float64) for f in fields]
            samples = mx.nd.array(self.noise.draw(sampler, *params), dtype=dtype)
        for transform in transforms:
            samples = transform.f(samples)
        return samples

    def __getattr__(self, name: str) -> Any:
        return getattr(self.distribution, name)


class SeededOutput:
    """Wraps a network's DistributionOutput: its distributions sample from `noise`."""

    def __init__(self, output: Any, noise: SeriesNoise) -> None:
        self.output = output
        self.noise = noise

    def distribution(self, distr_args: Any, loc: Any = None, scale: Any = None) -> Any:
        return SeededDistribution(self.output.distribution(distr_args, loc=loc, scale=scale),
                                  self.noise)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.output, name)


# --------------------------------------------------------------------------- sampling


def _batches(entries: Iterable[Dict[str, Any]], size: int
             ) -> Iterator[List[Dict[str, Any]]]:
    batch: List[Dict[str, Any]] = []
    for entry in entries:
        batch.append(entry)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _pad(array: Any, rows: int) -> Any:
    """`array` with its last row repeated `rows` more times: what transforming that many
    copies of the last entry gives, without transforming them (a short batch of one series
    and one sample would otherwise transform 3,199 copies)."""
    if not rows:
        return array
    import mxnet as mx

    return mx.nd.concat(array, array[-1:].repeat(repeats=rows, axis=0), dim=0)


def scale_spread(samples: np.ndarray, spread: float) -> np.ndarray:
    """Sample paths with each step's distance from its median scaled by `spread` (tune's
    calibration); the median, and so the p50, stays where it was."""
    if spread == 1.0:
        return samples
    median = np.median(samples, axis=0)
    return median + samples.dtype.type(spread) * (samples - median)


@dataclass(frozen=True)
class Ensemble:
    """One or more predictors forecasting as one, with their quantiles averaged (how
    AutoGluon's ensembles combine forecasts), then the spread calibrated.

    Each member draws all `num_samples` paths from its own noise (member 0 what its model
    alone draws). Path i of the ensemble is, at each step, the mean of the members' i-th
    smallest values (weighted, where tune's ensemble selection weighed them), so its
    quantiles are the members' quantiles averaged: unlike pooling the
    paths, this does not widen the forecast by the members' disagreement. With two or more
    members the paths are quantile paths, not trajectories. `spread` then scales each step's
    paths about their median (`scale_spread`).
    """

    members: Tuple[Any, ...]
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


def sample_paths(predictor: Any, entries: Iterable[Dict[str, Any]], *, num_samples: int,
                 seed: int) -> Iterator[Any]:
    """Forecast GluonTS entries: one `Forecast` (samples: (num_samples, prediction_length),
    float32) per entry, in order. Streams: entries are read a batch at a time.

    `predictor` is a GluonTS DeepAR predictor or an `Ensemble` of them. The network must
    run imperatively (as `modelfolder.load` leaves it), since each step's noise is drawn in
    numpy.
    """
    if not 1 <= num_samples <= MAX_NUM_SAMPLES:
        raise UsageError(f"the number of samples must be in [1, {MAX_NUM_SAMPLES}], "
                         f"got {num_samples}")
    if isinstance(predictor, Ensemble):
        yield from _mixture(predictor, entries, num_samples, seed)
    else:
        yield from _sample_paths(predictor, entries, num_samples, seed)


def _mixture(ensemble: Ensemble, entries: Iterable[Dict[str, Any]], num_samples: int,
             seed: int) -> Iterator[Any]:
    forecast = forecast_class()
    for batch in _batches(entries, max(1, ROWS_PER_BATCH // num_samples)):
        streams = [_sample_paths(member, batch, num_samples, seed, member=k)
                   for k, member in enumerate(ensemble.members)]
        for parts in zip(*streams):
            yield forecast(ensemble.combine([part.samples for part in parts]),
                           start_date=parts[0].start_date)


def _sample_paths(predictor: Any, entries: Iterable[Dict[str, Any]], num_samples: int,
                  seed: int, member: Optional[int] = None) -> Iterator[Any]:
    import mxnet as mx
    from gluonts.dataset.field_names import FieldName
    from gluonts.mx.batchify import batchify

    forecast = forecast_class()
    net = predictor.prediction_net
    output = net.distr_output
    per_batch = max(1, ROWS_PER_BATCH // num_samples)
    pads = not getattr(net, "rows_invariant", False)
    try:
        net.num_parallel_samples = num_samples
        for batch in _batches(entries, per_batch):
            generators = [np.random.Generator(np.random.PCG64(series_seed(seed, e, member)))
                          for e in batch]
            padding = per_batch - len(batch) if pads else 0  # copies of the last series
            generators += [np.random.Generator(np.random.PCG64(0))] * padding  # one, shared
            net.distr_output = SeededOutput(output, SeriesNoise(generators, num_samples,
                                                                predictor.prediction_length))
            data = batchify(list(predictor.input_transform(batch, is_train=False)),
                            ctx=predictor.ctx, dtype=predictor.dtype)
            # Bulking off: every decoder step waits on numpy (noise, projection), and the
            # engine's default bulks of imperative operators made forecasts 1.4x slower.
            with mx.Context(predictor.ctx), mx.engine.bulk(0):
                samples = net(*[_pad(data[name], padding)
                                for name in predictor.input_names]).asnumpy()
            for i, paths in enumerate(samples[:len(batch)]):
                yield forecast(paths, start_date=data[FieldName.FORECAST_START][i])
    finally:
        net.distr_output = output


# --------------------------------------------------------------------------- held-out points


def hold_out(entry: Dict[str, Any], points: int) -> Dict[str, Any]:
    """The entry without its last `points` target values (features keep their length, as a
    forecast needs them over the horizon)."""
    return drop_last(entry, points, cut_features=False)


def truth_frame(entry: Dict[str, Any]) -> pd.DataFrame:
    """The whole target as the GluonTS Evaluator wants it: a frame on a PeriodIndex."""
    start = entry["start"]
    index = pd.period_range(start, periods=entry["target"].size, freq=start.freq)
    return pd.DataFrame(entry["target"], index=index)


def forecast_held_out(predictor: Any, entries: Sequence[Dict[str, Any]], points: int, *,
                      num_samples: int, seed: int) -> Iterator[Tuple[Dict[str, Any], Any]]:
    """(entry, forecast of its last `points` values from the rest) for each entry."""
    cut = (hold_out(e, points) for e in entries)
    return zip(entries, sample_paths(predictor, cut, num_samples=num_samples, seed=seed))
