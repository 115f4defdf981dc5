"""Records -> GluonTS entries, with SageMaker's rules for `cat` and `dynamic_feat`; and
GluonTS datasets -> records, so a dataset goes wherever a channel goes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

import numpy as np
import pandas as pd

from deepar_cli.data.channels import check_consistency, read_channel
from deepar_cli.data.records import Record, parse_record, show_value
from deepar_cli.data.stats import DatasetStats
from deepar_cli.errors import DataError, HyperparameterError

# Where records come from: a channel (a file or folder) or a GluonTS dataset (any iterable
# of data entries, e.g. a ListDataset).
Source = Union[str, "os.PathLike[str]", Iterable[Mapping[str, Any]]]
# SageMaker's record fields under GluonTS's names.
GLUONTS_FIELDS = {"start": "start", "target": "target", "cat": "feat_static_cat",
                  "dynamic_feat": "feat_dynamic_real"}
# The largest embedding table of one `cat` (its float32 weights); training holds about four
# times as much (the gradient and Adam's two moments). A `cat` value of 10^8 would need 4 GB.
MAX_EMBEDDING_BYTES = 1 << 30

if TYPE_CHECKING:
    from deepar_cli.config.hyperparameters import Hyperparameters


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
    _check_embeddable(hp, cardinality, stats)
    return Features(cardinality, num_feat)


def max_categories(embedding_dimension: int) -> int:
    """The most categories one `cat` may have: its embedding table (categories x
    embedding_dimension float32 weights) within MAX_EMBEDDING_BYTES."""
    return MAX_EMBEDDING_BYTES // (4 * embedding_dimension)


def _check_embeddable(hp: Hyperparameters, cardinality: Optional[List[int]],
                      stats: DatasetStats) -> None:
    limit = max_categories(hp.embedding_dimension)
    for index, size in enumerate(cardinality or ()):
        if size <= limit:
            continue
        fit = (f"at most {limit} categories fit an embedding table of "
               f"{hp.embedding_dimension} dimensions in {MAX_EMBEDDING_BYTES >> 30} GiB")
        if hp.cardinality == "auto":
            raise DataError(f'{stats.cat_max_source[index]}: "cat" value {size - 1} at '
                            f"position {index} is too large: {fit}; number the categories "
                            "0, 1, 2, ...")
        raise HyperparameterError(f'hyperparameter "cardinality" is {size} for "cat" '
                                  f"{index}: {fit}")


def check_likelihood_domain(hp: Hyperparameters, stats: DatasetStats, source: Source) -> None:
    """Beta needs targets in (0, 1) and negative-binomial needs counts >= 0."""
    if stats.num_observations == stats.num_missing:
        return
    if hp.likelihood == "beta" and (stats.min_target <= 0 or stats.max_target >= 1):
        raise DataError(
            f'{source_name(source)}: likelihood "beta" needs every target in (0, 1), but the '
            f"targets span [{stats.min_target:g}, {stats.max_target:g}]"
        )
    if hp.likelihood == "negative-binomial" and stats.min_target < 0:
        raise DataError(
            f'{source_name(source)}: likelihood "negative-binomial" needs non-negative '
            f"targets, but the smallest is {stats.min_target:g}"
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


def require_held_out(records: Iterable[Record], prediction_length: int, source: Source,
                     why: str = "") -> None:
    """Every test series must be longer than `prediction_length`: its last points are the
    truth a forecast is scored against, and some of those points must be observed (else
    every score is NaN). `why` ends the first message."""
    observed = False
    for record in records:
        if record.target.size <= prediction_length:
            raise DataError(f"{record.source}: a test series must be longer than "
                            f"prediction_length ({prediction_length}){why}")
        observed = observed or not np.isnan(record.target[-prediction_length:]).all()
    if not observed:
        raise DataError(f"{source_name(source)}: the last prediction_length "
                        f"({prediction_length}) points of every series are missing; there "
                        "is nothing to score forecasts against")


def require_observed(stats: DatasetStats, source: Source) -> None:
    """A train channel must hold an observed target value: there is nothing to learn from
    missing values alone."""
    if stats.num_observations == stats.num_missing:
        raise DataError(f'{source_name(source)}: every target value is missing (null or '
                        '"NaN"); there is nothing to learn from')


def source_name(source: Source) -> str:
    """How messages name a source: the channel's path, or "the dataset"."""
    return str(source) if isinstance(source, (str, os.PathLike)) else "the dataset"


def read_records(source: Source) -> Iterator[Record]:
    """Stream the validated records of a channel or of a GluonTS dataset."""
    if isinstance(source, (str, os.PathLike)):
        return read_channel(Path(source))
    return entry_records(source)


def read_with_stats(source: Source) -> Tuple[List[Record], DatasetStats]:
    """Read and summarize a channel or a GluonTS dataset, keeping the records."""
    stats = DatasetStats()
    records = []
    for record in read_records(source):
        stats.add(record)
        records.append(record)
    return records, stats


def to_entries(records: Iterable[Record], freq: str, features: Features) -> List[Dict[str, Any]]:
    return [to_entry(r, freq, features) for r in records]


# --------------------------------------------------------------------------- GluonTS datasets


def gluonts_fields(record: Record) -> Dict[str, Any]:
    """Every field a record holds, under GluonTS's names (ListDataset makes the arrays)."""
    values = {"start": record.start, "target": record.target, "cat": record.cat,
              "dynamic_feat": record.dynamic_feat}
    return {GLUONTS_FIELDS[name]: value for name, value in values.items() if value is not None}


def entry_records(entries: Iterable[Mapping[str, Any]], *, extra_feat_length: int = 0,
                  features: Optional[Features] = None) -> Iterator[Record]:
    """Validate GluonTS data entries as SageMaker records, one at a time, with a channel's
    rules; `extra_feat_length` as in `parse_record`. With `features`, the fields the model
    does not use are ignored, as `predict` ignores them.

    Raises DataError naming "dataset entry N" (0-based) and the field, under GluonTS's
    names, on the first bad entry, and when there is no entry at all.
    """
    first: Optional[Record] = None
    for index, entry in enumerate(entries):
        where = f"dataset entry {index}"
        if not isinstance(entry, Mapping):
            raise DataError(f"{where}: an entry must be a dict, got {show_value(entry)}")
        try:
            record = parse_record(_record_object(entry, features),
                                  extra_feat_length=extra_feat_length)
            record.source = where
            if first is None:
                first = record
            else:
                check_consistency(record, first, where)
        except (ValueError, DataError) as exc:
            message = str(exc) if isinstance(exc, DataError) else f"{where}: {exc}"
            for name in ("cat", "dynamic_feat"):
                message = message.replace(f'"{name}"', f'"{GLUONTS_FIELDS[name]}"')
            raise DataError(message) from None
        yield record
    if first is None:
        raise DataError("the dataset is empty (no entries)")


def _record_object(entry: Mapping[str, Any], features: Optional[Features]) -> Dict[str, Any]:
    """A data entry as the JSON object `parse_record` reads: numpy values as lists, a
    Period start as a timestamp, integral `cat` floats as integers."""
    unused = set()
    if features is not None and features.cardinality is None:
        unused.add("cat")
    if features is not None and not features.num_dynamic_feat:
        unused.add("dynamic_feat")
    obj = {name: _plain(entry[field]) for name, field in GLUONTS_FIELDS.items()
           if name != "start" and entry.get(field) is not None and name not in unused}
    start = entry.get("start")
    if isinstance(start, pd.Period):
        start = start.to_timestamp()
    if start is not None:
        obj["start"] = start
    if isinstance(obj.get("cat"), list):
        obj["cat"] = [int(v) if isinstance(v, float) and v.is_integer() else v
                      for v in obj["cat"]]
    return obj


def _plain(value: Any) -> Any:
    """numpy arrays and scalars (also inside lists and tuples) as Python lists and numbers."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
