"""SageMaker DeepAR records and channels: read with validation, stream, summarize, write.

A channel is a file or a folder of `.json`, `.jsonl`, `.json.gz` or `.parquet` files
holding one record per line (or row):

    {"start": "2016-01-01 00:00:00", "target": [4.06, null, "NaN"], "cat": [0],
     "dynamic_feat": [[...]]}
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional

import numpy as np
import orjson
import pandas as pd

from deepar_cli.atomic import atomic_file
from deepar_cli.errors import DataError

# DeepAR computes in float32: past about 1e35 its samples overflow to inf/NaN, and MXNet's
# gamma sampler (Student-T, negative binomial) never returns on NaN. Refuse such values.
MAX_ABS_VALUE = 1e30
SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".parquet")
_NUMBER_TYPES = (int, float)


@dataclass
class Record:
    """One series. `target` is float64 with NaN for missing; `dynamic_feat` is (k, T)."""

    start: str
    target: np.ndarray
    cat: Optional[List[int]] = None
    dynamic_feat: Optional[np.ndarray] = None
    source: str = ""

    def to_json(self) -> Dict[str, Any]:
        """The record as SageMaker writes it (missing values as "NaN")."""
        obj: Dict[str, Any] = {"start": self.start, "target": _json_numbers(self.target)}
        if self.cat is not None:
            obj["cat"] = list(self.cat)
        if self.dynamic_feat is not None:
            obj["dynamic_feat"] = [_json_numbers(row) for row in self.dynamic_feat]
        return obj


def _json_numbers(values: np.ndarray) -> List[Any]:
    return ["NaN" if math.isnan(v) else v for v in values.tolist()]


# --------------------------------------------------------------------------- reading


def channel_files(channel: Path) -> List[Path]:
    """The data files of a channel: the file itself, or a folder's data files sorted by name,
    skipping hidden names and `_SUCCESS` markers as SageMaker does."""
    if not channel.exists():
        raise DataError(f"{channel}: no such file or folder")
    if channel.is_file():
        return [channel]
    files = sorted(
        p
        for p in channel.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(channel).parts)
        and p.name != "_SUCCESS"
        and p.name.endswith(SUFFIXES)
    )
    if not files:
        raise DataError(f"{channel}: the channel holds no {'/'.join(SUFFIXES)} files")
    return files


def _raw_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line or Parquet row."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        row = 0
        for batch in table.iter_batches(batch_size=512):
            for obj in batch.to_pylist():
                row += 1
                yield row, {k: v for k, v in obj.items() if v is not None}
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def show_value(value: Any) -> str:
    """A value as JSON (or repr), cut to 40 characters, for error messages."""
    text = orjson.dumps(value).decode() if _jsonable(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonable(value: Any) -> bool:
    try:
        orjson.dumps(value)
        return True
    except TypeError:
        return False


def _numbers(values: Any, name: str, allow_missing: bool) -> np.ndarray:
    """Parse a JSON list of numbers (with null/"NaN" as missing when allowed)."""
    if not isinstance(values, list):
        raise ValueError(f'"{name}" must be a list of numbers, got {show_value(values)}')
    kinds = set(map(type, values))
    if not kinds <= {int, float}:  # the slow path, only for lists with something odd in them
        for position, value in enumerate(values):
            if type(value) in _NUMBER_TYPES:
                continue
            if allow_missing and (value is None or value == "NaN"):
                continue
            what = "numbers" if allow_missing else "numbers (no missing values)"
            raise ValueError(
                f'"{name}" must be a list of {what}, got {show_value(value)} at position {position}'
            )
        values = [math.nan if v is None or v == "NaN" else v for v in values]
    array = np.asarray(values, dtype=np.float64)
    if not allow_missing and np.isnan(array).any():
        position = int(np.flatnonzero(np.isnan(array))[0])
        raise ValueError(
            f'"{name}" must be a list of numbers (no missing values), got NaN at position '
            f"{position}"
        )
    if np.isinf(array).any():
        position = int(np.flatnonzero(np.isinf(array))[0])
        raise ValueError(f'"{name}" must hold finite numbers, got infinity at position {position}')
    too_big = np.abs(np.nan_to_num(array)) > MAX_ABS_VALUE
    if too_big.any():
        position = int(np.flatnonzero(too_big)[0])
        raise ValueError(f'"{name}" value {array[position]:g} at position {position} is beyond '
                         f"+/-{MAX_ABS_VALUE:g}, the largest magnitude DeepAR handles")
    return array


def parse_record(obj: Any, *, extra_feat_length: int = 0) -> Record:
    """Validate one decoded record; raise ValueError naming the field on the first problem.

    `extra_feat_length` is how far `dynamic_feat` must reach past the target: 0 for
    training, `prediction_length` for inference.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"a record must be a JSON object, got {show_value(obj)}")
    if "start" not in obj:
        raise ValueError('"start" is missing')
    start = obj["start"]
    try:
        # pandas reads "", "now" and "today" too; SageMaker wants a fixed timestamp.
        if not isinstance(start, str) or start.strip().lower() in ("now", "today"):
            raise ValueError
        if pd.isna(pd.Timestamp(start)):
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(
            f'"start" must be a timestamp like "2016-01-01 00:00:00", got {show_value(start)}'
        ) from None
    if "target" not in obj:
        raise ValueError('"target" is missing')
    target = _numbers(obj["target"], "target", allow_missing=True)
    if target.size == 0:
        raise ValueError('"target" must not be empty')

    cat = obj.get("cat")
    if cat is not None:
        if isinstance(cat, int) and not isinstance(cat, bool):
            cat = [cat]
        if not isinstance(cat, list):
            raise ValueError(
                f'"cat" must be a list of non-negative integers, got {show_value(cat)}')
        for position, value in enumerate(cat):
            if type(value) is not int or value < 0:
                raise ValueError(
                    f'"cat" must be a list of non-negative integers, got {show_value(value)} '
                    f"at position {position}"
                )

    feat = obj.get("dynamic_feat")
    if feat is not None:
        if not isinstance(feat, list) or not feat:
            raise ValueError(
                '"dynamic_feat" must be a non-empty list of lists of numbers, got '
                f"{show_value(feat)}"
            )
        rows = []
        expected = target.size + extra_feat_length
        for index, row in enumerate(feat):
            try:
                values = _numbers(row, "dynamic_feat", allow_missing=False)
            except ValueError as exc:
                raise ValueError(f"{exc} (feature {index})") from None
            if values.size != expected:
                reach = (
                    f"the length of \"target\" plus prediction_length, {target.size} + "
                    f"{extra_feat_length}" if extra_feat_length else 'the length of "target"'
                )
                raise ValueError(
                    f'"dynamic_feat" feature {index} has {values.size} values, expected '
                    f"{expected} ({reach})"
                )
            rows.append(values)
        feat = np.stack(rows)
    return Record(start=start, target=target, cat=cat, dynamic_feat=feat)


def _consistency(record: Record, first: Record, where: str) -> None:
    """Every record of a channel has the same `cat` count and `dynamic_feat` count."""
    for name, mine, theirs in (
        ("cat", record.cat, first.cat),
        ("dynamic_feat", record.dynamic_feat, first.dynamic_feat),
    ):
        mine_n = None if mine is None else len(mine)
        theirs_n = None if theirs is None else len(theirs)
        if mine_n != theirs_n:
            have = "no" if mine_n is None else str(mine_n)
            want = "none" if theirs_n is None else str(theirs_n)
            raise DataError(
                f'{where}: "{name}" has {have} values here but {want} in the first record '
                f"({first.source}); every record must have the same count"
            )


def read_channel(channel: Path, *, extra_feat_length: int = 0) -> Iterator[Record]:
    """Stream the validated records of a channel, one at a time.

    Raises DataError ("file:line: message") on the first bad record, and when the channel
    holds no record at all.
    """
    first: Optional[Record] = None
    for path in channel_files(channel):
        for number, obj in _raw_objects(path):
            where = f"{path}:{number}"
            try:
                record = parse_record(obj, extra_feat_length=extra_feat_length)
            except ValueError as exc:
                raise DataError(f"{where}: {exc}") from None
            record.source = where
            if first is None:
                first = record
            else:
                _consistency(record, first, where)
            yield record
    if first is None:
        raise DataError(f"{channel}: the channel is empty (no records)")


# --------------------------------------------------------------------------- statistics


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
            else:
                self.cat_max = [max(a, b) for a, b in zip(self.cat_max, record.cat)]
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


# --------------------------------------------------------------------------- writing


def output_suffix(fmt: str) -> str:
    """The file ending for an output format name (json, jsonl, json.gz, parquet)."""
    suffix = "." + fmt.lstrip(".")
    if suffix not in SUFFIXES:
        raise DataError(f'unknown format "{fmt}"; valid: json, jsonl, json.gz, parquet')
    return suffix


def write_records(path: Path, records: Iterable[Record]) -> int:
    """Write records atomically in the format the file name asks for; return the count."""
    count = 0
    with atomic_file(path) as tmp:
        if path.name.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq

            rows = [_parquet_row(r) for r in records]
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            count = len(rows)
        else:
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(tmp, "wb") as handle:
                for record in records:
                    handle.write(orjson.dumps(record.to_json()) + b"\n")
                    count += 1
    return count


def _parquet_row(record: Record) -> Dict[str, Any]:
    row: Dict[str, Any] = {"start": record.start, "target": record.target.tolist()}
    if record.cat is not None:
        row["cat"] = list(record.cat)
    if record.dynamic_feat is not None:
        row["dynamic_feat"] = record.dynamic_feat.tolist()
    return row
