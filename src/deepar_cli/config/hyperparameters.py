"""SageMaker DeepAR's hyperparameters: names, defaults, ranges, parsing and validation.

Values may come as strings (SageMaker writes `hyperparameters.json` that way) or as JSON
numbers and lists; everything is checked before any data is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from deepar_cli import jsontext
from deepar_cli.config.frequency import VALID_FREQUENCIES, pandas_freq
from deepar_cli.errors import HyperparameterError, UsageError

LIKELIHOODS = ("student-T", "gaussian", "beta", "negative-binomial", "deterministic-L1")
DEFAULT_TEST_QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


@dataclass
class Hyperparameters:
    """The resolved set, with SageMaker's defaults for the optional ones."""

    time_freq: str
    context_length: int
    prediction_length: int
    epochs: int
    likelihood: str = "student-T"
    num_cells: int = 40
    num_layers: int = 2
    dropout_rate: float = 0.10
    learning_rate: float = 0.001
    mini_batch_size: int = 128
    embedding_dimension: int = 10
    cardinality: Union[str, List[int]] = "auto"
    num_dynamic_feat: Union[str, int] = "auto"
    early_stopping_patience: Optional[int] = None
    num_eval_samples: int = 100
    test_quantiles: List[float] = field(default_factory=lambda: list(DEFAULT_TEST_QUANTILES))

    @property
    def freq(self) -> str:
        """`time_freq` spelled for pandas (SageMaker's "H" is pandas' "h")."""
        return pandas_freq(self.time_freq)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _fail(name: str, expected: str, value: Any) -> HyperparameterError:
    shown = value if isinstance(value, str) else jsontext.show(value)
    return HyperparameterError(f'hyperparameter "{name}" must be {expected}, '
                               f'got "{jsontext.one_line(shown)}"')


def _integer(low: int, high: Optional[int] = None) -> Callable[[str, Any], int]:
    expected = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"

    def parse(name: str, value: Any) -> int:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not number.is_integer():
                raise ValueError
            number = int(number)
        except (TypeError, ValueError, OverflowError):
            raise _fail(name, expected, value) from None
        if number < low or (high is not None and number > high):
            raise _fail(name, expected, value)
        return number

    return parse


def _real(low: float, high: float, *, low_open: bool = False, high_open: bool = False
          ) -> Callable[[str, Any], float]:
    expected = (f"a number in {'(' if low_open else '['}{low:g}, {high:g}"
                f"{')' if high_open else ']'}")

    def parse(name: str, value: Any) -> float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise _fail(name, expected, value) from None
        too_low = number <= low if low_open else number < low
        too_high = number >= high if high_open else number > high
        if math.isnan(number) or too_low or too_high:
            raise _fail(name, expected, value)
        return number

    return parse


def _list(value: Any) -> Any:
    """SageMaker writes lists as strings: "[0.1, 0.5]"."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return jsontext.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _time_freq(name: str, value: Any) -> str:
    try:
        pandas_freq(str(value))
    except UsageError:
        raise _fail(name, f"one of {VALID_FREQUENCIES}", value) from None
    return str(value).strip()


def _likelihood(name: str, value: Any) -> str:
    if value not in LIKELIHOODS:
        raise _fail(name, "one of " + ", ".join(LIKELIHOODS), value)
    return str(value)


def _cardinality(name: str, value: Any) -> Union[str, List[int]]:
    value = _list(value)
    if value in ("auto", "ignore", "", None):
        return "auto" if value in ("", None) else value
    expected = '"auto", "ignore" or a list of integers >= 1, e.g. "[3, 10]"'
    values = [value] if isinstance(value, (int, str)) and not isinstance(value, bool) else value
    if not isinstance(values, list) or not values:
        raise _fail(name, expected, value)
    try:
        return [_integer(1)(name, v) for v in values]
    except HyperparameterError:
        raise _fail(name, expected, value) from None


def _num_dynamic_feat(name: str, value: Any) -> Union[str, int]:
    if value in ("auto", "ignore"):
        return value
    try:
        return _integer(0)(name, value)
    except HyperparameterError:
        raise _fail(name, '"auto", "ignore" or an integer >= 0', value) from None


def _quantiles(name: str, value: Any) -> List[float]:
    value = _list(value)
    expected = 'a list of numbers in (0, 1), e.g. "[0.1, 0.5, 0.9]"'
    if not isinstance(value, list) or not value:
        raise _fail(name, expected, value)
    parse = _real(0, 1, low_open=True, high_open=True)
    try:
        return [parse(name, v) for v in value]
    except HyperparameterError:
        raise _fail(name, expected, value) from None


SCHEMA: Dict[str, Callable[[str, Any], Any]] = {
    "time_freq": _time_freq,
    "context_length": _integer(1, 10_000),
    "prediction_length": _integer(1, 10_000),
    "epochs": _integer(1, 10_000),
    "likelihood": _likelihood,
    "num_cells": _integer(1, 1_000),
    "num_layers": _integer(1, 8),
    "dropout_rate": _real(0, 1, high_open=True),
    "learning_rate": _real(0, 1, low_open=True),
    "mini_batch_size": _integer(1, 100_000),
    "embedding_dimension": _integer(1, 1_000),
    "cardinality": _cardinality,
    "num_dynamic_feat": _num_dynamic_feat,
    "early_stopping_patience": _integer(1, 10_000),
    "num_eval_samples": _integer(1, 10_000),
    "test_quantiles": _quantiles,
}
REQUIRED = ("time_freq", "context_length", "prediction_length", "epochs")
# SageMaker passes these to every algorithm; they mean nothing to DeepAR's model.
_IGNORED = ("_tuning_objective_metric", "_kvstore", "_num_gpus", "_num_kv_servers")


def read_file(path: Path) -> Dict[str, Any]:
    """Read a SageMaker `hyperparameters.json` (a JSON object, values often strings)."""
    try:
        raw = path.read_bytes()
        data = jsontext.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise HyperparameterError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise HyperparameterError(f"{path}:{line}: not UTF-8 text (byte "
                                  f"0x{raw[exc.start]:02x})") from None
    except json.JSONDecodeError as exc:
        raise HyperparameterError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise HyperparameterError(f"{path}: must hold a JSON object of name: value pairs")
    return data


def resolve(values: Mapping[str, Any]) -> Hyperparameters:
    """Validate raw name -> value pairs and fill in SageMaker's defaults."""
    unknown = sorted(set(values) - set(SCHEMA) - set(_IGNORED))
    if unknown:
        raise HyperparameterError(
            f'unknown hyperparameter "{jsontext.one_line(unknown[0])}"; valid: {", ".join(SCHEMA)}'
        )
    missing = [name for name in REQUIRED if values.get(name) in (None, "")]
    if missing:
        raise HyperparameterError(f'missing required hyperparameter "{missing[0]}"')
    parsed = {
        name: SCHEMA[name](name, value)
        for name, value in values.items()
        if name in SCHEMA and value is not None
    }
    return Hyperparameters(**parsed)


def load(path: Optional[Path], overrides: Mapping[str, Any]) -> Hyperparameters:
    """The file's values (if any), overridden by options that were given."""
    values: Dict[str, Any] = read_file(path) if path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return resolve(values)
