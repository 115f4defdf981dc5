"""SageMaker's `HyperParameterTuningJobConfig` for DeepAR: parse, validate, default ranges.

The JSON a user sends to CreateHyperParameterTuningJob, to the letter:

    {"Strategy": "Bayesian",
     "HyperParameterTuningJobObjective": {"Type": "Minimize",
                                          "MetricName": "test:mean_wQuantileLoss"},
     "ResourceLimits": {"MaxNumberOfTrainingJobs": 20, "MaxParallelTrainingJobs": 1},
     "ParameterRanges": {"IntegerParameterRanges": [{"Name": "num_cells", "MinValue": "30",
                                                     "MaxValue": "100"}], ...},
     "TrainingJobEarlyStoppingType": "Off", "RandomSeed": 42}

Every problem is a HyperparameterError naming the file and the field, e.g.
`tuning.json: ParameterRanges.IntegerParameterRanges[0].MaxValue: hyperparameter "num_layers"
must be an integer in [1, 8], got "12"`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from deepar_cli import jsontext
from deepar_cli.config.hyperparameters import SCHEMA, Hyperparameters, read_file, resolve
from deepar_cli.errors import HyperparameterError

STRATEGIES = ("Bayesian", "Random", "Grid", "Hyperband")
OBJECTIVES = ("test:mean_wQuantileLoss", "test:RMSE", "train:final_loss")
SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
# What DIR/model holds: the trials' models that Caruana's ensemble selection weighs on the
# objective's test points (the default: the best final model on the benchmark), or
# SageMaker's rule, the best trial's model (after a held-out objective, its hyperparameters
# trained on the whole train channel). See docs/experiments/2026-12-04-tune-options.md.
FINAL_MODELS = ("selection", "refit")
DEFAULT_MAX_TRIALS = 20
DEFAULTS_SOURCE = "the default ranges"
# SageMaker's tunable DeepAR hyperparameters and the range each takes (any of them may also
# be given as a categorical range).
TUNABLE = {
    "context_length": "integer",
    "epochs": "integer",
    "mini_batch_size": "integer",
    "num_cells": "integer",
    "num_layers": "integer",
    "embedding_dimension": "integer",
    "dropout_rate": "continuous",
    "learning_rate": "continuous",
    "likelihood": "categorical",
}
RANGE_LISTS = {
    "IntegerParameterRanges": "integer",
    "ContinuousParameterRanges": "continuous",
    "CategoricalParameterRanges": "categorical",
}
# Auto scaling is logarithmic where a range spans a decade or more.
AUTO_LOG_RATIO = 10.0


@dataclass(frozen=True)
class ParameterRange:
    """One tuned hyperparameter: a numeric range with its scale, or categorical values."""

    name: str
    kind: str  # "integer", "continuous" or "categorical"
    field: str  # where it was given, e.g. "ParameterRanges.IntegerParameterRanges[0]"
    low: float = 0.0
    high: float = 0.0
    scaling: str = "Linear"  # Auto resolved to Linear or Logarithmic
    values: Tuple[str, ...] = ()

    def first(self) -> Any:
        """A value inside the range, to check the static hyperparameters with."""
        return self.values[0] if self.kind == "categorical" else self.low

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {{{', '.join(self.values)}}}"
        return f"{self.name} {self.low:g}-{self.high:g} ({self.scaling})"

    def as_json(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TuningConfig:
    """A validated tuning job; `source` names the file (or the default ranges) in messages."""

    ranges: Tuple[ParameterRange, ...]
    source: str = DEFAULTS_SOURCE
    strategy: str = "Bayesian"
    objective: str = "test:mean_wQuantileLoss"
    max_trials: Optional[int] = None  # None: DEFAULT_MAX_TRIALS, or the grid's size
    max_parallel: int = 1
    max_runtime: Optional[int] = None
    early_stopping: str = "Off"
    target_value: Optional[float] = None
    max_not_improving: Optional[int] = None
    min_resource: Optional[int] = None
    max_resource: Optional[int] = None
    random_seed: Optional[int] = None

    @property
    def grid_size(self) -> int:
        return math.prod(len(r.values) for r in self.ranges)

    @property
    def trials(self) -> int:
        """MaxNumberOfTrainingJobs; a grid is searched once at most, as SageMaker does."""
        if self.strategy == "Grid":
            return min(self.max_trials or self.grid_size, self.grid_size)
        return self.max_trials or DEFAULT_MAX_TRIALS

    @property
    def names(self) -> List[str]:
        return [r.name for r in self.ranges]


def _fail(source: str, field: str, message: str) -> HyperparameterError:
    return HyperparameterError(f"{source}: {field}: {message}" if field else f"{source}: {message}")


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _shown(value: Any) -> str:
    """A value as JSON, for messages: strings quoted."""
    return jsontext.show(value)


def _fields(value: Any, source: str, field: str, allowed: Sequence[str],
            required: Sequence[str] = ()) -> Dict[str, Any]:
    """A JSON object holding only `allowed` keys and every `required` one."""
    if not isinstance(value, dict):
        raise _fail(source, field, f"must be a JSON object, got {_shown(value)}")
    for key in value:
        if key not in allowed:
            raise _fail(source, _join(field, key), f"unknown field; valid: {', '.join(allowed)}")
    for key in required:
        if key not in value:
            raise _fail(source, _join(field, key), "is required")
    return value


def _choice(value: Any, source: str, field: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _fail(source, field, f"must be one of {', '.join(choices)}, got {_shown(value)}")
    return str(value)


def _count(value: Any, source: str, field: str, low: int = 1) -> int:
    """A whole number >= low, given as a JSON number or a string of one."""
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if not number.is_integer() or number < low:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise _fail(source, field, f"must be an integer >= {low}, got {_shown(value)}") from None
    return int(number)


def _number(value: Any, source: str, field: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if not math.isfinite(number):
            raise ValueError
    except (TypeError, ValueError):
        raise _fail(source, field, f"must be a number, got {_shown(value)}") from None
    return number


def _hyperparameter(name: str, value: Any, source: str, field: str) -> Any:
    """`value` checked against the hyperparameter's own valid range."""
    try:
        return SCHEMA[name](name, value)
    except HyperparameterError as exc:
        raise _fail(source, field, str(exc)) from None


def _name(value: Any, kind: str, source: str, field: str) -> str:
    tunable = ", ".join(TUNABLE)
    if not isinstance(value, str) or value not in SCHEMA:
        raise _fail(source, field, f"unknown hyperparameter {_shown(value)}; tunable: {tunable}")
    if value not in TUNABLE:
        raise _fail(source, field, f'"{value}" cannot be tuned; tunable: {tunable}')
    takes = TUNABLE[value]
    if kind != "categorical" and takes != kind:
        lists = {v: k for k, v in RANGE_LISTS.items()}
        raise _fail(source, field, f'"{value}" takes {takes} values: give it in '
                                   f"{lists[takes]}")
    return str(value)


def _categorical(entry: Any, source: str, field: str) -> ParameterRange:
    obj = _fields(entry, source, field, ("Name", "Values"), ("Name", "Values"))
    name = _name(obj["Name"], "categorical", source, f"{field}.Name")
    values = obj["Values"]
    if not isinstance(values, list) or not values:
        raise _fail(source, f"{field}.Values", f"must be a non-empty list, got {_shown(values)}")
    shown: List[str] = []
    for index, value in enumerate(values):
        where = f"{field}.Values[{index}]"
        _hyperparameter(name, value, source, where)
        text = value if isinstance(value, str) else json.dumps(value)
        if text in shown:
            raise _fail(source, where, f"{_shown(value)} is listed twice")
        shown.append(text)
    return ParameterRange(name, "categorical", field, values=tuple(shown))


def _numeric(entry: Any, kind: str, source: str, field: str) -> ParameterRange:
    keys = ("Name", "MinValue", "MaxValue", "ScalingType")
    obj = _fields(entry, source, field, keys, keys[:3])
    name = _name(obj["Name"], kind, source, f"{field}.Name")
    low = _hyperparameter(name, obj["MinValue"], source, f"{field}.MinValue")
    high = _hyperparameter(name, obj["MaxValue"], source, f"{field}.MaxValue")
    if low > high:
        raise _fail(source, f"{field}.MinValue", f"{low:g} is greater than MaxValue {high:g}")
    scalings = SCALINGS if kind == "continuous" else SCALINGS[:3]
    scaling = _choice(obj.get("ScalingType", "Auto"), source, f"{field}.ScalingType", scalings)
    if scaling == "Auto":
        scaling = "Logarithmic" if low > 0 and high / low >= AUTO_LOG_RATIO else "Linear"
    if scaling == "Logarithmic" and low <= 0:
        raise _fail(source, f"{field}.ScalingType",
                    f"Logarithmic scaling needs MinValue > 0, got {low:g}")
    if scaling == "ReverseLogarithmic" and not 0 <= low <= high < 1:
        raise _fail(source, f"{field}.ScalingType",
                    f"ReverseLogarithmic scaling needs values in [0, 1), got {low:g}-{high:g}")
    return ParameterRange(name, kind, field, low, high, scaling)


def _ranges(value: Any, source: str) -> Tuple[ParameterRange, ...]:
    field = "ParameterRanges"
    obj = _fields(value, source, field, tuple(RANGE_LISTS))
    ranges: List[ParameterRange] = []
    for key, kind in RANGE_LISTS.items():
        entries = obj.get(key, [])
        if not isinstance(entries, list):
            raise _fail(source, f"{field}.{key}", f"must be a list, got {_shown(entries)}")
        for index, entry in enumerate(entries):
            where = f"{field}.{key}[{index}]"
            parsed = (_categorical(entry, source, where) if kind == "categorical"
                      else _numeric(entry, kind, source, where))
            earlier = next((r for r in ranges if r.name == parsed.name), None)
            if earlier is not None:
                raise _fail(source, f"{where}.Name",
                            f'"{parsed.name}" is tuned twice (also {earlier.field})')
            ranges.append(parsed)
    if not ranges:
        raise _fail(source, field, "names no hyperparameter to tune")
    return tuple(ranges)


def parse(data: Any, source: str) -> TuningConfig:
    """A decoded HyperParameterTuningJobConfig -> TuningConfig (before option overrides)."""
    top = _fields(data, source, "", (
        "Strategy", "HyperParameterTuningJobObjective", "ResourceLimits", "ParameterRanges",
        "TrainingJobEarlyStoppingType", "TuningJobCompletionCriteria", "StrategyConfig",
        "RandomSeed"), ("ParameterRanges",))
    values: Dict[str, Any] = {"ranges": _ranges(top["ParameterRanges"], source)}
    if "Strategy" in top:
        values["strategy"] = _choice(top["Strategy"], source, "Strategy", STRATEGIES)
    if "HyperParameterTuningJobObjective" in top:
        field = "HyperParameterTuningJobObjective"
        obj = _fields(top[field], source, field, ("Type", "MetricName"), ("MetricName",))
        # DeepAR's three objective metrics are all errors, minimized.
        _choice(obj.get("Type", "Minimize"), source, f"{field}.Type", ("Minimize",))
        values["objective"] = _choice(obj["MetricName"], source, f"{field}.MetricName",
                                      OBJECTIVES)
    if "ResourceLimits" in top:
        field = "ResourceLimits"
        limits = {"MaxNumberOfTrainingJobs": "max_trials",
                  "MaxParallelTrainingJobs": "max_parallel",
                  "MaxRuntimeInSeconds": "max_runtime"}
        obj = _fields(top[field], source, field, tuple(limits))
        for key, attribute in limits.items():
            if key in obj:
                values[attribute] = _count(obj[key], source, f"{field}.{key}")
    if "TrainingJobEarlyStoppingType" in top:
        values["early_stopping"] = _choice(top["TrainingJobEarlyStoppingType"], source,
                                           "TrainingJobEarlyStoppingType", ("Off", "Auto"))
    if "TuningJobCompletionCriteria" in top:
        values.update(_completion(top["TuningJobCompletionCriteria"], source))
    if "StrategyConfig" in top:
        values.update(_hyperband(top["StrategyConfig"], source))
    if "RandomSeed" in top:
        values["random_seed"] = _count(top["RandomSeed"], source, "RandomSeed", 0)
    return TuningConfig(source=source, **values)


def _completion(value: Any, source: str) -> Dict[str, Any]:
    field = "TuningJobCompletionCriteria"
    obj = _fields(value, source, field, ("TargetObjectiveMetricValue", "BestObjectiveNotImproving"))
    out: Dict[str, Any] = {}
    if "TargetObjectiveMetricValue" in obj:
        out["target_value"] = _number(obj["TargetObjectiveMetricValue"], source,
                                      f"{field}.TargetObjectiveMetricValue")
    if "BestObjectiveNotImproving" in obj:
        where = f"{field}.BestObjectiveNotImproving"
        inner = _fields(obj["BestObjectiveNotImproving"], source, where,
                        ("MaxNumberOfTrainingJobsNotImproving",),
                        ("MaxNumberOfTrainingJobsNotImproving",))
        out["max_not_improving"] = _count(inner["MaxNumberOfTrainingJobsNotImproving"], source,
                                          f"{where}.MaxNumberOfTrainingJobsNotImproving")
    return out


def _hyperband(value: Any, source: str) -> Dict[str, Any]:
    field = "StrategyConfig.HyperbandStrategyConfig"
    outer = _fields(value, source, "StrategyConfig", ("HyperbandStrategyConfig",),
                    ("HyperbandStrategyConfig",))
    obj = _fields(outer["HyperbandStrategyConfig"], source, field, ("MinResource", "MaxResource"))
    out = {attribute: _count(obj[key], source, f"{field}.{key}")
           for key, attribute in (("MinResource", "min_resource"), ("MaxResource", "max_resource"))
           if key in obj}
    if out.get("min_resource", 1) > out.get("max_resource", math.inf):
        raise _fail(source, f"{field}.MinResource", "is greater than MaxResource")
    return out


def _check(config: TuningConfig) -> TuningConfig:
    """Rules between fields, checked after the options have overridden single fields."""
    source = config.source
    if config.strategy == "Grid":
        numeric = next((r for r in config.ranges if r.kind != "categorical"), None)
        if numeric is not None:
            raise _fail(source, numeric.field,
                        "the Grid strategy searches CategoricalParameterRanges only")
    if config.strategy == "Hyperband" and config.early_stopping == "Auto":
        raise _fail(source, "TrainingJobEarlyStoppingType",
                    "must be Off with the Hyperband strategy, which stops trials itself")
    if config.strategy != "Hyperband" and (config.min_resource or config.max_resource):
        raise _fail(source, "StrategyConfig", "applies to the Hyperband strategy only")
    return config


def default_ranges(static: Mapping[str, Any]) -> Dict[str, Any]:
    """SageMaker's recommended DeepAR ranges, narrowed for a laptop, for the tunable
    hyperparameters the static set leaves free (see docs/commands/tune.md)."""
    integer = [("num_cells", "30", "100", "Linear"), ("num_layers", "1", "3", "Linear")]
    try:
        horizon = SCHEMA["prediction_length"]("prediction_length",
                                              static.get("prediction_length"))
        high = max(math.ceil(horizon / 2), min(200, 3 * horizon))
        integer.insert(0, ("context_length", str(math.ceil(horizon / 2)), str(high), "Linear"))
    except HyperparameterError:
        pass  # resolve_static names the missing or bad prediction_length
    continuous = [("learning_rate", "1e-4", "1e-2", "Logarithmic"),
                  ("dropout_rate", "0", "0.2", "Linear")]

    def entries(rows: Sequence[Tuple[str, str, str, str]]) -> List[Dict[str, str]]:
        return [{"Name": n, "MinValue": lo, "MaxValue": hi, "ScalingType": s}
                for n, lo, hi, s in rows if n not in static]

    return {"IntegerParameterRanges": entries(integer),
            "ContinuousParameterRanges": entries(continuous)}


def load(path: Optional[Path], static: Mapping[str, Any], static_source: str, *,
         strategy: Optional[str] = None, objective: Optional[str] = None,
         max_trials: Optional[int] = None, max_parallel: Optional[int] = None) -> TuningConfig:
    """The tuning config file (or the default ranges for what `static` leaves free), with
    single fields overridden."""
    if path is not None:
        config = parse(read_file(path), str(path))
    else:
        ranges = default_ranges(static)
        if not any(ranges.values()):
            raise HyperparameterError(
                f"{static_source}: sets every hyperparameter the default ranges tune "
                f"(context_length, num_cells, num_layers, learning_rate, dropout_rate); leave "
                f"out the ones to tune, or give a tuning config")
        config = parse({"ParameterRanges": ranges}, DEFAULTS_SOURCE)
    overrides = {"strategy": strategy, "objective": objective, "max_trials": max_trials,
                 "max_parallel": max_parallel}
    return _check(replace(config, **{k: v for k, v in overrides.items() if v is not None}))


def resolve_static(config: TuningConfig, static: Mapping[str, Any], static_source: str
                   ) -> Hyperparameters:
    """Refuse a hyperparameter both static and tuned; check the static set (with a value
    from each range) as `train` would."""
    for r in config.ranges:
        if r.name in static:
            raise _fail(config.source, f"{r.field}.Name",
                        f'"{r.name}" is also set in {static_source}; a hyperparameter is either '
                        f"static or tuned")
    try:
        return resolve({**static, **{r.name: r.first() for r in config.ranges}})
    except HyperparameterError as exc:
        raise HyperparameterError(f"{static_source}: {exc}") from None


def sagemaker_values(values: Mapping[str, Any]) -> Dict[str, str]:
    """Hyperparameters as SageMaker writes them: every value a string, lists as JSON."""
    def text(value: Any) -> str:
        if isinstance(value, str):
            return value
        return json.dumps(value) if isinstance(value, (list, bool)) else repr(value)

    return {name: text(value) for name, value in values.items() if value is not None}
