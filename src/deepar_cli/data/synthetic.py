"""The SageMaker DeepAR notebook's synthetic data: noisy sine waves around random levels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import pandas as pd

from deepar_cli.config.frequency import pandas_freq
from deepar_cli.data.records import Record
from deepar_cli.errors import UsageError


@dataclass(frozen=True)
class SyntheticSpec:
    """Every constant of the notebook's recipe; the defaults are the notebook's."""

    num_series: int = 200
    length: int = 400
    period: int = 24
    freq: str = "H"
    start: str = "2016-01-01 00:00:00"
    seed: int = 1
    prediction_length: int = 48
    num_categories: int = 0
    num_dynamic_feat: int = 0

    def __post_init__(self) -> None:
        """Refuse settings that cannot make a train/test split."""
        for name in ("num_series", "prediction_length", "period"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.length <= self.prediction_length:
            raise UsageError(f"length ({self.length}) must be greater than prediction_length "
                             f"({self.prediction_length})")
        if self.num_categories < 0 or self.num_dynamic_feat < 0:
            raise UsageError("num_categories and num_dynamic_feat must not be negative")
        pandas_freq(self.freq)
        try:
            pd.Timestamp(self.start)
        except (ValueError, TypeError):
            raise UsageError(f'start must be a timestamp like "2016-01-01 00:00:00", '
                             f'got "{self.start}"') from None


def notebook_series(spec: SyntheticSpec) -> np.ndarray:
    """The notebook's targets, shape (num_series, length), drawn in the notebook's order."""
    np.random.seed(spec.seed)  # the notebook seeds the global generator; so do we
    ticks = np.arange(spec.length)
    series = np.empty((spec.num_series, spec.length))
    for k in range(spec.num_series):
        level = 10 * np.random.rand()
        amplitude = (0.1 + 0.3 * np.random.rand()) * level
        noise_sd = 0.05 * level
        source = level + amplitude * np.sin(ticks * (2 * np.pi) / spec.period)
        series[k] = source + noise_sd * np.random.randn(spec.length)
    return series


def generate(spec: SyntheticSpec) -> tuple[List[Record], List[Record]]:
    """Return (train, test) records: test holds full series, train drops the last
    `prediction_length` points of each."""
    targets = notebook_series(spec)
    start = str(pd.Timestamp(spec.start))
    # Optional fields come from their own generator so the targets stay the notebook's.
    extra = np.random.RandomState(spec.seed + 1)
    cut = spec.length - spec.prediction_length
    train, test = [], []
    for k, target in enumerate(targets):
        cat: Optional[List[int]] = [k % spec.num_categories] if spec.num_categories else None
        feat = None
        if spec.num_dynamic_feat:
            phase = 2 * np.pi * np.arange(spec.length) / spec.period
            shifts = extra.rand(spec.num_dynamic_feat) * 2 * np.pi
            feat = np.sin(phase[None, :] + shifts[:, None])
        test.append(Record(start, target, cat, feat))
        train.append(Record(start, target[:cut], cat, None if feat is None else feat[:, :cut]))
    return train, test
