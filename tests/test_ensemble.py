"""Ensembles (`tune --ensemble K`): a model folder of members whose sample paths mix, usable
by every command, and tune keeping one only when it beats the best trial."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List

import numpy as np
import pytest
from click.testing import CliRunner

from deepar_cli import evaluation, modelfolder
from deepar_cli.cli import main
from deepar_cli.forecasting import Ensemble

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
    assert [type(m).__name__ for m in model.predictor.members] == [
        "RepresentableBlockPredictor"] * 2
    assert model.hp == modelfolder.load(tiny_ensemble.members[0]).hp
    meta = json.loads((tiny_ensemble.dir / "model.json").read_text())
    assert meta["ensemble"] == ["members/0", "members/1"]
    assert model.predictor.shares(100) == [50, 50]
    assert Ensemble((1, 2, 3)).shares(10) == [4, 3, 3]


def test_members_share_the_samples_and_draw_their_own_noise(tiny_ensemble: SimpleNamespace,
                                                            tmp_path: Path) -> None:
    mixed = samples(tiny_ensemble.dir, tiny_ensemble.train, tmp_path, 10)
    first = samples(tiny_ensemble.members[0], tiny_ensemble.train, tmp_path, 5)
    second = samples(tiny_ensemble.members[1], tiny_ensemble.train, tmp_path, 5)
    assert mixed.shape == (8, 10, TINY_HP["prediction_length"])
    # member 0 draws what its model alone draws; member 1 its own noise, not member 0's
    assert np.array_equal(mixed[:, :5], first)
    assert not np.array_equal(mixed[:, 5:], second)
    assert np.all(np.isfinite(mixed))


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
    result = run("predict", "--model-dir", str(folder), "--input", str(tiny_ensemble.train),
                 "--output", str(tmp_path / "out.jsonl"))
    assert result.exit_code == 66
    assert result.stderr == (f"Error: {folder / 'members' / '1'}: not a deepar-cli model "
                             f"folder (predictor is missing)\n")
    assert not (tmp_path / "out.jsonl").exists()


# ------------------------------------------------------------------ tune --ensemble

STATIC = {k: v for k, v in TINY_HP.items() if k != "num_cells"}
TUNING = {"Strategy": "Random", "RandomSeed": 7,
          "ResourceLimits": {"MaxNumberOfTrainingJobs": 3},
          "ParameterRanges": {"IntegerParameterRanges": [
              {"Name": "num_cells", "MinValue": "4", "MaxValue": "16"}]}}


def tune_args(data: SimpleNamespace, folder: Path, *extra: str) -> List[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "static.json").write_text(json.dumps(STATIC))
    (folder / "tuning.json").write_text(json.dumps(TUNING))
    return ["tune", "--train", str(data.train), "--hyperparameters",
            str(folder / "static.json"), "--tuning-config", str(folder / "tuning.json"),
            "--output-dir", str(folder / "out"), "--quiet", "--log-format", "json", *extra]


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
    metrics = evaluation.score_channel(mixture, ensemble_run.out / "holdout" / "test.json",
                                       seed=42)
    assert scored["value"] == metrics["mean_wQuantileLoss"]
    assert scored["kept"] is (scored["value"] < ranked[0]["objective"] * 0.99)


def test_tune_keeps_the_ensemble_only_when_it_scores_better(ensemble_run: SimpleNamespace
                                                            ) -> None:
    """Kept: each member's hyperparameters refit on the whole train channel."""
    scored = _event(ensemble_run.events, "ensemble")
    source = json.loads((ensemble_run.out / "tuning.json").read_text())["model"]
    model = modelfolder.load(ensemble_run.out / "model")
    trials = {t["number"]: t for t in json.loads(
        (ensemble_run.out / "trials.json").read_text())["trials"]}
    if scored["kept"]:
        assert source == {"trials": scored["trials"], "how": "refit",
                          "train": str(ensemble_run.data.train)}
        assert isinstance(model.predictor, Ensemble)
        for k, number in enumerate(scored["trials"]):
            member = modelfolder.load(ensemble_run.out / "model" / "members" / str(k))
            assert member.hp.num_cells == trials[number]["hyperparameters"]["num_cells"]
            assert member.summary["data"]["train"]["num_observations"] == 8 * 48
    else:
        assert source == {"trial": scored["trials"][0], "how": "refit",
                          "train": str(ensemble_run.data.train)}
        assert not isinstance(model.predictor, Ensemble)
    assert _event(ensemble_run.events, "model") == {
        "event": "model", **source, "path": str(ensemble_run.out / "model")}


@pytest.mark.parametrize("extra, message", [
    (["--ensemble", "4"], "ensemble must be in [1, MaxNumberOfTrainingJobs = 3], got 4"),
    (["--ensemble", "2", "--objective", "train:final_loss"],
     "an ensemble is kept only if it scores better on a test objective; train:final_loss "
     "scores single models (use test:RMSE or test:mean_wQuantileLoss)"),
])
def test_an_impossible_ensemble_is_refused_before_training(tiny_data: SimpleNamespace,
                                                           tmp_path: Path, extra: List[str],
                                                           message: str) -> None:
    result = run(*tune_args(tiny_data, tmp_path, *extra))
    assert result.exit_code == 64
    assert result.stderr == f"Error: {message}\n"
    assert not (tmp_path / "out").exists()
