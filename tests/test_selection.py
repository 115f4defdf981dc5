"""Caruana's ensemble selection (`tune --final-model selection`): the scores it selects on
are the GluonTS Evaluator's, the weights it finds, a weighted ensemble folder, and tune
writing the selected trials' models as the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from deepar_cli.cli import main
from deepar_cli.evaluation import backtest
from deepar_cli.model import modelfolder
from deepar_cli.model.forecasting import Ensemble, forecast_class
from deepar_cli.tune import selection
from test_ensemble import _event, assert_predict_refused, paths, tune_args

QUANTILES = [0.1, 0.5, 0.9]


def sorted_paths(truth: np.ndarray, offset: float, samples: int = 9) -> np.ndarray:
    """Paths at `offset` from the truth, spread evenly: (series, samples, steps), sorted."""
    spread = np.linspace(-1.0, 1.0, samples)[None, :, None]
    return truth[:, None, :] + offset + spread


def test_scores_are_the_gluonts_evaluators() -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(1, 5, size=(6, 4))
    paths_ = np.sort(truth[:, None, :] + rng.normal(0, 1, size=(6, 50, 4)), axis=1)
    forecast = forecast_class()
    start = pd.Period("2020-01-01 00:00", freq="h")
    pairs = [({"start": start, "target": np.concatenate([np.ones(3), row])},
              forecast(p, start_date=start + 3)) for row, p in zip(truth, paths_)]
    agg, _ = backtest._score(pairs, QUANTILES)
    for metric in selection.METRICS:
        assert selection.score(paths_, truth, metric, QUANTILES) == pytest.approx(
            agg[metric], rel=1e-9)


@pytest.mark.parametrize("metric", selection.METRICS)
def test_selection_finds_the_weights_that_cancel_two_biases(metric: str) -> None:
    """3 above and 6 below the truth average to it at weights 2:1; 50 above is left out."""
    truth = np.arange(12.0).reshape(3, 4) + 10
    forecasts = [sorted_paths(truth, offset) for offset in (3.0, -6.0, 50.0)]
    assert selection.select(forecasts, truth, metric, QUANTILES) == [2, 1, 0]


def test_one_forecast_best_alone_is_chosen_alone() -> None:
    truth = np.ones((2, 3))
    forecasts = [sorted_paths(truth, offset) for offset in (0.0, 2.0)]
    assert selection.select(forecasts, truth, "mean_wQuantileLoss", QUANTILES) == [1, 0]


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


def test_tune_by_default_selects_and_weighs_the_trials_models(tiny_data: SimpleNamespace,
                                                   tmp_path: Path) -> None:
    result = CliRunner().invoke(main, tune_args(tiny_data, tmp_path, final_model=None))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    out = tmp_path / "out"
    chosen = _event(events, "selection")
    trials = {t["number"]: t for t in json.loads((out / "trials.json").read_text())["trials"]}
    # The selection again, from each trial's forecasts of the held-out points
    forecasts, truth = [], None
    ranked = sorted(trials, key=lambda n: (trials[n]["objective"], n))
    for number in ranked:
        drawn, truth = backtest.held_out_paths(
            modelfolder.load(out / "trials" / str(number) / "model"), out / "holdout" /
            "test.json", seed=42)
        forecasts.append(drawn)
    counts = selection.select(forecasts, truth, "mean_wQuantileLoss", [k / 10 for k in
                                                                       range(1, 10)])
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


def test_a_selection_event_reads_as_one_line() -> None:
    from deepar_cli.tune.reporting import format_event

    assert format_event("selection", {
        "candidates": 20, "trials": [3, 7], "weights": [5, 2],
        "objective": "test:mean_wQuantileLoss", "value": 0.0318, "best_value": 0.0324}) == (
        "ensemble selection over 20 trials' models: 3 x5, 7 x2: test:mean_wQuantileLoss "
        "0.0318 against the best trial's 0.0324")
    assert format_event("selection", {"reason": "the objective scores no test points"}) == (
        "ensemble selection: the best trial alone (the objective scores no test points)")
