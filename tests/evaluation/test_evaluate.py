"""`deepar-cli evaluate` and deepar_cli.evaluation.backtest: GluonTS Evaluator scores of the one
forecast path checked by hand on the shared tiny model, and the command (tables,
metrics.json, per_series.csv, errors)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import pytest

from deepar_cli.cli import main
from deepar_cli.data.channels import read_channel
from deepar_cli.data.dataset import to_entries
from deepar_cli.errors import DataError
from deepar_cli.evaluation import backtest
from deepar_cli.model import forecasting
from deepar_cli.model.modelfolder import Model
from helpers import SEED, TINY_LENGTH, TINY_SERIES, usage_error

# ------------------------------------------------------------------ hand-checked scoring

PL = 12  # the tiny model's prediction_length
LEVELS = (0.1, 0.5, 0.9)
# 10 sample paths: the 0.1 and 0.9 quantiles fall between order statistics (positions 0.9
# and 8.1), so linear interpolation and GluonTS's nearest rank give different values.
NUM_SAMPLES = 10
SEASON = 24  # hourly data


def tiny_entries(tiny_model: Any) -> List[Dict[str, Any]]:
    """The tiny test channel (60 points a series) as GluonTS entries."""
    return to_entries(read_channel(tiny_model.test), tiny_model.hp.freq,
                      tiny_model.model.features)


def deepar(model: Model, num_samples: int, seed: int = SEED
           ) -> Callable[[List[Dict[str, Any]]], List[np.ndarray]]:
    """Sample paths of the held-out points through the one forecast path."""

    def forecast(entries: List[Dict[str, Any]]) -> List[np.ndarray]:
        cut = [forecasting.hold_out(e, PL) for e in entries]
        return [f.samples for f in forecasting.sample_paths(
            model.predictor, cut, num_samples=num_samples, seed=seed)]

    return forecast


def seasonal_naive(entries: List[Dict[str, Any]]) -> List[np.ndarray]:
    """GluonTS's seasonal naive with season 24: the values a day back, one sample path."""
    out = []
    for entry in entries:
        past = entry["target"][:-PL]
        out.append(past[past.size - SEASON:past.size - SEASON + PL][None, :])
    return out


def linear(ordered: np.ndarray, q: float) -> np.ndarray:
    return np.quantile(ordered, q, axis=0)  # numpy's default: linear between order statistics


def nearest_rank(ordered: np.ndarray, q: float) -> np.ndarray:
    return ordered[int(round((ordered.shape[0] - 1) * q))]


def hand_scores(entries: List[Dict[str, Any]], forecaster: Any, levels: Sequence[float] = LEVELS,
                quantile: Callable[[np.ndarray, float], np.ndarray] = linear
                ) -> Dict[str, float]:
    """The GluonTS Evaluator's aggregate, computed with numpy from the sample paths: per-series
    MSE of the sample mean averaged over series (RMSE its root), quantile losses summed over
    series and time and divided by the summed |y|, coverage averaged."""
    mse, abs_target, abs_error, mase = [], 0.0, 0.0, []
    qloss = {q: 0.0 for q in levels}
    cover: Dict[float, List[float]] = {q: [] for q in levels}
    for entry, samples in zip(entries, forecaster(entries)):
        y = entry["target"].astype(np.float64)
        past, truth = y[:-PL], y[-PL:]
        ordered = np.sort(np.asarray(samples, dtype=np.float64), axis=0)
        mean = ordered.mean(axis=0)
        median = quantile(ordered, 0.5)
        mse.append(np.mean((truth - mean) ** 2))
        abs_target += np.abs(truth).sum()
        abs_error += np.abs(truth - median).sum()
        season = SEASON if SEASON < past.size else 1
        mase.append(np.mean(np.abs(truth - median))
                    / np.mean(np.abs(past[season:] - past[:-season])))
        for q in levels:
            q_hat = quantile(ordered, q)
            qloss[q] += 2 * np.sum(np.abs((truth - q_hat) * ((truth <= q_hat) - q)))
            cover[q].append(np.mean(truth <= q_hat))
    out = {"MSE": float(np.mean(mse)), "RMSE": math.sqrt(np.mean(mse)),
           "ND": abs_error / abs_target, "MASE": float(np.mean(mase))}
    for q in levels:
        out[f"wQuantileLoss[{q}]"] = qloss[q] / abs_target
        out[f"Coverage[{q}]"] = float(np.mean(cover[q]))
    out["mean_wQuantileLoss"] = float(np.mean([out[f"wQuantileLoss[{q}]"] for q in levels]))
    return out


def assert_scores(got: Dict[str, float], want: Dict[str, float]) -> None:
    for name, value in want.items():
        # float32 samples and float64 hand sums: equal to float32 rounding
        assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_scores_are_the_one_forecast_paths_quantiles_scored_by_hand(tiny_model) -> None:
    model, entries = tiny_model.model, tiny_entries(tiny_model)
    result = backtest.backtest(model, entries, seed=SEED, quantiles=list(LEVELS),
                                 num_samples=NUM_SAMPLES)
    assert_scores(result.overall, hand_scores(entries, deepar(model, NUM_SAMPLES)))
    # Per-series MSE, and RMSE as the root of their mean (not the mean of their roots).
    items = result.per_series
    assert len(items) == TINY_SERIES
    assert items["MSE"].mean() == pytest.approx(result.overall["MSE"], rel=1e-9)
    assert result.overall["RMSE"] != pytest.approx(np.sqrt(items["MSE"]).mean(), rel=1e-6)


def test_the_scored_quantiles_are_linear_not_nearest_rank(tiny_model) -> None:
    """Guard the hand computation itself: with 10 samples the quantile rule matters, the mean
    is not the median, and the losses differ per quantile."""
    model, entries = tiny_model.model, tiny_entries(tiny_model)
    forecaster = deepar(model, NUM_SAMPLES)
    samples = forecaster(entries[:1])[0]
    assert samples.shape == (NUM_SAMPLES, PL)
    assert not np.allclose(samples.mean(axis=0), np.median(samples, axis=0))
    summary = forecasting.summarize(samples, LEVELS)
    np.testing.assert_allclose(summary.mean, samples.mean(axis=0), rtol=1e-6)
    for q in LEVELS:
        np.testing.assert_allclose(summary.quantiles[q], np.quantile(samples, q, axis=0),
                                   rtol=1e-6)
    want = hand_scores(entries, forecaster)
    other = hand_scores(entries, forecaster, quantile=nearest_rank)
    assert want["wQuantileLoss[0.1]"] != pytest.approx(other["wQuantileLoss[0.1]"], rel=1e-3)
    losses = [want[f"wQuantileLoss[{q}]"] for q in LEVELS]
    assert len(set(losses)) == 3 and all(v > 0 for v in losses)
    assert want["mean_wQuantileLoss"] == pytest.approx(sum(losses) / 3)


def test_test_scores_use_the_models_quantiles_and_samples(tiny_model) -> None:
    model, entries = tiny_model.model, tiny_entries(tiny_model)
    out = backtest.test_scores(model, entries, seed=SEED)
    keys = [f"0.{i}" for i in range(1, 10)]
    assert list(out) == ["RMSE", "mean_wQuantileLoss", *(f"wQuantileLoss[{k}]" for k in keys),
                         *(f"Coverage[{k}]" for k in keys)]
    levels = model.hp.test_quantiles
    assert model.hp.num_eval_samples == NUM_SAMPLES
    want = hand_scores(entries, deepar(model, NUM_SAMPLES), levels)
    assert_scores(out, {k: want[k] for k in out})
    # What training logged for the same test channel and seed.
    assert out == tiny_model.summary["test_metrics"]


def test_headline_picks_sagemakers_figures(tiny_model) -> None:
    model, entries = tiny_model.model, tiny_entries(tiny_model)
    result = backtest.backtest(model, entries, seed=SEED, quantiles=list(LEVELS))
    out = backtest.headline(result.overall, LEVELS)
    assert list(out) == ["RMSE", "mean_wQuantileLoss", "wQuantileLoss[0.1]",
                         "wQuantileLoss[0.5]", "wQuantileLoss[0.9]"]
    assert out == {k: result.overall[k] for k in out}


def test_backtest_one_window_scores_model_and_seasonal_naive_by_hand(tiny_model) -> None:
    model, entries = tiny_model.model, tiny_entries(tiny_model)
    result = backtest.backtest(model, entries, seed=3, quantiles=[0.25, 0.75], num_samples=7)
    # quantiles replace the model's test_quantiles; num_samples and seed reach the forecasts.
    assert result.quantiles == [0.25, 0.75]
    assert set(result.overall) == {"RMSE", "mean_wQuantileLoss", "MASE", "sMAPE", "ND", "MSE",
                                   "MAPE", "MSIS", "wQuantileLoss[0.25]", "Coverage[0.25]",
                                   "wQuantileLoss[0.75]", "Coverage[0.75]"}
    assert_scores(result.overall, hand_scores(entries, deepar(model, 7, seed=3), (0.25, 0.75)))
    assert_scores(result.baseline, hand_scores(entries, seasonal_naive, (0.25, 0.75)))
    assert len(result.windows) == 1 and result.windows[0]["window"] == 1
    assert list(result.per_series["window"]) == [1] * TINY_SERIES
    assert list(result.per_series["series"]) == list(range(TINY_SERIES))
    assert result.summary() == {"quantiles": [0.25, 0.75], "overall": result.overall,
                                "seasonal_naive": result.baseline, "windows": result.windows}


def test_backtest_two_windows_pools_series_of_both_windows(tiny_model) -> None:
    model, entries = tiny_model.model, tiny_entries(tiny_model)
    result = backtest.backtest(model, entries, seed=SEED, quantiles=list(LEVELS),
                                 num_samples=NUM_SAMPLES, windows=2)
    forecaster = deepar(model, NUM_SAMPLES)
    earlier_entries = backtest.window_entries(entries, PL, 1)
    later = hand_scores(entries, forecaster)
    earlier = hand_scores(earlier_entries, forecaster)
    assert [w["window"] for w in result.windows] == [1, 2]
    assert result.windows[0]["RMSE"] == pytest.approx(later["RMSE"], rel=1e-5)
    assert result.windows[1]["RMSE"] == pytest.approx(earlier["RMSE"], rel=1e-5)
    # Pooled: MSE averaged over all 16 (window, series) rows; losses over all |y|.
    pooled = hand_scores(list(entries) + earlier_entries, forecaster)
    for key in ("RMSE", "mean_wQuantileLoss", *(f"wQuantileLoss[{q}]" for q in LEVELS)):
        assert result.overall[key] == pytest.approx(pooled[key], rel=1e-5), key
    assert result.overall["RMSE"] == pytest.approx(
        math.sqrt((later["MSE"] + earlier["MSE"]) / 2), rel=1e-5)
    assert list(result.per_series["window"]) == [1] * TINY_SERIES + [2] * TINY_SERIES
    assert list(result.per_series["series"]) == list(range(TINY_SERIES)) * 2
    table = backtest.format_table(result).splitlines()
    assert table[-3] == f"{'window':<8}{'RMSE':>12}{'mean_wQuantileLoss':>20}"
    assert table[-2] == (f"{1:<8}{result.windows[0]['RMSE']:>12.6g}"
                         f"{result.windows[0]['mean_wQuantileLoss']:>20.6g}")


def test_window_entries_drop_whole_prediction_lengths(tiny_model) -> None:
    entries = tiny_entries(tiny_model)[:3]
    entries[0]["feat_dynamic_real"] = np.zeros((2, TINY_LENGTH), dtype=np.float32)
    assert backtest.window_entries(entries, PL, 0) == entries
    cut = backtest.window_entries(entries, PL, 2)
    assert [e["target"].size for e in cut] == [TINY_LENGTH - 2 * PL] * 3
    np.testing.assert_array_equal(cut[1]["target"], entries[1]["target"][:TINY_LENGTH - 2 * PL])
    assert cut[0]["feat_dynamic_real"].shape == (2, TINY_LENGTH - 2 * PL)
    assert cut[1]["start"] == entries[1]["start"]
    with pytest.raises(DataError) as info:
        backtest.window_entries(entries, PL, 4)
    assert str(info.value) == f"window 5 needs series longer than {5 * PL} points; " \
                              f"one has {TINY_LENGTH}"


# ------------------------------------------------------------------ the command

@pytest.fixture
def trained(tiny_model: Any, tmp_path: Path) -> Any:
    """A copy of the shared tiny model (evaluate writes into MODEL_DIR/evaluation)."""
    shutil.copytree(tiny_model.dir, tmp_path / "model")
    return SimpleNamespace(dir=tmp_path / "model", summary=tiny_model.summary)


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
                                 *(f"wQuantileLoss[0.{i}]" for i in range(1, 10)),
                                 *(f"Coverage[0.{i}]" for i in range(1, 10))}
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
                                  str(tiny_data.test), "--quantiles", " 0.1, 0.5 ,0.9",
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

    # (the default seed gives training's figures: test_evaluate_writes_table_metrics_...)
    assert rmse("--seed", "7") != trained.summary["test_metrics"]["RMSE"]
    assert rmse("--num-samples", "3") != trained.summary["test_metrics"]["RMSE"]


@pytest.mark.parametrize("quantiles, part", [("0.1,abc", "abc"), ("0.5,1.5", "1.5"),
                                             ("0", "0"), ("0.5,", ""), ("nan", "nan"),
                                             ("-0.2", "-0.2"), ("1", "1")])
def test_evaluate_bad_quantiles(runner, trained, tiny_data, tmp_path, quantiles, part):
    before = listing(trained.dir)
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir), "--test",
                                  str(tiny_data.test), "--quantiles", quantiles,
                                  "--output-dir", str(tmp_path / "out")],
                           prog_name="deepar-cli")
    assert result.exit_code == 64
    assert result.stdout == ""
    assert result.stderr == usage_error(
        "evaluate", f"Invalid value for '--quantiles': \"{part}\" is not a number in (0, 1); "
                    'give levels like "0.1,0.5,0.9"')
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
        f"Error: {fake}: not a deepar-cli model folder "
        "(predictor/prediction_net-0000.params is missing)"]
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


@pytest.mark.parametrize("observed", [[], list(range(28))], ids=["all-missing",
                                                                  "held-out-missing"])
def test_evaluate_without_observed_held_out_points(runner, trained, jsonl, tmp_path,
                                                   observed) -> None:
    """Every score would be NaN: refused, not null metrics and a warning a metric."""
    missing = observed + [None] * (40 - len(observed))
    test = jsonl([{"start": "2016-01-01 00:00:00", "target": missing},
                  {"start": "2016-01-01 00:00:00", "target": ["NaN"] * 40}], name="nan.json")
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir), "--test",
                                  str(test), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 65
    assert result.output.splitlines() == [
        f"Error: {test}: the last prediction_length (12) points of every series are missing; "
        "there is nothing to score forecasts against"]
    assert not (tmp_path / "out").exists()


def test_evaluate_too_many_windows_writes_nothing(runner, trained, tiny_data, tmp_path):
    result = runner.invoke(main, ["evaluate", "--model-dir", str(trained.dir), "--test",
                                  str(tiny_data.test), "--windows", "5",
                                  "--output-dir", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 65
    assert result.output.splitlines() == [
        "Error: window 5 needs series longer than 60 points; one has 60"]
    assert not (tmp_path / "out").exists()
