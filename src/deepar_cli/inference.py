"""SageMaker DeepAR inference: requests and configurations in, response objects out.

`predict` (batch transform) and `serve` (the endpoint) both answer through this module,
so the same request gives the same bytes from either.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, IO, Iterable, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import orjson

from deepar_cli.dataset import to_entry
from deepar_cli.errors import DataError, RequestError
from deepar_cli.modelfolder import Model
from deepar_cli.records import Record, parse_record, show_value as _show

OUTPUT_TYPES = ("mean", "quantiles", "samples")
MAX_NUM_SAMPLES = 10_000
CONFIG_ENV = "DEEPAR_INFERENCE_CONFIG"
# Records read before each forecast call when streaming JSON Lines: bounds memory.
STREAM_CHUNK = 256


@dataclass(frozen=True)
class InferenceConfig:
    """SageMaker's `configuration` object, with SageMaker's defaults."""

    num_samples: int = 100
    output_types: Sequence[str] = ("mean", "quantiles")
    quantiles: Sequence[str] = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")
    levels: Sequence[float] = field(default=(), compare=False)

    @classmethod
    def parse(cls, config: Any) -> "InferenceConfig":
        """Validate a decoded `configuration`; raise RequestError naming the field."""
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise RequestError(f'"configuration" must be a JSON object, got {_show(config)}')
        unknown = sorted(set(config) - {"num_samples", "output_types", "quantiles"})
        if unknown:
            raise RequestError(f'"configuration" has an unknown field "{unknown[0]}"; valid: '
                               "num_samples, output_types, quantiles")
        num_samples = config.get("num_samples", cls.num_samples)
        if type(num_samples) is not int or not 1 <= num_samples <= MAX_NUM_SAMPLES:
            raise RequestError(f'"num_samples" must be an integer in [1, {MAX_NUM_SAMPLES}], '
                               f"got {_show(num_samples)}")
        output_types = config.get("output_types", list(cls.output_types))
        if not isinstance(output_types, list) or not output_types:
            raise RequestError('"output_types" must be a non-empty list of "mean", '
                               f'"quantiles", "samples", got {_show(output_types)}')
        for kind in output_types:
            if kind not in OUTPUT_TYPES:
                raise RequestError(f'unknown output type {_show(kind)} in "output_types"; '
                                   'valid: "mean", "quantiles", "samples"')
        quantiles = config.get("quantiles", list(cls.quantiles))
        if not isinstance(quantiles, list) or not quantiles:
            raise RequestError('"quantiles" must be a non-empty list of numbers in (0, 1) '
                               f"given as strings, got {_show(quantiles)}")
        keys, levels = [], []
        for q in quantiles:
            key = q if isinstance(q, str) else json.dumps(q)
            try:
                level = float(key)
            except ValueError:
                level = math.nan
            if isinstance(q, bool) or not 0 < level < 1:
                raise RequestError(f'quantile {_show(q)} in "quantiles" is not a number in '
                                   "(0, 1)")
            keys.append(key)
            levels.append(level)
        return cls(num_samples, tuple(dict.fromkeys(output_types)), tuple(keys), tuple(levels))


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


def forecast(model: Model, records: Sequence[Record], config: InferenceConfig
             ) -> List[Dict[str, Any]]:
    """Forecast records and shape each forecast as SageMaker's prediction object."""
    if not records:
        return []
    try:
        entries = [to_entry(r, model.hp.freq, model.features) for r in records]
    except DataError as exc:
        raise RequestError(str(exc)) from None
    predictions = []
    for fc in model.predictor.predict(entries, num_samples=config.num_samples):
        prediction: Dict[str, Any] = {}
        for kind in config.output_types:
            if kind == "mean":
                prediction["mean"] = fc.mean
            elif kind == "quantiles":
                # np.quantile answers float64; the samples (and the response) are float32
                values = np.quantile(fc.samples, config.levels, axis=0).astype(np.float32)
                prediction["quantiles"] = dict(zip(config.quantiles, values))
            else:
                prediction["samples"] = fc.samples
        predictions.append(prediction)
    return predictions


def dumps(obj: Any) -> bytes:
    """Serialize predictions: float32 values in their shortest round-trip form."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def parse_json(body: bytes, what: str = "request body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"{what} is not valid JSON ({exc})") from None


def answer_request(model: Model, body: bytes, *, seed: int) -> bytes:
    """An endpoint request ({"instances": [...], "configuration": {...}}) -> response bytes."""
    from deepar_cli.training import seed_everything

    request = parse_json(body)
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
    seed_everything(seed)
    return dumps({"predictions": forecast(model, records, config)})


def answer_lines(model: Model, lines: Iterable[bytes], config: InferenceConfig, *, seed: int,
                 source: str = "line", chunk: int = STREAM_CHUNK) -> Iterator[bytes]:
    """Batch transform: JSON Lines records in, one JSON line out per record, in order.

    Streams: records are read, forecast and written `chunk` at a time. Errors name
    `source:line`.
    """
    from deepar_cli.training import seed_everything

    seed_everything(seed)
    extra = model.hp.prediction_length
    pending: List[Record] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"{where}: not valid JSON ({exc})") from None
        pending.append(_instance(model, obj, where, extra))
        if len(pending) == chunk:
            yield from _lines(model, pending, config)
            pending = []
    yield from _lines(model, pending, config)


def _lines(model: Model, records: List[Record], config: InferenceConfig) -> Iterator[bytes]:
    for prediction in forecast(model, records, config):
        yield dumps(prediction) + b"\n"


def looks_like_request(first_line: bytes) -> bool:
    """True unless the first line is a complete SageMaker record (JSON Lines input)."""
    try:
        obj = orjson.loads(first_line)
    except orjson.JSONDecodeError:
        return True
    return not (isinstance(obj, dict) and "instances" not in obj)


def predict_file(model: Model, source: IO[bytes], sink: IO[bytes], config: InferenceConfig,
                 *, seed: int, name: str = "input", options_given: bool = False,
                 progress: bool = False) -> int:
    """Answer a whole endpoint request or JSON Lines of records from `source`; return how
    many predictions were written to `sink`. A request carries its own "configuration",
    so configuration options (`options_given`) are refused for one."""
    first = source.readline()
    while first and not first.strip():
        first = source.readline()
    if not first:
        raise RequestError(f"{name}: the input is empty")
    if looks_like_request(first):
        if options_given:
            raise RequestError(f'{name} is an endpoint request, which carries its own '
                               '"configuration"; --config, --num-samples, --output-types and '
                               "--quantiles apply to JSON Lines input")
        body = first + source.read()
        response = answer_request(model, body, seed=seed)
        sink.write(response)  # byte for byte what the endpoint answers
        return len(orjson.loads(response)["predictions"])
    from tqdm import tqdm

    def lines() -> Iterator[bytes]:
        yield first
        yield from source

    count = 0
    with tqdm(desc="forecasting", unit=" series", disable=not progress) as bar:
        for out in answer_lines(model, lines(), config, seed=seed, source=name):
            sink.write(out)
            count += 1
            bar.update()
    return count


def resolve_config(config_json: Optional[str], overrides: Mapping[str, Any],
                   environ: Mapping[str, str] = os.environ) -> InferenceConfig:
    """--config JSON (else DEEPAR_INFERENCE_CONFIG), then single options on top."""
    text = config_json if config_json is not None else environ.get(CONFIG_ENV)
    source = "--config" if config_json is not None else CONFIG_ENV
    config: Dict[str, Any] = {}
    if text:
        try:
            config = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RequestError(f"{source} is not valid JSON ({exc.msg})") from None
        if not isinstance(config, dict):
            raise RequestError(f"{source} must be a JSON object, got {_show(config)}")
    config.update({k: v for k, v in overrides.items() if v is not None})
    return InferenceConfig.parse(config)


def run_batch_transform(model: Model, input_path: "os.PathLike[str] | str",
                        output_path: "os.PathLike[str] | str", *, config_json: Optional[str],
                        overrides: Mapping[str, Any], seed: int, progress: bool = False) -> int:
    """`deepar-cli predict`: stream input to output ("-" is stdin/stdout); the output file
    appears only once complete. `progress` draws a bar on stderr for JSON Lines input."""
    import sys
    from pathlib import Path

    from deepar_cli.atomic import atomic_file

    config = resolve_config(config_json, overrides)
    given = config_json is not None or any(v is not None for v in overrides.values())
    name = str(input_path)
    try:
        source = sys.stdin.buffer if name == "-" else open(input_path, "rb")
    except OSError as exc:
        raise DataError(f"{name}: cannot be read ({exc.strerror})") from None
    with source:
        if str(output_path) == "-":
            return predict_file(model, source, sys.stdout.buffer, config, seed=seed, name=name,
                                options_given=given, progress=progress)
        with atomic_file(Path(output_path)) as tmp, open(tmp, "wb") as sink:
            return predict_file(model, source, sink, config, seed=seed, name=name,
                                options_given=given, progress=progress)
