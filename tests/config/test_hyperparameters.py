"""SageMaker DeepAR's hyperparameters: names, defaults, ranges and messages."""

from __future__ import annotations

import json

import pytest

from deepar_cli.cli import main
from deepar_cli.config import hyperparameters
from deepar_cli.config.hyperparameters import SCHEMA, Hyperparameters, load, read_file, resolve
from deepar_cli.errors import HyperparameterError
from helpers import NOTEBOOK_HYPERPARAMETERS

REQUIRED = {"time_freq": "H", "context_length": "12", "prediction_length": "12", "epochs": "1"}
FREQ_RANGE = "one of min, 5min, 30min, H (or h), D, W, M, with an optional multiple such as 2H"
CARDINALITY_RANGE = '"auto", "ignore" or a list of integers >= 1, e.g. "[3, 10]"'
QUANTILE_RANGE = 'a list of numbers in (0, 1), e.g. "[0.1, 0.5, 0.9]"'
LIKELIHOOD_RANGE = "one of student-T, gaussian, beta, negative-binomial, deterministic-L1"
VALID_NAMES = ("time_freq, context_length, prediction_length, epochs, likelihood, num_cells, "
               "num_layers, dropout_rate, learning_rate, mini_batch_size, embedding_dimension, "
               "cardinality, num_dynamic_feat, early_stopping_patience, num_eval_samples, "
               "test_quantiles")


def refusal(name, value) -> str:
    with pytest.raises(HyperparameterError) as info:
        resolve({**REQUIRED, name: value})
    assert info.value.exit_code == 78
    return str(info.value)


BAD_VALUES = [
    ("time_freq", "X", FREQ_RANGE, "X"),
    ("time_freq", "0H", FREQ_RANGE, "0H"),
    ("time_freq", "fortnight", FREQ_RANGE, "fortnight"),
    ("time_freq", "H\nD", FREQ_RANGE, "H\\nD"),  # a line break is shown escaped
    ("context_length", "0", "an integer in [1, 10000]", "0"),
    ("context_length", "1.5", "an integer in [1, 10000]", "1.5"),
    ("context_length", "abc", "an integer in [1, 10000]", "abc"),
    ("context_length", 10001, "an integer in [1, 10000]", "10001"),
    ("context_length", True, "an integer in [1, 10000]", "true"),
    ("prediction_length", 0, "an integer in [1, 10000]", "0"),
    ("prediction_length", "-5", "an integer in [1, 10000]", "-5"),
    ("epochs", "0", "an integer in [1, 10000]", "0"),
    ("epochs", "10001", "an integer in [1, 10000]", "10001"),
    ("epochs", 1e400, "an integer in [1, 10000]", "Infinity"),
    ("likelihood", "normal", LIKELIHOOD_RANGE, "normal"),
    ("likelihood", "Student-T", LIKELIHOOD_RANGE, "Student-T"),
    ("likelihood", "gaussian\u2028\x00", LIKELIHOOD_RANGE, "gaussian\\u2028\\u0000"),
    ("num_cells", 0, "an integer in [1, 1000]", "0"),
    ("num_cells", "1001", "an integer in [1, 1000]", "1001"),
    ("num_layers", 0, "an integer in [1, 8]", "0"),
    ("num_layers", "9", "an integer in [1, 8]", "9"),
    ("dropout_rate", 1, "a number in [0, 1)", "1"),
    ("dropout_rate", "-0.1", "a number in [0, 1)", "-0.1"),
    ("dropout_rate", "nan", "a number in [0, 1)", "nan"),
    ("dropout_rate", "lots", "a number in [0, 1)", "lots"),
    ("learning_rate", 0, "a number in (0, 1]", "0"),
    ("learning_rate", "1.5", "a number in (0, 1]", "1.5"),
    ("learning_rate", "inf", "a number in (0, 1]", "inf"),
    ("mini_batch_size", 0, "an integer in [1, 100000]", "0"),
    ("mini_batch_size", 100001, "an integer in [1, 100000]", "100001"),
    ("embedding_dimension", 0, "an integer in [1, 1000]", "0"),
    ("embedding_dimension", "1001", "an integer in [1, 1000]", "1001"),
    ("cardinality", "[0, 3]", CARDINALITY_RANGE, "[0, 3]"),
    ("cardinality", "[]", CARDINALITY_RANGE, "[]"),
    ("cardinality", [2, "x"], CARDINALITY_RANGE, '[2, "x"]'),
    ("cardinality", "abc", CARDINALITY_RANGE, "abc"),
    ("cardinality", 0, CARDINALITY_RANGE, "0"),
    ("num_dynamic_feat", -1, '"auto", "ignore" or an integer >= 0', "-1"),
    ("num_dynamic_feat", "some", '"auto", "ignore" or an integer >= 0', "some"),
    ("early_stopping_patience", 0, "an integer in [1, 10000]", "0"),
    ("early_stopping_patience", "10001", "an integer in [1, 10000]", "10001"),
    ("num_eval_samples", 0, "an integer in [1, 10000]", "0"),
    ("num_eval_samples", 10001, "an integer in [1, 10000]", "10001"),
    ("test_quantiles", "[0.1, 1.0]", QUANTILE_RANGE, "[0.1, 1.0]"),
    ("test_quantiles", "[]", QUANTILE_RANGE, "[]"),
    ("test_quantiles", "0.5", QUANTILE_RANGE, "0.5"),
    ("test_quantiles", [0, 0.5], QUANTILE_RANGE, "[0, 0.5]"),
    ("test_quantiles", "[0.1,", QUANTILE_RANGE, "[0.1,"),
]


def _case_id(case) -> str:
    name, value = (case.values if hasattr(case, "values") else case)[:2]
    return f"{name}={value!r}"


@pytest.mark.parametrize("name, value, expected, shown", BAD_VALUES,
                         ids=[_case_id(case) for case in BAD_VALUES])
def test_bad_value_message(name, value, expected, shown):
    assert refusal(name, value) == f'hyperparameter "{name}" must be {expected}, got "{shown}"'


def test_every_hyperparameter_has_a_bad_value_case():
    covered = {case.values[0] if hasattr(case, "values") else case[0] for case in BAD_VALUES}
    assert covered == set(SCHEMA)


def test_unknown_name():
    with pytest.raises(HyperparameterError) as info:
        resolve({**REQUIRED, "num_hidden": "40"})
    assert str(info.value) == f'unknown hyperparameter "num_hidden"; valid: {VALID_NAMES}'


def test_unknown_name_with_a_line_break_is_one_line():
    with pytest.raises(HyperparameterError) as info:
        resolve({**REQUIRED, "num\nhidden": "40"})
    assert str(info.value) == f'unknown hyperparameter "num\\nhidden"; valid: {VALID_NAMES}'


def test_sagemaker_infrastructure_names_are_ignored():
    hp = resolve({**REQUIRED, "_kvstore": "dist_sync", "_num_gpus": "auto",
                  "_tuning_objective_metric": "test:RMSE", "_num_kv_servers": "1"})
    assert hp == resolve(REQUIRED)


@pytest.mark.parametrize("name", ["time_freq", "context_length", "prediction_length", "epochs"])
def test_missing_required(name):
    values = {k: v for k, v in REQUIRED.items() if k != name}
    with pytest.raises(HyperparameterError) as info:
        resolve(values)
    assert str(info.value) == f'missing required hyperparameter "{name}"'


@pytest.mark.parametrize("empty", ["", None])
def test_empty_required_counts_as_missing(empty):
    with pytest.raises(HyperparameterError) as info:
        resolve({**REQUIRED, "epochs": empty})
    assert str(info.value) == 'missing required hyperparameter "epochs"'


def test_sagemaker_defaults():
    hp = resolve({"time_freq": "H", "context_length": 72, "prediction_length": 48, "epochs": 20})
    assert hp.as_dict() == {
        "time_freq": "H", "context_length": 72, "prediction_length": 48, "epochs": 20,
        "likelihood": "student-T", "num_cells": 40, "num_layers": 2, "dropout_rate": 0.10,
        "learning_rate": 0.001, "mini_batch_size": 128, "embedding_dimension": 10,
        "cardinality": "auto", "num_dynamic_feat": "auto", "early_stopping_patience": None,
        "num_eval_samples": 100,
        "test_quantiles": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    }


def test_string_values_as_sagemaker_writes_them(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({
        "time_freq": "D", "context_length": "30", "prediction_length": "7", "epochs": "5",
        "likelihood": "negative-binomial", "num_cells": "32", "num_layers": "1",
        "dropout_rate": "0.2", "learning_rate": "0.01", "mini_batch_size": "64",
        "embedding_dimension": "4", "cardinality": "[3, 10]", "num_dynamic_feat": "2",
        "early_stopping_patience": "3", "num_eval_samples": "50",
        "test_quantiles": "[0.1, 0.5, 0.9]",
    }))
    hp = load(path, {})
    assert hp == Hyperparameters(
        time_freq="D", context_length=30, prediction_length=7, epochs=5,
        likelihood="negative-binomial", num_cells=32, num_layers=1, dropout_rate=0.2,
        learning_rate=0.01, mini_batch_size=64, embedding_dimension=4, cardinality=[3, 10],
        num_dynamic_feat=2, early_stopping_patience=3, num_eval_samples=50,
        test_quantiles=[0.1, 0.5, 0.9],
    )
    assert isinstance(hp.epochs, int) and isinstance(hp.dropout_rate, float)


@pytest.mark.parametrize("value, parsed", [("auto", "auto"), ("ignore", "ignore"), ("", "auto"),
                                           ("3", [3]), (3, [3]), ("[3, 10]", [3, 10]),
                                           ([2, "4"], [2, 4])])
def test_cardinality_spellings(value, parsed):
    assert resolve({**REQUIRED, "cardinality": value}).cardinality == parsed


@pytest.mark.parametrize("value, parsed", [("auto", "auto"), ("ignore", "ignore"), ("0", 0),
                                           (2, 2), ("2.0", 2)])
def test_num_dynamic_feat_spellings(value, parsed):
    assert resolve({**REQUIRED, "num_dynamic_feat": value}).num_dynamic_feat == parsed


@pytest.mark.parametrize("value", ["20", 20, 20.0, "20.0", "2e1"])
def test_integer_spellings(value):
    assert resolve({**REQUIRED, "epochs": value}).epochs == 20


def test_options_override_the_file(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({**REQUIRED, "epochs": "5", "likelihood": "gaussian"}))
    hp = load(path, {"epochs": "7", "num_cells": None, "likelihood": None})
    assert hp.epochs == 7
    assert hp.likelihood == "gaussian"  # None means "not given": the file's value stays
    assert hp.num_cells == 40


def test_options_alone_without_a_file():
    assert load(None, {**REQUIRED, "num_layers": "3"}).num_layers == 3


@pytest.mark.parametrize("spelling, pandas", [("H", "h"), ("h", "h"), ("2H", "2h"),
                                              ("1H", "h"), ("5min", "5min"), ("T", "min"),
                                              ("30min", "30min"), ("D", "D"), ("W", "W"),
                                              ("M", "M"), (" H ", "h")])
def test_frequency_spellings(spelling, pandas):
    hp = resolve({**REQUIRED, "time_freq": spelling})
    assert hp.time_freq == spelling.strip()
    assert hp.freq == pandas


def test_h_and_lower_h_train_the_same_frequency():
    assert resolve({**REQUIRED, "time_freq": "H"}).freq == resolve(
        {**REQUIRED, "time_freq": "h"}).freq == "h"


def test_notebook_hyperparameters_file():
    hp = load(NOTEBOOK_HYPERPARAMETERS, {})
    assert hp == Hyperparameters(
        time_freq="H", context_length=72, prediction_length=48, num_cells=40, num_layers=3,
        likelihood="gaussian", epochs=20, mini_batch_size=32, learning_rate=0.001,
        dropout_rate=0.05, early_stopping_patience=10,
    )
    # and the rest are SageMaker's defaults
    assert hp.embedding_dimension == 10 and hp.num_eval_samples == 100
    assert hp.cardinality == "auto" and hp.num_dynamic_feat == "auto"
    # SageMaker writes every value as a string
    assert all(isinstance(v, str) for v in json.loads(NOTEBOOK_HYPERPARAMETERS.read_text())
               .values())


def test_resolved_set_survives_json(tmp_path):
    """The model folder stores `as_dict()` as JSON and resolves it again on load."""
    hp = resolve({**REQUIRED, "cardinality": "[3]", "early_stopping_patience": "2",
                  "test_quantiles": "[0.25, 0.75]"})
    again = resolve(json.loads(json.dumps(hp.as_dict())))
    assert again == hp


@pytest.mark.parametrize("data, message", [
    (b"{not json", "{path}:1: not valid JSON (unexpected character, expected a string key)"),
    (b'["time_freq", "H"]', "{path}: must hold a JSON object of name: value pairs"),
    (b'{"time_freq": "H",\n "epochs": "\xff1"}', "{path}:2: not UTF-8 text (byte 0xff)"),
    (b'{"a":\n' + b"[" * 3000 + b"]" * 3000 + b"}",
     "{path}:2: not valid JSON (depth limit exceeded)"),
], ids=["not-json", "not-an-object", "not-utf8", "nested-too-deep"])
def test_bad_hyperparameters_file(tmp_path, data, message):
    path = tmp_path / "hyperparameters.json"
    path.write_bytes(data)
    with pytest.raises(HyperparameterError) as info:
        read_file(path)
    assert str(info.value) == message.format(path=path)


def test_a_value_nested_too_deep_to_show_is_outlined():
    """json.dumps of a list nested 1020 deep raises RecursionError."""
    deep: list = []
    for _ in range(1020):
        deep = [deep]
    with pytest.raises(HyperparameterError) as info:
        resolve({**REQUIRED, "test_quantiles": deep})
    assert str(info.value) == ('hyperparameter "test_quantiles" must be a list of numbers in '
                               '(0, 1), e.g. "[0.1, 0.5, 0.9]", got "[[[[...]]]]"')


def test_unreadable_hyperparameters_file(tmp_path):
    with pytest.raises(HyperparameterError) as info:
        read_file(tmp_path)  # a folder
    assert str(info.value) == f"{tmp_path}: cannot be read (Is a directory)"


# --------------------------------------------------------------------------- through the CLI


def test_cli_refuses_a_bad_option_before_reading_data(runner, tiny_data, tmp_path):
    result = runner.invoke(main, [
        "train", "--train", str(tiny_data.train), "--model-dir", str(tmp_path / "m"),
        "--hyperparameters", str(NOTEBOOK_HYPERPARAMETERS), "--epochs", "0",
    ])
    assert result.exit_code == 78
    assert result.stderr == (
        'Error: hyperparameter "epochs" must be an integer in [1, 10000], got "0"\n'
    )
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("data, message", [
    (b'{"epochs": "\xe9"}', "{path}:1: not UTF-8 text (byte 0xe9)"),
    (b"[" * 3000 + b"]" * 3000, "{path}:1: not valid JSON (depth limit exceeded)"),
], ids=["not-utf8", "nested-too-deep"])
@pytest.mark.parametrize("command", ["train", "tune"])
def test_cli_bad_hyperparameters_file_is_one_line(runner, tiny_data, tmp_path, command, data,
                                                  message):
    path = tmp_path / "hyperparameters.json"
    path.write_bytes(data)
    out = ["--model-dir" if command == "train" else "--output-dir", str(tmp_path / "out")]
    result = runner.invoke(main, [command, "--train", str(tiny_data.train),
                                  "--hyperparameters", str(path), *out])
    assert result.exit_code == 78
    assert result.stderr == f"Error: {message.format(path=path)}\n"
    assert not (tmp_path / "out").exists()


def test_cli_accepts_dashes_and_underscores(runner, tiny_data, tmp_path):
    for spelling in ("--mini_batch_size", "--mini-batch-size"):
        result = runner.invoke(main, [
            "train", "--train", str(tiny_data.train), "--model-dir", str(tmp_path / "m"),
            "--time_freq", "H", "--context-length", "12", "--prediction_length", "12",
            "--epochs", "1", spelling, "0",
        ])
        assert result.exit_code == 78
        assert result.stderr == (
            'Error: hyperparameter "mini_batch_size" must be an integer in [1, 100000], got "0"\n'
        )


def test_cli_missing_required(runner, tiny_data, tmp_path):
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train),
                                  "--model-dir", str(tmp_path / "m"), "--time_freq", "H"])
    assert result.exit_code == 78
    assert result.stderr == 'Error: missing required hyperparameter "context_length"\n'


def test_cli_has_an_option_for_every_hyperparameter():
    options = {opt for param in main.commands["train"].params for opt in param.opts}
    for name in hyperparameters.SCHEMA:
        assert f"--{name}" in options
        assert f"--{name.replace('_', '-')}" in options
