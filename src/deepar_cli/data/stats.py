"""SageMaker's dataset summary: `DatasetStats`, accumulated record by record, and its lines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from deepar_cli.data.channels import read_channel
from deepar_cli.data.records import Record


@dataclass
class DatasetStats:
    """SageMaker's dataset summary, accumulated one record at a time."""

    num_series: int = 0
    num_observations: int = 0
    num_missing: int = 0
    min_target: float = math.inf
    max_target: float = -math.inf
    target_sum: float = 0.0
    num_cat: Optional[int] = None
    num_dynamic_feat: Optional[int] = None
    cat_max: List[int] = field(default_factory=list)
    cat_max_source: List[str] = field(default_factory=list)  # the first record holding each
    min_length: int = 0
    max_length: int = 0

    def add(self, record: Record) -> None:
        target = record.target
        present = target[~np.isnan(target)]
        self.num_series += 1
        self.num_observations += target.size
        self.num_missing += target.size - present.size
        self.min_length = target.size if self.num_series == 1 else min(self.min_length, target.size)
        self.max_length = max(self.max_length, target.size)
        if present.size:
            self.min_target = min(self.min_target, float(present.min()))
            self.max_target = max(self.max_target, float(present.max()))
            self.target_sum += float(present.sum())
        if record.cat is not None:
            self.num_cat = len(record.cat)
            if not self.cat_max:
                self.cat_max = list(record.cat)
                self.cat_max_source = [record.source] * len(record.cat)
            for index, value in enumerate(record.cat):
                if value > self.cat_max[index]:
                    self.cat_max[index] = value
                    self.cat_max_source[index] = record.source
        if record.dynamic_feat is not None:
            self.num_dynamic_feat = len(record.dynamic_feat)

    @property
    def mean_length(self) -> float:
        return self.num_observations / self.num_series if self.num_series else 0.0

    @property
    def mean_target(self) -> float:
        present = self.num_observations - self.num_missing
        return self.target_sum / present if present else math.nan

    def as_dict(self) -> Dict[str, Any]:
        """The figures SageMaker prints, as a JSON-friendly dict."""
        return {
            "num_series": self.num_series,
            "num_observations": self.num_observations,
            "mean_target_length": round(self.mean_length, 3),
            "min_target_length": self.min_length,
            "max_target_length": self.max_length,
            "min_target": self.min_target if self.num_observations > self.num_missing else None,
            "mean_target": None if math.isnan(self.mean_target) else self.mean_target,
            "max_target": self.max_target if self.num_observations > self.num_missing else None,
            "missing_values": self.num_missing > 0,
            "num_missing": self.num_missing,
            "num_cat": self.num_cat,
            "num_dynamic_feat": self.num_dynamic_feat,
        }

    def lines(self) -> List[str]:
        """Human-readable summary lines, in SageMaker's words."""
        return summary_lines(self.as_dict())


def summary_lines(figures: Dict[str, Any]) -> List[str]:
    """SageMaker's dataset summary lines from DatasetStats.as_dict() figures."""

    def number(name: str) -> str:
        value = figures[name]
        return "nan" if value is None else f"{value:.6g}"

    missing = figures["num_missing"]
    return [
        f"number of time series: {figures['num_series']}",
        f"number of observations: {figures['num_observations']}",
        f"mean target length: {figures['mean_target_length']:g}",
        f"min/mean/max target: {number('min_target')}/{number('mean_target')}/"
        f"{number('max_target')}",
        f"contains missing values: {'yes' if missing else 'no'}"
        + (f" ({missing})" if missing else ""),
    ]


def channel_stats(channel: Path) -> DatasetStats:
    """Validate a whole channel and summarize it without holding it in memory."""
    stats = DatasetStats()
    for record in read_channel(channel):
        stats.add(record)
    return stats
