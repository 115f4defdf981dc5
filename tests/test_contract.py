"""The command-line contract: one forecast path (the same numbers from every command for
the same model, series and seed) and one exit-code table (the same mistake, the same code,
in every command), with failed writes leaving nothing behind."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

import numpy as np
import pytest
from click.testing import CliRunner

from deepar_cli.cli import main

QUANTILES = "0.1,0.5,0.9"
SEED = "7"


def run(*args: str, env: Dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), prog_name="deepar-cli", env=env)


def run_process(*args: str, env: Dict[str, str] | None = None, limit_bytes: int = 0
                ) -> subprocess.CompletedProcess:
    """The real console entry point in its own process (its own MXNet thread pool)."""

    def limit() -> None:  # a file-size limit makes writes fail as a full disk does
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "deepar_cli", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})},
                          preexec_fn=limit if limit_bytes else None)


def lines(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_data: SimpleNamespace
            ) -> SimpleNamespace:
    """A tiny model, with its train/test channels (train = test minus the last points)."""
    folder = tmp_path_factory.mktemp("contract")
    result = run("train", "--train", str(tiny_data.train), "--time_freq", "H",
                 "--context_length", "12", "--prediction_length", "12", "--epochs", "1",
                 "--mini_batch_size", "8", "--num_cells", "8", "--num_layers", "2",
                 "--num_eval_samples", "50", "--model-dir", str(folder / "model"), "--quiet")
    assert result.exit_code == 0, result.output
    return SimpleNamespace(model=folder / "model", train=tiny_data.train, test=tiny_data.test,
                           folder=folder)


# --------------------------------------------------------------------------- one forecast path


@pytest.mark.parametrize("model", ["trained", "tiny_ensemble"])
def test_plot_predict_and_evaluate_give_the_same_quantiles(model: str, tmp_path: Path,
                                                           request: pytest.FixtureRequest
                                                           ) -> None:
    """For one model and for an ensemble folder (tune --ensemble): the same numbers."""
    trained = request.getfixturevalue(model)
    trained = SimpleNamespace(model=getattr(trained, "dir", None) or trained.model,
                              train=trained.train, test=trained.test)
    # plot and evaluate draw the model's num_eval_samples
    samples = json.loads((trained.model / "hyperparameters.json").read_text())[
        "num_eval_samples"]
    predictions = tmp_path / "predictions.jsonl"
    assert run("predict", "--model-dir", str(trained.model), "--input", str(trained.train),
               "--output", str(predictions), "--quantiles", QUANTILES, "--num-samples",
               str(samples), "--seed", SEED).exit_code == 0
    assert run("plot", "--model-dir", str(trained.model), "--test", str(trained.test),
               "--series", "0-7", "--output-dir", str(tmp_path / "plots"), "--seed", SEED,
               "--quiet").exit_code == 0
    assert run("evaluate", "--model-dir", str(trained.model), "--test", str(trained.test),
               "--quantiles", QUANTILES, "--output-dir", str(tmp_path / "evaluation"),
               "--seed", SEED).exit_code == 0

    predicted = lines(predictions)
    plotted = json.loads((tmp_path / "plots" / "plot.json").read_text())["series"]
    scored = list(csv.DictReader(open(tmp_path / "evaluation" / "per_series.csv")))
    truths = [json.loads(line)["target"][-12:] for line in trained.test.read_text().splitlines()]
    assert len(predicted) == len(plotted) == len(scored) == 8
    for prediction, picture, row, truth in zip(predicted, plotted, scored, truths):
        for key, name in (("0.1", "p10"), ("0.5", "p50"), ("0.9", "p90")):
            ours = np.asarray(prediction["quantiles"][key], dtype=np.float32)
            # plot.json holds float64 copies of the same float32 values
            assert np.array_equal(ours, np.asarray(picture[name], dtype=np.float32))
            # the Evaluator's quantile loss and coverage of exactly these quantiles
            level, y = float(key), np.asarray(truth, dtype=np.float32)
            loss = 2 * np.sum(np.abs((ours - y) * ((y <= ours) - level)))
            assert float(row[f"QuantileLoss[{key}]"]) == pytest.approx(float(loss), rel=1e-6)
            assert float(row[f"Coverage[{key}]"]) == pytest.approx(np.mean(y <= ours))


def test_train_logs_the_scores_evaluate_computes(trained: SimpleNamespace,
                                                 tmp_path: Path) -> None:
    logged = json.loads((trained.model / "training.json").read_text())
    assert "test_metrics" not in logged  # trained without a test channel
    model = tmp_path / "model"
    assert run("train", "--train", str(trained.train), "--test", str(trained.test),
               "--hyperparameters", str(trained.model / "hyperparameters.json"),
               "--model-dir", str(model), "--seed", SEED, "--quiet").exit_code == 0
    scores = json.loads((model / "training.json").read_text())["test_metrics"]
    assert run("evaluate", "--model-dir", str(model), "--test", str(trained.test),
               "--seed", SEED, "--output-dir", str(tmp_path / "evaluation")).exit_code == 0
    overall = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["overall"]
    for name, value in scores.items():
        assert overall[name] == value, name


def test_a_record_forecast_alone_equals_it_as_line_700(trained: SimpleNamespace,
                                                       tmp_path: Path) -> None:
    records = [json.loads(line) for line in trained.train.read_text().splitlines()]
    rng = np.random.default_rng(0)
    many = []
    for index in range(720):  # 720 distinct records: the tiny ones with noise added
        record = dict(records[index % len(records)])
        record["target"] = (np.asarray(record["target"]) + rng.normal(0, 0.1, 48)).tolist()
        many.append(record)
    big, alone = tmp_path / "big.jsonl", tmp_path / "alone.jsonl"
    big.write_text("".join(json.dumps(r) + "\n" for r in many))
    alone.write_text(json.dumps(many[699]) + "\n")
    for path in (big, alone):
        assert run("predict", "--model-dir", str(trained.model), "--input", str(path),
                   "--output", str(path.with_suffix(".out")), "--output-types",
                   "mean,quantiles,samples", "--seed", SEED).exit_code == 0
    line_700 = big.with_suffix(".out").read_bytes().splitlines(keepends=True)[699]
    assert line_700 == alone.with_suffix(".out").read_bytes()
    # and as the first instance of an endpoint request, which holds it among others
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"instances": [many[699], *many[:40]], "configuration": {
        "num_samples": 100, "output_types": ["mean", "quantiles", "samples"]}}))
    assert run("predict", "--model-dir", str(trained.model), "--input", str(request),
               "--output", str(tmp_path / "response.json"), "--seed", SEED).exit_code == 0
    response = json.loads((tmp_path / "response.json").read_text())["predictions"][0]
    assert response == json.loads(line_700)


def test_forecasts_do_not_depend_on_the_thread_count(trained: SimpleNamespace,
                                                     tmp_path: Path) -> None:
    outputs = []
    for threads in ("1", "2"):
        out = tmp_path / f"threads-{threads}.jsonl"
        done = run_process("predict", "--model-dir", str(trained.model), "--input",
                           str(trained.train), "--output", str(out), "--output-types",
                           "samples", "--seed", SEED, env={"OMP_NUM_THREADS": threads})
        assert done.returncode == 0, done.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_another_seed_gives_other_samples(trained: SimpleNamespace, tmp_path: Path) -> None:
    samples = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed-{seed}.jsonl"
        assert run("predict", "--model-dir", str(trained.model), "--input", str(trained.train),
                   "--output", str(out), "--output-types", "samples",
                   "--seed", seed).exit_code == 0
        samples.append(lines(out)[0]["samples"])
    assert samples[0] != samples[1]


# --------------------------------------------------------------------------- exit codes


@pytest.fixture
def bad_channel(tmp_path: Path) -> Path:
    path = tmp_path / "bad.json"
    path.write_text('{"start": "2016-01-01 00:00:00", "target": [1, 2, 3]}\n'
                    '{"start": "2016-01-01 00:00:00", "target": [1, "abc"]}\n')
    return path


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A file where a folder is wanted."""
    path = tmp_path / "taken"
    path.write_text("not a folder\n")
    return path


def test_click_usage_errors_exit_64_in_every_command() -> None:
    for command in ("generate", "train", "evaluate", "plot", "predict", "serve", "tune"):
        result = run(command, "--bogus")
        assert result.exit_code == 64, command
        # click's own wording (it changed between click releases), then exit 64
        assert result.output.splitlines()[-1].startswith("Error: No such option")
    assert run("fly").exit_code == 64
    assert run("evaluate", "--model-dir", "m", "--test", "missing.json").exit_code == 64


@pytest.mark.parametrize("args, message", [
    (["generate", "--num-series", "0"],
     "Error: Invalid value for '--num-series': 0 is not in the range x>=1."),
    (["generate", "--length", "10", "--prediction-length", "20"],
     "Error: length (10) must be greater than prediction_length (20)"),
    (["evaluate", "--model-dir", "m", "--test", "{test}", "--num-samples", "0"],
     "Error: Invalid value for '--num-samples': 0 is not in the range 1<=x<=10000."),
    (["evaluate", "--model-dir", "m", "--test", "{test}", "--quantiles", "0.5,1.5"],
     "Error: Invalid value for '--quantiles': \"1.5\" is not a number in (0, 1); give levels "
     "like \"0.1,0.5,0.9\""),
    (["plot", "--model-dir", "m", "--test", "{test}", "--output-dir", "p", "--num-samples",
      "0"], "Error: Invalid value for '--num-samples': 0 is not in the range 1<=x<=10000."),
    (["plot", "--model-dir", "m", "--test", "{test}", "--output-dir", "p", "--series", "0-x"],
     "Error: Invalid value for '--series': cannot read \"0-x\"; give 0-based indices like "
     "\"0-4\", \"0,3,7\" or \"5\""),
    (["predict", "--model-dir", "m", "--input", "{test}", "--output", "o", "--num-samples",
      "0"], "Error: Invalid value for '--num-samples': 0 is not in the range 1<=x<=10000."),
    (["predict", "--model-dir", "m", "--input", "{test}", "--output", "o", "--quantiles",
      "0.5,1.5"], "Error: Invalid value for '--quantiles': \"1.5\" is not a number in (0, 1); "
     "give levels like \"0.1,0.5,0.9\""),
    (["predict", "--model-dir", "m", "--input", "{test}", "--output", "o", "--output-types",
      "mean,median"], "Error: Invalid value for '--output-types': unknown output type "
     "\"median\"; valid: mean, quantiles, samples"),
    (["predict", "--model-dir", "m", "--input", "{test}", "--output", "o", "--config",
      "{\"num_samples\": 0}"], "Error: Invalid value for '--config': \"num_samples\" must "
     "be an integer in [1, 10000], got 0"),
    (["serve", "--model-dir", "m", "--port", "0"],
     "Error: Invalid value for '--port': 0 is not in the range 1<=x<=65535."),
])
def test_bad_options_exit_64(args: List[str], message: str, tiny_data: SimpleNamespace,
                             tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    result = run(*[a.replace("{test}", str(tiny_data.test)) for a in args])
    assert result.exit_code == 64
    assert result.output.splitlines()[-1] == message
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_a_bad_environment_configuration_exits_64(trained: SimpleNamespace,
                                                  tmp_path: Path) -> None:
    result = run("predict", "--model-dir", str(trained.model), "--input", str(trained.train),
                 "--output", str(tmp_path / "out.jsonl"),
                 env={"DEEPAR_INFERENCE_CONFIG": '{"quantiles": ["2"]}'})
    assert result.exit_code == 64
    assert result.output == (
        'Error: DEEPAR_INFERENCE_CONFIG: quantile "2" in "quantiles" is not a number in (0, '
        '1)\n')
    assert not (tmp_path / "out.jsonl").exists()


def test_options_beside_an_endpoint_request_exit_64(trained: SimpleNamespace,
                                                    tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"instances": [{"start": "2016-01-01", "target": [1.0]}]}))
    result = run("predict", "--model-dir", str(trained.model), "--input", str(request),
                 "--output", str(tmp_path / "out.json"), "--num-samples", "5")
    assert result.exit_code == 64
    assert result.output == (
        f'Error: {request} is an endpoint request, which carries its own "configuration"; a '
        "configuration given beside it applies to JSON Lines input only\n")


@pytest.mark.parametrize("command", ["train", "evaluate", "plot", "predict"])
def test_bad_data_exits_65(command: str, trained: SimpleNamespace, bad_channel: Path,
                           tmp_path: Path) -> None:
    args = {
        "train": ["train", "--train", str(bad_channel), "--time_freq", "H",
                  "--context_length", "2", "--prediction_length", "1", "--epochs", "1",
                  "--model-dir", str(tmp_path / "model")],
        "evaluate": ["evaluate", "--model-dir", str(trained.model), "--test", str(bad_channel),
                     "--output-dir", str(tmp_path / "evaluation")],
        "plot": ["plot", "--model-dir", str(trained.model), "--test", str(bad_channel),
                 "--output-dir", str(tmp_path / "plots")],
        "predict": ["predict", "--model-dir", str(trained.model), "--input", str(bad_channel),
                    "--output", str(tmp_path / "out.jsonl")],
    }[command]
    result = run(*args)
    assert result.exit_code == 65
    assert result.output == (f'Error: {bad_channel}:2: "target" must be a list of numbers, '
                             'got "abc" at position 1\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.json"]


@pytest.mark.parametrize("command", ["evaluate", "plot", "predict", "serve"])
def test_a_missing_model_exits_66(command: str, tiny_data: SimpleNamespace,
                                  tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    args = {"evaluate": ["--test", str(tiny_data.test)],
            "plot": ["--test", str(tiny_data.test), "--output-dir", str(tmp_path / "p")],
            "predict": ["--input", str(tiny_data.train), "--output", str(tmp_path / "o")],
            "serve": ["--port", "1"]}[command]
    result = run(command, "--model-dir", str(missing), *args)
    assert result.exit_code == 66
    assert result.output == (f"Error: {missing}: no such model folder (train one with "
                             "`deepar-cli train`)\n")


def test_a_broken_model_exits_66(trained: SimpleNamespace, tiny_data: SimpleNamespace,
                                 tmp_path: Path) -> None:
    broken = tmp_path / "model"
    broken.mkdir()
    for name in ("hyperparameters.json", "model.json", "training.json"):
        (broken / name).write_text((trained.model / name).read_text())
    result = run("predict", "--model-dir", str(broken), "--input", str(tiny_data.train),
                 "--output", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 66
    assert result.output == (f"Error: {broken}: not a deepar-cli model folder (predictor/"
                             "prediction_net-0000.params is missing)\n")


def test_bad_hyperparameters_exit_78(tiny_data: SimpleNamespace, tmp_path: Path) -> None:
    result = run("train", "--train", str(tiny_data.train), "--time_freq", "H",
                 "--context_length", "12", "--prediction_length", "12", "--epochs", "0",
                 "--model-dir", str(tmp_path / "model"))
    assert result.exit_code == 78
    assert result.output == ('Error: hyperparameter "epochs" must be an integer in [1, 10000], '
                             'got "0"\n')
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("command", ["generate", "train", "evaluate", "plot", "predict"])
def test_an_output_that_cannot_be_written_exits_73(command: str, trained: SimpleNamespace,
                                                   a_file: Path) -> None:
    where = a_file / "inside"  # a path under a file: no folder can be made there
    args = {
        "generate": ["generate", "--output-dir", str(where), "--num-series", "2"],
        "train": ["train", "--train", str(trained.train), "--hyperparameters",
                  str(trained.model / "hyperparameters.json"), "--model-dir", str(where)],
        "evaluate": ["evaluate", "--model-dir", str(trained.model), "--test",
                     str(trained.test), "--output-dir", str(where)],
        "plot": ["plot", "--model-dir", str(trained.model), "--test", str(trained.test),
                 "--output-dir", str(a_file)],
        "predict": ["predict", "--model-dir", str(trained.model), "--input",
                    str(trained.train), "--output", str(where / "out.jsonl")],
    }[command]
    result = run(*args)
    assert result.exit_code == 73, result.output
    assert result.output.startswith("Error: ")
    assert "cannot be written" in result.output
    assert len(result.output.splitlines()) == 1
    assert a_file.read_text() == "not a folder\n"
    assert sorted(p.name for p in a_file.parent.iterdir()) == ["taken"]


def test_a_full_disk_leaves_no_half_written_output(trained: SimpleNamespace,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "predictions.jsonl"
    done = run_process("predict", "--model-dir", str(trained.model), "--input",
                       str(trained.train), "--output", str(out), "--output-types", "samples",
                       limit_bytes=16384)
    assert done.returncode == 73, done.stderr
    assert done.stderr == f"Error: {out}: cannot be written (File too large)\n"
    assert list(tmp_path.iterdir()) == []


def test_an_unexpected_error_is_one_line_and_exits_1(monkeypatch: Any, tmp_path: Path) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the generator broke")

    monkeypatch.setattr("deepar_cli.data.synthetic.generate", broken)
    result = run("generate", "--output-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.output == ("Error: unexpected RuntimeError: the generator broke (run with "
                             "--debug or DEEPAR_CLI_DEBUG=1 for the traceback)\n")
    for args, env in ((["--debug", "generate"], None), (["generate"], {"DEEPAR_CLI_DEBUG": "1"})):
        result = run(*args, "--output-dir", str(tmp_path), env=env)
        assert isinstance(result.exception, RuntimeError)
        assert str(result.exception) == "the generator broke"


def test_import_changes_no_environment_variable() -> None:
    code = ("import os; before = dict(os.environ); import deepar_cli, deepar_cli.cli; "
            "assert dict(os.environ) == before, set(os.environ) ^ set(before)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("backend, message", [
    (None, 'model.json names no "backend" (train the model again with this deepar-cli)'),
    ("torch", 'model.json names the backend "torch", which this deepar-cli does not have '
              "(it has mxnet)"),
])
def test_a_model_of_no_known_backend_exits_66(trained: SimpleNamespace,
                                              tiny_data: SimpleNamespace, tmp_path: Path,
                                              backend: Any, message: str) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(trained.model, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta.pop("backend")
    if backend is not None:
        meta["backend"] = backend
    (folder / "model.json").write_text(json.dumps(meta))
    for command, args in (("predict", ["--input", str(tiny_data.train), "--output",
                                       str(tmp_path / "out.jsonl")]),
                          ("evaluate", ["--test", str(tiny_data.test)])):
        result = run(command, "--model-dir", str(folder), *args)
        assert result.exit_code == 66
        assert result.output == f"Error: {folder}: {message}\n"
