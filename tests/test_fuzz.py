"""Property-based fuzzing (Hypothesis): hostile channel records, hyperparameters files,
inference requests and raw HTTP, all held to the one contract of every command.

The only outcomes are success or a typed failure: in the library a DeepARCliError subclass
with a one-line message (never another exception type); from the CLI exit 0, or exit
64/65/66/73/78 with exactly one line on stderr, `Error: ...`, and no output (nor temporary
file) left behind; from `serve` a 2xx, or a 4xx with a JSON `{"error": ...}` body, never a
5xx, and /ping still answered afterwards.

The library functions take most examples in-process; the CLI (click's CliRunner, in
process) runs fewer end to end; inference and HTTP share the session's tiny feature model.
Examples are derandomized and no database is kept, so every run tries the same inputs.
"""

from __future__ import annotations

import gzip
import json
import math
import socket
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import orjson
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from deepar_cli.cli import main
from deepar_cli.config import hyperparameters
from deepar_cli.data.channels import read_channel
from deepar_cli.data.records import Record
from deepar_cli.errors import DataError, HyperparameterError, RequestError
from deepar_cli.inference import protocol
from helpers import START, TINY_HP, TINY_PREDICTION_LENGTH, Server, hp_args, usage_error

TYPED_EXIT_CODES = (64, 65, 66, 73, 78)
PL = TINY_PREDICTION_LENGTH
# Derandomized, no example database: every run (and CI) tries the same examples. No
# shrinking: shrinking a CLI failure took Hypothesis over five minutes; the failing
# example is reported as found.
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])


# --------------------------------------------------------------------------- JSON text


class Raw(str):
    """JSON text spliced into an encoded value as it is: NaN spellings, deep nesting."""


def encode(value: Any) -> str:
    """`value` as JSON text, with Raw pieces as they are (json.dumps writes NaN/Infinity
    for such floats, as Python's json does)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{encode(v)}" for k, v in value.items()) \
            + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value)


def deep(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


RAW_NUMBERS = [Raw(text) for text in (
    "NaN", "-NaN", "nan", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999",
    "123456789012345678901234567890", "-0", "1E400", "0.1e1", "01", "1.", ".5", "+1",
    "0x10", '"\\ud800"', '"\\u0000"')]
NAN_STRINGS = ["NaN", "nan", "NAN", "-NaN", "", " NaN", "Infinity", "inf", "None", "null"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(RAW_NUMBERS), st.sampled_from(NAN_STRINGS))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=8)
# Nesting past orjson's depth limit (1024) and Python's recursion limit (1000).
deep_values = st.sampled_from([deep(50), deep(1000), deep(5000)])
hostile = st.one_of(json_values, deep_values)


# --------------------------------------------------------------------------- records

START_VALUES = ["2016-01-01 00:00:00", "2016-01-01", "2016-01-01T00:00:00Z", "2016-13-45",
                "", "now", "today", "NaT", "nan", "9999-12-31", "0001-01-01",
                "2262-04-11 23:00:00", "1677-09-21 00:12:44", "2016-01-01 00:00:00+05:00",
                "1e10", "٢٠١٦-٠١-٠١", "2016-01-01 00:00:00\x00", " 2016-01-01 "]


@st.composite
def valid_record(draw: Any, features: bool, extra: int = 0) -> Dict[str, Any]:
    """A record SageMaker accepts: 1-40 points, a few missing; with `features`, one `cat`
    in 0..2 and two `dynamic_feat` series reaching `extra` points past the target."""
    n = draw(st.integers(1, 40))
    point = st.floats(-1e3, 1e3, allow_nan=False)
    target = draw(st.lists(st.one_of(point, point, point, st.just("NaN"), st.none()),
                           min_size=n, max_size=n))
    if all(v in ("NaN", None) for v in target):  # at least one observed value
        target[draw(st.integers(0, n - 1))] = draw(point)
    record: Dict[str, Any] = {"start": START, "target": target}
    if features:
        record["cat"] = [draw(st.integers(0, 2))]
        record["dynamic_feat"] = [draw(st.lists(point, min_size=n + extra, max_size=n + extra))
                                  for _ in range(2)]
    return record


@st.composite
def mutated_record(draw: Any, features: bool, extra: int = 0) -> Any:
    """A valid record, then up to three mutations of its fields."""
    record: Any = draw(valid_record(features, extra))
    for _ in range(draw(st.integers(0, 3))):
        if not isinstance(record, dict):
            break
        kind = draw(st.sampled_from(["drop", "replace", "start", "target", "cat",
                                     "feat", "extra", "whole", "all-nan"]))
        field = draw(st.sampled_from(["start", "target", "cat", "dynamic_feat"]))
        if kind == "drop":
            record.pop(field, None)
        elif kind == "replace":
            record[field] = draw(hostile)
        elif kind == "start":
            record["start"] = draw(st.one_of(st.sampled_from(START_VALUES), st.text(),
                                             st.integers()))
        elif kind == "target" and isinstance(record.get("target"), list):
            target = record["target"]
            where = draw(st.integers(0, len(target)))
            what = draw(st.one_of(scalars, st.just(1e31), st.just(-1e300)))
            target[where:where + draw(st.integers(0, 1))] = [what]
        elif kind == "cat":
            record["cat"] = draw(st.one_of(
                st.lists(st.integers(-2, 5), max_size=3), st.just([3]), st.just([1.5]),
                st.just([True]), st.just(7), st.just([[0]]),
                st.sampled_from([[10**8], [2**63]])))
        elif kind == "feat":
            rows = record.get("dynamic_feat")
            if not (isinstance(rows, list) and rows and all(isinstance(r, list) and r
                                                            for r in rows)):
                rows = [[1.0]]
            record["dynamic_feat"] = draw(st.sampled_from([
                [], rows[:1], rows + [[0.0] * 3], [row[:-1] for row in rows],
                [[math.nan] * len(rows[0])] * 2]))
        elif kind == "extra":
            record[draw(st.text(max_size=8))] = draw(json_values)
        elif kind == "whole":
            record = draw(hostile)
        elif kind == "all-nan" and isinstance(record.get("target"), list):
            record["target"] = ["NaN"] * len(record["target"])
    return record


@st.composite
def record_line(draw: Any, features: bool, extra: int = 0) -> bytes:
    """One JSON Lines line: a mutated record, its text sometimes damaged."""
    text = encode(draw(mutated_record(features, extra)))
    data = text.encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from(["as-is"] * 6 + ["truncate", "bytes", "bom", "crlf",
                                                "garbage", "blank"]))
    if kind == "truncate":
        data = data[:draw(st.integers(0, max(len(data) - 1, 0)))]
    elif kind == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00",
                                                 b"\xef\xbb\xbf"])) + data[at:]
    elif kind == "bom":
        data = b"\xef\xbb\xbf" + data
    elif kind == "crlf":
        data += b"\r"
    elif kind == "garbage":
        data += draw(st.binary(max_size=8))
    elif kind == "blank":
        data = b"   "
    return data.replace(b"\n", b" ")


@st.composite
def channel_bytes(draw: Any, features: bool, extra: int = 0) -> Tuple[str, bytes]:
    """(file suffix, contents) of a channel file: 1-3 lines, plain or gzip, the gzip
    sometimes corrupt."""
    lines = draw(st.lists(record_line(features, extra), min_size=1, max_size=3))
    data = b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))
    kind = draw(st.sampled_from(["json"] * 4 + ["gz", "corrupt-gz"]))
    if kind == "json":
        return ".json", data
    packed = gzip.compress(data, mtime=0)
    if kind == "gz":
        return ".json.gz", packed
    corrupt = st.one_of(
        st.integers(1, len(packed) - 1).map(lambda n: packed[:n]),
        st.integers(0, len(packed) - 1).map(
            lambda i: packed[:i] + bytes([packed[i] ^ 0xFF]) + packed[i + 1:]))
    return ".json.gz", draw(corrupt)


# --------------------------------------------------------------------------- hyperparameters

FREQUENCIES = st.one_of(st.sampled_from(["H", "h", "D", "W", "M", "min", "5min", "T", "2H"]),
                        st.from_regex(r"\A\s?\d{0,12}\s?(min|T|H|h|D|W|M|S|Y|x)\s?\Z"))
# Valid values cheap to train on the tiny data (cheap=True), or anywhere in range.
VALID_HP = {
    "time_freq": lambda cheap: FREQUENCIES,
    "context_length": lambda cheap: st.integers(1, 24 if cheap else 10_000),
    "prediction_length": lambda cheap: st.integers(1, 12 if cheap else 10_000),
    "epochs": lambda cheap: st.integers(1, 2 if cheap else 10_000),
    "likelihood": lambda cheap: st.sampled_from(hyperparameters.LIKELIHOODS),
    "num_cells": lambda cheap: st.integers(1, 12 if cheap else 1_000),
    "num_layers": lambda cheap: st.integers(1, 2 if cheap else 8),
    "dropout_rate": lambda cheap: st.floats(0, 0.99),
    "learning_rate": lambda cheap: st.floats(1e-6, 1),
    "mini_batch_size": lambda cheap: st.integers(1, 16 if cheap else 100_000),
    "embedding_dimension": lambda cheap: st.integers(1, 8 if cheap else 1_000),
    "cardinality": lambda cheap: st.one_of(st.sampled_from(["auto", "ignore", ""]),
                                           st.lists(st.integers(1, 5), min_size=1,
                                                    max_size=2)),
    "num_dynamic_feat": lambda cheap: st.one_of(st.sampled_from(["auto", "ignore"]),
                                                st.integers(0, 2)),
    "early_stopping_patience": lambda cheap: st.integers(1, 5 if cheap else 10_000),
    "num_eval_samples": lambda cheap: st.integers(1, 20 if cheap else 10_000),
    "test_quantiles": lambda cheap: st.lists(st.floats(0.01, 0.99), min_size=1, max_size=3),
}
OUT_OF_RANGE = [0, -1, 10_001, 10**30, 1.5, -0.0, 1.0, 2**63, float("nan"), float("inf"),
                Raw("1e999"), Raw("NaN"), "0", "-1", "1e5", "abc", "", " ", "[]", "[0, 1]",
                "[[[]]]", "\ud800", "é", "1_000", "٣"]


def spelled(value: Any) -> st.SearchStrategy:
    """A valid value as SageMaker might write it: a JSON value or a string."""
    if isinstance(value, bool) or not isinstance(value, (int, float, list)):
        return st.just(value)
    if isinstance(value, list):
        return st.sampled_from([value, json.dumps(value)])
    forms = [value, str(value), f" {value} "]
    if isinstance(value, int):
        forms += [float(value), f"{value}.0", f"{value}e0"]
    return st.sampled_from(forms)


def hp_value(name: str, cheap: bool) -> st.SearchStrategy:
    valid = VALID_HP[name](cheap).flatmap(spelled)
    nested = st.nothing() if cheap else st.just("[" * 3000 + "]" * 3000)
    return st.one_of(valid, valid, st.sampled_from(OUT_OF_RANGE), json_values, nested)


@st.composite
def hp_file(draw: Any, cheap: bool) -> bytes:
    """A hyperparameters.json: TINY_HP with some values respelled, replaced or dropped,
    unknown keys, or a file that is no JSON object at all."""
    values: Dict[str, Any] = dict(TINY_HP)
    for name in draw(st.lists(st.sampled_from(list(VALID_HP)), max_size=4, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            values.pop(name, None)
        else:
            values[name] = draw(hp_value(name, cheap))
    if draw(st.integers(0, 5)) == 0:
        values[draw(st.sampled_from(["_kvstore", "num_sample", "Epochs", ""]) | st.text())] = \
            draw(json_values)
    if cheap:
        values.update(draw(st.just({"context_length": 10_000, "mini_batch_size": 100_000,
                                    "num_cells": 1_000}) | st.just({})))
    text = encode(values).encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from(["as-is"] * 8 + ["whole", "truncate", "bom", "latin-1",
                                                "deep", "empty"]))
    if kind == "whole":
        text = encode(draw(json_values)).encode("utf-8", "surrogatepass")
    elif kind == "truncate":
        text = text[:draw(st.integers(0, len(text) - 1))]
    elif kind == "bom":
        text = b"\xef\xbb\xbf" + text
    elif kind == "latin-1":
        text = text.replace(b'"H"', b'"\xc4"') + b" \xff"
    elif kind == "deep":
        text = b'{"x":' * 5000 + b"1" + b"}" * 5000
    elif kind == "empty":
        text = b""
    return text


# --------------------------------------------------------------------------- requests

@st.composite
def configuration(draw: Any) -> Any:
    """SageMaker's inference `configuration`, its fields valid or mutated."""
    config: Dict[str, Any] = {}
    if draw(st.booleans()):
        config["num_samples"] = draw(st.one_of(st.integers(1, 30), st.integers(1, 30),
                                               st.sampled_from([0, -1, 10_001, 2**70, 1.5,
                                                                "10", True, None]),
                                               json_values))
    if draw(st.booleans()):
        kinds = st.sampled_from(list(protocol.OUTPUT_TYPES) + ["Mean", "", "median"])
        config["output_types"] = draw(st.one_of(st.lists(kinds, max_size=4),
                                                st.sampled_from(["mean", None, {}]),
                                                json_values))
    if draw(st.booleans()):
        level = st.one_of(st.sampled_from(["0.1", "0.5", "0.50", ".5", "0.5e0", "1", "0",
                                           "-0.1", "NaN", "1e-300", "٠.٥", " 0.5", "0.9"]),
                          st.floats(), st.integers(), st.text(max_size=5))
        config["quantiles"] = draw(st.one_of(st.lists(level, max_size=4), json_values))
    if draw(st.integers(0, 5)) == 0:
        config[draw(st.text(max_size=10))] = draw(json_values)
    if draw(st.integers(0, 7)) == 0:
        return draw(hostile)
    return config


@st.composite
def request_body(draw: Any, features: bool = True) -> bytes:
    """An endpoint request for a model trained with `features`, mutated at any level."""
    instances: Any = draw(st.lists(mutated_record(features, PL), min_size=1, max_size=3))
    request: Any = {"instances": instances}
    if draw(st.booleans()):
        request["configuration"] = draw(configuration())
    kind = draw(st.sampled_from(["as-is"] * 6 + ["no-instances", "instances", "whole",
                                                "truncate", "bytes"]))
    if kind == "no-instances":
        request.pop("instances")
    elif kind == "instances":
        request["instances"] = draw(st.one_of(st.just([]), hostile))
    elif kind == "whole":
        request = draw(hostile)
    data = encode(request).encode("utf-8", "surrogatepass")
    if kind == "truncate":
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif kind == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b"\xff\xfe" + data[at:]
    return data


# --------------------------------------------------------------------------- outcomes


def assert_typed(error: BaseException, *kinds: type) -> None:
    """A typed library error of one of `kinds`, with a one-line message."""
    assert isinstance(error, kinds), f"{type(error).__name__}: {error}"
    message = str(error)
    assert len(message.splitlines()) == 1, repr(message)


def listing(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_cli_outcome(result: Result, command: str, folder: Path, before: List[str],
                       output: Path) -> bool:
    """Exit 0 with `output` written, or a typed exit code, one `Error:` line on stderr and
    nothing new in `folder` (no output, no temporary file). Returns whether it succeeded."""
    stderr = result.stderr
    assert "Traceback" not in stderr, stderr
    if result.exit_code == 0:
        assert output.exists(), f"exit 0 but no {output}"
        return True
    assert result.exit_code in TYPED_EXIT_CODES, (result.exit_code, stderr, result.exception)
    lines = stderr.splitlines()
    if result.exit_code == 64 and lines and lines[0].startswith("Usage: "):  # click's form
        assert stderr == usage_error(command, lines[-1][len("Error: "):]), stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("Error: "), stderr
    assert listing(folder) == before, f"left behind: {set(listing(folder)) - set(before)}"
    return False


def invoke(args: List[str], env: Optional[Dict[str, str]] = None) -> Result:
    return CliRunner().invoke(main, args, env=env, prog_name="deepar-cli")


# --------------------------------------------------------------------------- (a) records


@settings(FUZZ, max_examples=150)
@given(channel=channel_bytes(features=True))
def test_channel_records_are_read_or_refused_in_one_line(channel: Tuple[str, bytes]) -> None:
    """read_channel yields valid records or raises one DataError naming the file."""
    suffix, data = channel
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"train{suffix}"
        path.write_bytes(data)
        try:
            records = list(read_channel(path))
        except Exception as error:  # noqa: B902 - anything else is what this test finds
            assert_typed(error, DataError)
            assert str(error).startswith(str(path)), str(error)
            return
    for record in records:
        assert isinstance(record, Record) and record.target.dtype == np.float64
        assert record.target.size and not np.isinf(record.target).any()


@settings(FUZZ, max_examples=12)
@given(channel=channel_bytes(features=True))
def test_train_on_fuzzed_channel_trains_or_exits_typed(channel: Tuple[str, bytes]) -> None:
    suffix, data = channel
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / f"train{suffix}").write_bytes(data)
        before = listing(folder)
        result = invoke(["train", "--train", str(folder / f"train{suffix}"), "--model-dir",
                         str(folder / "model"), "--quiet", *hp_args(TINY_HP)])
        assert_cli_outcome(result, "train", folder, before, folder / "model")


@settings(FUZZ, max_examples=10)
@given(channel=channel_bytes(features=False))
def test_evaluate_on_fuzzed_channel_scores_or_exits_typed(tiny_model: SimpleNamespace,
                                                           channel: Tuple[str, bytes]) -> None:
    suffix, data = channel
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / f"test{suffix}").write_bytes(data)
        before = listing(folder)
        result = invoke(["evaluate", "--model-dir", str(tiny_model.dir), "--test",
                         str(folder / f"test{suffix}"), "--output-dir", str(folder / "eval"),
                         "--num-samples", "5", "--quiet"])
        assert_cli_outcome(result, "evaluate", folder, before, folder / "eval" / "metrics.json")


@settings(FUZZ, max_examples=15)
@given(channel=channel_bytes(features=True, extra=PL),
       config=st.one_of(st.none(), configuration()))
def test_predict_on_fuzzed_lines_writes_all_or_nothing(
        tiny_feature_model: SimpleNamespace, channel: Tuple[str, bytes], config: Any) -> None:
    """JSON Lines records (corrupt gzip too: predict reads it as bad data) with a fuzzed
    --config: every line answered, or a typed exit and no output file."""
    suffix, data = channel
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        source = folder / f"input{suffix}"
        source.write_bytes(data)
        before = listing(folder)
        extra = [] if config is None else ["--config", encode(config)]
        result = invoke(["predict", "--model-dir", str(tiny_feature_model.dir), "--input",
                         str(source), "--output", str(folder / "out.jsonl"), "--quiet",
                         *extra])
        if assert_cli_outcome(result, "predict", folder, before, folder / "out.jsonl"):
            out = (folder / "out.jsonl").read_bytes().splitlines()
            assert all(isinstance(orjson.loads(line), dict) for line in out)
        elif result.exit_code == 65:
            assert str(source) in result.stderr, result.stderr


# --------------------------------------------------------------------------- (b) hyperparameters


@settings(FUZZ, max_examples=150)
@given(data=hp_file(cheap=False))
def test_hyperparameters_file_resolves_or_is_refused_in_one_line(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hyperparameters.json"
        path.write_bytes(data)
        try:
            hp = hyperparameters.load(path, {})
        except Exception as error:  # noqa: B902
            assert_typed(error, HyperparameterError)
            return
    assert hp.time_freq and 1 <= hp.context_length <= 10_000


@pytest.fixture(scope="module")
def small_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 series of 40 points with a `cat` and 2 `dynamic_feat`: an epoch of a few batches."""
    from deepar_cli.data.channels import write_records
    from deepar_cli.data.synthetic import SyntheticSpec, generate

    train, _ = generate(SyntheticSpec(num_series=3, length=40, prediction_length=PL,
                                      num_categories=3, num_dynamic_feat=2))
    path = tmp_path_factory.mktemp("fuzz_channel") / "train.json"
    write_records(path, train)
    return path


@settings(FUZZ, max_examples=12)
@given(data=hp_file(cheap=True))
def test_train_with_fuzzed_hyperparameters_trains_or_exits_typed(small_channel: Path,
                                                                 data: bytes) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "hyperparameters.json").write_bytes(data)
        before = listing(folder)
        result = invoke(["train", "--train", str(small_channel), "--hyperparameters",
                         str(folder / "hyperparameters.json"), "--model-dir",
                         str(folder / "model"), "--quiet"])
        assert_cli_outcome(result, "train", folder, before, folder / "model")


# --------------------------------------------------------------------------- (c) requests


@settings(FUZZ, max_examples=50)
@given(body=request_body())
def test_requests_are_answered_or_refused_in_one_line(tiny_feature_model: SimpleNamespace,
                                                      body: bytes) -> None:
    """answer_request: one prediction per instance, or one RequestError/DataError."""
    try:
        response = protocol.answer_request(tiny_feature_model.model, body, seed=42)
    except Exception as error:  # noqa: B902
        assert_typed(error, RequestError, DataError)
        return
    predictions = orjson.loads(response)["predictions"]
    assert len(predictions) == len(orjson.loads(body)["instances"])


@settings(FUZZ, max_examples=150)
@given(config=configuration(),
       deep_text=deep_values | st.none())
def test_configurations_parse_or_are_refused_in_one_line(config: Any,
                                                         deep_text: Optional[str]) -> None:
    """--config and DEEPAR_INFERENCE_CONFIG text: a valid InferenceConfig or one error."""
    text = deep_text or encode(config)
    for parse in (protocol.config_from_json,
                  lambda t: protocol.config_from_environment({protocol.CONFIG_ENV: t})):
        try:
            parsed = parse(text)
        except Exception as error:  # noqa: B902
            assert_typed(error, RequestError)
        else:
            assert all(0 < level < 1 for level in parsed.levels)


@settings(FUZZ, max_examples=12)
@given(body=request_body(),
       env_config=st.one_of(st.none(), configuration()))
def test_predict_on_fuzzed_request_writes_all_or_nothing(
        tiny_feature_model: SimpleNamespace, body: bytes, env_config: Any) -> None:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        (folder / "request.json").write_bytes(body)
        before = listing(folder)
        env = None if env_config is None else {protocol.CONFIG_ENV: encode(env_config)}
        result = invoke(["predict", "--model-dir", str(tiny_feature_model.dir), "--input",
                         str(folder / "request.json"), "--output", str(folder / "out.json"),
                         "--quiet"], env=env)
        if assert_cli_outcome(result, "predict", folder, before, folder / "out.json"):
            assert "predictions" in orjson.loads((folder / "out.json").read_bytes())


# --------------------------------------------------------------------------- (d) raw HTTP

HTTP_READ_TIMEOUT_S = 1.0
HTTP_WAIT_S = 20.0  # a whole exchange, its read timeouts included


@pytest.fixture(scope="module")
def fuzz_server(tiny_feature_model: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Server]:
    """One real `serve` (one worker, 1 s read timeout) of the tiny feature model."""
    endpoint = Server(tiny_feature_model.dir, tmp_path_factory.mktemp("fuzz_serve") / "log",
                      workers=1, options=["--read-timeout", str(HTTP_READ_TIMEOUT_S),
                                          "--keep-alive", "1", "--timeout", "20"])
    try:
        endpoint.wait_ready()
        yield endpoint
    finally:
        endpoint.stop()


METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "post", "G ET", "", "\x00",
           "GÉT", "CONNECT", "TRACE"]
TARGETS = ["/invocations", "/invocations", "/ping", "/execution-parameters", "/", "*",
           "/invocations?x=1", "//invocations", "/%00", "http://127.0.0.1/invocations",
           "/" + "a" * 20_000, "/invocations#x", "/ping/", "/\xff"]
VERSIONS = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", "", "http/1.1",
            "HTTP/9.9", "HTTP/1"]
CONTENT_TYPES = ["application/json", "application/jsonlines", "application/json; charset=utf-8",
                 "APPLICATION/JSON", "text/csv", "", "application/x-recordio-protobuf",
                 "application/json;;", "*/*", "\x7f"]
ACCEPTS = ["application/json", "application/jsonlines", "*/*", "text/html", "",
           "application/json;q=0", "application/*;q=0.5, application/jsonlines"]


@st.composite
def http_request(draw: Any) -> Tuple[bytes, bool]:
    """Raw bytes of one request (line, headers, body, framing mutated); and whether it
    frames its body ambiguously (Content-Length and Transfer-Encoding both)."""
    method = draw(st.sampled_from(METHODS))
    line = " ".join(part for part in (method, draw(st.sampled_from(TARGETS)),
                                      draw(st.sampled_from(VERSIONS))))
    body = draw(st.one_of(request_body(), request_body(),
                          st.lists(record_line(True, PL), min_size=1, max_size=3).map(
                              b"\n".join),
                          st.binary(max_size=64), st.just(b"")))
    headers: List[Tuple[bytes, bytes]] = [(b"Host", b"127.0.0.1")]
    if draw(st.booleans()):
        headers.append((b"Content-Type", draw(st.sampled_from(CONTENT_TYPES)).encode()))
    if draw(st.booleans()):
        headers.append((b"Accept", draw(st.sampled_from(ACCEPTS)).encode()))
    framing = draw(st.sampled_from(["length"] * 4 + ["chunked", "none", "short", "long",
                                                     "bad-length", "two-lengths", "gzip-te",
                                                     "both"]))
    ambiguous = framing == "both"
    payload = body
    if framing in ("length", "short", "long", "two-lengths"):
        size = len(body) + {"length": 0, "short": -1, "long": 5, "two-lengths": 0}[framing]
        headers.append((b"Content-Length", str(max(size, 0)).encode()))
        if framing == "two-lengths":
            headers.append((b"Content-Length", str(size + 1).encode()))
    elif framing == "bad-length":
        headers.append((b"Content-Length", draw(st.sampled_from(
            [b"-1", b"abc", b"1e3", b"99999999999999999999", b" 5", b"0x10", b""]))))
    elif framing in ("chunked", "both"):
        headers.append((b"Transfer-Encoding", b"chunked"))
        payload = draw(st.sampled_from([
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n",
            b"%x\r\n%s\r\n" % (len(body) + 3, body), b"zz\r\n" + body, b"0\r\n\r\n"]))
        if framing == "both":
            headers.append((b"Content-Length", str(len(payload)).encode()))
    elif framing == "gzip-te":
        headers.append((b"Transfer-Encoding", b"gzip"))
    for _ in range(draw(st.integers(0, 2))):
        headers.insert(draw(st.integers(0, len(headers))), draw(st.sampled_from([
            (b"Expect", b"100-continue"), (b"X-Long", b"v" * 17_000), (b"Bad Header", b"x"),
            (b"X", b"a\x00b"), (b"X-Folded", b"a\r\n b"), (b"Connection", b"close"),
            (b"Connection", b"keep-alive, Upgrade"), (b"Upgrade", b"h2c"), (b"Host", b"x"),
            (b"", b"empty-name"), (b"X-\xc3\x9cnicode", b"\xc3\xa9")])))
    if draw(st.integers(0, 6)) == 0:
        headers += [(b"X-%d" % k, b"1") for k in range(101)]
    head = line.encode("utf-8", "surrogatepass") + b"\r\n" + b"".join(
        name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
    data = head + payload
    if draw(st.integers(0, 7)) == 0:  # cut anywhere
        data = data[:draw(st.integers(0, len(data)))]
    return data, ambiguous


def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, close our side, and read everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=HTTP_WAIT_S) as conn:
        try:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:  # the server may refuse and close before taking all of it
            pass
        received = b""
        deadline = time.monotonic() + HTTP_WAIT_S
        while time.monotonic() < deadline:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError(f"no end of the answer within {HTTP_WAIT_S} s: {received!r}")
    return received


def responses(data: bytes) -> Iterator[Tuple[int, Dict[str, str], bytes]]:
    """(status, headers, body) of each response in `data` (the server always frames its
    answers by Content-Length)."""
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"an incomplete response head: {head!r}"
        status_line, *fields = head.decode("latin-1").split("\r\n")
        version, status, _ = (status_line + " ").split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers = {}
        for field in fields:
            name, _, value = field.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", 0))
        assert len(data) >= size, f"a truncated body: {data!r}"
        yield int(status), headers, data[:size]
        data = data[size:]


@settings(FUZZ, max_examples=100)
@given(requests=st.lists(http_request(), min_size=1, max_size=2))
def test_raw_http_gets_2xx_or_json_4xx_and_the_server_lives(
        fuzz_server: Server, requests: List[Tuple[bytes, bool]]) -> None:
    """One connection carries one or two (pipelined) fuzzed requests."""
    answer = exchange(fuzz_server.port, b"".join(data for data, _ in requests))
    answers = list(responses(answer))
    for status, headers, body in answers:
        if status == 100:
            continue
        if 200 <= status < 300:
            assert orjson.loads(body) if headers.get("content-type") == "application/json" \
                else body
            continue
        # RFC 9112 6.1: a transfer coding the server does not know gets 501.
        unknown_coding = status == 501 and b"Transfer-Encoding: gzip" in requests[0][0]
        assert 400 <= status < 500 or unknown_coding, (status, body, requests)
        assert isinstance(orjson.loads(body)["error"], str), body
    if requests[0][1] and answers:  # ambiguous framing: refused, and the connection closed
        assert answers[0][0] >= 400 and answers[0][1].get("connection") == "close", answers
        assert len(answers) == 1, answers
    assert fuzz_server.proc.poll() is None, fuzz_server.text()
    assert fuzz_server.http.get(fuzz_server.url + "/ping", timeout=10).status_code == 200
    assert "Traceback" not in fuzz_server.text()

