"""The fused LSTM kernels and the fast sampling decoder give GluonTS's forecasts."""

from __future__ import annotations

import numpy as np
import pytest
from gluonts.model.predictor import Predictor

from deepar_cli import modelfolder
from deepar_cli.acceleration import FastSamplingNetwork
from deepar_cli.dataset import read_with_stats, to_entries
from deepar_cli.hyperparameters import resolve
from deepar_cli.training import seed_everything, train


def _samples(predictor, entries, seed):
    seed_everything(seed)
    return np.stack([f.samples for f in predictor.predict(entries, num_samples=20)])


@pytest.mark.parametrize("likelihood", ["gaussian", "student-T"])
@pytest.mark.parametrize("rnn", ["fused", "gluonts"])
def test_accelerated_forecasts_equal_gluontss(tiny_feature_data, tiny_hp, tmp_path, seed,
                                              likelihood, rnn):
    hp = resolve({**tiny_hp, "num_layers": 2, "likelihood": likelihood})
    model_dir = tmp_path / "model"
    train(tiny_feature_data.train, hp, model_dir, seed=seed, rnn=rnn)
    fast = modelfolder.load(model_dir)
    plain = modelfolder.load(model_dir, accelerated=False)
    assert type(fast.predictor.prediction_net) is FastSamplingNetwork
    assert type(plain.predictor.prediction_net) is not FastSamplingNetwork
    records, _ = read_with_stats(tiny_feature_data.test)
    entries = to_entries(records, hp.freq, fast.features)
    for entry in entries:  # forecast the held-out points; dynamic_feat already covers them
        entry["target"] = entry["target"][: -hp.prediction_length]

    expected = _samples(plain.predictor, entries, seed)
    got = _samples(fast.predictor, entries, seed)
    assert got.shape == expected.shape == (len(entries), 20, hp.prediction_length)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_fused_training_saves_a_plain_gluonts_predictor(tiny_data, tiny_hp, tmp_path, seed):
    model_dir = tmp_path / "model"
    summary = train(tiny_data.train, resolve({**tiny_hp, "num_layers": 2}), model_dir,
                    seed=seed, rnn="fused")
    assert summary["rnn"] == "fused"
    predictor = Predictor.deserialize(model_dir / "predictor")
    assert type(predictor.prediction_net).__name__ == "DeepARPredictionNetwork"
