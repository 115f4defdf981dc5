"""Seeded sample paths from GluonTS's MXNet DeepAR networks.

Each series draws its noise from its own generator (deepar_cli.backends.base.series_seed),
and the network's distribution turns that noise into samples (`SeededOutput`): batching,
chunking, the order of other series and the process that forecasts it change nothing.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from deepar_cli.backends.base import Entry, series_seed
from deepar_cli.backends.mxnet.likelihoods import Likelihood

# Rows (series x samples) the network forecasts at once. The LSTM operator's rounding of a
# row can depend on how many rows a call holds, never on what the others hold: a short batch
# is padded to a whole one, unless the network keeps rows invariant itself
# (acceleration.FastSamplingNetwork, which pads its decoder's calls to sizes it checked).
ROWS_PER_BATCH = 3200


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


class SeededDistribution:
    """A GluonTS distribution whose `sample` draws from per-series generators as its
    likelihood's row says, then goes through the distribution's transforms (e.g. the mean
    scaling) as GluonTS's does."""

    def __init__(self, distribution: Any, likelihood: Likelihood, noise: SeriesNoise) -> None:
        self.distribution = distribution
        self.likelihood = likelihood
        self.noise = noise

    def sample(self, num_samples: Optional[int] = None, dtype: Any = np.float32) -> Any:
        import mxnet as mx
        from gluonts.mx.distribution import TransformedDistribution

        base, transforms = self.distribution, []
        while isinstance(base, TransformedDistribution):
            transforms = list(base.transforms) + transforms
            base = base.base_distribution
        if num_samples is not None:
            raise TypeError("seeded samples are drawn one path per row")
        row = self.likelihood
        if row.standard is not None:
            loc, scale = row.parameters
            noise = self.noise.standard(row.standard, dtype).reshape(getattr(base, loc).shape)
            samples = getattr(base, loc) + getattr(base, scale) * noise
        else:
            params = [getattr(base, f).asnumpy().astype(np.float64) for f in row.parameters]
            samples = mx.nd.array(self.noise.draw(row.draw, *params), dtype=dtype)
        for transform in transforms:
            samples = transform.f(samples)
        return samples

    def __getattr__(self, name: str) -> Any:
        return getattr(self.distribution, name)


class SeededOutput:
    """Wraps a network's DistributionOutput: its distributions sample from `noise`."""

    def __init__(self, output: Any, likelihood: Likelihood, noise: SeriesNoise) -> None:
        self.output = output
        self.likelihood = likelihood
        self.noise = noise

    def distribution(self, distr_args: Any, loc: Any = None, scale: Any = None) -> Any:
        return SeededDistribution(self.output.distribution(distr_args, loc=loc, scale=scale),
                                  self.likelihood, self.noise)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.output, name)


def _batches(entries: Iterable[Entry], size: int) -> Iterator[List[Entry]]:
    batch: List[Entry] = []
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


def sample_paths(predictor: Any, likelihood: Likelihood, entries: Iterable[Entry], *,
                 num_samples: int, seed: int, member: int = 0) -> Iterator[np.ndarray]:
    """`Network.sample_paths` of a GluonTS DeepAR predictor trained with `likelihood`. The
    network must run imperatively (as the backend loads it), since each step's noise is
    drawn in numpy."""
    import mxnet as mx
    from gluonts.mx.batchify import batchify

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
            net.distr_output = SeededOutput(output, likelihood, SeriesNoise(
                generators, num_samples, predictor.prediction_length))
            data = batchify(list(predictor.input_transform(batch, is_train=False)),
                            ctx=predictor.ctx, dtype=predictor.dtype)
            # Bulking off: every decoder step waits on numpy (noise, projection), and the
            # engine's default bulks of imperative operators made forecasts 1.4x slower.
            with mx.Context(predictor.ctx), mx.engine.bulk(0):
                samples = net(*[_pad(data[name], padding)
                                for name in predictor.input_names]).asnumpy()
            yield from samples[:len(batch)]
    finally:
        net.distr_output = output
