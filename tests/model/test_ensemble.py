"""Ensembles (as `tune`'s ensemble selection writes them): a model folder of members whose
quantiles average, usable by every command; the spread tune calibrates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from deepar_cli.evaluation import backtest
from deepar_cli.model import modelfolder
from deepar_cli.model.forecasting import Ensemble, scale_spread
from helpers import TINY_HP, assert_predict_refused, paths, run, write_lines


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
