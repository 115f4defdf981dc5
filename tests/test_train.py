"""Training: tiny runs of GluonTS DeepAR through `deepar_cli.training` (on the MXNet backend)
and `deepar-cli train`."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from deepar_cli import training
from deepar_cli.backends.mxnet import training as mxnet_training
from deepar_cli.cli import main
from deepar_cli.config.hyperparameters import load, resolve
from deepar_cli.data import windows
from deepar_cli.data.channels import read_channel
from deepar_cli.data.dataset import to_entries
from deepar_cli.errors import DataError, HyperparameterError
from deepar_cli.evaluation import backtest
from deepar_cli.model import forecasting, modelfolder
from helpers import (
    NOTEBOOK_HYPERPARAMETERS,
    SEED,
    START,
    TINY_HP,
    TINY_PLAN,
    TINY_SERIES,
    Events,
    hp_args,
)

QUANTILE_KEYS = ("0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9")
TEST_METRICS = {"RMSE", "mean_wQuantileLoss", *(f"wQuantileLoss[{q}]" for q in QUANTILE_KEYS),
                *(f"Coverage[{q}]" for q in QUANTILE_KEYS)}


def held_out_forecasts(model: modelfolder.Model, channel: Path, seed: int = SEED
                       ) -> List[np.ndarray]:
    """The one forecast path over a test channel's held-out points: samples per series."""
    entries = to_entries(read_channel(channel), model.hp.freq, model.features)
    cut = [forecasting.hold_out(e, model.hp.prediction_length) for e in entries]
    return [f.samples for f in forecasting.sample_paths(
        model.predictor, cut, num_samples=model.hp.num_eval_samples, seed=seed)]


# --------------------------------------------------------------------------- likelihoods


@pytest.mark.parametrize("likelihood, distribution", [
    ("gaussian", "GaussianOutput"),
    ("student-T", "StudentTOutput"),
    ("deterministic-L1", "LaplaceFixedVarianceOutput"),
    ("beta", "BetaOutput"),
    ("negative-binomial", "NegativeBinomialOutput"),
])
def test_each_likelihood_trains_and_saves_a_loadable_model(likelihood_model, likelihood,
                                                           distribution):
    trained = likelihood_model(likelihood)
    summary = trained.summary
    assert [row["epoch"] for row in summary["history"]] == [1]
    assert math.isfinite(summary["final_loss"])
    assert set(summary["test_metrics"]) == TEST_METRICS
    assert all(math.isfinite(v) for v in summary["test_metrics"].values())
    model = trained.model
    assert model.hp.likelihood == likelihood
    assert type(model.predictor.gluonts.prediction_net.distr_output).__name__ == distribution
    # mean scaling would push beta's targets out of (0, 1); every other likelihood scales
    assert model.predictor.gluonts.prediction_net.scaling is (likelihood != "beta")
    forecasts = held_out_forecasts(model, trained.test)
    assert len(forecasts) == TINY_SERIES
    for samples in forecasts:
        assert samples.shape == (10, 12)
        assert np.isfinite(samples).all()
        if likelihood == "beta":
            assert ((samples > 0) & (samples < 1)).all()
        if likelihood == "negative-binomial":
            assert (samples >= 0).all() and (samples == np.round(samples)).all()


def test_beta_refuses_targets_outside_the_unit_interval(tiny_data, tiny_hp, tmp_path):
    targets = np.concatenate([r.target for r in tiny_data.train_records])
    with pytest.raises(DataError) as info:
        training.train(tiny_data.train, resolve({**tiny_hp, "likelihood": "beta"}),
                       tmp_path / "model")
    assert str(info.value) == (
        f'{tiny_data.train}: likelihood "beta" needs every target in (0, 1), but the targets '
        f"span [{targets.min():g}, {targets.max():g}]"
    )
    assert not (tmp_path / "model").exists()


def test_negative_binomial_refuses_negative_targets(jsonl, tiny_hp, tmp_path):
    path = jsonl([{"start": START, "target": [1, 2, -0.5] + [1] * 30}])
    with pytest.raises(DataError) as info:
        training.train(path, resolve({**tiny_hp, "likelihood": "negative-binomial"}),
                       tmp_path / "model")
    assert str(info.value) == (
        f'{path}: likelihood "negative-binomial" needs non-negative targets, but the smallest '
        "is -0.5"
    )


# --------------------------------------------------------------------------- cat, dynamic_feat


def _uses_dynamic_feat(predictor) -> bool:
    """Whether the predictor's input transformation stacks `feat_dynamic_real`."""
    from gluonts.transform import VstackFeatures

    def walk(transform):
        if hasattr(transform, "transformations"):
            for part in transform.transformations:
                yield from walk(part)
        else:
            yield transform

    return any(isinstance(t, VstackFeatures) and "feat_dynamic_real" in t.input_fields
               for t in walk(predictor.input_transform))


def test_cat_and_dynamic_feat_are_learnt_automatically(tiny_feature_model):
    summary, events = tiny_feature_model.summary, tiny_feature_model.events
    meta = json.loads((tiny_feature_model.dir / "model.json").read_text())
    assert meta["cardinality"] == [3]  # categories 0, 1, 2 seen
    assert meta["num_dynamic_feat"] == 2
    assert summary["data"]["train"]["num_cat"] == 1
    assert summary["data"]["train"]["num_dynamic_feat"] == 2
    (figures,) = events.of("hyperparameters")
    assert figures["cardinality"] == [3] and figures["num_dynamic_feat"] == 2
    model = tiny_feature_model.model
    assert model.features.cardinality == [3] and model.features.num_dynamic_feat == 2
    assert model.predictor.gluonts.prediction_net.cardinality == [3]
    assert model.predictor.gluonts.prediction_net.embedding_dimension == [10]
    assert _uses_dynamic_feat(model.predictor.gluonts)
    assert set(summary["test_metrics"]) == TEST_METRICS
    assert all(math.isfinite(v) for v in summary["test_metrics"].values())


def test_ignore_drops_cat_and_dynamic_feat(tiny_feature_data, tiny_hp, tmp_path, seed):
    hp = resolve({**tiny_hp, "cardinality": "ignore", "num_dynamic_feat": "ignore"})
    summary = training.train(tiny_feature_data.train, hp, tmp_path / "model",
                             test_channel=tiny_feature_data.test, seed=seed)
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["cardinality"] is None
    assert meta["num_dynamic_feat"] == 0
    model = modelfolder.load(tmp_path / "model")
    assert model.predictor.gluonts.prediction_net.cardinality == [1]  # GluonTS's dummy category
    assert not _uses_dynamic_feat(model.predictor.gluonts)
    assert "RMSE" in summary["test_metrics"]


def test_explicit_cardinality_is_used(tiny_feature_data, tiny_hp, tmp_path, seed):
    hp = resolve({**tiny_hp, "cardinality": "[5]", "embedding_dimension": "3"})
    training.train(tiny_feature_data.train, hp, tmp_path / "model", seed=seed)
    model = modelfolder.load(tmp_path / "model")
    assert model.features.cardinality == [5]
    assert model.predictor.gluonts.prediction_net.cardinality == [5]
    assert model.predictor.gluonts.prediction_net.embedding_dimension == [3]


@pytest.mark.parametrize("values, message", [
    ({"cardinality": "[2]"}, 'hyperparameter "cardinality" is 2 for "cat" 0 but the data holds '
                             "category 2; categories are 0..cardinality-1"),
    ({"cardinality": "[3, 3]"}, 'hyperparameter "cardinality" lists 2 values but the records '
                                'have 1 "cat" values each'),
    ({"num_dynamic_feat": "1"}, 'hyperparameter "num_dynamic_feat" is 1 but the training records '
                                'have 2 "dynamic_feat" series'),
])
def test_feature_hyperparameters_that_contradict_the_data(tiny_feature_data, tiny_hp, tmp_path,
                                                          values, message):
    with pytest.raises(HyperparameterError) as info:
        training.train(tiny_feature_data.train, resolve({**tiny_hp, **values}),
                       tmp_path / "model")
    assert str(info.value) == message
    assert not (tmp_path / "model").exists()


def test_cardinality_without_cat_in_the_data(tiny_data, tiny_hp, tmp_path):
    with pytest.raises(HyperparameterError) as info:
        training.train(tiny_data.train, resolve({**tiny_hp, "cardinality": "[3]"}),
                       tmp_path / "model")
    assert str(info.value) == (
        'hyperparameter "cardinality" is set but the training records have no "cat"'
    )


# --------------------------------------------------------------------------- the model folder


def test_model_folder_files_exist_and_parse(tiny_model):
    import gluonts
    import mxnet

    model_dir, hp, summary = tiny_model.dir, tiny_model.hp, tiny_model.summary
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "hyperparameters.json", "model.json", "predictor", "training.json"]
    assert json.loads((model_dir / "hyperparameters.json").read_text()) == hp.as_dict()
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["format_version"] == modelfolder.FORMAT_VERSION == 1
    assert meta["backend"] == "mxnet"
    assert meta["cardinality"] is None and meta["num_dynamic_feat"] == 0
    assert meta["versions"]["gluonts"] == gluonts.__version__
    assert meta["versions"]["mxnet"] == mxnet.__version__
    assert meta["versions"]["deepar_cli"] == "0.1.0"
    assert set(meta["versions"]) == {"deepar_cli", "gluonts", "mxnet", "python"}
    saved = json.loads((model_dir / "training.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert [row["epoch"] for row in saved["history"]] == [1]
    assert set(saved["history"][0]) == {"epoch", "loss", "seconds", "samples_per_second",
                                        "best"}
    assert saved["history"][0]["best"] is True
    assert saved["best_epoch"] == 1
    assert saved["final_loss"] == saved["history"][0]["loss"]
    assert saved["batches_per_epoch"] == TINY_PLAN["batches_per_epoch"]
    assert saved["seed"] == SEED
    assert saved["rnn"] == "fused"
    assert saved["data"]["train"]["num_series"] == 8
    assert saved["data"]["train"]["num_observations"] == 8 * 48
    assert saved["data"]["test"]["num_observations"] == 8 * 60
    assert set(saved["test_metrics"]) == TEST_METRICS
    assert saved["test_metrics"]["RMSE"] > 0
    coverage = [saved["test_metrics"][f"Coverage[{q}]"] for q in QUANTILE_KEYS]
    assert all(0 <= c <= 1 for c in coverage) and coverage == sorted(coverage)


def test_model_folder_round_trip(tiny_model):
    model_dir, hp, summary = tiny_model.dir, tiny_model.hp, tiny_model.summary
    model = modelfolder.load(model_dir)
    assert model.path == model_dir
    assert model.hp == hp
    assert model.summary["test_metrics"] == summary["test_metrics"]
    # the loaded folder scores exactly what training logged
    entries = to_entries(read_channel(tiny_model.test), hp.freq, model.features)
    assert backtest.test_scores(model, entries, seed=SEED) == summary["test_metrics"]
    # two loads forecast the same samples for the same seed, another seed others
    again = modelfolder.load(model_dir)
    first, second = (held_out_forecasts(m, tiny_model.test, seed=123) for m in (model, again))
    assert len(first) == 8
    for one, other in zip(first, second):
        assert one.shape == (10, 12)
        np.testing.assert_array_equal(one, other)
    assert not np.array_equal(first[0], held_out_forecasts(model, tiny_model.test, seed=124)[0])


def test_predictor_loads_with_plain_gluonts(tiny_model):
    from gluonts.model.predictor import Predictor

    predictor = Predictor.deserialize(tiny_model.dir / "predictor")
    assert type(predictor.prediction_net).__name__ == "DeepARPredictionNetwork"
    assert predictor.prediction_length == tiny_model.hp.prediction_length


def test_train_events_in_order(tiny_model):
    summary, events = tiny_model.summary, tiny_model.events
    assert events.names() == ["dataset", "dataset", "hyperparameters", "plan", "epoch",
                              "final", "test_metrics"]
    assert [f["channel"] for f in events.of("dataset")] == ["train", "test"]
    (plan,) = events.of("plan")
    assert plan == {**TINY_PLAN, "mini_batch_size": 8, "epochs": 1}
    (final,) = events.of("final")
    assert final["final_loss"] == summary["final_loss"]
    assert final["best_epoch"] == summary["best_epoch"]
    assert final["epochs_run"] == 1
    assert events.of("test_metrics") == [summary["test_metrics"]]
    (figures,) = events.of("hyperparameters")
    assert figures["seed"] == SEED and figures["rnn"] == "fused"


def test_same_seed_same_run(tiny_data, tiny_model, tmp_path):
    """Training again with the shared model's seed repeats it; another seed does not."""
    again = training.train(tiny_data.train, resolve(TINY_HP), tmp_path / "again",
                           test_channel=tiny_data.test, seed=SEED)
    other = training.train(tiny_data.train, resolve(TINY_HP), tmp_path / "other", seed=12)
    losses = [row["loss"] for row in tiny_model.summary["history"]]
    assert [row["loss"] for row in again["history"]] == losses
    assert again["test_metrics"] == tiny_model.summary["test_metrics"]
    assert [row["loss"] for row in other["history"]] != losses


def test_retraining_replaces_the_model_folder(tiny_data, tiny_hp, tmp_path, seed):
    model_dir = tmp_path / "model"
    (model_dir / "members" / "0").mkdir(parents=True)  # an earlier ensemble's, replaced whole
    training.train(tiny_data.train, resolve(tiny_hp), model_dir, seed=seed)
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "hyperparameters.json", "model.json", "predictor", "training.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary leftovers


# --------------------------------------------------------------------------- epochs


def test_an_epoch_of_the_notebook_is_one_pass():
    hp = load(NOTEBOOK_HYPERPARAMETERS, {})
    assert windows.training_windows([352] * 200, hp) == 1271  # (352-48+1)/48 a series
    assert windows.epoch_plan([352] * 200, hp) == {
        "training_windows": 1271, "passes": 1, "batches_per_epoch": 40}


def test_an_epoch_of_one_long_series_reads_it_several_times():
    # a meter read every 30 minutes for three months, SageMaker's default batch of 128
    hp = resolve({"time_freq": "30min", "context_length": 96, "prediction_length": 48,
                  "epochs": 20})
    assert windows.training_windows([4000], hp) == 83  # fewer than one mini-batch
    assert windows.epoch_plan([4000], hp) == {
        "training_windows": 83, "passes": 31, "batches_per_epoch": 21}


def test_short_series_give_one_window_and_shorter_ones_none():
    hp = resolve({"time_freq": "H", "context_length": 72, "prediction_length": 48,
                  "epochs": 1, "mini_batch_size": 1})
    assert windows.training_windows([10, 48, 60], hp) == 2  # 10 < 48 points: no window
    assert windows.epoch_plan([48, 60], hp) == {
        "training_windows": 2, "passes": 10, "batches_per_epoch": 20}


def test_a_pass_reads_a_series_in_prediction_length_strides():
    hp = resolve({"time_freq": "H", "context_length": 72, "prediction_length": 48,
                  "epochs": 1})
    sampler = windows.pass_sampler(hp)
    np.random.seed(0)
    counts = []
    for _ in range(200):
        points = sampler(np.zeros(352))
        assert points.min() >= 0 and points.max() <= 352 - 48
        assert set(np.diff(points)) <= {48}
        counts.append(points.size)
    assert set(counts) == {6, 7}
    assert np.mean(counts) == pytest.approx((352 - 48 + 1) / 48, abs=0.2)
    assert sampler(np.zeros(47)).size == 0


def test_training_refuses_series_all_shorter_than_the_horizon(jsonl, tmp_path, tiny_hp):
    channel = jsonl([{"start": "2016-01-01", "target": [1.0] * 5}] * 3)
    with pytest.raises(DataError) as info:
        training.train(channel, resolve(tiny_hp), tmp_path / "model")
    assert str(info.value) == (f"{channel}: every series is shorter than prediction_length "
                               "(12); there is nothing to learn a forecast from")
    assert not (tmp_path / "model").exists()


def test_epoch_logger_tracks_the_best_epoch():
    events = Events()
    logger = training.EpochLogger(events, samples_per_epoch=64, patience=None)
    losses = [3.0, 2.0, 2.5, 1.5, 1.5, 1.7]
    assert all(logger.epoch_end(epoch, loss) for epoch, loss in enumerate(losses, start=1))
    assert logger.best_epoch == 4 and logger.best_loss == 1.5
    assert [row["best"] for row in logger.history] == [True, True, False, True, False, False]
    assert [row["loss"] for row in logger.history] == losses
    assert events.names() == ["epoch"] * 6


def test_epoch_logger_stops_after_patience_epochs_without_improvement():
    events = Events()
    logger = training.EpochLogger(events, samples_per_epoch=64, patience=2)
    results = [logger.epoch_end(epoch, loss)
               for epoch, loss in enumerate([3.0, 2.0, 2.5, 2.0], start=1)]
    assert results == [True, True, True, False]  # epoch 4 is 2 epochs past the best (2)
    assert logger.best_epoch == 2
    assert events.names() == ["epoch"] * 4 + ["early_stopping"]
    assert events.of("early_stopping") == [{"epoch": 4, "patience": 2, "best_epoch": 2}]


def test_training_keeps_the_best_epochs_parameters(tiny_data, tiny_hp, tmp_path, monkeypatch,
                                                   seed):
    """Early stopping with GluonTS: the saved model is the best epoch's, not the last."""
    import mxnet as mx
    from gluonts.mx.trainer.callback import Callback

    snapshots: List[Dict[str, np.ndarray]] = []

    class WreckAndSnapshot(Callback):
        def on_train_epoch_start(self, training_network):
            if snapshots:  # from epoch 2 on, start from ruined weights: the loss goes up
                for param in training_network.collect_params().values():
                    param.set_data(param.data() + 5.0 * mx.nd.random.normal(shape=param.shape))

        def on_epoch_end(self, epoch_no, epoch_loss, training_network, **kwargs):
            snapshots.append({name: p.data().asnumpy().copy() for name, p in
                              training_network._collect_params_with_prefix().items()})
            return True

    build = mxnet_training.build_estimator
    monkeypatch.setattr(mxnet_training, "build_estimator",
                        lambda hp, features, num_batches, callbacks, rnn: build(
                            hp, features, num_batches, [*callbacks, WreckAndSnapshot()], rnn))
    events = Events()
    hp = resolve({**tiny_hp, "epochs": 6, "early_stopping_patience": 2})
    summary = training.train(tiny_data.train, hp, tmp_path / "model", seed=seed, log=events)

    losses = [row["loss"] for row in summary["history"]]
    assert len(losses) == 3  # stopped: epochs 2 and 3 did not beat epoch 1
    assert summary["best_epoch"] == 1
    assert summary["final_loss"] == losses[0] < min(losses[1:])
    assert events.of("early_stopping") == [{"epoch": 3, "patience": 2, "best_epoch": 1}]
    assert len(snapshots) == 3

    net = modelfolder.load(tmp_path / "model").predictor.gluonts.prediction_net
    saved = {name: p.data().asnumpy() for name, p in net._collect_params_with_prefix().items()}
    assert sorted(saved) == sorted(snapshots[0])
    assert all(np.array_equal(saved[name], snapshots[0][name]) for name in saved)
    assert not all(np.array_equal(saved[name], snapshots[-1][name]) for name in saved)


def test_average_epochs_keeps_the_mean_of_the_last_epochs_weights(tiny_data, tiny_hp, tmp_path,
                                                                   monkeypatch, seed, runner):
    from gluonts.mx.trainer.callback import Callback

    snapshots: List[Dict[str, np.ndarray]] = []

    class Snapshot(Callback):
        def on_epoch_end(self, epoch_no, epoch_loss, training_network, **kwargs):
            snapshots.append({name: p.data().asnumpy().copy() for name, p in
                              training_network._collect_params_with_prefix().items()})
            return True

    build = mxnet_training.build_estimator
    monkeypatch.setattr(mxnet_training, "build_estimator",
                        lambda hp, features, num_batches, callbacks, rnn: build(
                            hp, features, num_batches, [*callbacks, Snapshot()], rnn))
    hp_file = tmp_path / "hp.json"
    hp_file.write_text(json.dumps({**tiny_hp, "epochs": 3}))
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--hyperparameters",
                                  str(hp_file), "--model-dir", str(tmp_path / "model"),
                                  "--seed", str(seed), "--average-epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(snapshots) == 3
    model = modelfolder.load(tmp_path / "model", accelerated=False)
    assert model.summary["average_epochs"] == 2
    net = model.predictor.gluonts.prediction_net
    saved = {name: p.data().asnumpy() for name, p in net._collect_params_with_prefix().items()}
    assert sorted(saved) == sorted(snapshots[-1])
    for name, value in saved.items():
        np.testing.assert_allclose(value, (snapshots[1][name] + snapshots[2][name]) / 2,
                                   rtol=1e-5, atol=1e-7)
    assert not all(np.array_equal(saved[name], snapshots[2][name]) for name in saved)


# --------------------------------------------------------------------------- failures


def test_no_model_folder_when_the_test_channel_is_bad(runner, tiny_data, jsonl, tmp_path,
                                                      tiny_hp):
    short = jsonl([{"start": START, "target": [1.0] * 30}, {"start": START, "target": [1.0] * 12}],
                  name="test.json")
    model_dir = tmp_path / "out" / "model"
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--test", str(short),
                                  "--model-dir", str(model_dir), "--quiet", *hp_args(tiny_hp)])
    assert result.exit_code == 65
    assert result.stderr == (
        f"Error: {short}:2: a test series must be longer than prediction_length (12) to hold "
        "out its last points\n"
    )
    assert not (tmp_path / "out").exists()  # checked before reading data, made at the end


def test_no_model_folder_when_scoring_fails(tiny_data, tiny_hp, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise DataError("scoring broke")

    monkeypatch.setattr(backtest, "test_scores", broken)
    with pytest.raises(DataError, match="scoring broke"):
        training.train(tiny_data.train, resolve(tiny_hp), tmp_path / "model",
                       test_channel=tiny_data.test)
    assert list(tmp_path.iterdir()) == []  # neither the model nor a temporary folder


def test_failed_training_keeps_the_previous_model(tiny_data, tiny_hp, tmp_path, monkeypatch,
                                                  seed):
    model_dir = tmp_path / "model"
    training.train(tiny_data.train, resolve(tiny_hp), model_dir, seed=seed)
    before = (model_dir / "training.json").read_text()
    monkeypatch.setattr(backtest, "test_scores",
                        lambda *a, **k: (_ for _ in ()).throw(DataError("scoring broke")))
    with pytest.raises(DataError):
        training.train(tiny_data.train, resolve(tiny_hp), model_dir,
                       test_channel=tiny_data.test, seed=seed)
    assert (model_dir / "training.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --------------------------------------------------------------------------- the CLI


def test_cli_train_text_log(runner, tiny_data, tmp_path, tiny_model):
    """The CLI trains what the library trains (the shared model: same data, hyperparameters
    and default seed) and logs its figures as SageMaker does."""
    model_dir = tmp_path / "model"
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--test",
                                  str(tiny_data.test), "--model-dir", str(model_dir), "--quiet",
                                  *hp_args(TINY_HP)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        "[train channel] number of time series: 8",
        "[train channel] number of observations: 384",
        "[train channel] mean target length: 48",
        lines[3],
        "[train channel] contains missing values: no",
    ]
    assert lines[3].startswith("[train channel] min/mean/max target: ")
    assert "[test channel] number of observations: 480" in lines
    assert ("an epoch is 22 batches of 8 (small data set: 7 passes over 25 training windows); "
            "1 epochs" in lines)
    summary = tiny_model.summary
    epochs = [line for line in lines if line.startswith("#epoch ")]
    assert len(epochs) == 1
    assert epochs[0].startswith(f"#epoch 1: loss={summary['final_loss']:.6g} (")
    assert epochs[0].endswith(", best epoch loss so far")
    assert any(line.startswith(f"#final loss: {summary['final_loss']:.6g} (epoch 1; 1 epochs in ")
               for line in lines)
    metrics = summary["test_metrics"]
    scores = [f"#test_score ({name}): {metrics[name]:.6g}" for name in
              ("RMSE", "mean_wQuantileLoss", *(f"wQuantileLoss[{q}]" for q in QUANTILE_KEYS))]
    coverage = ("coverage (share of the truth below each quantile): "
                + ", ".join(f"{q}: {metrics[f'Coverage[{q}]']:.3g}" for q in QUANTILE_KEYS))
    assert lines[-len(scores) - 2:] == [*scores, coverage, f"model saved to {model_dir}"]
    assert json.loads((model_dir / "training.json").read_text())["test_metrics"] == metrics


def test_cli_train_json_log(runner, tiny_data, tmp_path, tiny_hp):
    model_dir = tmp_path / "model"
    log_file = tmp_path / "log.jsonl"
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--test",
                                  str(tiny_data.test), "--model-dir", str(model_dir),
                                  "--log-format", "json", "--log-file", str(log_file),
                                  *hp_args(tiny_hp)])
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["event"] for o in objects] == ["dataset", "dataset", "hyperparameters", "plan",
                                             "epoch", "final", "test_metrics"]
    assert objects[0]["channel"] == "train" and objects[0]["num_series"] == 8
    assert objects[3]["batches_per_epoch"] == 22
    assert objects[4]["epoch"] == 1 and objects[4]["best"] is True
    assert objects[-1]["RMSE"] > 0
    # the log file holds the same events, one JSON object a line
    assert [json.loads(line) for line in log_file.read_text().splitlines()] == objects
    saved = json.loads((model_dir / "training.json").read_text())
    assert saved["test_metrics"] == {k: v for k, v in objects[-1].items() if k != "event"}


def test_cli_hyperparameters_file_and_override(runner, tiny_data, tmp_path, tiny_hp):
    hp_file = tmp_path / "hyperparameters.json"
    hp_file.write_text(json.dumps({k: str(v) for k, v in {**tiny_hp, "epochs": 3}.items()}))
    model_dir = tmp_path / "model"
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--model-dir",
                                  str(model_dir), "--hyperparameters", str(hp_file),
                                  "--epochs", "1", "--time_freq", "h", "--quiet"])
    assert result.exit_code == 0, result.output
    hp = json.loads((model_dir / "hyperparameters.json").read_text())
    assert hp["epochs"] == 1 and hp["time_freq"] == "h" and hp["num_cells"] == 8
    assert len(json.loads((model_dir / "training.json").read_text())["history"]) == 1


def test_train_log_goes_to_current_stdout(runner, tiny_data, tmp_path, tiny_hp):
    for run in range(2):
        result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--model-dir",
                                      str(tmp_path / f"m{run}"), "--quiet", *hp_args(tiny_hp)])
        assert result.exit_code == 0, result.output
        assert "#epoch 1: loss=" in result.stdout


# --------------------------------------------------------------------------- refused before work


@pytest.mark.parametrize("command", ["train", "tune"])
def test_a_channel_without_observed_values_is_refused(runner, jsonl, tmp_path, tiny_hp,
                                                      command):
    channel = jsonl([{"start": START, "target": [None] * 40},
                     {"start": START, "target": ["NaN"] * 40}], name="train.json")
    hp_file = tmp_path / "hyperparameters.json"
    hp_file.write_text(json.dumps(tiny_hp))
    out = tmp_path / "out"
    result = runner.invoke(main, [command, "--train", str(channel), "--hyperparameters",
                                  str(hp_file), "--model-dir" if command == "train" else
                                  "--output-dir", str(out), "--quiet"])
    assert result.exit_code == 65
    assert result.stderr == (f'Error: {channel}: every target value is missing (null or "NaN"); '
                             "there is nothing to learn from\n")
    assert not out.exists()


def test_a_category_too_large_to_embed_is_bad_data(runner, jsonl, tmp_path, tiny_hp):
    """cardinality auto would make an embedding table of 10^8 rows (4 GB)."""
    channel = jsonl([{"start": START, "target": [1.0] * 40, "cat": [0, 1]},
                     {"start": START, "target": [2.0] * 40, "cat": [10 ** 8, 2]}],
                    name="train.json")
    result = runner.invoke(main, ["train", "--train", str(channel), "--model-dir",
                                  str(tmp_path / "model"), "--quiet", *hp_args(tiny_hp)])
    assert result.exit_code == 65
    assert result.stderr == (f'Error: {channel}:2: "cat" value 100000000 at position 0 is too '
                             "large: at most 26843545 categories fit an embedding table of 10 "
                             "dimensions in 1 GiB; number the categories 0, 1, 2, ...\n")
    assert not (tmp_path / "model").exists()


def test_a_cardinality_too_large_to_embed_is_a_hyperparameter_error(tiny_feature_data,
                                                                    tiny_hp, tmp_path):
    with pytest.raises(HyperparameterError) as info:
        training.train(tiny_feature_data.train, resolve({
            **tiny_hp, "cardinality": "[300000]", "embedding_dimension": "1000"}),
            tmp_path / "model")
    assert str(info.value) == ('hyperparameter "cardinality" is 300000 for "cat" 0: at most '
                               "268435 categories fit an embedding table of 1000 dimensions in "
                               "1 GiB")


@pytest.mark.parametrize("model_dir, shown", [(".", "."), ("..", ".."), ("{cwd}", "{cwd}"),
                                              ("/", "/")])
def test_the_current_folder_cannot_be_the_model_folder(runner, tiny_data, tmp_path, tiny_hp,
                                                       monkeypatch, model_dir, shown):
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "mine.txt").write_text("the user's own file")
    monkeypatch.chdir(cwd)
    result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--model-dir",
                                  model_dir.format(cwd=cwd), "--quiet", *hp_args(tiny_hp)])
    assert result.exit_code == 64
    shown = shown.format(cwd=cwd)
    assert result.stderr == (f"Error: {shown}: the current folder, or one above it, cannot be "
                             "replaced by a new folder; give a folder of its own, e.g. "
                             f"{Path(shown) / 'model'}\n")
    assert result.stdout == ""  # before reading the channel
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert sorted(p.name for p in cwd.iterdir()) == ["mine.txt"]


FULL_DISK = """
import json, resource, signal, sys
from pathlib import Path
from deepar_cli.errors import OutputError
from deepar_cli.config.hyperparameters import resolve
from deepar_cli.training import train

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG


def limit(event, figures):
    if event == "final":  # trained: only the model folder is left to write
        resource.setrlimit(resource.RLIMIT_FSIZE, (4000, resource.RLIM_INFINITY))


try:
    train(sys.argv[1], resolve(json.loads(sys.argv[2])), Path(sys.argv[3]), log=limit)
except OutputError as error:
    print(error)
    sys.exit(error.exit_code)
"""


def _file_size_limit() -> None:
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4000, resource.RLIM_INFINITY))


def test_a_full_disk_during_training_is_an_output_error(tiny_data, tiny_hp, tmp_path):
    """Files over 4000 bytes cannot be written (the parameters take 8 kB): GluonTS's first
    checkpoint, in the temporary folder, fails."""
    import os
    import subprocess
    import sys

    (tmp_path / "tmp").mkdir()
    model_dir = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, "-m", "deepar_cli", "train", "--train", str(tiny_data.train),
         "--model-dir", str(model_dir), "--quiet", *hp_args(tiny_hp)],
        capture_output=True, text=True, preexec_fn=_file_size_limit,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")}, timeout=300)
    assert result.returncode == 73, result.stderr
    assert result.stderr == (f"Error: {model_dir}: cannot be written (saving the network's "
                             f"parameters in {tmp_path / 'tmp'} failed: FileStream.Write "
                             "incomplete; is the disk full?)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_a_full_disk_writing_the_model_folder_is_an_output_error(tiny_data, tiny_hp,
                                                                 tmp_path):
    import subprocess
    import sys

    model_dir = tmp_path / "model"
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tiny_data.train),
                             json.dumps(tiny_hp), str(model_dir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 73, result.stderr
    assert result.stdout == (f"{model_dir}: cannot be written (saving the network's "
                             "parameters failed: FileStream.Write incomplete; is the disk "
                             "full?)\n")
    assert list(tmp_path.iterdir()) == []  # neither the model nor its temporary folder


# --------------------------------------------------------------------------- signals


def _interrupt_training(args: List[str], signum: int) -> "subprocess.CompletedProcess[str]":
    """`deepar-cli train` in a subprocess, sent `signum` once it has logged its first epoch."""
    run = subprocess.Popen([sys.executable, "-m", "deepar_cli", *args], text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = []
        for line in run.stdout:  # the log lines, flushed as they happen
            seen.append(line)
            if line.startswith("#epoch 1:"):
                run.send_signal(signum)
                break
        out, err = run.communicate(timeout=120)
        return subprocess.CompletedProcess(run.args, run.returncode, "".join(seen) + out, err)
    finally:
        run.kill()


@pytest.mark.parametrize("signum, earlier", [(signal.SIGINT, False), (signal.SIGTERM, True)],
                         ids=["SIGINT", "SIGTERM-over-a-model"])
def test_an_interrupted_train_writes_no_model(tiny_data, tiny_hp, tmp_path, tiny_model, signum,
                                              earlier):
    # GluonTS's trainer catches KeyboardInterrupt and saves the epochs so far: neither a
    # model folder nor a temporary one may be left, and an earlier model stays whole.
    model_dir = tmp_path / "model"
    if earlier:
        shutil.copytree(tiny_model.dir, model_dir)
    result = _interrupt_training(["train", "--train", str(tiny_data.train), "--model-dir",
                                  str(model_dir), "--quiet",
                                  *hp_args({**tiny_hp, "epochs": 50})], signum)
    assert result.returncode == 128 + signum, (result.stdout, result.stderr)
    assert result.stderr.splitlines()[-1] == (
        f"Error: interrupted by {signal.Signals(signum).name}; unfinished outputs were "
        "discarded")
    assert "#final loss" not in result.stdout and "model saved" not in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == (["model"] if earlier else [])
    if earlier:
        assert (model_dir / "training.json").read_text() == (
            tiny_model.dir / "training.json").read_text()
