"""Caruana's ensemble selection (`tune --final-model selection`, the default): the scores it
selects on are the GluonTS Evaluator's, the weights it finds, a weighted ensemble folder,
and tune writing the selected trials' models as the model, its spread calibrated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from deepar_cli.cli import main
from deepar_cli.evaluation import backtest
from deepar_cli.model import modelfolder
from deepar_cli.model.forecasting import Ensemble, forecast_class
from deepar_cli.tune import selection
from deepar_cli.tune.final_model import SPREADS
from deepar_cli.tune.reporting import format_event
from helpers import TINY_HP, assert_predict_refused, paths

QUANTILES = [0.1, 0.5, 0.9]
STATIC = {k: v for k, v in TINY_HP.items() if k != "num_cells"}
TUNING = {"Strategy": "Random", "RandomSeed": 7,
          "ResourceLimits": {"MaxNumberOfTrainingJobs": 3},
          "ParameterRanges": {"IntegerParameterRanges": [
              {"Name": "num_cells", "MinValue": "4", "MaxValue": "16"}]}}


def tune_args(data: SimpleNamespace, folder: Path, *extra: str,
              final_model: Optional[str] = None) -> List[str]:
    """`tune` on the tiny data with `extra` options; final_model None: the default."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "static.json").write_text(json.dumps(STATIC))
    (folder / "tuning.json").write_text(json.dumps(TUNING))
    chosen = ["--final-model", final_model] if final_model else []
    return ["tune", "--train", str(data.train), "--hyperparameters",
            str(folder / "static.json"), "--tuning-config", str(folder / "tuning.json"),
            "--output-dir", str(folder / "out"), "--quiet", "--log-format", "json", *chosen,
            *extra]


def _event(events: List[Dict[str, Any]], name: str) -> Dict[str, Any]:
    (found,) = [e for e in events if e["event"] == name]
    return found


def sorted_paths(truth: np.ndarray, offset: float, samples: int = 9) -> np.ndarray:
    """Paths at `offset` from the truth, spread evenly: (series, samples, steps), sorted."""
    spread = np.linspace(-1.0, 1.0, samples)[None, :, None]
    return truth[:, None, :] + offset + spread


def test_mixtures_are_scored_as_the_gluonts_evaluator_scores_them() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(1, 5, size=(6, 4))
    paths_ = np.sort(truth[:, None, :] + rng.normal(0, 1, size=(6, 50, 4)), axis=1)
    forecast = forecast_class()
    start = pd.Period("2020-01-01 00:00", freq="h")
    pairs = [({"start": start, "target": np.concatenate([np.ones(3), row])},
              forecast(p, start_date=start + 3)) for row, p in zip(truth, paths_)]
    agg, _ = backtest._score(pairs, QUANTILES)
    for metric in selection.METRICS:
        assert backtest.score_paths(paths_, truth, metric, QUANTILES) == pytest.approx(
            agg[metric], rel=1e-9)


@pytest.mark.parametrize("metric", selection.METRICS)
def test_selection_finds_the_weights_that_cancel_two_biases(metric: str) -> None:
    """3 above and 6 below the truth average to it at weights 2:1; 50 above is left out."""
    truth = np.arange(12.0).reshape(3, 4) + 10
    forecasts = [sorted_paths(truth, offset) for offset in (3.0, -6.0, 50.0)]
    assert selection.ensemble_weights(forecasts, truth, metric, QUANTILES) == [2, 1, 0]


def test_one_forecast_best_alone_is_chosen_alone() -> None:
    truth = np.ones((2, 3))
    forecasts = [sorted_paths(truth, offset) for offset in (0.0, 2.0)]
    assert selection.ensemble_weights(forecasts, truth, "mean_wQuantileLoss", QUANTILES) == [1, 0]


def weighted(tiny_ensemble: SimpleNamespace, tmp_path: Path, weights: object) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_ensemble.dir, folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "weights": weights}))
    return folder


def test_a_weighted_ensemble_averages_its_members_quantiles_with_the_weights(
        tiny_ensemble: SimpleNamespace, tmp_path: Path) -> None:
    model = modelfolder.load(weighted(tiny_ensemble, tmp_path, [3, 1]))
    assert model.predictor.weights == (3.0, 1.0)
    entries = backtest._test_entries(model, tiny_ensemble.train)
    equal = modelfolder.load(tiny_ensemble.dir).predictor
    first, second = (paths(Ensemble(equal.members, weights=w), entries, 10)
                     for w in ((1.0, 0.0), (0.0, 1.0)))
    mixed = paths(model.predictor, entries, 10)
    np.testing.assert_allclose(mixed, 0.75 * first + 0.25 * second, rtol=1e-5)
    np.testing.assert_allclose(paths(equal, entries, 10), (first + second) / 2, rtol=1e-5)
    assert mixed.dtype == np.float32


@pytest.mark.parametrize("weights", [[1], [1, 0], [1, "2"], "1,1", [True, 1]])
def test_bad_weights_are_a_model_error(tiny_ensemble: SimpleNamespace, tmp_path: Path,
                                       weights: object) -> None:
    folder = weighted(tiny_ensemble, tmp_path, weights)
    assert_predict_refused(folder, tiny_ensemble.train, tmp_path, f"{folder}: model files are "
                           f"damaged (\"weights\" must be a positive number for each of the 2 "
                           f"members, got {weights!r})")


@pytest.fixture(scope="module")
def selection_run(tiny_data: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
                  ) -> SimpleNamespace:
    """One tune with the default final model: 3 Random trials, then ensemble selection."""
    folder = tmp_path_factory.mktemp("selection_tune")
    result = CliRunner().invoke(main, tune_args(tiny_data, folder))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return SimpleNamespace(out=folder / "out", events=events)


def test_tune_by_default_selects_and_weighs_the_trials_models(selection_run: SimpleNamespace
                                                              ) -> None:
    out, events = selection_run.out, selection_run.events
    chosen = _event(events, "selection")
    trials = {t["number"]: t for t in json.loads((out / "trials.json").read_text())["trials"]}
    # The selection again, from each trial's forecasts of the held-out points
    forecasts, truth = [], None
    ranked = sorted(trials, key=lambda n: (trials[n]["objective"], n))
    for number in ranked:
        drawn, truth = backtest.held_out_forecasts(
            modelfolder.load(out / "trials" / str(number) / "model"), out / "holdout" /
            "test.json", seed=42).sorted_paths()
        forecasts.append(drawn)
    counts = selection.ensemble_weights(forecasts, truth, "mean_wQuantileLoss",
                                        [k / 10 for k in range(1, 10)])
    expected = sorted((k for k, c in enumerate(counts) if c), key=lambda k: -counts[k])
    assert (chosen["candidates"], chosen["trials"], chosen["weights"]) == (
        3, [ranked[k] for k in expected], [counts[k] for k in expected])
    source = json.loads((out / "tuning.json").read_text())["model"]
    assert source["how"] == "copy" and source["holdout"] is True
    assert source["train"] == str(out / "holdout" / "train.json")
    assert len(expected) > 1  # the tiny trials' models mix better than the best alone
    assert (source["trials"], source["weights"]) == (chosen["trials"], chosen["weights"])
    meta = json.loads((out / "model" / "model.json").read_text())
    assert meta["weights"] == chosen["weights"]
    for k, number in enumerate(chosen["trials"]):
        assert (out / "model" / "members" / str(k) / "training.json").read_text() == (
            out / "trials" / str(number) / "model" / "training.json").read_text()
    ensemble = backtest.score_channel(modelfolder.load(out / "trials" / "ensemble"),
                                      out / "holdout" / "test.json", seed=42)
    assert chosen["value"] == ensemble["mean_wQuantileLoss"]
    assert _event(events, "model") == {"event": "model", **source, "path": str(out / "model")}


def test_tune_calibrates_the_spread_on_the_held_out_points(selection_run: SimpleNamespace,
                                                          tmp_path: Path) -> None:
    """The spread that scores the best mean_wQuantileLoss for the chosen trials' models,
    as the forecasts of a folder with that spread score."""
    chosen = selection_run.out / "trials" / "ensemble"
    holdout = selection_run.out / "holdout" / "test.json"
    drawn = backtest.held_out_forecasts(modelfolder.load(chosen), holdout, seed=42)
    scores = {spread: drawn.scores(spread) for spread in SPREADS}
    best = min(SPREADS, key=lambda s: (scores[s]["mean_wQuantileLoss"], abs(s - 1)))
    calibration = _event(selection_run.events, "calibration")
    assert calibration == {"event": "calibration", "spread": best, "before": scores[1.0],
                           "after": scores[best]}
    assert scores[1.0] == backtest.score_channel(modelfolder.load(chosen), holdout, seed=42)
    if best != 1.0:
        assert json.loads((selection_run.out / "model" / "model.json").read_text())[
            "spread"] == best
    calibrated = tmp_path / "calibrated"
    shutil.copytree(chosen, calibrated)
    modelfolder.write_spread(calibrated, best)
    assert backtest.score_channel(modelfolder.load(calibrated), holdout,
                                  seed=42) == scores[best]


def test_a_selection_event_reads_as_one_line() -> None:
    assert format_event("selection", {
        "candidates": 20, "trials": [3, 7], "weights": [5, 2],
        "objective": "test:mean_wQuantileLoss", "value": 0.0318, "best_value": 0.0324}) == (
        "ensemble selection over 20 trials' models: 3 x5, 7 x2: test:mean_wQuantileLoss "
        "0.0318 against the best trial's 0.0324")
    assert format_event("selection", {"reason": "the objective scores no test points"}) == (
        "ensemble selection: the best trial alone (the objective scores no test points)")


def test_the_model_line_names_the_chosen_trials_and_their_weights() -> None:
    base = {"path": "out/model", "train": "holdout/train.json", "holdout": True}
    assert format_event("model", {**base, "trials": [4, 1], "weights": [3, 1], "how": "copy",
                                  "spread": 0.9}) == (
        "model: out/model <- an ensemble of the models of trials 4, 1, weighted 3:1 (trained "
        "on holdout/train.json; no refit); spread x 0.9")
    assert format_event("model", {**base, "trial": 4, "how": "copy", "spread": 1.0}) == (
        "model: out/model <- trial 4's model (trained on holdout/train.json; no refit)")
