"""`deepar-cli tune`: SageMaker's tuning config checked field by field, and real Optuna studies
(SQLite files, one PostgreSQL server) of one-epoch trials on the tiny data: outputs, the
held-out objective, resuming, two processes on one study, and stopping on SIGTERM."""

from __future__ import annotations

import filecmp
import getpass
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional

import optuna
import pytest

from deepar_cli.cli import main
from deepar_cli.config import hyperparameters, tuning_config
from deepar_cli.errors import HyperparameterError
from deepar_cli.evaluation import backtest
from deepar_cli.model import modelfolder
from deepar_cli.threads import CPU_COUNT
from deepar_cli.tune import study
from deepar_cli.tune.final_model import SPREADS
from helpers import (
    NOTEBOOK_HYPERPARAMETERS,
    NUM_CELLS,
    STATIC,
    TINY_HP,
    TINY_LENGTH,
    TINY_PREDICTION_LENGTH,
    TINY_SERIES,
    config,
    csv_rows,
    tune_args,
    write_json,
)

TINY_TRAIN_LENGTH = TINY_LENGTH - TINY_PREDICTION_LENGTH
# The tiny hyperparameters without num_cells, which the tests tune.
TUNABLE = ("context_length, epochs, mini_batch_size, num_cells, num_layers, "
           "embedding_dimension, dropout_rate, learning_rate, likelihood")
CSV_HEADER = ["number", "state", "objective", "seconds", "num_cells", "learning_rate",
              "final_loss", "RMSE", "mean_wQuantileLoss",
              *[f"wQuantileLoss[0.{k}]" for k in range(1, 10)],
              *[f"Coverage[0.{k}]" for k in range(1, 10)], "reason"]
OUTPUTS = ["trials.csv", "trials.json", "objective.png", "importance.png",
           "hyperparameters.json", "model", "tuning.json"]


def load_study(out: Path, name: str = "deepar-cli-tune", url: Optional[str] = None) -> Any:
    return optuna.load_study(study_name=name, storage=url or f"sqlite:///{out / 'study.db'}")


def trial_lines(output: str) -> List[str]:
    return [line for line in output.splitlines() if line.startswith("trial ")]


# ------------------------------------------------------------------ the tuning config


def ranges(**lists: Any) -> Dict[str, Any]:
    return {"ParameterRanges": lists}


@pytest.mark.parametrize("data, message", [
    (ranges(IntegerParameterRanges=[{"Name": "num_layers", "MinValue": "1", "MaxValue": "12"}]),
     'ParameterRanges.IntegerParameterRanges[0].MaxValue: hyperparameter "num_layers" must be '
     'an integer in [1, 8], got "12"'),
    (ranges(ContinuousParameterRanges=[{"Name": "learning_rate", "MinValue": "0",
                                        "MaxValue": "0.1"}]),
     'ParameterRanges.ContinuousParameterRanges[0].MinValue: hyperparameter "learning_rate" '
     'must be a number in (0, 1], got "0"'),
    (ranges(IntegerParameterRanges=[{"Name": "num_cellz", "MinValue": "4", "MaxValue": "8"}]),
     f'ParameterRanges.IntegerParameterRanges[0].Name: unknown hyperparameter "num_cellz"; '
     f"tunable: {TUNABLE}"),
    (ranges(IntegerParameterRanges=[{"Name": "prediction_length", "MinValue": "4",
                                     "MaxValue": "8"}]),
     'ParameterRanges.IntegerParameterRanges[0].Name: "prediction_length" cannot be tuned; '
     f"tunable: {TUNABLE}"),
    (ranges(IntegerParameterRanges=[{"Name": "dropout_rate", "MinValue": "0", "MaxValue": "1"}]),
     'ParameterRanges.IntegerParameterRanges[0].Name: "dropout_rate" takes continuous values: '
     "give it in ContinuousParameterRanges"),
    (ranges(IntegerParameterRanges=[{"Name": "num_cells", "MinValue": "200", "MaxValue": "30"}]),
     "ParameterRanges.IntegerParameterRanges[0].MinValue: 200 is greater than MaxValue 30"),
    (ranges(ContinuousParameterRanges=[{"Name": "dropout_rate", "MinValue": "0",
                                        "MaxValue": "0.2", "ScalingType": "Logarithmic"}]),
     "ParameterRanges.ContinuousParameterRanges[0].ScalingType: Logarithmic scaling needs "
     "MinValue > 0, got 0"),
    (ranges(IntegerParameterRanges=[{**NUM_CELLS, "ScalingType": "ReverseLogarithmic"}]),
     "ParameterRanges.IntegerParameterRanges[0].ScalingType: must be one of Auto, Linear, "
     "Logarithmic, got \"ReverseLogarithmic\""),
    (ranges(IntegerParameterRanges=[NUM_CELLS],
            CategoricalParameterRanges=[{"Name": "num_cells", "Values": ["8", "16"]}]),
     'ParameterRanges.CategoricalParameterRanges[0].Name: "num_cells" is tuned twice (also '
     "ParameterRanges.IntegerParameterRanges[0])"),
    (ranges(CategoricalParameterRanges=[{"Name": "likelihood",
                                         "Values": ["gaussian", "poisson"]}]),
     'ParameterRanges.CategoricalParameterRanges[0].Values[1]: hyperparameter "likelihood" '
     'must be one of student-T, gaussian, beta, negative-binomial, deterministic-L1, got '
     '"poisson"'),
    (ranges(IntegerParameterRanges=[{"Name": "num_cells", "MinValue": "4"}]),
     "ParameterRanges.IntegerParameterRanges[0].MaxValue: is required"),
    (ranges(), "ParameterRanges: names no hyperparameter to tune"),
    ({}, "ParameterRanges: is required"),
    ({**config(), "Strategies": "Random"},
     "Strategies: unknown field; valid: Strategy, HyperParameterTuningJobObjective, "
     "ResourceLimits, ParameterRanges, TrainingJobEarlyStoppingType, "
     "TuningJobCompletionCriteria, StrategyConfig, RandomSeed"),
    (config(Strategy="Annealing"),
     "Strategy: must be one of Bayesian, Random, Grid, Hyperband, got \"Annealing\""),
    (config(HyperParameterTuningJobObjective={"Type": "Maximize", "MetricName": "test:RMSE"}),
     "HyperParameterTuningJobObjective.Type: must be one of Minimize, got \"Maximize\""),
    (config(HyperParameterTuningJobObjective={"MetricName": "test:MASE"}),
     "HyperParameterTuningJobObjective.MetricName: must be one of test:mean_wQuantileLoss, "
     "test:RMSE, train:final_loss, got \"test:MASE\""),
    (config(ResourceLimits={"MaxNumberOfTrainingJobs": "0"}),
     'ResourceLimits.MaxNumberOfTrainingJobs: must be an integer >= 1, got "0"'),
    (config(Strategy="Grid"),
     "ParameterRanges.IntegerParameterRanges[0]: the Grid strategy searches "
     "CategoricalParameterRanges only"),
    (config(Strategy="Hyperband", TrainingJobEarlyStoppingType="Auto"),
     "TrainingJobEarlyStoppingType: must be Off with the Hyperband strategy, which stops "
     "trials itself"),
    (config(StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 2}}),
     "StrategyConfig: applies to the Hyperband strategy only"),
    (config(TuningJobCompletionCriteria={"TargetObjectiveMetricValue": "low"}),
     "TuningJobCompletionCriteria.TargetObjectiveMetricValue: must be a number, got \"low\""),
])
def test_a_bad_tuning_config_names_its_field(tmp_path, data, message):
    path = write_json(tmp_path / "tuning.json", data)
    with pytest.raises(HyperparameterError) as caught:
        tuning_config.load(path, STATIC, "static.json")
    assert str(caught.value) == f"{path}: {message}"


def test_a_config_in_sagemakers_shape_parses_whole(tmp_path):
    path = write_json(tmp_path / "tuning.json", {
        "Strategy": "Hyperband",
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "test:RMSE"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": 30, "MaxParallelTrainingJobs": 2,
                           "MaxRuntimeInSeconds": 3600},
        "ParameterRanges": {
            "IntegerParameterRanges": [{"Name": "epochs", "MinValue": "1", "MaxValue": "100",
                                        "ScalingType": "Auto"}],
            "ContinuousParameterRanges": [
                {"Name": "learning_rate", "MinValue": "1e-4", "MaxValue": "1e-2"},
                {"Name": "dropout_rate", "MinValue": "0", "MaxValue": "0.2",
                 "ScalingType": "ReverseLogarithmic"}],
            "CategoricalParameterRanges": [{"Name": "likelihood",
                                            "Values": ["gaussian", "student-T"]}]},
        "TrainingJobEarlyStoppingType": "Off",
        "TuningJobCompletionCriteria": {
            "TargetObjectiveMetricValue": 0.3,
            "BestObjectiveNotImproving": {"MaxNumberOfTrainingJobsNotImproving": 5}},
        "StrategyConfig": {"HyperbandStrategyConfig": {"MinResource": 2, "MaxResource": 50}},
        "RandomSeed": 42})
    parsed = tuning_config.load(path, {"time_freq": "H", "prediction_length": 12}, "static.json",
                                max_trials=10, objective="test:mean_wQuantileLoss")
    assert [r.describe() for r in parsed.ranges] == [
        "epochs 1-100 (Logarithmic)", "learning_rate 0.0001-0.01 (Logarithmic)",
        "dropout_rate 0-0.2 (ReverseLogarithmic)", "likelihood in {gaussian, student-T}"]
    assert (parsed.strategy, parsed.objective, parsed.trials, parsed.max_parallel,
            parsed.max_runtime, parsed.target_value, parsed.max_not_improving,
            parsed.min_resource, parsed.max_resource, parsed.random_seed) == (
        "Hyperband", "test:mean_wQuantileLoss", 10, 2, 3600, 0.3, 5, 2, 50, 42)
    assert isinstance(study._pruner(parsed), optuna.pruners.HyperbandPruner)
    auto = tuning_config.load(write_json(tmp_path / "auto.json", config(
        TrainingJobEarlyStoppingType="Auto")), STATIC, "static.json")
    assert isinstance(study._pruner(auto), optuna.pruners.MedianPruner)


def test_a_grid_is_searched_once_at_most(tmp_path):
    grid = {"Strategy": "Grid", "ResourceLimits": {"MaxNumberOfTrainingJobs": 50},
            "ParameterRanges": {"CategoricalParameterRanges": [
                {"Name": "num_cells", "Values": ["8", "16", "32"]},
                {"Name": "likelihood", "Values": ["gaussian", "student-T"]}]}}
    parsed = tuning_config.load(write_json(tmp_path / "grid.json", grid), STATIC, "static.json")
    assert parsed.trials == 6


def test_the_default_ranges_tune_what_the_static_file_leaves_out():
    static = {"time_freq": "H", "prediction_length": 48, "epochs": 20, "num_layers": 3}
    parsed = tuning_config.load(None, static, "static.json")
    assert parsed.source == "the default ranges"
    assert [r.describe() for r in parsed.ranges] == [
        "context_length 24-144 (Linear)", "num_cells 30-100 (Linear)",
        "learning_rate 0.0001-0.01 (Logarithmic)", "dropout_rate 0-0.2 (Linear)"]
    assert (parsed.strategy, parsed.objective, parsed.trials, parsed.max_parallel,
            parsed.early_stopping) == ("Bayesian", "test:mean_wQuantileLoss", 20, 1, "Off")


def test_the_notebooks_hyperparameters_leave_the_default_ranges_nothing():
    static = hyperparameters.read_file(NOTEBOOK_HYPERPARAMETERS)
    with pytest.raises(HyperparameterError) as caught:
        tuning_config.load(None, static, "hp.json")
    assert str(caught.value) == (
        "hp.json: sets every hyperparameter the default ranges tune (context_length, "
        "num_cells, num_layers, learning_rate, dropout_rate); leave out the ones to tune, or "
        "give a tuning config")


def test_a_hyperparameter_both_static_and_tuned_is_refused(tmp_path):
    path = write_json(tmp_path / "tuning.json", config())
    parsed = tuning_config.load(path, {**STATIC, "learning_rate": "0.01"}, "static.json")
    with pytest.raises(HyperparameterError) as caught:
        tuning_config.resolve_static(parsed, {**STATIC, "learning_rate": "0.01"}, "static.json")
    assert str(caught.value) == (
        f'{path}: ParameterRanges.ContinuousParameterRanges[0].Name: "learning_rate" is also '
        f"set in static.json; a hyperparameter is either static or tuned")


def test_static_hyperparameters_are_checked_as_train_checks_them(tmp_path):
    parsed = tuning_config.load(write_json(tmp_path / "tuning.json", config()), STATIC, "s.json")
    static = {k: v for k, v in STATIC.items() if k != "epochs"}
    with pytest.raises(HyperparameterError) as caught:
        tuning_config.resolve_static(parsed, static, "s.json")
    assert str(caught.value) == 's.json: missing required hyperparameter "epochs"'


def test_best_hyperparameters_are_written_as_sagemaker_strings():
    assert tuning_config.sagemaker_values(
        {"epochs": 20, "learning_rate": 0.00123, "likelihood": "gaussian",
         "test_quantiles": [0.1, 0.9], "early_stopping_patience": None}) == {
        "epochs": "20", "learning_rate": "0.00123", "likelihood": "gaussian",
        "test_quantiles": "[0.1, 0.9]"}


# ------------------------------------------------------------------ CLI errors


def test_a_bad_range_is_refused_before_any_training(runner, tiny_data, tmp_path):
    bad = config(ParameterRanges={"IntegerParameterRanges": [
        {"Name": "num_layers", "MinValue": "1", "MaxValue": "12"}]})
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, bad))
    assert result.exit_code == 78
    assert result.stderr == (
        f"Error: {tmp_path / 'tuning.json'}: ParameterRanges.IntegerParameterRanges[0].MaxValue: "
        f'hyperparameter "num_layers" must be an integer in [1, 8], got "12"\n')
    assert not (tmp_path / "out").exists()


def test_a_hyperparameter_both_static_and_tuned_is_refused_by_the_command(runner, tiny_data,
                                                                          tmp_path):
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, static=TINY_HP))
    assert result.exit_code == 78
    assert result.stderr == (
        f"Error: {tmp_path / 'tuning.json'}: ParameterRanges.IntegerParameterRanges[0].Name: "
        f'"num_cells" is also set in {tmp_path / "static.json"}; a hyperparameter is either '
        f"static or tuned\n")


def test_a_tuning_config_that_is_not_json_is_refused(runner, tiny_data, tmp_path):
    args = tune_args(tiny_data, tmp_path)
    (tmp_path / "tuning.json").write_text('{"Strategy": "Random",\n')
    result = runner.invoke(main, args)
    assert result.exit_code == 78
    assert result.stderr.startswith(f"Error: {tmp_path / 'tuning.json'}:2: not valid JSON (")


@pytest.mark.parametrize("length, windows, held", [
    (12, 1, "prediction_length (12)"), (20, 2, "2 x prediction_length (24)")])
def test_series_too_short_to_hold_out_are_refused(runner, tmp_path, jsonl, length, windows,
                                                  held):
    channel = jsonl([{"start": "2016-01-01 00:00:00", "target": [1.0] * length}] * 3)
    args = tune_args(SimpleNamespace(train=channel), tmp_path)
    result = runner.invoke(main, args + ["--holdout-windows", str(windows)])
    assert result.exit_code == 65
    assert result.stderr == (
        f"Error: {channel}: no series is longer than {held}; nothing can be held out to score "
        f"the tuning objective on\n")


def test_an_unknown_final_model_is_refused(runner, tiny_data, tmp_path):
    result = runner.invoke(main, tune_args(tiny_data, tmp_path) + ["--final-model", "best"])
    assert result.exit_code == 64
    assert result.stderr.endswith("Error: Invalid value for '--final-model': 'best' is not one "
                                  "of 'selection', 'refit'.\n")
    assert not (tmp_path / "out").exists()


def test_holdout_windows_with_a_test_channel_are_refused(runner, tiny_data, tmp_path):
    args = tune_args(tiny_data, tmp_path, test=True) + ["--holdout-windows", "2"]
    result = runner.invoke(main, args)
    assert result.exit_code == 64
    assert result.stderr == (
        "Error: holdout_windows must be at least 1, and 1 with a test channel (the objective "
        "is then the test channel's), got 2\n")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ studies


@pytest.fixture(scope="module")
def holdout_run(tiny_data, tmp_path_factory) -> Any:
    """One tune without a test channel: 3 Random trials, then the refit."""
    from click.testing import CliRunner

    folder = tmp_path_factory.mktemp("holdout")
    result = CliRunner().invoke(main, tune_args(tiny_data, folder))
    assert result.exit_code == 0, result.output
    return result, folder / "out"


def test_tune_holds_out_the_last_points_and_logs_each_trial(holdout_run, tiny_data):
    result, out = holdout_run
    lines = result.stdout.splitlines()
    start = lines.index("tuning 2 hyperparameters with Random over 3 trials, 1 at a time "
                        "(early stopping Off):")
    assert lines[start + 1:start + 5] == [
        "  num_cells 4-16 (Linear)", "  learning_rate 0.001-0.1 (Logarithmic)",
        f"objective: test:mean_wQuantileLoss (minimized), scored on the last 12 points of each "
        f"training series, held out in {out / 'holdout' / 'test.json'} (trials train on "
        f"{out / 'holdout' / 'train.json'})",
        f'study "deepar-cli-tune" in sqlite:///{(out / "study.db").resolve()}: 0 of 3 trials '
        f"finished before"]
    pattern = (r"trial (\d) \[(\d)/3\] num_cells=\d+, learning_rate=[\d.e-]+ -> "
               r"test:mean_wQuantileLoss [\d.]+ in [\d.]+ s; best [\d.]+ \(trial \d\)")
    matches = [re.fullmatch(pattern, line) for line in trial_lines(result.stdout)]
    assert [(m.group(1), m.group(2)) for m in matches] == [("0", "1"), ("1", "2"), ("2", "3")]
    assert lines[-len(OUTPUTS):] == [f"wrote {out / name}" for name in OUTPUTS]
    for name, length in (("train", TINY_TRAIN_LENGTH - TINY_PREDICTION_LENGTH),
                         ("test", TINY_TRAIN_LENGTH)):
        records = [json.loads(line) for line in (out / "holdout" / f"{name}.json").open()]
        assert [len(r["target"]) for r in records] == [length] * TINY_SERIES
    first = json.loads((out / "holdout" / "test.json").open().readline())
    assert first == json.loads(tiny_data.train.open().readline())


def test_holdout_windows_pool_rolling_windows_as_evaluate_does(tiny_data, runner, tmp_path):
    one_trial = config(ResourceLimits={"MaxNumberOfTrainingJobs": 1})
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, one_trial)
                           + ["--holdout-windows", "2", "--final-model", "selection"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert (f"objective: test:mean_wQuantileLoss (minimized), scored on the last 2 x 12 points "
            f"(2 rolling windows, pooled) of each training series, held out in "
            f"{out / 'holdout' / 'test.json'} (trials train on "
            f"{out / 'holdout' / 'train.json'})") in result.stdout.splitlines()
    for name, length in (("train", TINY_TRAIN_LENGTH - 2 * TINY_PREDICTION_LENGTH),
                         ("test", TINY_TRAIN_LENGTH)):
        records = [json.loads(line) for line in (out / "holdout" / f"{name}.json").open()]
        assert [len(r["target"]) for r in records] == [length] * TINY_SERIES
    trial = json.loads((out / "trials.json").read_text())["trials"][0]
    evaluated = runner.invoke(main, ["evaluate", "--model-dir", str(out / "trials/0/model"),
                                     "--test", str(out / "holdout" / "test.json"), "--windows",
                                     "2", "--output-dir", str(tmp_path / "ev"), "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    overall = json.loads((tmp_path / "ev" / "metrics.json").read_text())["overall"]
    assert trial["objective"] == overall["mean_wQuantileLoss"]
    assert list(trial["test_metrics"]) == CSV_HEADER[7:-1]
    assert trial["test_metrics"] == {k: overall[k] for k in trial["test_metrics"]}
    # Calibrated on the same pooled windows; the one trial's model is the model.
    drawn = backtest.held_out_forecasts(modelfolder.load(out / "trials/0/model"),
                                        out / "holdout" / "test.json", seed=42, windows=2)
    scores = {spread: drawn.scores(spread) for spread in SPREADS}
    assert scores[1.0] == trial["test_metrics"]
    spread = min(SPREADS, key=lambda s: (scores[s]["mean_wQuantileLoss"], abs(s - 1)))
    source = json.loads((out / "tuning.json").read_text())["model"]
    assert (source["how"], source["trial"], source["spread"]) == ("copy", 0, spread)
    assert json.loads((out / "model" / "model.json").read_text()).get("spread", 1.0) == spread
    assert json.loads((out / "model" / "training.json").read_text()) == json.loads(
        (out / "trials/0/model/training.json").read_text())


def test_a_training_loss_objective_leaves_the_spread_uncalibrated(tiny_data, runner, tmp_path):
    one_trial = config(ResourceLimits={"MaxNumberOfTrainingJobs": 1})
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, one_trial) + [
        "--objective", "train:final_loss", "--log-format", "json"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e for e in events if e["event"] == "calibration"] == [
        {"event": "calibration", "spread": 1.0, "reason": "the objective scores no test points"}]
    assert json.loads((tmp_path / "out" / "tuning.json").read_text())["model"]["spread"] == 1.0
    assert "spread" not in json.loads((tmp_path / "out" / "model" / "model.json").read_text())


def test_tune_writes_the_trials_table_and_plots(holdout_run):
    _, out = holdout_run
    rows = csv_rows(out / "trials.csv")
    assert list(rows[0]) == CSV_HEADER
    assert [(r["number"], r["state"], r["reason"]) for r in rows] == [
        (str(n), "COMPLETE", "") for n in range(3)]
    table = json.loads((out / "trials.json").read_text())
    assert table["objective"] == "test:mean_wQuantileLoss"
    for row, trial in zip(rows, table["trials"]):
        assert float(row["objective"]) == trial["objective"] == trial["test_metrics"][
            "mean_wQuantileLoss"]
        assert int(row["num_cells"]) == trial["hyperparameters"]["num_cells"]
        assert 4 <= trial["hyperparameters"]["num_cells"] <= 16
        assert 1e-3 <= trial["hyperparameters"]["learning_rate"] <= 1e-1
    for name in ("objective.png", "importance.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [json.loads(line)["event"] for line in (out / "trials" / "0" / "log.jsonl").open()]
    assert events == ["dataset", "dataset", "hyperparameters", "plan", "epoch", "final",
                      "test_metrics"]


def test_tune_refits_the_best_hyperparameters_on_the_whole_channel(holdout_run, tiny_data):
    result, out = holdout_run
    table = json.loads((out / "trials.json").read_text())["trials"]
    best = min(table, key=lambda t: t["objective"])
    summary = json.loads((out / "tuning.json").read_text())
    (calibration,) = re.findall(r"^calibration: spread ([0-9.]+) on the objective's test "
                                r"points: mean_wQuantileLoss ([0-9.]+) -> ([0-9.]+), ",
                                result.stdout, re.M)
    spread = float(calibration[0])
    assert spread in SPREADS and float(calibration[2]) <= float(calibration[1])
    assert (summary["best_trial"], summary["best_value"], summary["evaluation"],
            summary["counts"], summary["stop_reason"], summary["model"]) == (
        best["number"], best["objective"], "holdout",
        {"complete": 3, "pruned": 0, "failed": 0, "stopped": 0},
        "MaxNumberOfTrainingJobs reached",
        {"trial": best["number"], "how": "refit", "train": str(tiny_data.train),
         "spread": spread})
    assert json.loads((out / "model" / "model.json").read_text()).get("spread", 1.0) == spread
    written = json.loads((out / "hyperparameters.json").read_text())
    assert written == {**{k: str(v) for k, v in STATIC.items()},
                       "num_cells": str(best["hyperparameters"]["num_cells"]),
                       "learning_rate": repr(best["hyperparameters"]["learning_rate"])}
    # the best trial's hyperparameters trained on the whole channel, with the tune's seed
    refit = modelfolder.load(out / "model")
    assert refit.hp == hyperparameters.load(out / "hyperparameters.json", {})
    assert refit.summary["data"]["train"]["num_observations"] == TINY_SERIES * TINY_TRAIN_LENGTH
    assert refit.summary["seed"] == 42
    assert f"model: {out / 'model'} <- the best hyperparameters (trial {best['number']}) " \
           f"trained on the whole train channel {tiny_data.train}" in result.stdout


def test_a_finished_tune_resumes_with_more_trials(holdout_run, tiny_data, runner, tmp_path):
    _, first = holdout_run
    shutil.copytree(first.parent, tmp_path, dirs_exist_ok=True)
    again = runner.invoke(main, tune_args(tiny_data, tmp_path) + ["--log-format", "json"])
    assert again.exit_code == 0, again.output
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert [e["event"] for e in events] == ["dataset", "tune", "best", "calibration", "model"]
    assert (events[1]["finished"], events[4]["how"]) == (3, "unchanged")
    more = runner.invoke(main, tune_args(tiny_data, tmp_path) + ["--max-trials", "4"])
    assert more.exit_code == 0, more.output
    assert [line[:14] for line in trial_lines(more.stdout)] == ["trial 3 [4/4] "]
    assert [r["number"] for r in csv_rows(tmp_path / "out" / "trials.csv")] == ["0", "1", "2",
                                                                                "3"]


@pytest.mark.parametrize("option, differs", [
    (["--objective", "test:RMSE"], "objective differs"),
    (["--holdout-windows", "2"], "windows differs"),
    (["--seed", "7"], "seed differs")])
def test_a_study_started_with_other_settings_is_refused(holdout_run, tiny_data, runner, tmp_path,
                                                        option, differs):
    _, first = holdout_run
    shutil.copytree(first.parent, tmp_path, dirs_exist_ok=True)
    result = runner.invoke(main, tune_args(tiny_data, tmp_path) + option)
    assert result.exit_code == 64
    assert result.stderr == (
        f"Error: sqlite:///{tmp_path / 'out' / 'study.db'}: study \"deepar-cli-tune\" was "
        f"started with other settings ({differs}); use another study name or output "
        f"folder\n")
    for name in ("train", "test"):  # the study's held-out channels are left as they were
        assert filecmp.cmp(tmp_path / "out" / "holdout" / f"{name}.json",
                           first / "holdout" / f"{name}.json", shallow=False)


def test_a_failing_trial_is_recorded_and_the_grid_goes_on(runner, tiny_data, tmp_path):
    grid = {"Strategy": "Grid", "RandomSeed": 1, "ParameterRanges": {
        "CategoricalParameterRanges": [{"Name": "likelihood", "Values": ["beta", "gaussian"]}]}}
    static = {**STATIC, "num_cells": 8}
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, grid, static, test=True))
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    rows = {r["state"]: r for r in csv_rows(out / "trials.csv")}
    assert set(rows) == {"FAILED", "COMPLETE"}
    assert (rows["FAILED"]["likelihood"], rows["COMPLETE"]["likelihood"]) == ("beta", "gaussian")
    reason = (f'{tiny_data.train}: likelihood "beta" needs every target in (0, 1), but the '
              f"targets span [")
    assert rows["FAILED"]["reason"].startswith(reason)
    assert rows["FAILED"]["objective"] == ""
    failed_line = next(line for line in trial_lines(result.stdout) if "likelihood=beta" in line)
    assert f"likelihood=beta -> FAILED: {reason}" in failed_line
    # With a test channel the trials train on the whole channel: the model is the best trial's.
    best = rows["COMPLETE"]["number"]
    model = json.loads((out / "tuning.json").read_text())["model"]
    assert model == {"trial": int(best), "how": "copy", "train": str(tiny_data.train),
                     "holdout": False, "spread": model["spread"]}
    assert json.loads((out / "model" / "model.json").read_text()).get(
        "spread", 1.0) == model["spread"]
    copied = json.loads((out / "model" / "training.json").read_text())
    trial = json.loads((out / "trials" / best / "model" / "training.json").read_text())
    assert copied == trial
    assert copied["test_metrics"]["mean_wQuantileLoss"] == float(rows["COMPLETE"]["objective"])


def test_pruned_trials_stop_at_an_epoch_and_no_complete_trial_is_an_error(
        runner, tiny_data, tmp_path, monkeypatch):
    # Every epoch's loss is above this threshold: the pruner stops each trial at epoch 1.
    monkeypatch.setattr(
        "deepar_cli.tune.study._pruner",
        lambda config: optuna.pruners.ThresholdPruner(upper=-1e9))
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, config(ResourceLimits={
        "MaxNumberOfTrainingJobs": 2}), {**STATIC, "epochs": 3}))
    assert result.exit_code == 78
    assert result.stderr == "Error: no trial completed (2 pruned)\n"
    rows = csv_rows(tmp_path / "out" / "trials.csv")
    assert [(r["state"], r["reason"]) for r in rows] == [("PRUNED", "pruned at epoch 1")] * 2
    study = load_study(tmp_path / "out")
    assert [list(t.intermediate_values) for t in study.trials] == [[1], [1]]
    assert not (tmp_path / "out" / "model").exists()


def test_a_reached_target_ends_the_study(runner, tiny_data, tmp_path):
    target = config(Strategy="Hyperband",
                    TuningJobCompletionCriteria={"TargetObjectiveMetricValue": 1e9})
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, target, {**STATIC, "epochs": 2}))
    assert result.exit_code == 0, result.output
    assert "tuning 2 hyperparameters with Hyperband over 3 trials" in result.stdout
    assert len(trial_lines(result.stdout)) == 1
    assert "(1 complete; TargetObjectiveMetricValue 1e+09 reached)" in result.stdout


def test_max_runtime_stops_the_running_trial_at_an_epoch(runner, tiny_data, tmp_path):
    limited = config(ResourceLimits={"MaxNumberOfTrainingJobs": 3, "MaxRuntimeInSeconds": 5})
    result = runner.invoke(main, tune_args(tiny_data, tmp_path, limited,
                                           {**STATIC, "epochs": 1000}))
    assert result.exit_code == 78
    assert result.stderr == "Error: no trial completed (1 stopped)\n"
    rows = csv_rows(tmp_path / "out" / "trials.csv")
    assert [(r["state"], r["reason"]) for r in rows] == [("STOPPED",
                                                          "MaxRuntimeInSeconds reached")]


def _subprocess_env() -> Dict[str, str]:
    """The environment for `deepar-cli` subprocesses: each sizes its own OpenMP pool."""
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def test_two_processes_share_one_sqlite_study(tiny_data, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    runs = []
    for name, parallel in (("a", "2"), ("b", "1")):
        args = tune_args(tiny_data, tmp_path / name, config(ResourceLimits={
            "MaxNumberOfTrainingJobs": 5})) + ["--storage", url, "--study-name", "shared",
                                               "--max-parallel", parallel]
        runs.append(subprocess.Popen([sys.executable, "-m", "deepar_cli", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=_subprocess_env()))
    outputs = [run.communicate(timeout=240) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    study = load_study(tmp_path, "shared", url)
    counted = [t for t in study.trials if not t.user_attrs.get("skipped")]
    assert [(t.number, t.state.name) for t in counted] == [(n, "COMPLETE") for n in range(5)]
    assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == 5
    # Trials in spawned workers share the cores; a process alone uses them all.
    assert {t.user_attrs["omp_threads"] for t in counted} <= {str(max(1, CPU_COUNT // 2)),
                                                              str(CPU_COUNT)}
    assert str(max(1, CPU_COUNT // 2)) in {t.user_attrs["omp_threads"] for t in counted}
    seen = [len(trial_lines(out)) for out, _ in outputs]
    assert sum(seen) >= 5 and all(n >= 1 for n in seen)  # each reports what finishes
    for name in ("a", "b"):
        assert len(csv_rows(tmp_path / name / "out" / "trials.csv")) == 5
        assert json.loads((tmp_path / name / "out" / "tuning.json").read_text())[
            "best_value"] == study.best_value


def _stop_after_epochs(run: subprocess.Popen, folder: Path, trials: List[int],
                       timeout: float = 120) -> str:
    """SIGTERM once each of `trials` has logged an epoch; returns stderr."""
    deadline = time.time() + timeout
    logs = [folder / "trials" / str(n) / "log.jsonl" for n in trials]
    try:
        while not all(p.exists() and '"event": "epoch"' in p.read_text() for p in logs):
            assert time.time() < deadline and run.poll() is None, run.communicate()
            time.sleep(0.2)
        run.send_signal(signal.SIGTERM)
        return run.communicate(timeout=60)[1]
    finally:
        run.kill()


def test_sigterm_stops_running_trials_cleanly_and_a_rerun_resumes(tiny_data, tmp_path):
    args = tune_args(tiny_data, tmp_path, config(ResourceLimits={
        "MaxNumberOfTrainingJobs": 3}), {**STATIC, "epochs": 1000})
    out = tmp_path / "out"

    def start(*extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "deepar_cli", *args, *extra], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_subprocess_env())

    # Two workers: the parent sends SIGTERM on to both, each ends its trial at an epoch's end.
    run = start("--max-parallel", "2")
    stderr = _stop_after_epochs(run, out, [0, 1])
    assert run.returncode == 128 + signal.SIGTERM
    assert stderr.endswith("Error: stopped by SIGTERM; 0 finished trials are saved in the study: "
                           "run the same command again to resume\n")
    rows = csv_rows(out / "trials.csv")
    assert [(r["number"], r["state"], r["reason"]) for r in rows] == [
        ("0", "STOPPED", "stopped by a signal"), ("1", "STOPPED", "stopped by a signal")]
    assert not (out / "model").exists() and not (out / "hyperparameters.json").exists()
    study = load_study(out)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert sorted(json.dumps(t.system_attrs["fixed_params"]) for t in waiting) == sorted(
        json.dumps(t.params) for t in study.trials[:2])
    # The rerun starts with a stopped point; alone, it stops on SIGTERM in this process.
    run = start()
    _stop_after_epochs(run, out, [2])
    assert run.returncode == 128 + signal.SIGTERM
    trial = load_study(out).trials[2]
    assert (trial.state.name, trial.user_attrs["stopped"]) == ("FAIL", "stopped by a signal")
    assert trial.params == waiting[0].system_attrs["fixed_params"]


def test_a_killed_tune_runs_the_lost_trial_again_on_resume(tiny_data, tmp_path):
    args = tune_args(tiny_data, tmp_path, config(ResourceLimits={
        "MaxNumberOfTrainingJobs": 2}), {**STATIC, "epochs": 5})
    command = [sys.executable, "-m", "deepar_cli", *args]
    out = tmp_path / "out"
    # SIGKILL of the whole process group once trial 0 is complete and trial 1 is training.
    run = subprocess.Popen(command, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=_subprocess_env(), start_new_session=True)
    log, deadline = out / "trials" / "1" / "log.jsonl", time.time() + 300
    try:
        while not (log.exists() and '"event": "epoch"' in log.read_text()):
            assert time.time() < deadline and run.poll() is None, run.communicate()
            time.sleep(0.1)
        os.killpg(run.pid, signal.SIGKILL)
        first = run.communicate(timeout=60)[0]
    finally:
        run.kill()
    killed = load_study(out).trials[1]
    assert [t.state.name for t in load_study(out).trials] == ["COMPLETE", "RUNNING"]
    # The resume finds trial 1's process gone at once (no 2 minutes for a stale heartbeat),
    # runs its point again first, and finishes exactly MaxNumberOfTrainingJobs trials.
    resume = subprocess.run(command, capture_output=True, text=True, env=_subprocess_env(),
                            timeout=420)
    assert resume.returncode == 0, resume.stderr
    study = load_study(out)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[2].params == killed.params
    assert [(r["number"], r["state"], r["reason"]) for r in csv_rows(out / "trials.csv")] == [
        ("0", "COMPLETE", ""), ("1", "STOPPED", "its process died"), ("2", "COMPLETE", "")]
    lines = trial_lines(first) + trial_lines(resume.stdout)
    assert [line.split(" num_cells")[0] for line in lines] == [
        "trial 0 [1/2]", "trial 1", "trial 2 [2/2]"]
    assert "-> STOPPED: its process died in " in lines[1]


# ------------------------------------------------------------------ PostgreSQL


def _postgres_bin() -> Optional[Path]:
    found = shutil.which("pg_ctl") or next(iter(sorted(glob.glob(
        "/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)), None)
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1, run as a user other than root."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed (pip install "
                                           "psycopg2-binary)")
    binaries = _postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    as_user: List[str] = []
    folder = Path(tempfile.mkdtemp(prefix="deepar-cli-pg-"))
    if os.geteuid() == 0:  # initdb refuses root
        user = "postgres" if "postgres" in {p.pw_name for p in pwd.getpwall()} else "nobody"
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        as_user = ["runuser", "-u", user, "--"]
    else:
        user = getpass.getuser()
    data, port = folder / "data", _free_port()
    try:
        subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "tuner",
                        "-A", "trust", "--no-sync"], check=True, capture_output=True)
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l",
                        str(folder / "server.log"), "-w", "-o",
                        f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}", "start"],
                       check=True, capture_output=True)
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3: name the driver.
        yield f"postgresql+psycopg2://tuner@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_study_in_postgresql(postgres_url, runner, tiny_data, tmp_path):
    args = tune_args(tiny_data, tmp_path, config(ResourceLimits={"MaxNumberOfTrainingJobs": 2}),
                     test=True) + ["--storage", postgres_url, "--study-name", "pg"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f'study "pg" in {postgres_url}: 0 of 2 trials finished before' in result.stdout
    study = load_study(tmp_path, "pg", postgres_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert not (tmp_path / "out" / "study.db").exists()
