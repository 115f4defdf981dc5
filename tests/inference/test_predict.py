"""`deepar-cli predict` (batch transform) and deepar_cli.inference.protocol: SageMaker's DeepAR
inference formats in, its response objects out."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import pytest

from deepar_cli.cli import main
from deepar_cli.errors import RequestError
from deepar_cli.inference import protocol
from deepar_cli.inference.protocol import InferenceConfig
from deepar_cli.model import modelfolder
from helpers import START, TINY_PREDICTION_LENGTH, usage_error

PL = TINY_PREDICTION_LENGTH
DEFAULT_QUANTILES = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]
# Levels far apart, out of order: the forecasts' means must follow the input order.
FACTORS = [1000.0, 1.0, 100.0, 10.0]


@pytest.fixture(scope="module")
def models(tiny_model: SimpleNamespace, tiny_feature_model: SimpleNamespace
           ) -> SimpleNamespace:
    """The shared tiny model and the one trained with `cat` (3 groups) and 2 `dynamic_feat`."""
    return SimpleNamespace(plain=tiny_model.dir, feat=tiny_feature_model.dir)


@pytest.fixture(scope="module")
def plain_model(tiny_model: SimpleNamespace) -> modelfolder.Model:
    return tiny_model.model


@pytest.fixture(autouse=True)
def no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(protocol.CONFIG_ENV, raising=False)


@pytest.fixture(scope="module")
def base(tiny_data: SimpleNamespace) -> List[Dict[str, Any]]:
    """The tiny train records (48 points each) as JSON objects."""
    return [r.to_json() for r in tiny_data.train_records]


def scaled(base: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One record per factor: the first series at very different levels."""
    return [{"start": START, "target": [v * f for v in base[0]["target"]]} for f in FACTORS]


def predict(runner, model_dir: Path, input_path: Path, output_path: Path, *args: str,
            env: Optional[Dict[str, str]] = None):
    return runner.invoke(main, ["predict", "--model-dir", str(model_dir), "--input",
                                str(input_path), "--output", str(output_path), *args], env=env,
                         prog_name="deepar-cli")


def read_lines(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def leftovers(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ output shape and keys

COMBINATIONS = [["mean"], ["quantiles"], ["samples"], ["mean", "quantiles"],
                ["mean", "samples"], ["quantiles", "samples"], ["mean", "quantiles", "samples"]]


@pytest.mark.parametrize("types", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
def test_output_types(runner, models, base, jsonl, tmp_path, types: List[str]) -> None:
    source = jsonl(base[:3], name="in.json")
    out = tmp_path / "out.json"
    result = predict(runner, models.plain, source, out, "--output-types", ",".join(types),
                     "--quantiles", "0.1,0.50", "--num-samples", "5")
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote 3 predictions to {out}\n"
    predictions = read_lines(out)
    assert len(predictions) == 3
    for p in predictions:
        assert list(p) == types
        if "mean" in types:
            assert len(p["mean"]) == PL and all(isinstance(v, float) for v in p["mean"])
        if "quantiles" in types:
            assert list(p["quantiles"]) == ["0.1", "0.50"]
            assert all(len(v) == PL for v in p["quantiles"].values())
            low, mid = (np.array(v) for v in p["quantiles"].values())
            assert (low <= mid).all()
        if "samples" in types:
            assert len(p["samples"]) == 5 and all(len(s) == PL for s in p["samples"])
        if "samples" in types and "mean" in types:
            samples = np.array(p["samples"], dtype=np.float32)
            np.testing.assert_allclose(p["mean"], samples.mean(axis=0), rtol=1e-5)
        if "samples" in types and "quantiles" in types:
            samples = np.array(p["samples"], dtype=np.float32)
            np.testing.assert_allclose(p["quantiles"]["0.50"],
                                       np.quantile(samples, 0.5, axis=0), rtol=1e-5)


def test_output_types_in_the_order_asked_and_deduplicated(runner, models, base, jsonl,
                                                          tmp_path) -> None:
    out = tmp_path / "out.json"
    result = predict(runner, models.plain, jsonl(base[:1]), out,
                     "--output-types", "samples,mean,samples", "--num-samples", "2")
    assert result.exit_code == 0, result.output
    [p] = read_lines(out)
    assert list(p) == ["samples", "mean"]


def test_one_line_per_record_in_input_order(runner, models, base, jsonl, tmp_path) -> None:
    records = scaled(base)
    out = tmp_path / "out.json"
    result = predict(runner, models.plain, jsonl(records + [""] + records[:1]), out,
                     "--output-types", "mean")
    assert result.exit_code == 0, result.output
    predictions = read_lines(out)
    assert len(predictions) == len(FACTORS) + 1  # the blank line is skipped
    levels = [np.mean(p["mean"]) for p in predictions]
    assert list(np.argsort(levels[:4])) == list(np.argsort(FACTORS))
    for level, factor in zip(levels, FACTORS):
        assert 0.1 * factor < level < 100 * factor
    assert levels[4] == pytest.approx(levels[0], rel=0.5)


def test_the_same_seed_gives_the_same_bytes(runner, models, base, jsonl, tmp_path) -> None:
    source = jsonl(base[:3])
    outs = [tmp_path / f"{n}.json" for n in range(3)]
    for out, seed in zip(outs, ("42", "42", "43")):
        result = predict(runner, models.plain, source, out, "--output-types", "samples",
                         "--num-samples", "3", "--seed", seed)
        assert result.exit_code == 0, result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert outs[0].read_bytes() != outs[2].read_bytes()


# ------------------------------------------------------------------ configuration

def test_sagemaker_defaults(runner, models, base, jsonl, tmp_path) -> None:
    out = tmp_path / "out.json"
    result = predict(runner, models.plain, jsonl(base[:2]), out)
    assert result.exit_code == 0, result.output
    for p in read_lines(out):
        assert list(p) == ["mean", "quantiles"]
        assert list(p["quantiles"]) == DEFAULT_QUANTILES
        # Quantiles rise with the level at every step.
        values = np.array(list(p["quantiles"].values()))
        assert (np.diff(values, axis=0) >= 0).all()
    result = predict(runner, models.plain, jsonl(base[:1]), out, "--output-types", "samples")
    assert result.exit_code == 0, result.output
    [p] = read_lines(out)
    assert len(p["samples"]) == 100
    assert protocol.config_from_environment({}) == InferenceConfig() == InferenceConfig(
        100, ("mean", "quantiles"), tuple(DEFAULT_QUANTILES))


def test_config_option(runner, models, base, jsonl, tmp_path) -> None:
    out = tmp_path / "out.json"
    config = {"num_samples": 3, "output_types": ["samples", "quantiles"],
              "quantiles": ["0.25", "0.75"]}
    result = predict(runner, models.plain, jsonl(base[:2]), out, "--config", json.dumps(config))
    assert result.exit_code == 0, result.output
    for p in read_lines(out):
        assert list(p) == ["samples", "quantiles"]
        assert len(p["samples"]) == 3
        assert list(p["quantiles"]) == ["0.25", "0.75"]


def test_config_from_the_environment(runner, models, base, jsonl, tmp_path) -> None:
    out = tmp_path / "out.json"
    env = {"DEEPAR_INFERENCE_CONFIG": json.dumps({"num_samples": 4,
                                                  "output_types": ["mean", "samples"]})}
    result = predict(runner, models.plain, jsonl(base[:2]), out, env=env)
    assert result.exit_code == 0, result.output
    for p in read_lines(out):
        assert list(p) == ["mean", "samples"] and len(p["samples"]) == 4
    # --config wins over the environment.
    result = predict(runner, models.plain, jsonl(base[:2]), out, "--config",
                     '{"output_types": ["quantiles"], "quantiles": [0.5]}', env=env)
    assert result.exit_code == 0, result.output
    for p in read_lines(out):
        assert list(p) == ["quantiles"] and list(p["quantiles"]) == ["0.5"]


def test_single_options_override_the_config(runner, models, base, jsonl, tmp_path) -> None:
    out = tmp_path / "out.json"
    config = json.dumps({"num_samples": 3, "output_types": ["mean"],
                         "quantiles": ["0.2", "0.8"]})
    env = {"DEEPAR_INFERENCE_CONFIG": config}
    for args, envs in ((["--config", config], None), ([], env)):
        result = predict(runner, models.plain, jsonl(base[:1]), out, *args,
                         "--num-samples", "6", env=envs)
        assert result.exit_code == 0, result.output
        [p] = read_lines(out)
        assert list(p) == ["mean"]
        result = predict(runner, models.plain, jsonl(base[:1]), out, *args,
                         "--output-types", "samples,quantiles", env=envs)
        assert result.exit_code == 0, result.output
        [p] = read_lines(out)
        assert list(p) == ["samples", "quantiles"]
        assert len(p["samples"]) == 3 and list(p["quantiles"]) == ["0.2", "0.8"]
        result = predict(runner, models.plain, jsonl(base[:1]), out, *args,
                         "--output-types", "samples,quantiles", "--num-samples", "6",
                         "--quantiles", "0.05,0.950", env=envs)
        assert result.exit_code == 0, result.output
        [p] = read_lines(out)
        assert len(p["samples"]) == 6 and list(p["quantiles"]) == ["0.05", "0.950"]


def test_configuration_sources() -> None:
    env = {protocol.CONFIG_ENV: '{"num_samples": 7}'}
    assert protocol.config_from_environment(env) == InferenceConfig(num_samples=7)
    assert protocol.config_from_environment({protocol.CONFIG_ENV: ""}) == InferenceConfig()
    assert protocol.config_from_json('{"num_samples": 8}', "x") == InferenceConfig(8)
    assert InferenceConfig.parse(None) == InferenceConfig()
    config = InferenceConfig.parse({"quantiles": ["0.10", 0.5], "output_types": ["samples"]})
    assert config.quantiles == ("0.10", "0.5") and config.levels == (0.1, 0.5)
    assert config.output_types == ("samples",) and config.num_samples == 100


@pytest.mark.parametrize("text, message", [
    ("{bad", "source is not valid JSON (unexpected character, expected a string key)"),
    ("[1]", 'source: "configuration" must be a JSON object, got [1]'),
    ('{"num_samples": true}', 'source: "num_samples" must be an integer in [1, 10000], got true'),
    ('{"num_samples": 2.0}', 'source: "num_samples" must be an integer in [1, 10000], got 2.0'),
    ('{"output_types": []}', 'source: "output_types" must list at least one of "mean", '
                             '"quantiles", "samples"'),
    ('{"quantiles": ["0.5", "1"]}', 'source: quantile "1" in "quantiles" is not a number in '
                                    "(0, 1)"),
    ('{"quantiles": 0.5}', 'source: "quantiles" must be a list, got 0.5'),
])
def test_configuration_errors_name_their_source(text: str, message: str) -> None:
    with pytest.raises(RequestError) as info:
        protocol.config_from_json(text, "source")
    assert str(info.value) == message


# ------------------------------------------------------------------ request/response mode

def request_body(base: List[Dict[str, Any]], **kwargs: Any) -> Dict[str, Any]:
    return {"instances": scaled(base),
            "configuration": {"num_samples": 4, "output_types": ["mean", "samples"]}, **kwargs}


def test_request_file_gives_a_response(runner, models, plain_model, base, tmp_path) -> None:
    body = request_body(base)
    compact, pretty = tmp_path / "compact.json", tmp_path / "pretty.json"
    compact.write_text(json.dumps(body))
    pretty.write_text("\n" + json.dumps(body, indent=2) + "\n")
    outputs = []
    for name, source in (("compact", compact), ("pretty", pretty)):
        out = tmp_path / f"{name}.out"
        result = predict(runner, models.plain, source, out)
        assert result.exit_code == 0, result.output
        assert result.output == f"wrote {len(FACTORS)} predictions to {out}\n"
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    response = json.loads(outputs[0])
    assert list(response) == ["predictions"]
    predictions = response["predictions"]
    assert len(predictions) == len(FACTORS)
    for p in predictions:
        # the request's configuration answers, as the endpoint's does
        assert list(p) == ["mean", "samples"] and len(p["samples"]) == 4
        assert len(p["mean"]) == PL
    levels = [np.mean(p["mean"]) for p in predictions]
    assert list(np.argsort(levels)) == list(np.argsort(FACTORS))
    # Byte for byte what the endpoint's code answers.
    assert outputs[0] == protocol.answer_request(plain_model, compact.read_bytes(), seed=42)


def test_request_without_configuration_uses_defaults(runner, models, base, tmp_path) -> None:
    source = tmp_path / "req.json"
    source.write_text(json.dumps({"instances": base[:2]}))
    out = tmp_path / "out.json"
    result = predict(runner, models.plain, source, out)
    assert result.exit_code == 0, result.output
    predictions = json.loads(out.read_bytes())["predictions"]
    assert [list(p) for p in predictions] == [["mean", "quantiles"]] * 2
    assert list(predictions[0]["quantiles"]) == DEFAULT_QUANTILES


def test_request_and_json_lines_agree(runner, models, base, jsonl, tmp_path) -> None:
    body = request_body(base)
    source = tmp_path / "req.json"
    source.write_text(json.dumps(body))
    result = predict(runner, models.plain, source, tmp_path / "a.out")
    assert result.exit_code == 0, result.output
    lines = jsonl(body["instances"], name="lines.json")
    result = predict(runner, models.plain, lines, tmp_path / "b.out", "--config",
                     json.dumps(body["configuration"]))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a.out").read_bytes())["predictions"] == \
        read_lines(tmp_path / "b.out")


def test_request_seed(runner, models, base, tmp_path) -> None:
    source = tmp_path / "req.json"
    source.write_text(json.dumps(request_body(base)))
    outs = []
    for n, seed in enumerate(("5", "5", "6")):
        out = tmp_path / f"{n}.out"
        result = predict(runner, models.plain, source, out, "--seed", seed)
        assert result.exit_code == 0, result.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    first, other = (json.loads(o)["predictions"] for o in (outs[0], outs[2]))
    assert all(a["samples"] != b["samples"] for a, b in zip(first, other))


@pytest.mark.parametrize("body, message", [
    ({"instances": [{"start": START, "target": [1, 2, 3]}, {"start": START}]},
     'instances[1]: "target" is missing'),
    ({"instances": []}, '"instances" must be a non-empty list of records, got []'),
    ({"instances": [{"start": START, "target": [1.0]}], "configuration": {"num_samples": 0}},
     '"num_samples" must be an integer in [1, 10000], got 0'),
    ({"instances": [{"start": START, "target": [1.0]}], "configuration": {"top_k": 3}},
     '"configuration" has an unknown field "top_k"; valid: num_samples, output_types, '
     'quantiles'),
    ({"instances": [{"start": START, "target": [1.0]}], "configuration": {"top\nk": 3}},
     '"configuration" has an unknown field "top\\nk"; valid: num_samples, output_types, '
     'quantiles'),
    ([1, 2], "the request must be a JSON object, got [1,2]"),
])
def test_bad_requests(runner, models, tmp_path, body, message) -> None:
    source = tmp_path / "req.json"
    source.write_text(json.dumps(body))
    out = tmp_path / "out" / "p.json"
    result = predict(runner, models.plain, source, out)
    assert result.exit_code == 65
    assert result.output.splitlines() == [f"Error: {source}: {message}"]
    assert not out.exists()
    assert not out.parent.exists() or leftovers(out.parent) == []


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("line, message", [
    ('{"start": "2016-01-01 00:00:00", "target": "abc"}',
     '"target" must be a list of numbers, got "abc"'),
    ('{"target": [1, 2, 3]}', '"start" is missing'),
    ('{"start": "yesterday-ish", "target": [1, 2]}',
     '"start" must be a timestamp like "2016-01-01 00:00:00", got "yesterday-ish"'),
    ('{"start": "2016-01-01 00:00:00", "target": [1, "x", 3]}',
     '"target" must be a list of numbers, got "x" at position 1'),
    ('{"start": "2016-01-01 00:00:00", "target": []}', '"target" must not be empty'),
    ('[1, 2]', "a record must be a JSON object, got [1,2]"),
])
def test_bad_record_line(runner, models, base, jsonl, tmp_path, line, message) -> None:
    source = jsonl([base[0], line, base[1]], name="in.json")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = predict(runner, models.plain, source, out_dir / "p.json")
    assert result.exit_code == 65
    assert result.output.splitlines() == [f"Error: {source}:2: {message}"]
    assert leftovers(out_dir) == []  # no output file, no temporary file


def test_line_that_is_not_json(runner, models, base, jsonl, tmp_path) -> None:
    source = jsonl([base[0], '{"start": oops}'], name="in.json")
    out = tmp_path / "p.json"
    result = predict(runner, models.plain, source, out)
    assert result.exit_code == 65
    [line] = result.output.splitlines()
    assert line.startswith(f"Error: {source}:2: not valid JSON (")
    assert not out.exists()


@pytest.mark.parametrize("lines, message", [
    (["", '{"start": oops}', "{base}"],
     "{source}:2: not valid JSON (unexpected character, expected a JSON value)"),
    (["[1, 2]", "{base}"], "{source}:1: a record must be a JSON object, got [1,2]"),
    (['{"target": [1, 2]}', "{base}"], '{source}:1: "start" is missing'),
    (['{"instances": [{"start": "2016"}]}'], '{source}: instances[0]: "target" is missing'),
])
def test_a_bad_first_line_names_the_file_and_line(runner, models, base, jsonl, tmp_path,
                                                 lines, message) -> None:
    source = jsonl([json.dumps(base[0]) if line == "{base}" else line for line in lines],
                   name="in.json")
    out = tmp_path / "p.json"
    result = predict(runner, models.plain, source, out)
    assert result.exit_code == 65
    assert result.stderr == f"Error: {message.format(source=source)}\n"
    assert not out.exists()


@pytest.mark.parametrize("cut", [0.5, 0], ids=["truncated", "empty"])
def test_a_broken_params_file_is_one_line(runner, models, base, jsonl, tmp_path,
                                          cut: float) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(models.plain, folder)
    params = folder / "predictor" / "prediction_net-0000.params"
    data = params.read_bytes()
    params.write_bytes(data[:int(len(data) * cut)])
    out = tmp_path / "p.json"
    result = predict(runner, folder, jsonl(base[:1]), out)
    assert result.exit_code == 66
    assert result.stderr == (f"Error: {folder}: the weights in "
                             "predictor/prediction_net-0000.params cannot be loaded "
                             "(Invalid NDArray file format)\n")
    assert not out.exists()


def test_model_files_nested_too_deep_are_a_model_error(runner, models, base, jsonl,
                                                       tmp_path) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(models.plain, folder)
    (folder / "training.json").write_text("[" * 3000 + "]" * 3000)
    result = predict(runner, folder, jsonl(base[:1]), tmp_path / "p.json")
    assert result.exit_code == 66
    assert result.stderr == (f"Error: {folder}: model files are damaged (depth limit exceeded: "
                             "line 1 column 1026 (char 1025))\n")


QUANTILE_HINT = 'is not a number in (0, 1); give levels like "0.1,0.5,0.9"'


@pytest.mark.parametrize("args, message", [
    (["--output-types", "mean,median"], "Invalid value for '--output-types': unknown output "
                                        'type "median"; valid: mean, quantiles, samples'),
    (["--quantiles", "0.1,1.5"], f"Invalid value for '--quantiles': \"1.5\" {QUANTILE_HINT}"),
    (["--quantiles", "0"], f"Invalid value for '--quantiles': \"0\" {QUANTILE_HINT}"),
    (["--quantiles", "0.5,low"], f"Invalid value for '--quantiles': \"low\" {QUANTILE_HINT}"),
    (["--num-samples", "0"],
     "Invalid value for '--num-samples': 0 is not in the range 1<=x<=10000."),
    (["--num-samples", "10001"],
     "Invalid value for '--num-samples': 10001 is not in the range 1<=x<=10000."),
    (["--config", '{"num_samples": 3'],
     "Invalid value for '--config': the configuration is not valid JSON (unexpected end of "
     "data)"),
    (["--config", "nope"],
     "Invalid value for '--config': the configuration is not valid JSON (invalid literal, "
     "expected 'null')"),
    (["--config", "[" * 3000 + "]" * 3000],
     "Invalid value for '--config': the configuration is not valid JSON (depth limit "
     "exceeded)"),
    (["--config", '{"quantiles": ' + "[" * 1000 + "]" * 1000 + "}"],
     "Invalid value for '--config': quantile [[[[...]]]] in \"quantiles\" is not a number in "
     "(0, 1)"),
    (["--config", "[1]"], "Invalid value for '--config': \"configuration\" must be a JSON "
                          "object, got [1]"),
    (["--config", '{"num_samples": "5"}'],
     "Invalid value for '--config': \"num_samples\" must be an integer in [1, 10000], "
     'got "5"'),
    (["--config", '{"output_types": "mean"}'],
     "Invalid value for '--config': \"output_types\" must be a list, got \"mean\""),
])
def test_bad_configuration_is_a_usage_error(runner, models, base, jsonl, tmp_path, args,
                                            message) -> None:
    out = tmp_path / "p.json"
    result = predict(runner, models.plain, jsonl(base[:1]), out, *args)
    assert result.exit_code == 64
    assert result.stdout == ""
    assert result.stderr == usage_error("predict", message)
    assert not out.exists()


@pytest.mark.parametrize("value, message", [
    ("{bad", "DEEPAR_INFERENCE_CONFIG is not valid JSON "
             "(unexpected character, expected a string key)"),
    ("[" * 3000 + "]" * 3000, "DEEPAR_INFERENCE_CONFIG is not valid JSON (depth limit "
                              "exceeded)"),
    ('{"num_samples": 0}',
     'DEEPAR_INFERENCE_CONFIG: "num_samples" must be an integer in [1, 10000], got 0'),
])
def test_bad_environment_configuration(runner, models, base, jsonl, tmp_path, value,
                                       message) -> None:
    out = tmp_path / "p.json"
    result = predict(runner, models.plain, jsonl(base[:1]), out,
                     env={"DEEPAR_INFERENCE_CONFIG": value})
    assert result.exit_code == 64
    assert result.stdout == ""
    assert result.stderr == f"Error: {message}\n"  # one line: not an option's usage error
    assert not out.exists()


def test_missing_model_and_input(runner, models, base, jsonl, tmp_path) -> None:
    out = tmp_path / "p.json"
    result = predict(runner, tmp_path / "none", jsonl(base[:1]), out)
    assert result.exit_code == 66
    assert result.stderr == (f"Error: {tmp_path / 'none'}: no such model folder (train one "
                             "with `deepar-cli train`)\n")
    absent = tmp_path / "absent.json"
    result = predict(runner, models.plain, absent, out)
    assert result.exit_code == 64
    assert result.stderr == usage_error(
        "predict", f"Invalid value for '--input': Path '{absent}' does not exist.")
    empty = jsonl(["", ""], name="empty.json")
    result = predict(runner, models.plain, empty, out)
    assert result.exit_code == 65
    assert result.stderr == f"Error: {empty}: the input is empty\n"
    assert not out.exists()


# ------------------------------------------------------------------ cat and dynamic_feat

def feature_record(cat: Any = (0,), reach: int = PL, num_feat: int = 2, length: int = 48
                   ) -> Dict[str, Any]:
    t = np.arange(length + reach)
    record: Dict[str, Any] = {"start": START,
                              "target": (5 + np.sin(2 * np.pi * t[:length] / 24)).tolist()}
    if cat is not None:
        record["cat"] = list(cat)
    if num_feat:
        record["dynamic_feat"] = [np.cos(2 * np.pi * t / 24 + k).tolist()
                                  for k in range(num_feat)]
    return record


def test_feature_model_forecasts_valid_records(runner, models, jsonl, tmp_path) -> None:
    records = [feature_record(cat=[c]) for c in (0, 1, 2)]
    out = tmp_path / "p.json"
    result = predict(runner, models.feat, jsonl(records), out, "--output-types", "mean")
    assert result.exit_code == 0, result.output
    predictions = read_lines(out)
    assert len(predictions) == 3 and all(len(p["mean"]) == PL for p in predictions)


@pytest.mark.parametrize("record, message", [
    (feature_record(cat=None),
     '"cat" is missing; the model was trained with 1 categorical feature(s)'),
    (feature_record(cat=[0, 1]), '"cat" has 2 values, the model expects 1'),
    (feature_record(cat=[5]),
     '"cat" value 5 at position 0 was never seen in training (categories 0..2)'),
    (feature_record(reach=0), '"dynamic_feat" feature 0 has 48 values, expected 60 (the length '
                              'of "target" plus prediction_length, 48 + 12)'),
    (feature_record(reach=PL - 1), '"dynamic_feat" feature 0 has 59 values, expected 60 (the '
                                   'length of "target" plus prediction_length, 48 + 12)'),
    (feature_record(num_feat=0), '"dynamic_feat" has 0 series, the model expects 2'),
    (feature_record(num_feat=1), '"dynamic_feat" has 1 series, the model expects 2'),
])
def test_feature_model_errors(runner, models, jsonl, tmp_path, record, message) -> None:
    source = jsonl([feature_record(), record], name="in.json")
    out = tmp_path / "p.json"
    result = predict(runner, models.feat, source, out)
    assert result.exit_code == 65
    assert result.output.splitlines() == [f"Error: {source}:2: {message}"]
    assert not out.exists()


def test_feature_model_request_errors_name_the_instance(runner, models, tmp_path) -> None:
    source = tmp_path / "req.json"
    source.write_text(json.dumps({"instances": [feature_record(), feature_record(cat=[3])]}))
    result = predict(runner, models.feat, source, tmp_path / "p.json")
    assert result.exit_code == 65
    assert result.output.splitlines() == [
        f'Error: {source}: instances[1]: "cat" value 3 at position 0 was never seen in '
        "training (categories 0..2)"]


def test_plain_model_ignores_cat_and_dynamic_feat(runner, models, base, jsonl,
                                                   tmp_path) -> None:
    plain = [{"start": START, "target": r["target"]} for r in base[:3]]
    extra = [dict(r, cat=[9, 4], dynamic_feat=[[1.0, 2.0]]) for r in plain]
    outs = []
    for name, records in (("plain", plain), ("extra", extra)):
        out = tmp_path / f"{name}.out"
        result = predict(runner, models.plain, jsonl(records, name=f"{name}.json"), out,
                         "--output-types", "mean,samples", "--num-samples", "3")
        assert result.exit_code == 0, result.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


# ------------------------------------------------------------------ short records, streaming

def test_records_shorter_than_the_context(runner, models, jsonl, tmp_path) -> None:
    records = [{"start": START, "target": [4.0, 5.0, 6.0]},
               {"start": START, "target": [2.5]},
               {"start": START, "target": [3.0, None, "NaN", 3.5]}]
    out = tmp_path / "p.json"
    result = predict(runner, models.plain, jsonl(records), out, "--output-types",
                     "mean,quantiles", "--quantiles", "0.5")
    assert result.exit_code == 0, result.output
    predictions = read_lines(out)
    assert len(predictions) == 3
    for p in predictions:
        assert len(p["mean"]) == PL and np.isfinite(p["mean"]).all()
        assert len(p["quantiles"]["0.5"]) == PL and np.isfinite(p["quantiles"]["0.5"]).all()


def test_answer_lines_streams(plain_model, base) -> None:
    pulled = []

    def lines() -> Iterator[bytes]:
        for index, record in enumerate(base[:6]):
            pulled.append(index)
            yield json.dumps(record).encode() + b"\n"

    config = InferenceConfig.parse({"output_types": ["mean"]})
    out = protocol.answer_lines(plain_model, lines(), config, seed=42, source="in", chunk=2)
    first = next(out)
    assert len(pulled) == 2  # the first answer comes before the third record is read
    assert list(json.loads(first)) == ["mean"]
    rest = list(out)
    assert len(pulled) == 6 and len(rest) == 5
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in [first, *rest])


def test_answer_lines_error_names_source_and_line(plain_model, base) -> None:
    lines = [json.dumps(base[0]).encode(), b"", b'{"start": "2016-01-01", "target": 3}']
    config = InferenceConfig.parse(None)
    with pytest.raises(RequestError) as info:
        list(protocol.answer_lines(plain_model, lines, config, seed=1, source="batch"))
    assert str(info.value) == 'batch:3: "target" must be a list of numbers, got 3'


def test_output_to_stdout(runner, models, base, jsonl, tmp_path) -> None:
    source = jsonl(base[:3])
    args = ("--output-types", "mean,samples", "--num-samples", "2")
    result = predict(runner, models.plain, source, tmp_path / "p.json", *args)
    assert result.exit_code == 0, result.output
    result = predict(runner, models.plain, source, Path("-"), *args)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == (tmp_path / "p.json").read_bytes()
    assert len(result.stdout_bytes.splitlines()) == 3
    # stdin in, stdout out
    result = runner.invoke(main, ["predict", "--model-dir", str(models.plain), "--input", "-",
                                  "--output", "-", *args], input=source.read_bytes())
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == (tmp_path / "p.json").read_bytes()


@pytest.mark.parametrize("option", [["--num-samples", "5"], ["--output-types", "mean"],
                                    ["--quantiles", "0.5"], ["--config", "{}"]])
def test_options_are_refused_for_a_request_file(runner, models, tmp_path, option):
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"instances": [{"start": "2016-01-01", "target": [1.0, 2.0]}]}))
    out = tmp_path / "out.json"
    result = predict(runner, models.plain, request, out, *option)
    assert result.exit_code == 64
    assert result.stdout == ""
    assert result.stderr == (
        f'Error: {request} is an endpoint request, which carries its own "configuration"; a '
        "configuration given beside it applies to JSON Lines input only\n")
    assert not out.exists()


def test_spaces_after_commas_are_ignored(runner, models, tmp_path):
    model_dir = models.plain
    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"start": "2016-01-01", "target": [1.0, 2.0, 3.0]}) + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(main, ["predict", "--model-dir", str(model_dir), "--input",
                                  str(records), "--output", str(out), "--output-types",
                                  "mean, quantiles", "--quantiles", "0.1, 0.9"])
    assert result.exit_code == 0, result.output
    (prediction,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert list(prediction) == ["mean", "quantiles"]
    assert list(prediction["quantiles"]) == ["0.1", "0.9"]
