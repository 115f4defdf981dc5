"""The Python API: the README's example runs, GluonTS datasets in and out, and the same
numbers and errors as the CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import deepar_cli as dc
from deepar_cli import api
from deepar_cli.cli import main
from deepar_cli.inference.protocol import CONFIG_ENV
from helpers import REPO, SEED, START, TINY_HP, TINY_LENGTH, TINY_PREDICTION_LENGTH, TINY_SERIES

TINY_SPEC = dc.SyntheticSpec(num_series=TINY_SERIES, length=TINY_LENGTH,
                             prediction_length=TINY_PREDICTION_LENGTH)


def assert_same_entries(left: List[Dict[str, Any]], right: List[Dict[str, Any]]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        assert a["start"] == b["start"]
        for key in set(a) - {"start"}:
            assert a[key].dtype == b[key].dtype
            np.testing.assert_array_equal(a[key], b[key])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The shared tiny model's twin, trained from `generate`'s datasets (not its files)."""
    train, test = dc.generate(TINY_SPEC)
    model = dc.train(train, TINY_HP, tmp_path_factory.mktemp("api") / "model", test=test,
                     seed=SEED)
    return SimpleNamespace(model=model, train=train, test=test)


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    section = (REPO / "README.md").read_text().split("\n## Python API\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert code, "the README's Python API section has no example"
    monkeypatch.chdir(tmp_path)
    exec(compile(code.group(1), "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "model" / "training.json").is_file()
    assert "2016-01-06 00:00" in capsys.readouterr().out  # the first forecast's start


def test_generate_gives_the_written_values_as_list_datasets(tmp_path: Path,
                                                            runner: CliRunner) -> None:
    options = {"num-series": TINY_SERIES, "length": TINY_LENGTH,
               "prediction-length": TINY_PREDICTION_LENGTH, "num-categories": 3,
               "num-dynamic-feat": 2}
    args = [arg for name, value in options.items() for arg in (f"--{name}", str(value))]
    result = runner.invoke(main, ["generate", "--output-dir", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    datasets = dc.generate(dc.SyntheticSpec(**{k.replace("-", "_"): v
                                               for k, v in options.items()}))
    for name, dataset in zip(("train", "test"), datasets):
        path = tmp_path / f"{name}.json"
        objects = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(dataset) == len(objects) == TINY_SERIES
        for entry, obj in zip(dataset, objects):
            assert entry["start"] == pd.Period(obj["start"], freq="h")
            assert entry["target"].dtype == np.float32
            np.testing.assert_array_equal(entry["target"], np.float32(obj["target"]))
            assert entry["feat_static_cat"].tolist() == obj["cat"]
            np.testing.assert_array_equal(entry["feat_dynamic_real"],
                                          np.float32(obj["dynamic_feat"]))
        assert_same_entries(dc.read_dataset(path, "H"), dataset)
    assert set(dc.generate(TINY_SPEC)[0][0]) == {"start", "target"}


def test_a_dataset_trains_as_its_channel_does(trained: SimpleNamespace,
                                              tiny_model: SimpleNamespace,
                                              tiny_data: SimpleNamespace) -> None:
    summary = trained.model.summary
    assert summary["final_loss"] == tiny_model.summary["final_loss"]
    assert summary["test_metrics"] == tiny_model.summary["test_metrics"]
    from_dataset = dc.evaluate(trained.model, trained.test, seed=5)
    from_channel = dc.evaluate(trained.model, tiny_data.test, seed=5)
    assert from_dataset.overall == from_channel.overall


def test_evaluate_scores_as_the_command_does(trained: SimpleNamespace, tiny_data: SimpleNamespace,
                                             runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.model.path), "--test",
                                  str(tiny_data.test), "--output-dir", str(tmp_path),
                                  "--windows", "2", "--seed", "5"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "metrics.json").read_text())["overall"]
    scores = dc.evaluate(trained.model, trained.test, windows=2, seed=5).overall
    for name in ("RMSE", "mean_wQuantileLoss", "wQuantileLoss[0.5]"):
        assert scores[name] == written[name]


def test_forecast_gives_predicts_samples(trained: SimpleNamespace, tiny_data: SimpleNamespace,
                                         runner: CliRunner, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    out = tmp_path / "predictions.jsonl"
    result = runner.invoke(main, ["predict", "--model-dir", str(trained.model.path), "--input",
                                  str(tiny_data.train), "--output", str(out),
                                  "--output-types", "samples", "--seed", "3"])
    assert result.exit_code == 0, result.output
    predictions = [json.loads(line) for line in out.read_text().splitlines()]
    forecasts = dc.forecast(trained.model, trained.train, seed=3)
    assert len(forecasts) == len(predictions) == TINY_SERIES
    end = pd.Period(START, freq="h") + TINY_LENGTH - TINY_PREDICTION_LENGTH
    for forecast, prediction in zip(forecasts, predictions):
        assert forecast.start_date == end
        assert forecast.samples.shape == (100, TINY_PREDICTION_LENGTH)
        assert forecast.samples.tobytes() == np.float32(prediction["samples"]).tobytes()


GOOD = {"start": START, "target": [1.0, 2.0, 3.0]}


@pytest.mark.parametrize("entries, message", [
    ([], "the dataset is empty (no entries)"),
    ([GOOD, 3], "dataset entry 1: an entry must be a dict, got 3"),
    ([{"target": [1.0]}], 'dataset entry 0: "start" is missing'),
    ([{**GOOD, "start": "now"}],
     'dataset entry 0: "start" must be a timestamp like "2016-01-01 00:00:00", got "now"'),
    ([{**GOOD, "target": [1.0, np.inf]}],
     'dataset entry 0: "target" must hold finite numbers, got infinity at position 1'),
    ([{**GOOD, "target": ["1.0"]}],
     'dataset entry 0: "target" must be a list of numbers, got "1.0" at position 0'),
    ([{**GOOD, "feat_static_cat": np.array([-1])}],
     'dataset entry 0: "feat_static_cat" must be a list of non-negative integers, got -1 at '
     "position 0"),
    ([{**GOOD, "feat_dynamic_real": np.array([[0.0, np.nan, 1.0]])}],
     'dataset entry 0: "feat_dynamic_real" must be a list of numbers (no missing values), got '
     "NaN at position 1 (feature 0)"),
    ([{**GOOD, "feat_static_cat": [1]}, GOOD],
     'dataset entry 1: "feat_static_cat" has no values here but 1 in the first record (dataset '
     "entry 0); every record must have the same count"),
])
def test_a_bad_entry_raises_data_error(entries: List[Any], message: str, tmp_path: Path
                                       ) -> None:
    with pytest.raises(dc.DataError) as caught:
        dc.train(entries, TINY_HP, tmp_path / "model")
    assert str(caught.value) == message
    assert caught.value.exit_code == 65
    assert not (tmp_path / "model").exists()


def test_the_api_raises_the_commands_errors(trained: SimpleNamespace, tmp_path: Path) -> None:
    short = [{"start": pd.Period("2016-01-01", freq="h"), "target": np.ones(12)}]
    with pytest.raises(dc.DataError, match=r"^dataset entry 0: a test series must be longer "
                                           r"than prediction_length \(12\)$"):
        dc.evaluate(trained.model, short)
    for call in (lambda: dc.evaluate(trained.model, trained.test, quantiles=[0.5, 1.5]),
                 lambda: dc.evaluate(trained.model, trained.test, windows=0),
                 lambda: dc.forecast(trained.model, trained.train, num_samples=0),
                 lambda: dc.read_dataset(REPO / "data" / "hyperparameters.json", "fortnight")):
        with pytest.raises(dc.UsageError) as caught:
            call()
        assert caught.value.exit_code == 64
    with pytest.raises(dc.HyperparameterError):
        dc.train(trained.train, {**TINY_HP, "num_layers": 0}, tmp_path / "model")
    with pytest.raises(dc.ModelError):
        dc.load_model(tmp_path / "nothing")


def test_import_leaves_the_environment_alone() -> None:
    code = ("import os, sys\n"
            "before = dict(os.environ)\n"
            "import deepar_cli\n"
            "assert dict(os.environ) == before, 'import deepar_cli changed os.environ'\n"
            "assert not {'mxnet', 'gluonts'} & set(sys.modules), 'MXNet or GluonTS imported'\n"
            "deepar_cli.generate, deepar_cli.DataError\n"
            "assert dict(os.environ) == before, 'the API changed os.environ'\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_the_package_exports_the_api() -> None:
    assert dc.__all__ == api.__all__
    assert all(getattr(dc, name) is getattr(api, name) for name in dc.__all__)
    with pytest.raises(AttributeError):
        dc.no_such_name  # noqa: B018
