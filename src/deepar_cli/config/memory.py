"""Memory: what a training or a forecast will need, what the machine has, and the refusal.

The estimates are upper bounds on the peak resident memory of a `deepar-cli` process,
counted from the tensors that dominate it (float32, 4 bytes each):

- training: a mini-batch of windows, mini_batch_size x (context_length + max lag +
  prediction_length) x (target, observed, padding and time features), and the shuffle
  buffer of such windows; the LSTM's inputs (lags, features, static features) and its
  activations, mini_batch_size x (context_length + prediction_length) x num_cells x
  num_layers x (4 gates, cell, hidden), kept for backprop with their gradients; the
  parameters (the embedding table sum(cardinality) x embedding_dimension among them) with
  their gradients, Adam's two moments and the kept best epoch; the cached training
  entries (every observation with its features); and the test scoring's forecast.
- forecast: the sampling decoder's rows, num_samples x the series of a batch
  (forecasting.ROWS_PER_BATCH), each holding its inputs over the horizon and its history
  (context_length + max lag + prediction_length), the horizon's noise and samples; then
  the predictions of a request held until answered, with their JSON (`samples` hold
  num_samples x prediction_length values per series).

Calibration (2026-12-03, docs/memory-calibration.md): the peak RSS (GNU time) of `train`
at seven settings, from the notebook's (415 MiB) to context_length 1000 x mini_batch_size
512 x num_cells 80 (6.75 GiB), and of `predict` at five, num_samples 100-10000, on a 2-core
x86-64 machine with MXNet 1.9.1 (CPU) and GluonTS 0.17. Each estimate was 1.15-1.6 times
the measured peak.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from deepar_cli.config.hyperparameters import Hyperparameters
from deepar_cli.errors import HyperparameterError, UsageError

# The override: `--max-memory` sets it, so that serve's workers and tune's trials see it.
MAX_MEMORY_ENV = "DEEPAR_MAX_MEMORY"
FLOAT = 4
# Resident memory of a process that imported MXNet, GluonTS and pandas and ran a step.
BASE_BYTES = 400 * 2**20
# Per float of each term (bytes per float x the copies MXNet and numpy hold at the peak).
BATCH_COPIES = 4  # the numpy batch, its MXNet copy, the sliced and concatenated views
INPUT_COPIES = 4  # lags, scaled lags, the concatenated inputs, their gradients
LSTM_COPIES = 4  # activations kept for backprop, their gradients, the fused kernel's
# workspaces (measured: 80 bytes a batch x step x cell x layer)
PARAMETER_COPIES = 6  # weights, gradients, Adam's mean and variance, best and averaged
CACHE_COPIES = 3  # the entries, their transformed cache, the features stacked
DECODER_COPIES = 3  # the decoder's repeated inputs and the steps' outputs around them
JSON_BYTES = 12  # a float32 value written by orjson, with its comma (measured: 10.3)
SHUFFLE_WINDOWS = 4096  # windows.MAX_SHUFFLE_BUFFER
ROWS_PER_BATCH = 3200  # forecasting.ROWS_PER_BATCH
GATES = 6  # an LSTM step keeps 4 gates, the cell and the hidden state
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2**63
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


# --------------------------------------------------------------------------- sizes


def parse_size(text: str) -> int:
    """ "8G", "500M", "1.5T", "123456" (bytes) -> bytes; units are binary (G = GiB)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if not match or float(match[1]) <= 0:
        raise UsageError(f'cannot read memory size "{text}"; give a size like "8G" or "500M"')
    return int(float(match[1]) * _UNITS[match[2].upper()])


def show_size(size: float) -> str:
    """Bytes for a message: "310 GiB", "22.1 GiB", "512 MiB"."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            value = size / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{size / 2**10:.3g} KiB" if size >= 2**10 else f"{size:.0f} bytes"


# --------------------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Available:
    """The memory a process may use, and where that figure comes from."""

    bytes: int
    source: str


def meminfo_available(meminfo: Path = Path("/proc/meminfo")) -> Optional[int]:
    """MemAvailable from /proc/meminfo, in bytes; None where there is no such line."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    match = re.search(r"^MemAvailable:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match[1]) * 1024 if match else None


@functools.lru_cache(maxsize=None)
def cgroup_limit(proc_cgroup: Path = Path("/proc/self/cgroup"),
                 root: Path = Path("/sys/fs/cgroup")) -> Optional[int]:
    """The smallest memory limit over this process's cgroup and its parents (v2
    memory.max, v1 memory.limit_in_bytes), in bytes; None where nothing is limited.

    A container often mounts its own cgroup as the root, so the root's file counts too.
    Read once a process (about 1 ms; serve checks every request)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    files: List[Path] = []
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "":
            base, name = root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = root / controllers, "memory.limit_in_bytes"
        else:
            continue
        folder = Path(path)
        files += [base / ancestor.relative_to("/") / name
                  for ancestor in (folder, *folder.parents) if ancestor.is_absolute()]
    limits = [value for value in map(_limit_value, files) if value is not None]
    return min(limits) if limits else None


def _limit_value(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():  # "max": no limit
        return None
    value = int(text)
    return value if value < UNLIMITED else None


def available(environ: Optional[Dict[str, str]] = None,
              meminfo: Path = Path("/proc/meminfo"),
              proc_cgroup: Path = Path("/proc/self/cgroup"),
              root: Path = Path("/sys/fs/cgroup")) -> Optional[Available]:
    """The override (--max-memory, $DEEPAR_MAX_MEMORY) if set, else the smaller of the
    cgroup's limit and MemAvailable; None where neither can be read (nothing is refused)."""
    environ = os.environ if environ is None else environ
    override = environ.get(MAX_MEMORY_ENV)
    if override:
        return Available(parse_size(override), "--max-memory")
    found = [(value, source) for value, source in (
        (cgroup_limit(proc_cgroup, root), "the cgroup's memory limit"),
        (meminfo_available(meminfo), "MemAvailable")) if value is not None]
    if not found:
        return None
    value, source = min(found)
    return Available(value, source)


# --------------------------------------------------------------------------- estimates


@functools.lru_cache(maxsize=None)
def _frequency_features(freq: str) -> Tuple[int, int, int]:
    """GluonTS's lags (how many, the largest) and time features for a frequency; cached,
    since serve checks every request (2 ms uncached)."""
    from gluonts.time_feature import get_lags_for_frequency, time_features_from_frequency_str

    lags = get_lags_for_frequency(freq)
    return len(lags), max(lags), len(time_features_from_frequency_str(freq))


@dataclass(frozen=True)
class Shape:
    """What the estimates read of the model: the hyperparameters and features that size
    its tensors."""

    context_length: int
    prediction_length: int
    num_cells: int
    num_layers: int
    embedding_dimension: int
    cardinality: Tuple[int, ...]  # () without `cat`
    num_dynamic_feat: int
    num_lags: int
    max_lag: int
    num_time_features: int

    @classmethod
    def of(cls, hp: Hyperparameters, cardinality: Optional[Sequence[int]],
           num_dynamic_feat: int) -> "Shape":
        return cls(hp.context_length, hp.prediction_length, hp.num_cells, hp.num_layers,
                   hp.embedding_dimension, tuple(cardinality or ()), num_dynamic_feat,
                   *_frequency_features(hp.freq))

    @property
    def history(self) -> int:
        """Points of the past the network reads: context_length + the largest lag."""
        return self.context_length + self.max_lag

    @property
    def features(self) -> int:
        """Features per time step: time features, age, dynamic features."""
        return self.num_time_features + 1 + self.num_dynamic_feat

    @property
    def inputs(self) -> int:
        """The LSTM's inputs per step: lags, features, embeddings, log scale, dummy."""
        return (self.num_lags + self.features
                + self.embedding_dimension * max(1, len(self.cardinality)) + 2)

    @property
    def parameters(self) -> int:
        cells, lstm = self.num_cells, 0
        for layer in range(self.num_layers):
            width = self.inputs if layer == 0 else cells
            lstm += 4 * cells * (width + cells + 2)
        embeddings = sum(self.cardinality or (1,)) * self.embedding_dimension
        return lstm + embeddings + 4 * (cells + 1)


@dataclass(frozen=True)
class Estimate:
    """An estimated peak in bytes, the term that dominates it, and that term's drivers."""

    bytes: int
    term: str
    drivers: str


def _estimate(terms: Dict[Tuple[str, str], float]) -> Estimate:
    term, drivers = max(terms, key=terms.__getitem__)
    return Estimate(int(BASE_BYTES + sum(terms.values())), term, drivers)


def training_bytes(hp: Hyperparameters, shape: Shape, *, num_observations: int,
                   training_windows: int = SHUFFLE_WINDOWS, scored: bool = True) -> Estimate:
    """The peak memory of `train` with these hyperparameters on data of this size
    (`training_windows`: the windows of an epoch; by default, a full shuffle buffer;
    `scored`: whether a test channel is forecast after training)."""
    batch, window = hp.mini_batch_size, shape.history + shape.prediction_length
    unroll = shape.context_length + shape.prediction_length
    per_window = window * (shape.features + 3)
    sizes = (f"mini_batch_size {batch} x (context_length {shape.context_length} + "
             f"prediction_length {shape.prediction_length})")
    terms = {
        ("the mini-batches' windows",
         f"mini_batch_size {batch} x (context_length {shape.context_length} + the largest "
         f"lag {shape.max_lag} + prediction_length {shape.prediction_length})"):
            FLOAT * (BATCH_COPIES * batch + min(training_windows, SHUFFLE_WINDOWS))
            * per_window,
        ("the LSTM's inputs", sizes + f" x {shape.inputs} inputs a step"):
            FLOAT * INPUT_COPIES * batch * unroll * shape.inputs,
        ("the LSTM's activations",
         sizes + f" x num_cells {shape.num_cells} x num_layers {shape.num_layers}"):
            FLOAT * LSTM_COPIES * GATES * batch * unroll * shape.num_cells * shape.num_layers,
        ("the parameters", f"num_cells {shape.num_cells}, num_layers {shape.num_layers}, "
                           f"embedding_dimension {shape.embedding_dimension} x cardinality "
                           f"{sum(shape.cardinality)}"):
            FLOAT * PARAMETER_COPIES * shape.parameters,
        ("the cached training data", f"{num_observations} observations"):
            FLOAT * CACHE_COPIES * num_observations * (shape.features + 2),
        ("the test scoring's forecasts", f"num_eval_samples {hp.num_eval_samples}"):
            _decoder_bytes(shape, hp.num_eval_samples) if scored else 0,
    }
    return _estimate(terms)


def _decoder_bytes(shape: Shape, num_samples: int) -> float:
    """A forecast batch: num_samples rows per series, ROWS_PER_BATCH rows or one series."""
    rows = max(1, ROWS_PER_BATCH // num_samples) * num_samples
    horizon = shape.prediction_length
    per_row = (DECODER_COPIES * horizon * shape.inputs  # the decoder's inputs, each step's
               + 2 * (shape.history + horizon)  # the history the lags are read from
               + 6 * horizon  # the horizon's noise (float64, transposed) and its samples
               + GATES * shape.num_cells * shape.num_layers)
    return FLOAT * rows * per_row


def forecast_bytes(shape: Shape, *, num_samples: int, series: int, samples_kept: bool,
                   num_quantiles: int, members: int = 1) -> Estimate:
    """The peak memory of forecasting `series` series held together (a request, or a chunk
    of JSON Lines), with their predictions and response."""
    horizon = shape.prediction_length
    values = (num_samples if samples_kept else 0) + 1 + num_quantiles
    terms = {
        ("the sampling decoder",
         f"num_samples {num_samples} x (context_length {shape.context_length} + "
         f"prediction_length {horizon})"):
            _decoder_bytes(shape, num_samples)
            + FLOAT * members * ROWS_PER_BATCH * horizon,  # an ensemble's members' samples
        ("the response", f"{series} series x "
                         + (f"num_samples {num_samples} x " if samples_kept else "")
                         + f"prediction_length {horizon}"):
            (FLOAT + JSON_BYTES) * series * values * horizon,
    }
    return _estimate(terms)


# --------------------------------------------------------------------------- refusals


def _refusal(what: str, estimate: Estimate, free: Available) -> Optional[str]:
    if estimate.bytes <= free.bytes:
        return None
    return (f"{what} needs about {show_size(estimate.bytes)} of memory, driven by "
            f"{estimate.term} ({estimate.drivers}); {show_size(free.bytes)} is available "
            f"({free.source})")


def check_training(hp: Hyperparameters, cardinality: Optional[Sequence[int]],
                   num_dynamic_feat: int, *, num_observations: int,
                   training_windows: int = SHUFFLE_WINDOWS, scored: bool = True,
                   what: str = "training", free: Optional[Available] = None) -> None:
    """Refuse (HyperparameterError) a training whose estimate exceeds the memory
    available (`free`, default: `available()`); `what` names it in the message. The
    arguments are `training_bytes`'s."""
    free = free or available()
    if free is None:
        return
    estimate = training_bytes(hp, Shape.of(hp, cardinality, num_dynamic_feat),
                              num_observations=num_observations,
                              training_windows=training_windows, scored=scored)
    message = _refusal(what, estimate, free)
    if message:
        raise HyperparameterError(message + "; set --max-memory to override")


def check_forecast(hp: Hyperparameters, cardinality: Optional[Sequence[int]],
                   num_dynamic_feat: int, *, num_samples: int, series: int,
                   samples_kept: bool, num_quantiles: int, members: int = 1,
                   free: Optional[Available] = None) -> None:
    """Refuse (UsageError) a forecast configuration whose estimate exceeds the memory
    available (`free`, default: `available()`)."""
    free = free or available()
    if free is None:
        return
    estimate = forecast_bytes(Shape.of(hp, cardinality, num_dynamic_feat),
                              num_samples=num_samples, series=series,
                              samples_kept=samples_kept, num_quantiles=num_quantiles,
                              members=members)
    message = _refusal(f"forecasting {series} series", estimate, free)
    if message:
        raise UsageError(message + "; ask for fewer samples or fewer series at once")

