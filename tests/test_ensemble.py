"""Ensembles (`tune --ensemble K`, `--bag N`): a model folder of members whose quantiles
average, usable by every command, and tune keeping one only when it beats the best trial;
the spread tune calibrates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest
from click.testing import CliRunner

from deepar_cli.cli import main
from deepar_cli.evaluation import backtest
from deepar_cli.model import modelfolder
from deepar_cli.model.forecasting import Ensemble, sample_paths, scale_spread
from deepar_cli.tune.study import SPREADS, describe_event
from helpers import TINY_HP, write_lines


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), prog_name="deepar-cli")


def samples(model_dir: Path, records: Path, tmp_path: Path, num_samples: int) -> np.ndarray:
    """predict's sample paths, (series, num_samples, prediction_length)."""
    out = tmp_path / f"{model_dir.parent.name}-{model_dir.name}-{num_samples}.jsonl"
    result = run("predict", "--model-dir", str(model_dir), "--input", str(records),
                 "--output", str(out), "--output-types", "samples", "--num-samples",
                 str(num_samples), "--seed", "3")
    assert result.exit_code == 0, result.output
    return np.array([json.loads(line)["samples"] for line in out.read_text().splitlines()])


def test_an_ensemble_folder_loads_as_its_members(tiny_ensemble: SimpleNamespace) -> None:
    model = modelfolder.load(tiny_ensemble.dir)
    assert isinstance(model.predictor, Ensemble)
    assert [type(m.gluonts).__name__ for m in model.predictor.members] == [
        "RepresentableBlockPredictor"] * 2
    assert model.hp == modelfolder.load(tiny_ensemble.members[0]).hp
    meta = json.loads((tiny_ensemble.dir / "model.json").read_text())
    assert meta["ensemble"] == ["members/0", "members/1"]
    assert model.predictor.spread == 1.0


def paths(model: Any, entries: List[Dict[str, Any]], num_samples: int) -> np.ndarray:
    return np.array([fc.samples for fc in sample_paths(model, entries, num_samples=num_samples,
                                                       seed=3)])


def test_an_ensemble_averages_its_members_quantiles(tiny_ensemble: SimpleNamespace) -> None:
    """Path i is the mean of the members' i-th smallest values; member 0 draws what its
    model alone draws, member 1 its own noise."""
    model = modelfolder.load(tiny_ensemble.dir)
    entries = backtest._test_entries(model, tiny_ensemble.train)
    mixed = paths(model.predictor, entries, 10)
    first = paths(model.predictor.members[0], entries, 10)
    own = np.array(list(model.predictor.members[1].sample_paths(entries, num_samples=10, seed=3,
                                                                member=1)))
    assert mixed.shape == (8, 10, TINY_HP["prediction_length"])
    assert np.array_equal(first, paths(modelfolder.load(tiny_ensemble.members[0]).predictor,
                                       entries, 10))
    assert not np.array_equal(own, paths(modelfolder.load(tiny_ensemble.members[1]).predictor,
                                         entries, 10))
    np.testing.assert_allclose(mixed, (np.sort(first, axis=1) + np.sort(own, axis=1)) / 2,
                               rtol=1e-6)
    assert mixed.dtype == np.float32


def test_a_spread_scales_the_forecast_about_its_median(tiny_model: SimpleNamespace,
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model.dir, folder)
    modelfolder.write_spread(folder, 0.5)
    model = modelfolder.load(folder)
    assert isinstance(model.predictor, Ensemble) and model.predictor.spread == 0.5
    entries = backtest._test_entries(model, tiny_model.train)
    drawn = paths(modelfolder.load(tiny_model.dir).predictor, entries, 11)
    scaled = paths(model.predictor, entries, 11)
    median = np.median(drawn, axis=1, keepdims=True)
    np.testing.assert_allclose(scaled, median + 0.5 * (drawn - median), rtol=1e-6, atol=1e-6)
    assert np.array_equal(np.median(scaled, axis=1), median[:, 0])
    assert np.array_equal(scale_spread(drawn[0], 1.0), drawn[0])


@pytest.mark.parametrize("spread", [0, -1, "1", None])
def test_a_bad_spread_is_a_model_error(tiny_model: SimpleNamespace, tmp_path: Path,
                                       spread: Any) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model.dir, folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "spread": spread}))
    assert_predict_refused(folder, tiny_model.train, tmp_path, f"{folder}: model files are "
                           f"damaged (\"spread\" must be a positive number, got {spread!r})")


def assert_predict_refused(folder: Path, records: Path, tmp_path: Path, message: str) -> None:
    """predict with the model folder exits 66 with `message` and writes nothing."""
    result = run("predict", "--model-dir", str(folder), "--input", str(records),
                 "--output", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 66
    assert result.stderr == f"Error: {message}\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_an_ensemble_forecast_of_a_record_does_not_depend_on_its_batch(
        tiny_ensemble: SimpleNamespace, tmp_path: Path) -> None:
    lines = tiny_ensemble.train.read_text().splitlines()
    alone = samples(tiny_ensemble.dir, write_lines(tmp_path / "one.json", [lines[5]]),
                    tmp_path / "", 7)
    together = samples(tiny_ensemble.dir, tiny_ensemble.train, tmp_path, 7)
    assert np.array_equal(alone[0], together[5])


def test_a_broken_member_is_a_model_error(tiny_ensemble: SimpleNamespace,
                                          tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(tiny_ensemble.dir, folder)
    shutil.rmtree(folder / "members" / "1" / "predictor")
    assert_predict_refused(folder, tiny_ensemble.train, tmp_path, f"{folder / 'members' / '1'}: "
                           "not a deepar-cli model folder (predictor/prediction_net-0000.params is "
                           "missing)")


@pytest.mark.parametrize("member", [".", "./", "members/..", ".."])
def test_an_ensemble_that_lists_itself_is_a_model_error(tiny_ensemble: SimpleNamespace,
                                                        tmp_path: Path, member: str) -> None:
    """A member that is the ensemble folder, or a folder above it, would load forever."""
    folder = tmp_path / "model"
    shutil.copytree(tiny_ensemble.dir, folder)
    meta = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**meta, "ensemble": ["members/0", member]}))
    assert_predict_refused(folder, tiny_ensemble.train, tmp_path, f"{folder}: ensemble member "
                           f"{member!r} lies outside the model folder")


# ------------------------------------------------------------------ tune --ensemble

STATIC = {k: v for k, v in TINY_HP.items() if k != "num_cells"}
TUNING = {"Strategy": "Random", "RandomSeed": 7,
          "ResourceLimits": {"MaxNumberOfTrainingJobs": 3},
          "ParameterRanges": {"IntegerParameterRanges": [
              {"Name": "num_cells", "MinValue": "4", "MaxValue": "16"}]}}


def tune_args(data: SimpleNamespace, folder: Path, *extra: str,
              final_model: Optional[str] = "trials+refit") -> List[str]:
    """`tune` on the tiny data with `extra` options; final_model None: the default."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "static.json").write_text(json.dumps(STATIC))
    (folder / "tuning.json").write_text(json.dumps(TUNING))
    chosen = ["--final-model", final_model] if final_model else []
    return ["tune", "--train", str(data.train), "--hyperparameters",
            str(folder / "static.json"), "--tuning-config", str(folder / "tuning.json"),
            "--output-dir", str(folder / "out"), "--quiet", "--log-format", "json", *chosen,
            *extra]


@pytest.fixture(scope="module")
def ensemble_run(tiny_data: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory
                 ) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("ensemble_tune")
    result = run(*tune_args(tiny_data, folder, "--ensemble", "2"))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    return SimpleNamespace(out=folder / "out", events=events, data=tiny_data)


def _event(events: List[Dict[str, Any]], name: str) -> Dict[str, Any]:
    (found,) = [e for e in events if e["event"] == name]
    return found


def test_tune_scores_the_mixture_of_the_best_trials(ensemble_run: SimpleNamespace) -> None:
    trials = json.loads((ensemble_run.out / "trials.json").read_text())["trials"]
    ranked = sorted(trials, key=lambda t: (t["objective"], t["number"]))
    scored = _event(ensemble_run.events, "ensemble")
    assert (scored["size"], scored["trials"], scored["objective"], scored["best_value"]) == (
        2, [ranked[0]["number"], ranked[1]["number"]], "test:mean_wQuantileLoss",
        ranked[0]["objective"])
    # the mixture of those trials' models, scored on the held-out points as trials are
    mixture = modelfolder.load(ensemble_run.out / "trials" / "ensemble")
    metrics = backtest.score_channel(mixture, ensemble_run.out / "holdout" / "test.json",
                                       seed=42)
    assert scored["value"] == metrics["mean_wQuantileLoss"]
    assert scored["kept"] is (scored["value"] < ranked[0]["objective"] * 0.99)


def members_of(model: Any) -> Tuple[Any, ...]:
    return model.predictor.members if isinstance(model.predictor, Ensemble) else (
        model.predictor,)


def test_tune_keeps_the_ensemble_only_when_it_scores_better(ensemble_run: SimpleNamespace
                                                            ) -> None:
    """The chosen trials' own models (the mixture when kept, else the best alone), then the
    best one's hyperparameters refit on the whole train channel."""
    scored = _event(ensemble_run.events, "ensemble")
    chosen = scored["trials"] if scored["kept"] else scored["trials"][:1]
    spread = _event(ensemble_run.events, "calibration")["spread"]
    source = json.loads((ensemble_run.out / "tuning.json").read_text())["model"]
    numbers = {"trials": chosen} if scored["kept"] else {"trial": chosen[0]}
    assert source == {**numbers, "how": "trials+refit", "train": str(ensemble_run.data.train),
                      "bag": 1, "spread": spread}
    assert len(members_of(modelfolder.load(ensemble_run.out / "model"))) == len(chosen) + 1
    members = ensemble_run.out / "model" / "members"
    for k, number in enumerate(chosen):
        assert (members / str(k) / "training.json").read_text() == (
            ensemble_run.out / "trials" / str(number) / "model" / "training.json").read_text()
    refit = modelfolder.load(members / str(len(chosen)))
    best = json.loads((ensemble_run.out / "hyperparameters.json").read_text())
    assert refit.hp.num_cells == int(best["num_cells"])
    assert refit.summary["data"]["train"]["num_observations"] == 8 * 48
    assert _event(ensemble_run.events, "model") == {
        "event": "model", **source, "path": str(ensemble_run.out / "model")}


def test_tune_calibrates_the_spread_on_the_held_out_points(ensemble_run: SimpleNamespace,
                                                          tmp_path: Path) -> None:
    """The spread that scores the best mean_wQuantileLoss for the chosen trials' models,
    as the forecasts of a folder with that spread score."""
    scored = _event(ensemble_run.events, "ensemble")
    chosen = ensemble_run.out / "trials" / (
        "ensemble" if scored["kept"] else f"{scored['trials'][0]}/model")
    holdout = ensemble_run.out / "holdout" / "test.json"
    scores = backtest.spread_scores(modelfolder.load(chosen), holdout, SPREADS, seed=42)
    best = min(SPREADS, key=lambda s: (scores[s]["mean_wQuantileLoss"], abs(s - 1)))
    calibration = _event(ensemble_run.events, "calibration")
    assert calibration == {"event": "calibration", "spread": best, "before": scores[1.0],
                           "after": scores[best]}
    assert scores[1.0] == backtest.score_channel(modelfolder.load(chosen), holdout, seed=42)
    if best != 1.0:
        assert json.loads((ensemble_run.out / "model" / "model.json").read_text())[
            "spread"] == best
    calibrated = tmp_path / "calibrated"
    shutil.copytree(chosen, calibrated)
    modelfolder.write_spread(calibrated, best)
    assert backtest.score_channel(modelfolder.load(calibrated), holdout,
                                    seed=42) == scores[best]


def test_tune_bags_seeds_of_the_best_hyperparameters(tiny_data: SimpleNamespace,
                                                     tmp_path: Path) -> None:
    args = tune_args(tiny_data, tmp_path, "--bag", "2", "--no-calibrate", "--final-model",
                     "refit")
    result = run(*args)
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert not [e for e in events if e["event"] == "calibration"]
    best = _event(events, "best")
    out = tmp_path / "out"
    assert json.loads((out / "tuning.json").read_text())["model"] == {
        "trial": best["trial"], "how": "refit", "train": str(tiny_data.train), "bag": 2,
        "spread": 1.0}
    model = modelfolder.load(out / "model")
    assert len(members_of(model)) == 2 and model.predictor.spread == 1.0
    for k in range(2):
        member = modelfolder.load(out / "model" / "members" / str(k))
        assert member.summary["seed"] == 42 + k
        assert member.hp.num_cells == best["hyperparameters"]["num_cells"]
    text = run(*args[:args.index("--log-format")], *args[args.index("json") + 1:])
    assert text.exit_code == 0, text.output
    assert (f"model: {out / 'model'} <- trial {best['trial']}'s model, already there; "
            f"2 seeds each, quantiles averaged\n") in text.stdout


def test_the_model_line_says_which_trainings_the_bag_repeats() -> None:
    """With trials+refit only the refit is bagged; with refit, each chosen trial."""
    base = {"path": "out/model", "train": "train.json", "spread": 0.9}
    assert describe_event("model", {**base, "trials": [4, 1], "how": "trials+refit",
                                    "bag": 3}) == (
        "model: out/model <- the models of trials 4, 1 (trained without the held-out points) "
        "and trial 4's hyperparameters trained on the whole train channel train.json, "
        "quantiles averaged; 3 seeds of the refit, quantiles averaged, spread x 0.9")
    assert describe_event("model", {**base, "trial": 4, "how": "refit", "bag": 2}) == (
        "model: out/model <- the best hyperparameters (trial 4) trained on the whole train "
        "channel train.json; 2 seeds each, quantiles averaged, spread x 0.9")


@pytest.mark.parametrize("extra, message", [
    (["--ensemble", "4"], "ensemble must be in [1, MaxNumberOfTrainingJobs = 3], got 4"),
    (["--bag", "0"], "Invalid value for '--bag': 0 is not in the range x>=1."),
    (["--final-model", "best"], "Invalid value for '--final-model': 'best' is not one of "
                                "'selection', 'trials+refit', 'refit', 'trials'."),
    (["--ensemble", "2", "--final-model", "selection"],
     "ensemble selection (the default final model) chooses and weighs its own members; to mix "
     "the K best trials instead, choose the final model trials+refit, refit or trials"),
    (["--ensemble", "2", "--objective", "train:final_loss"],
     "an ensemble is kept only if it scores better on a test objective; train:final_loss "
     "scores single models (use test:RMSE or test:mean_wQuantileLoss)"),
])
def test_an_impossible_ensemble_is_refused_before_training(tiny_data: SimpleNamespace,
                                                           tmp_path: Path, extra: List[str],
                                                           message: str) -> None:
    result = run(*tune_args(tiny_data, tmp_path, *extra))
    assert result.exit_code == 64
    assert result.stderr.endswith(f"\nError: {message}\n") or result.stderr == f"Error: {message}\n"
    assert not (tmp_path / "out").exists()
