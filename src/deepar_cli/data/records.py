"""One SageMaker DeepAR record: the `Record` type and parsing with validation.

A record is one JSON object (or Parquet row):

    {"start": "2016-01-01 00:00:00", "target": [4.06, null, "NaN"], "cat": [0],
     "dynamic_feat": [[...]]}
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import orjson
import pandas as pd

from deepar_cli import jsontext

# DeepAR computes in float32: past about 1e35 its samples overflow to inf/NaN, and MXNet's
# gamma sampler (Student-T, negative binomial) never returns on NaN. Refuse such values.
MAX_ABS_VALUE = 1e30
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


def show_value(value: Any) -> str:
    """A value as JSON (or repr), cut to 40 characters, for error messages."""
    text = jsontext.one_line(orjson.dumps(value).decode()) if _jsonable(value) \
        else jsontext.outline(value)
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


def start_text(value: Any) -> Any:
    """A `start` held as a date or time value (a Parquet timestamp or date column, a pandas
    Timestamp, a numpy datetime64) as the text a JSON record holds; anything else as is."""
    if isinstance(value, (datetime.date, np.datetime64)):  # pd.Timestamp is a datetime
        return str(pd.Timestamp(value))
    return value


def parse_record(obj: Any, *, extra_feat_length: int = 0) -> Record:
    """Validate one decoded record; raise ValueError naming the field on the first problem.

    `extra_feat_length` is how far `dynamic_feat` must reach past the target: 0 for
    training, `prediction_length` for inference.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"a record must be a JSON object, got {show_value(obj)}")
    if "start" not in obj:
        raise ValueError('"start" is missing')
    start = start_text(obj["start"])
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
