"""`deepar-cli evaluate` and deepar_cli.evaluation: GluonTS Evaluator scores checked by hand,
and the command on a tiny model (tables, metrics.json, per_series.csv, errors)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List

import numpy as np
import pandas as pd
import pytest

from deepar_cli import evaluation
from deepar_cli.cli import main
from deepar_cli.dataset import Features
from deepar_cli.errors import DataError, UsageError
from deepar_cli.hyperparameters import resolve
from deepar_cli.modelfolder import Model

from conftest import TINY_PREDICTION_LENGTH, TINY_SERIES

# ------------------------------------------------------------------ hand-checked scoring

PL = 4  # prediction_length of the hand-made series
LENGTH = 30  # long enough for the hourly seasonal naive (season 24) to repeat a day back
LEVELS = (0.1, 0.5, 0.9)
# 11 sample paths: the q-quantile is the sorted sample at index 10*q exactly, whichever
# quantile rule (nearest rank or linear interpolation) one uses.
NUM_SAMPLES = 11
# Lopsided offsets (so the sample mean differs from the median), growing with the horizon.
OFFSETS = (np.arange(NUM_SAMPLES, dtype=np.float64) ** 2 / 20 - 1.5)[:, None] \
    * np.array([1.0, 1.5, 2.0, 2.5])


def hand_targets() -> List[np.ndarray]:
    t = np.arange(LENGTH)
    return [
        (10 + 3 * np.sin(2 * np.pi * t / 24) + 0.05 * t + 0.3 * (t % 5 == 0)).round(2),
        (50 + 0.5 * t + np.where(t % 3 == 0, 2.0, -1.0)).round(2),
        np.linspace(5, 1, LENGTH).round(2),
    ]


def hand_entries(targets: List[np.ndarray]) -> List[Dict[str, Any]]:
    start = pd.Period("2016-01-01 00:00:00", freq="h")
    return [{"start": start, "target": y.astype(np.float32)} for y in targets]


def stub_samples(past: np.ndarray) -> np.ndarray:
    """The stub's forecast: the last observed value plus the fixed offsets."""
    return np.float32(past[-1]) + OFFSETS.astype(np.float32)


class StubPredictor:
    """Quacks like a GluonTS predictor; every forecast is a fixed function of the input."""

    prediction_length = PL
    lead_time = 0

    def __init__(self) -> None:
        self.calls: List[int] = []

    def predict(self, dataset: Any, num_samples: int = 100) -> Iterator[Any]:
        from gluonts.model.forecast import SampleForecast

        self.calls.append(num_samples)
        for entry in dataset:
            target = np.asarray(entry["target"])
            yield SampleForecast(samples=stub_samples(target),
                                 start_date=entry["start"] + target.size)


def nearest_rank(ordered: np.ndarray, q: float) -> np.ndarray:
    """GluonTS's sample quantile: the sorted sample at round((n - 1) * q)."""
    return ordered[int(round((ordered.shape[0] - 1) * q))]


def hand_scores(targets: List[np.ndarray], forecaster: Any, levels=LEVELS) -> Dict[str, float]:
    """The GluonTS Evaluator's aggregate, computed with numpy: per-series MSE of the sample
    mean averaged over series (RMSE its root), quantile losses summed over series and time
    and divided by the summed |y|, coverage averaged."""
    mse, abs_target, abs_error, mase = [], 0.0, 0.0, []
    qloss = {q: 0.0 for q in levels}
    cover = {q: [] for q in levels}
    for y in targets:
        y = y.astype(np.float32).astype(np.float64)
        past, truth = y[:-PL], y[-PL:]
        samples = np.asarray(forecaster(past), dtype=np.float64)
        mean = samples.mean(axis=0)
        ordered = np.sort(samples, axis=0)
        median = nearest_rank(ordered, 0.5)
        mse.append(np.mean((truth - mean) ** 2))
        abs_target += np.abs(truth).sum()
        abs_error += np.abs(truth - median).sum()
        season = 24 if 24 < past.size else 1
        mase.append(np.mean(np.abs(truth - median))
                    / np.mean(np.abs(past[season:] - past[:-season])))
        for q in levels:
            q_hat = nearest_rank(ordered, q)
            qloss[q] += 2 * np.sum(np.abs((truth - q_hat) * ((truth <= q_hat) - q)))
            cover[q].append(np.mean(truth <= q_hat))
    out = {"MSE": float(np.mean(mse)), "RMSE": math.sqrt(np.mean(mse)),
           "ND": abs_error / abs_target, "MASE": float(np.mean(mase))}
    for q in levels:
        out[f"wQuantileLoss[{q}]"] = qloss[q] / abs_target
        out[f"Coverage[{q}]"] = float(np.mean(cover[q]))
    out["mean_wQuantileLoss"] = float(np.mean([out[f"wQuantileLoss[{q}]"] for q in levels]))
    return out


def seasonal_naive(past: np.ndarray) -> np.ndarray:
    """GluonTS's seasonal naive with season 24: the value a day back, one sample path."""
    return past[past.size - 24:past.size - 24 + PL][None, :]


def stub_model() -> Model:
    hp = resolve({"time_freq": "H", "context_length": 4, "prediction_length": PL,
                  "epochs": 1, "num_eval_samples": NUM_SAMPLES,
                  "test_quantiles": list(LEVELS)})
    return Model(Path("stub"), StubPredictor(), hp, Features(), {})


def test_evaluate_scores_fixed_forecasts_like_the_hand_computation() -> None:
    targets = hand_targets()
    agg, items, forecasts = evaluation._evaluate(StubPredictor(), hand_entries(targets),
                                                 LEVELS, NUM_SAMPLES)
    want = hand_scores(targets, stub_samples)
    for name, value in want.items():
        assert agg[name] == pytest.approx(value, rel=1e-6), name
    assert len(forecasts) == len(targets) == len(items)
    assert forecasts[0].samples.shape == (NUM_SAMPLES, PL)
    # Per-series MSE, and RMSE as the root of their mean (not the mean of their roots).
    assert items["MSE"].mean() == pytest.approx(want["MSE"], rel=1e-6)
    assert agg["RMSE"] != pytest.approx(np.sqrt(items["MSE"]).mean(), rel=1e-6)


def test_hand_example_is_not_trivial() -> None:
    """Guard the hand computation itself: mean != median, losses differ per quantile."""
    targets = hand_targets()
    want = hand_scores(targets, stub_samples)
    samples = stub_samples(targets[0][:-PL])
    assert not np.allclose(samples.mean(axis=0), np.median(samples, axis=0))
    losses = [want[f"wQuantileLoss[{q}]"] for q in LEVELS]
    assert len(set(losses)) == 3 and all(v > 0 for v in losses)
    assert want["mean_wQuantileLoss"] == pytest.approx(sum(losses) / 3)


def test_headline_picks_sagemakers_figures() -> None:
    targets = hand_targets()
    agg, _, _ = evaluation._evaluate(StubPredictor(), hand_entries(targets), LEVELS,
                                     NUM_SAMPLES)
    out = evaluation.headline(agg, LEVELS)
    assert list(out) == ["RMSE", "mean_wQuantileLoss", "wQuantileLoss[0.1]",
                         "wQuantileLoss[0.5]", "wQuantileLoss[0.9]"]
    want = hand_scores(targets, stub_samples)
    assert out == pytest.approx({k: want[k] for k in out}, rel=1e-6)


def test_test_scores_use_the_models_quantiles_and_samples() -> None:
    model = stub_model()
    targets = hand_targets()
    out = evaluation.test_scores(model, hand_entries(targets), seed=3)
    assert model.predictor.calls == [NUM_SAMPLES]
    want = hand_scores(targets, stub_samples)
    assert out == pytest.approx({k: want[k] for k in out}, rel=1e-6)


def test_backtest_one_window_scores_model_and_seasonal_naive_by_hand() -> None:
    model = stub_model()
    targets = hand_targets()
    result = evaluation.backtest(model, hand_entries(targets), seed=1, quantiles=[0.25, 0.75],
                                 num_samples=7)
    # num_samples reaches the predictor; quantiles replace the model's test_quantiles.
    assert model.predictor.calls == [7]
    assert result.quantiles == [0.25, 0.75]
    want = hand_scores(targets, stub_samples, levels=(0.25, 0.75))
    assert set(result.overall) == {"RMSE", "mean_wQuantileLoss", "MASE", "sMAPE", "ND", "MSE",
                                   "MAPE", "MSIS", "wQuantileLoss[0.25]", "Coverage[0.25]",
                                   "wQuantileLoss[0.75]", "Coverage[0.75]"}
    for name, value in want.items():
        assert result.overall[name] == pytest.approx(value, rel=1e-6), name
    naive = hand_scores(targets, seasonal_naive, levels=(0.25, 0.75))
    for name, value in naive.items():
        assert result.baseline[name] == pytest.approx(value, rel=1e-6), name
    assert len(result.windows) == 1 and result.windows[0]["window"] == 1
    assert list(result.per_series["window"]) == [1, 1, 1]
    assert list(result.per_series["series"]) == [0, 1, 2]
    assert result.summary() == {"quantiles": [0.25, 0.75], "overall": result.overall,
                                "seasonal_naive": result.baseline, "windows": result.windows}


def test_backtest_two_windows_pools_series_of_both_windows() -> None:
    model = stub_model()
    targets = hand_targets()
    result = evaluation.backtest(model, hand_entries(targets), seed=1, windows=2)
    assert model.predictor.calls == [NUM_SAMPLES, NUM_SAMPLES]
    later = hand_scores(targets, stub_samples)
    earlier = hand_scores([y[:-PL] for y in targets], stub_samples)
    assert [w["window"] for w in result.windows] == [1, 2]
    assert result.windows[0]["RMSE"] == pytest.approx(later["RMSE"], rel=1e-6)
    assert result.windows[1]["RMSE"] == pytest.approx(earlier["RMSE"], rel=1e-6)
    # Pooled: MSE averaged over all 6 (window, series) rows; losses over all |y|.
    pooled_targets = list(targets) + [y[:-PL] for y in targets]
    pooled = hand_scores(pooled_targets, stub_samples)
    assert result.overall["RMSE"] == pytest.approx(pooled["RMSE"], rel=1e-6)
    assert result.overall["RMSE"] == pytest.approx(
        math.sqrt((later["MSE"] + earlier["MSE"]) / 2), rel=1e-6)
    for q in LEVELS:
        key = f"wQuantileLoss[{q}]"
        assert result.overall[key] == pytest.approx(pooled[key], rel=1e-6)
    assert result.overall["mean_wQuantileLoss"] == pytest.approx(
        pooled["mean_wQuantileLoss"], rel=1e-6)
    assert list(result.per_series["window"]) == [1, 1, 1, 2, 2, 2]
    assert list(result.per_series["series"]) == [0, 1, 2, 0, 1, 2]
    table = evaluation.format_table(result).splitlines()
    assert table[-3] == f"{'window':<8}{'RMSE':>12}{'mean_wQuantileLoss':>20}"
    assert table[-2] == (f"{1:<8}{result.windows[0]['RMSE']:>12.6g}"
                         f"{result.windows[0]['mean_wQuantileLoss']:>20.6g}")


def test_cut_windows_drops_whole_prediction_lengths() -> None:
    entries = hand_entries(hand_targets())
    entries[0]["feat_dynamic_real"] = np.zeros((2, LENGTH), dtype=np.float32)
    assert evaluation.cut_windows(entries, PL, 0) == entries
    cut = evaluation.cut_windows(entries, PL, 2)
    assert [e["target"].size for e in cut] == [LENGTH - 2 * PL] * 3
    np.testing.assert_array_equal(cut[1]["target"], entries[1]["target"][:LENGTH - 2 * PL])
    assert cut[0]["feat_dynamic_real"].shape == (2, LENGTH - 2 * PL)
    with pytest.raises(DataError) as info:
        evaluation.cut_windows(entries, PL, 7)
    assert str(info.value) == f"window 8 needs series longer than {7 * PL + PL} points; " \
                              f"one has {LENGTH}"


def test_parse_quantiles() -> None:
    assert evaluation.parse_quantiles("0.1,0.5,0.9") == [0.1, 0.5, 0.9]
    assert evaluation.parse_quantiles(" 0.25 , 0.75") == [0.25, 0.75]
    for text, part in (("0.1,abc", "abc"), ("0,0.5", "0"), ("0.5,1", "1"), ("0.5,", ""),
                       ("nan", "nan"), ("-0.2", "-0.2")):
        with pytest.raises(UsageError) as info:
            evaluation.parse_quantiles(text)
        assert str(info.value) == ('--quantiles must be numbers in (0, 1) separated by commas, '
                                   f'got "{part}"')


# ------------------------------------------------------------------ the command

TINY = {"time_freq": "H", "context_length": 12, "prediction_length": TINY_PREDICTION_LENGTH,
        "epochs": 1, "mini_batch_size": 8, "num_cells": 8, "num_layers": 1,
        "num_eval_samples": 10}
SEED = 42


@pytest.fixture(scope="module")
def trained(tiny_data: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
            ) -> SimpleNamespace:
    """A tiny model trained with the tiny test channel scored (seed 42, the CLI default)."""
    from deepar_cli.training import train

    folder = tmp_path_factory.mktemp("evaluate")
    summary = train(tiny_data.train, resolve(dict(TINY)), folder / "model",
                    test_channel=tiny_data.test, seed=SEED)
    return SimpleNamespace(dir=folder / "model", folder=folder, summary=summary)


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def listing(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_evaluate_writes_table_metrics_and_per_series(runner, trained, tiny_data) -> None:
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir),
                                  "--test", str(tiny_data.test), "--quiet"])
    assert result.exit_code == 0, result.output
    out = trained.dir / "evaluation"
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_series.csv"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"quantiles", "overall", "seasonal_naive", "windows"}
    assert metrics["quantiles"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    overall = metrics["overall"]
    for key in ("RMSE", "mean_wQuantileLoss", "MASE", "sMAPE", "ND", "MSE", "MAPE", "MSIS",
                *(f"wQuantileLoss[0.{i}]" for i in range(1, 10)),
                *(f"Coverage[0.{i}]" for i in range(1, 10))):
        assert isinstance(overall[key], float) and math.isfinite(overall[key]), key
        assert key in metrics["seasonal_naive"], key
    assert overall["RMSE"] == pytest.approx(math.sqrt(overall["MSE"]))
    assert overall["mean_wQuantileLoss"] == pytest.approx(
        np.mean([overall[f"wQuantileLoss[0.{i}]"] for i in range(1, 10)]))
    assert len(metrics["windows"]) == 1
    window = metrics["windows"][0]
    assert window["window"] == 1 and window["RMSE"] == overall["RMSE"]
    assert window["seasonal_naive"] == metrics["seasonal_naive"]

    # Same test channel, same seed: exactly the figures `train` logged for the test channel.
    test_metrics = json.loads((trained.dir / "training.json").read_text())["test_metrics"]
    assert set(test_metrics) == {"RMSE", "mean_wQuantileLoss",
                                 *(f"wQuantileLoss[0.{i}]" for i in range(1, 10))}
    for key, value in test_metrics.items():
        assert overall[key] == value, key

    rows = read_csv(out / "per_series.csv")
    assert len(rows) == TINY_SERIES
    assert [r["window"] for r in rows] == ["1"] * TINY_SERIES
    assert [int(r["series"]) for r in rows] == list(range(TINY_SERIES))
    assert {"MSE", "abs_error", "abs_target_sum", "QuantileLoss[0.5]"} <= set(rows[0])
    mse = [float(r["MSE"]) for r in rows]
    assert math.sqrt(np.mean(mse)) == pytest.approx(overall["RMSE"], rel=1e-9)
    loss = sum(float(r["QuantileLoss[0.5]"]) for r in rows)
    total = sum(float(r["abs_target_sum"]) for r in rows)
    assert loss / total == pytest.approx(overall["wQuantileLoss[0.5]"], rel=1e-9)

    lines = result.output.splitlines()
    assert lines[0] == f"{'metric':<22}{'DeepAR':>12}{'seasonal naive':>16}"
    assert "DeepAR" in lines[0] and "seasonal naive" in lines[0]
    naive = metrics["seasonal_naive"]
    for key in ("RMSE", "mean_wQuantileLoss", "wQuantileLoss[0.5]"):
        assert f"{key:<22}{overall[key]:>12.6g}{naive[key]:>16.6g}" in lines, key
    assert lines[-1] == f"wrote {out / 'metrics.json'} and {out / 'per_series.csv'}"
    assert len(lines) == 1 + len(overall) + 1


def test_evaluate_quantiles_option_changes_the_keys(runner, trained, tiny_data, tmp_path):
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir), "--test",
                                  str(tiny_data.test), "--quantiles", "0.1,0.5,0.9",
                                  "--output-dir", str(tmp_path / "q"), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "q" / "metrics.json").read_text())
    assert metrics["quantiles"] == [0.1, 0.5, 0.9]
    for part in ("overall", "seasonal_naive"):
        assert sorted(k for k in metrics[part] if "[" in k) == sorted(
            ["wQuantileLoss[0.1]", "wQuantileLoss[0.5]", "wQuantileLoss[0.9]",
             "Coverage[0.1]", "Coverage[0.5]", "Coverage[0.9]"])
    overall = metrics["overall"]
    assert overall["mean_wQuantileLoss"] == pytest.approx(
        np.mean([overall[f"wQuantileLoss[{q}]"] for q in ("0.1", "0.5", "0.9")]))
    # Same seed, same sample paths: the quantiles both runs score agree exactly.
    test_metrics = trained.summary["test_metrics"]
    for key in ("RMSE", "wQuantileLoss[0.1]", "wQuantileLoss[0.5]", "wQuantileLoss[0.9]"):
        assert overall[key] == test_metrics[key], key
    assert "wQuantileLoss[0.2]" not in result.output
    assert "wQuantileLoss[0.9]" in result.output
    header = [r for r in read_csv(tmp_path / "q" / "per_series.csv")][0]
    assert "QuantileLoss[0.9]" in header and "QuantileLoss[0.2]" not in header


def test_evaluate_two_windows(runner, trained, tiny_data, tmp_path) -> None:
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir), "--test",
                                  str(tiny_data.test), "--windows", "2",
                                  "--output-dir", str(tmp_path / "w"), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert [w["window"] for w in metrics["windows"]] == [1, 2]
    # Window 1 is the one-window backtest: the same seed gives the same figures.
    assert metrics["windows"][0]["RMSE"] == trained.summary["test_metrics"]["RMSE"]
    rows = read_csv(tmp_path / "w" / "per_series.csv")
    assert len(rows) == 2 * TINY_SERIES
    assert [r["window"] for r in rows] == ["1"] * TINY_SERIES + ["2"] * TINY_SERIES
    assert [int(r["series"]) for r in rows] == list(range(TINY_SERIES)) * 2
    mse = [float(r["MSE"]) for r in rows]
    assert metrics["overall"]["RMSE"] == pytest.approx(math.sqrt(np.mean(mse)), rel=1e-9)
    lines = result.output.splitlines()
    assert f"{'window':<8}{'RMSE':>12}{'mean_wQuantileLoss':>20}" in lines
    for w in metrics["windows"]:
        assert f"{w['window']:<8}{w['RMSE']:>12.6g}{w['mean_wQuantileLoss']:>20.6g}" in lines


def test_evaluate_num_samples_and_seed_change_the_scores(runner, trained, tiny_data,
                                                          tmp_path) -> None:
    def rmse(*args: str) -> float:
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir), "--test",
                                      str(tiny_data.test), "--output-dir", str(out), "--quiet",
                                      *args])
        assert result.exit_code == 0, result.output
        return json.loads((out / "metrics.json").read_text())["overall"]["RMSE"]

    assert rmse("--seed", "42") == trained.summary["test_metrics"]["RMSE"]
    assert rmse("--seed", "7") != trained.summary["test_metrics"]["RMSE"]
    assert rmse("--seed", "7") == rmse("--seed", "7")
    assert rmse("--num-samples", "3") != trained.summary["test_metrics"]["RMSE"]


@pytest.mark.parametrize("quantiles, part", [("0.1,abc", "abc"), ("0.5,1.5", "1.5"),
                                             ("0", "0")])
def test_evaluate_bad_quantiles(runner, trained, tiny_data, tmp_path, quantiles, part):
    before = listing(trained.dir)
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir), "--test",
                                  str(tiny_data.test), "--quantiles", quantiles,
                                  "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 64
    assert result.output.splitlines() == [
        f'Error: --quantiles must be numbers in (0, 1) separated by commas, got "{part}"']
    assert not (tmp_path / "out").exists()
    assert listing(trained.dir) == before


def test_evaluate_missing_model_folder(runner, tiny_data, tmp_path) -> None:
    missing = tmp_path / "nope"
    result = runner.invoke(main, ["evaluate", "--model-dir", str(missing),
                                  "--test", str(tiny_data.test)])
    assert result.exit_code == 66
    assert result.output.splitlines() == [
        f"Error: {missing}: no such model folder (train one with `deepar-cli train`)"]
    assert not missing.exists()
    assert list(tmp_path.iterdir()) == []


def test_evaluate_folder_that_is_not_a_model(runner, trained, tiny_data, tmp_path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "hyperparameters.json").write_text((trained.dir / "hyperparameters.json")
                                               .read_text())
    result = runner.invoke(main, ["evaluate", "--model-dir", str(fake),
                                  "--test", str(tiny_data.test)])
    assert result.exit_code == 66
    assert result.output.splitlines() == [
        f"Error: {fake}: not a deepar-cli model folder (model.json is missing)"]
    assert listing(fake) == ["hyperparameters.json"]

    for name in ("model.json", "training.json"):
        (fake / name).write_text((trained.dir / name).read_text())
    result = runner.invoke(main, ["evaluate", "--model-dir", str(fake),
                                  "--test", str(tiny_data.test)])
    assert result.exit_code == 66
    assert result.output.splitlines() == [
        f"Error: {fake}: not a deepar-cli model folder (predictor is missing)"]
    assert listing(fake) == ["hyperparameters.json", "model.json", "training.json"]


def test_evaluate_test_series_too_short(runner, trained, jsonl, tmp_path) -> None:
    test = jsonl([{"start": "2016-01-01 00:00:00", "target": list(range(1, 31))},
                  {"start": "2016-01-01 00:00:00", "target": list(range(1, 13))}],
                 name="short.json")
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir), "--test",
                                  str(test), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 65
    assert result.output.splitlines() == [
        f"Error: {test}:2: a test series must be longer than prediction_length (12)"]
    assert not (tmp_path / "out").exists()


def test_evaluate_too_many_windows_writes_nothing(runner, trained, tiny_data, tmp_path):
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir), "--test",
                                  str(tiny_data.test), "--windows", "5",
                                  "--output-dir", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 65
    assert result.output.splitlines() == [
        "Error: window 5 needs series longer than 60 points; one has 60"]
    assert not (tmp_path / "out").exists()
