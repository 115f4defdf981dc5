"""Records -> GluonTS entries, with SageMaker's rules for `cat` and `dynamic_feat`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import pandas as pd

from deepar_cli.errors import DataError, HyperparameterError
from deepar_cli.hyperparameters import Hyperparameters
from deepar_cli.records import DatasetStats, Record, read_channel


@dataclass(frozen=True)
class Features:
    """Which optional fields the model uses, fixed at training time."""

    cardinality: Optional[List[int]] = None  # None: `cat` not used
    num_dynamic_feat: int = 0  # 0: `dynamic_feat` not used

    def as_dict(self) -> Dict[str, Any]:
        return {"cardinality": self.cardinality, "num_dynamic_feat": self.num_dynamic_feat}


def resolve_features(hp: Hyperparameters, stats: DatasetStats) -> Features:
    """Apply `cardinality` and `num_dynamic_feat` (auto/ignore/explicit) to the train data."""
    cardinality: Optional[List[int]] = None
    if hp.cardinality != "ignore" and stats.num_cat:
        learnt = [m + 1 for m in stats.cat_max]
        if hp.cardinality == "auto":
            cardinality = learnt
        else:
            given = list(hp.cardinality)
            if len(given) != stats.num_cat:
                raise HyperparameterError(
                    f'hyperparameter "cardinality" lists {len(given)} values but the records '
                    f'have {stats.num_cat} "cat" values each'
                )
            for index, (want, seen) in enumerate(zip(given, learnt)):
                if seen > want:
                    raise HyperparameterError(
                        f'hyperparameter "cardinality" is {want} for "cat" {index} but the '
                        f"data holds category {seen - 1}; categories are 0..cardinality-1"
                    )
            cardinality = given
    elif isinstance(hp.cardinality, list):
        raise HyperparameterError(
            'hyperparameter "cardinality" is set but the training records have no "cat"'
        )
    num_feat = 0
    present = stats.num_dynamic_feat or 0
    if hp.num_dynamic_feat == "auto":
        num_feat = present
    elif hp.num_dynamic_feat != "ignore":
        if hp.num_dynamic_feat != present:
            raise HyperparameterError(
                f'hyperparameter "num_dynamic_feat" is {hp.num_dynamic_feat} but the training '
                f'records have {present} "dynamic_feat" series'
            )
        num_feat = present
    return Features(cardinality, num_feat)


def check_likelihood_domain(hp: Hyperparameters, stats: DatasetStats, channel: Path) -> None:
    """Beta needs targets in (0, 1) and negative-binomial needs counts >= 0."""
    if stats.num_observations == stats.num_missing:
        return
    if hp.likelihood == "beta" and (stats.min_target <= 0 or stats.max_target >= 1):
        raise DataError(
            f'{channel}: likelihood "beta" needs every target in (0, 1), but the targets span '
            f"[{stats.min_target:g}, {stats.max_target:g}]"
        )
    if hp.likelihood == "negative-binomial" and stats.min_target < 0:
        raise DataError(
            f'{channel}: likelihood "negative-binomial" needs non-negative targets, but the '
            f"smallest is {stats.min_target:g}"
        )


def to_entry(record: Record, freq: str, features: Features, where: str = "") -> Dict[str, Any]:
    """One GluonTS data entry; `where` names the record in errors."""
    entry: Dict[str, Any] = {
        "start": pd.Period(record.start, freq=freq),
        "target": record.target.astype(np.float32),
    }
    where = where or record.source
    if features.cardinality is not None:
        if record.cat is None:
            raise DataError(f'{where}: "cat" is missing; the model was trained with '
                            f"{len(features.cardinality)} categorical feature(s)")
        if len(record.cat) != len(features.cardinality):
            raise DataError(
                f'{where}: "cat" has {len(record.cat)} values, the model expects '
                f"{len(features.cardinality)}"
            )
        for index, (value, size) in enumerate(zip(record.cat, features.cardinality)):
            if value >= size:
                raise DataError(
                    f'{where}: "cat" value {value} at position {index} was never seen in '
                    f"training (categories 0..{size - 1})"
                )
        entry["feat_static_cat"] = np.asarray(record.cat, dtype=np.float32)
    if features.num_dynamic_feat:
        feat = record.dynamic_feat
        if feat is None or len(feat) != features.num_dynamic_feat:
            have = 0 if feat is None else len(feat)
            raise DataError(
                f'{where}: "dynamic_feat" has {have} series, the model expects '
                f"{features.num_dynamic_feat}"
            )
        entry["feat_dynamic_real"] = feat.astype(np.float32)
    return entry


def require_held_out(records: Iterable[Record], prediction_length: int, why: str = "") -> None:
    """Every test series must be longer than `prediction_length`: its last points are the
    truth a forecast is scored against. `why` ends the message."""
    for record in records:
        if record.target.size <= prediction_length:
            raise DataError(f"{record.source}: a test series must be longer than "
                            f"prediction_length ({prediction_length}){why}")


def read_with_stats(channel: Path) -> Tuple[List[Record], DatasetStats]:
    """Read and summarize a channel, keeping the records."""
    stats = DatasetStats()
    records = []
    for record in read_channel(channel):
        stats.add(record)
        records.append(record)
    return records, stats


def to_entries(records: Iterable[Record], freq: str, features: Features) -> List[Dict[str, Any]]:
    return [to_entry(r, freq, features) for r in records]
