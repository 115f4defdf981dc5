"""SageMaker DeepAR inference: requests and configurations in, response objects out.

`predict` (batch transform) and `serve` (the endpoint) both answer through this module,
so the same request gives the same bytes from either.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
from dataclasses import dataclass
from typing import (
    IO,
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

import numpy as np
import orjson

from deepar_cli import jsontext
from deepar_cli.data.channels import gzip_errors
from deepar_cli.data.dataset import to_entry
from deepar_cli.data.records import Record, parse_record
from deepar_cli.data.records import show_value as _show
from deepar_cli.errors import DataError, RequestError, UsageError
from deepar_cli.model.forecasting import MAX_NUM_SAMPLES, Summary, sample_paths, summarize
from deepar_cli.model.modelfolder import Model

# The response's output types: each one's value in a prediction, from the series' samples,
# their summary and the configuration; a prediction lists them in the order asked for.
OUTPUT_TYPES: Dict[str, Callable[[np.ndarray, Summary, InferenceConfig], Any]] = {
    "mean": lambda samples, summary, config: summary.mean,
    "quantiles": lambda samples, summary, config: dict(zip(config.quantiles,
                                                           summary.quantiles.values())),
    "samples": lambda samples, summary, config: samples,
}
_VALID_TYPES = ", ".join(f'"{kind}"' for kind in OUTPUT_TYPES)


DEFAULT_QUANTILES = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")
CONFIG_ENV = "DEEPAR_INFERENCE_CONFIG"
# Records read before each forecast call when streaming JSON Lines: bounds memory.
STREAM_CHUNK = 256


@dataclass(frozen=True)
class InferenceConfig:
    """SageMaker's `configuration` object, with SageMaker's defaults; always valid.

    `quantiles` are the response's keys as the request spelled them ("0.1"); `levels`
    are their values. Construction raises RequestError naming the field.
    """

    num_samples: int = 100
    output_types: Tuple[str, ...] = ("mean", "quantiles")
    quantiles: Tuple[str, ...] = DEFAULT_QUANTILES

    def __post_init__(self) -> None:
        if type(self.num_samples) is not int or not 1 <= self.num_samples <= MAX_NUM_SAMPLES:
            raise RequestError(f'"num_samples" must be an integer in [1, {MAX_NUM_SAMPLES}], '
                               f"got {_show(self.num_samples)}")
        if not self.output_types:
            raise RequestError(f'"output_types" must list at least one of {_VALID_TYPES}')
        for kind in self.output_types:
            if not isinstance(kind, str) or kind not in OUTPUT_TYPES:
                raise RequestError(f'unknown output type {_show(kind)} in "output_types"; '
                                   f"valid: {_VALID_TYPES}")
        if not self.quantiles:
            raise RequestError('"quantiles" must list at least one number in (0, 1)')
        for key in self.quantiles:
            if not 0 < _level(key) < 1:
                raise RequestError(f'quantile {_show(key)} in "quantiles" is not a number in '
                                   "(0, 1)")
        object.__setattr__(self, "output_types", tuple(dict.fromkeys(self.output_types)))

    @property
    def levels(self) -> Tuple[float, ...]:
        return tuple(_level(key) for key in self.quantiles)

    @classmethod
    def parse(cls, config: Any) -> "InferenceConfig":
        """A decoded `configuration` JSON object (None: the defaults)."""
        if config is None:
            return cls()
        if not isinstance(config, dict):
            raise RequestError(f'"configuration" must be a JSON object, got {_show(config)}')
        unknown = sorted(set(config) - {"num_samples", "output_types", "quantiles"})
        if unknown:
            raise RequestError(f'"configuration" has an unknown field {_show(unknown[0])}; '
                               "valid: num_samples, output_types, quantiles")
        fields: Dict[str, Any] = {}
        if "num_samples" in config:
            fields["num_samples"] = config["num_samples"]
        for name in ("output_types", "quantiles"):
            if name in config:
                values = config[name]
                if not isinstance(values, list):
                    raise RequestError(f'"{name}" must be a list, got {_show(values)}')
                fields[name] = tuple(values)
        if "quantiles" in fields:
            # JSON numbers become keys spelled as the request wrote them: 0.1 -> "0.1"
            fields["quantiles"] = tuple(
                _show(q) if isinstance(q, (int, float)) and not isinstance(q, bool) else q
                for q in fields["quantiles"])
        return cls(**fields)


def _level(key: Any) -> float:
    """A quantile key's value; NaN for anything that is not a number."""
    try:
        return float(key) if isinstance(key, str) else math.nan
    except ValueError:
        return math.nan


def instance_records(model: Model, objects: Iterable[Any], what: str = "instances"
                     ) -> Iterator[Record]:
    """Validate request instances against the model's needs; errors name `what[i]`."""
    extra = model.hp.prediction_length
    for index, obj in enumerate(objects):
        where = f"{what}[{index}]" if what else ""
        yield _instance(model, obj, where, extra)


def _instance(model: Model, obj: Any, where: str, extra: int) -> Record:
    if isinstance(obj, dict):
        # Fields the model was not trained with are ignored, as SageMaker does.
        obj = {k: v for k, v in obj.items()
               if not (k == "cat" and model.features.cardinality is None)
               and not (k == "dynamic_feat" and not model.features.num_dynamic_feat)}
    try:
        record = parse_record(obj, extra_feat_length=extra)
    except ValueError as exc:
        raise RequestError(f"{where}: {exc}" if where else str(exc)) from None
    record.source = where
    return record


def forecast(model: Model, records: Sequence[Record], config: InferenceConfig, *, seed: int
             ) -> List[Dict[str, Any]]:
    """Forecast records and shape each forecast as SageMaker's prediction object; refuse
    (UsageError) a configuration that would not fit in memory for this many records."""
    from deepar_cli.config import memory

    memory.check_forecast(model.hp, model.features.cardinality,
                          model.features.num_dynamic_feat, num_samples=config.num_samples,
                          series=len(records), samples_kept="samples" in config.output_types,
                          num_quantiles=len(config.quantiles)
                          if "quantiles" in config.output_types else 0,
                          members=len(getattr(model.predictor, "members", (None,))))
    try:
        entries = [to_entry(r, model.hp.freq, model.features) for r in records]
    except DataError as exc:
        raise RequestError(str(exc)) from None
    predictions = []
    for fc in sample_paths(model.predictor, entries, num_samples=config.num_samples,
                           seed=seed):
        summary = summarize(fc.samples, config.levels)
        predictions.append({kind: OUTPUT_TYPES[kind](fc.samples, summary, config)
                            for kind in config.output_types})
    return predictions


def dumps(obj: Any) -> bytes:
    """Serialize predictions: float32 values in their shortest round-trip form."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def parse_json(body: bytes, what: str = "request body") -> Any:
    try:
        return jsontext.loads(body)
    except json.JSONDecodeError as exc:
        raise RequestError(f"{what} is not valid JSON ({exc})") from None


def answer_request(model: Model, body: bytes, *, seed: int) -> bytes:
    """An endpoint request ({"instances": [...], "configuration": {...}}) -> response bytes."""
    return answer_object(model, parse_json(body), seed=seed)


def answer_object(model: Model, request: Any, *, seed: int) -> bytes:
    """A decoded endpoint request -> response bytes."""
    return dumps({"predictions": request_predictions(model, request, seed=seed)})


def request_predictions(model: Model, request: Any, *, seed: int) -> List[Dict[str, Any]]:
    """A decoded endpoint request -> its prediction objects."""
    if not isinstance(request, dict):
        raise RequestError(f"the request must be a JSON object, got {_show(request)}")
    if "instances" not in request:
        raise RequestError('the request has no "instances" field')
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise RequestError(f'"instances" must be a non-empty list of records, '
                           f"got {_show(instances)}")
    config = InferenceConfig.parse(request.get("configuration"))
    records = list(instance_records(model, instances))
    return forecast(model, records, config, seed=seed)


def answer_lines(model: Model, lines: Iterable[bytes], config: InferenceConfig, *, seed: int,
                 source: str = "line", chunk: int = STREAM_CHUNK, first_line: int = 1
                 ) -> Iterator[bytes]:
    """Batch transform: JSON Lines records in, one JSON line out per record, in order.

    Streams: records are read, forecast and written `chunk` at a time (a record's forecast
    does not depend on its chunk). Errors name `source:line`, counting lines from
    `first_line` (a shard of a file starts further down).
    """
    extra = model.hp.prediction_length
    pending: List[Record] = []
    for number, line in enumerate(lines, start=first_line):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            obj = jsontext.loads(line)
        except json.JSONDecodeError as exc:
            raise RequestError(f"{where}: not valid JSON ({exc})") from None
        pending.append(_instance(model, obj, where, extra))
        if len(pending) == chunk:
            yield from _lines(model, pending, config, seed)
            pending = []
    yield from _lines(model, pending, config, seed)


def _lines(model: Model, records: List[Record], config: InferenceConfig, seed: int
           ) -> Iterator[bytes]:
    for prediction in forecast(model, records, config, seed=seed):
        yield dumps(prediction) + b"\n"


def looks_like_request(first_line: bytes) -> bool:
    """True unless the first line is a complete SageMaker record (JSON Lines input)."""
    try:
        obj = jsontext.loads(first_line)
    except json.JSONDecodeError:
        return True
    return not (isinstance(obj, dict) and "instances" not in obj)


def predict_file(model: Model, source: IO[bytes], sink: IO[bytes], config: InferenceConfig,
                 *, seed: int, name: str = "input", config_given: bool = False,
                 progress: bool = False) -> int:
    """Answer a whole endpoint request or JSON Lines of records from `source`; return how
    many predictions were written to `sink`. A request carries its own "configuration",
    so a configuration given for JSON Lines (`config_given`) is refused for one."""
    first, number = source.readline(), 1
    while first and not first.strip():
        first, number = source.readline(), number + 1
    if not first:
        raise RequestError(f"{name}: the input is empty")
    if not looks_like_request(first):
        return _write_lines(model, itertools.chain([first], source), sink, config, seed=seed,
                            name=name, first_line=number, progress=progress)
    body = first + source.read()
    try:
        request = jsontext.loads(body)
    except json.JSONDecodeError as exc:
        if _is_json(first):  # a value, then more: JSON Lines whose first line is no record
            return _write_lines(model, io.BytesIO(body), sink, config, seed=seed, name=name,
                                first_line=number, progress=progress)
        raise RequestError(f"{name}:{number + exc.lineno - 1}: not valid JSON ({exc.msg})"
                           ) from None
    if config_given:
        raise UsageError(f'{name} is an endpoint request, which carries its own '
                         '"configuration"; a configuration given beside it applies to '
                         "JSON Lines input only")
    try:
        predictions = request_predictions(model, request, seed=seed)
    except RequestError as exc:
        raise RequestError(f"{name}: {exc}") from None
    sink.write(dumps({"predictions": predictions}))  # byte for byte what the endpoint answers
    return len(predictions)


def _is_json(line: bytes) -> bool:
    try:
        jsontext.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def _write_lines(model: Model, lines: Iterable[bytes], sink: IO[bytes],
                 config: InferenceConfig, *, seed: int, name: str, first_line: int,
                 progress: bool) -> int:
    """Answer JSON Lines of records into `sink`; return how many predictions it got."""
    from tqdm import tqdm

    count = 0
    with tqdm(desc="forecasting", unit=" series", disable=not progress) as bar:
        for out in answer_lines(model, lines, config, seed=seed, source=name,
                                first_line=first_line):
            sink.write(out)
            count += 1
            bar.update()
    return count


def config_from_json(text: str, source: Optional[str] = None) -> InferenceConfig:
    """A configuration given as JSON text; errors begin with `source` when given."""
    try:
        return InferenceConfig.parse(jsontext.loads(text))
    except json.JSONDecodeError as exc:
        raise RequestError(f"{source or 'the configuration'} is not valid JSON ({exc.msg})"
                           ) from None
    except RequestError as exc:
        raise RequestError(f"{source}: {exc}" if source else str(exc)) from None


def config_from_environment(environ: Mapping[str, str] = os.environ) -> InferenceConfig:
    """SageMaker batch transform's configuration: DEEPAR_INFERENCE_CONFIG, else defaults."""
    text = environ.get(CONFIG_ENV)
    return config_from_json(text, CONFIG_ENV) if text else InferenceConfig()


def open_input(path: "os.PathLike[str] | str") -> IO[bytes]:
    """A batch-transform input for reading: "-" is stdin, `.gz` is decompressed."""
    import gzip
    import sys

    name = str(path)
    try:
        if name == "-":
            return sys.stdin.buffer
        return gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")
    except OSError as exc:
        raise DataError(f"{name}: cannot be read ({exc.strerror})") from None


def run_batch_transform(model: Model, input_path: "os.PathLike[str] | str",
                        output_path: "os.PathLike[str] | str", config: InferenceConfig, *,
                        seed: int, config_given: bool = False, progress: bool = False) -> int:
    """Batch transform of one file: stream input to output ("-" is stdin/stdout); the
    output file appears only once complete. `progress` draws a bar on stderr for JSON
    Lines input."""
    import sys
    from pathlib import Path

    from deepar_cli.atomic import atomic_file

    name = str(input_path)
    with open_input(input_path) as source:
        if str(output_path) == "-":
            with gzip_errors(name):
                return predict_file(model, source, sys.stdout.buffer, config, seed=seed,
                                    name=name, config_given=config_given, progress=progress)
        # Inside atomic_file, which reads an OSError (BadGzipFile is one) as a failed write.
        with atomic_file(Path(output_path)) as tmp, open(tmp, "wb") as sink, \
                gzip_errors(name):
            return predict_file(model, source, sink, config, seed=seed, name=name,
                                config_given=config_given, progress=progress)


def transform_shard(model: Model, data: bytes, config: InferenceConfig, *, seed: int,
                    name: str, first_line: int, whole: bool, config_given: bool = False
                    ) -> Tuple[bytes, int]:
    """Batch transform of a shard held in memory: lines of JSON Lines that begin at line
    `first_line` of `name`, or (`whole`) a whole file, read as `run_batch_transform` reads
    one. Returns the output bytes, equal to that part of the single-process output, and
    how many predictions they hold."""
    if whole:
        sink = io.BytesIO()
        count = predict_file(model, io.BytesIO(data), sink, config, seed=seed, name=name,
                             config_given=config_given)
        return sink.getvalue(), count
    out = list(answer_lines(model, io.BytesIO(data), config, seed=seed, source=name,
                            first_line=first_line))
    return b"".join(out), len(out)
