"""The acceleration is guarded: training runs the fused LSTM kernel (and `--rnn gluonts`
does not), forecasting runs FastSamplingNetwork with `invariant_unroll`, and the
accelerated forecasts equal GluonTS's own network's, likelihood by likelihood."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import mxnet as mx
import numpy as np
import pytest
from gluonts.model.predictor import Predictor
from gluonts.mx.model.deepar._network import DeepARPredictionNetwork

from deepar_cli.backends.mxnet import acceleration
from deepar_cli.backends.mxnet.acceleration import FastSamplingNetwork
from deepar_cli.cli import main
from deepar_cli.data.dataset import read_with_stats, to_entries
from deepar_cli.model import forecasting, modelfolder
from helpers import SEED, TINY_HP, TINY_PLAN, TINY_PREDICTION_LENGTH, hp_args

NUM_SAMPLES = 20
LIKELIHOODS = ["gaussian", "student-T", "negative-binomial", "beta", "deterministic-L1"]


class Calls:
    """Wraps a function and records, per call, what `note(*args, **kwargs)` says."""

    def __init__(self, function: Any, note: Any) -> None:
        self.function, self.note = function, note
        self.seen: List[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(self.note(*args, **kwargs))
        return self.function(*args, **kwargs)


def count_rnn(monkeypatch: pytest.MonkeyPatch) -> Calls:
    """Count MXNet's fused RNN operator, noting whether autograd was training."""
    calls = Calls(mx.nd.RNN, lambda *a, **k: mx.autograd.is_training())
    monkeypatch.setattr(mx.nd, "RNN", calls)
    return calls


def parameters(model_dir: Any) -> Dict[str, np.ndarray]:
    net = Predictor.deserialize(model_dir / "predictor").prediction_net
    return {name: p.data().asnumpy() for name, p in net._collect_params_with_prefix().items()}


def held_out_entries(model: modelfolder.Model, channel: Any) -> List[Dict[str, Any]]:
    records, _ = read_with_stats(channel)
    return [forecasting.hold_out(e, model.hp.prediction_length)
            for e in to_entries(records, model.hp.freq, model.features)]


def samples(model: modelfolder.Model, entries: List[Dict[str, Any]]) -> np.ndarray:
    return np.stack([f.samples for f in forecasting.sample_paths(
        model.predictor, entries, num_samples=NUM_SAMPLES, seed=SEED)])


# --------------------------------------------------------------------------- training


def test_rnn_option_picks_the_lstm_kernel_for_training(runner, tiny_data, tmp_path,
                                                       monkeypatch) -> None:
    """fused: one fused LSTM operator per layer and batch, in training mode, and a plain
    GluonTS predictor saved; gluonts: never the fused operator. Same seed, different runs."""
    hp = {**TINY_HP, "num_layers": 2}
    runs: Dict[str, Tuple[Dict[str, Any], List[bool], List[Any]]] = {}
    for rnn in ("fused", "gluonts"):
        monkeypatch.undo()
        rnn_calls = count_rnn(monkeypatch)
        unrolls = Calls(acceleration.fused_unroll, lambda stack, length, *a, **k: length)
        monkeypatch.setattr(acceleration, "fused_unroll", unrolls)
        model_dir = tmp_path / rnn
        result = runner.invoke(main, ["train", "--train", str(tiny_data.train), "--model-dir",
                                      str(model_dir), "--rnn", rnn, "--quiet", *hp_args(hp)])
        assert result.exit_code == 0, result.output
        summary = json.loads((model_dir / "training.json").read_text())
        runs[rnn] = summary, rnn_calls.seen, unrolls.seen
        assert summary["rnn"] == rnn
        assert summary["seed"] == SEED
        assert summary["batches_per_epoch"] == TINY_PLAN["batches_per_epoch"]

    batches = TINY_PLAN["batches_per_epoch"]
    fused, fused_rnn, fused_unrolls = runs["fused"]
    # Each batch unrolls context_length + prediction_length steps once (GluonTS first runs
    # one more pass to initialize the parameters, where the input width is not known yet
    # and the cell-by-cell unroll stands in), and every batch through fused kernels.
    steps = TINY_HP["context_length"] + TINY_PREDICTION_LENGTH
    assert fused_unrolls == [steps] * (batches + 1)
    assert fused_rnn == [True] * batches * hp["num_layers"]
    gluonts, gluonts_rnn, gluonts_unrolls = runs["gluonts"]
    assert gluonts_rnn == [] and gluonts_unrolls == []

    assert [row["loss"] for row in fused["history"]] != [row["loss"] for row in
                                                         gluonts["history"]]
    first, second = parameters(tmp_path / "fused"), parameters(tmp_path / "gluonts")
    assert sorted(first) == sorted(second)
    assert not any(np.array_equal(first[name], second[name]) for name in first
                   if "weight" in name)
    # Either way the folder holds GluonTS's own prediction network.
    for rnn in ("fused", "gluonts"):
        net = Predictor.deserialize(tmp_path / rnn / "predictor").prediction_net
        assert type(net) is DeepARPredictionNetwork


# --------------------------------------------------------------------------- forecasting


def test_forecasts_run_the_fast_sampling_network_and_invariant_unroll(tiny_model,
                                                                      monkeypatch) -> None:
    unrolls = Calls(acceleration.invariant_unroll, lambda stack, length, *a, **k: length)
    monkeypatch.setattr(acceleration, "invariant_unroll", unrolls)
    steps = Calls(acceleration.decoder_step, lambda layers, x, states: (
        len(layers), tuple(x.shape), tuple(states[0].shape)))
    monkeypatch.setattr(acceleration, "decoder_step", steps)
    decode, decodes = FastSamplingNetwork._decode, []

    def counted_decode(self: Any, *args: Any, **kwargs: Any) -> Any:
        decodes.append(kwargs.get("samples_per_series", args[-1]))
        return decode(self, *args, **kwargs)

    monkeypatch.setattr(FastSamplingNetwork, "_decode", counted_decode)
    model = modelfolder.load(tiny_model.dir)
    net = model.predictor.gluonts.prediction_net
    assert type(net) is FastSamplingNetwork
    assert net.rnn.unroll.__func__ is unrolls
    rnn_calls = count_rnn(monkeypatch)

    entries = held_out_entries(model, tiny_model.test)
    got = samples(model, entries)
    assert got.shape == (len(entries), NUM_SAMPLES, TINY_PREDICTION_LENGTH)
    # One batch: the encoder over the context, then one decoder step per forecast point,
    # each step one fused LSTM operator per layer (outside training), over the batch's
    # rows (a short batch is not padded to a whole one) padded to a multiple of 48 rows
    # that the layers round as they do 3,200 (else to 3,200).
    rows = len(entries) * NUM_SAMPLES
    padded = -(-rows // acceleration.ROW_QUANTUM) * acceleration.ROW_QUANTUM
    layers = net.rnn._inference_layers
    if not all(layer.rounds_alike(padded) for layer in layers):
        padded = acceleration.DECODER_ROWS
    hidden = TINY_HP["num_cells"]
    assert decodes == [NUM_SAMPLES]
    assert unrolls.seen == [TINY_HP["context_length"]]
    assert [(layers, x[:2], state) for layers, x, state in steps.seen] == [
        (TINY_HP["num_layers"], (1, rows), (1, padded, hidden))
    ] * TINY_PREDICTION_LENGTH
    # and, once per layer, the probe of the padded size: a call of 3,200 rows and one of those
    assert rnn_calls.seen == [False] * (2 + TINY_PREDICTION_LENGTH) * TINY_HP["num_layers"]


def lstm_layers(hidden: int, inputs: int, count: int) -> List[acceleration._Layer]:
    layers = []
    for index in range(count):
        cell = mx.gluon.rnn.LSTMCell(hidden, input_size=inputs if index == 0 else hidden)
        cell.initialize(mx.init.Uniform(0.3))
        layers.append(acceleration._Layer(cell, residual=index > 0))
    return layers


def test_decoder_rows_are_a_checked_multiple_of_48_or_of_3200() -> None:
    layers = lstm_layers(hidden=8, inputs=5, count=2)
    layers[1]._rounds_alike[144] = False  # as 150 cells did at 144 rows on AVX2
    layers[1]._rounds_alike[480] = True
    assert acceleration.decoder_rows(layers, 100) == acceleration.DECODER_ROWS
    assert acceleration.decoder_rows(layers, 433) == 480
    assert layers[0]._rounds_alike[480] is True  # probed, and it held
    assert acceleration.decoder_rows(layers, 3200) == 3200
    assert acceleration.decoder_rows(layers, 3201) == 6400


@pytest.mark.parametrize("hidden", [8, 40, 150])
def test_decoder_calls_round_rows_as_full_ones(hidden: int) -> None:
    """Whatever size decoder_rows picks for a short call, its rows come out bit for bit as
    in a call of 3,200 rows (on other rows than the probe's)."""
    layers = lstm_layers(hidden=hidden, inputs=53, count=2)
    rng = np.random.default_rng(7)
    x = rng.normal(0, 2, (1, acceleration.DECODER_ROWS, 53)).astype(np.float32)
    states = [rng.normal(0, 1, (acceleration.DECODER_ROWS, hidden)).astype(np.float32)
              for _ in range(4)]
    full, full_states = acceleration.decoder_step(
        layers, mx.nd.array(x), [mx.nd.array(s[None]) for s in states])
    for rows in (1, 100, 160, 800):
        padded = acceleration.decoder_states(layers, [mx.nd.array(s[:rows]) for s in states])
        out, new_states = acceleration.decoder_step(layers, mx.nd.array(x[:, :rows]), padded)
        assert padded[0].shape[1] == acceleration.decoder_rows(layers, rows)
        assert np.array_equal(out.asnumpy(), full.asnumpy()[:, :rows]), rows
        for got, expected in zip(new_states, full_states):
            assert np.array_equal(got.asnumpy()[:, :rows], expected.asnumpy()[:, :rows])


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_accelerated_forecasts_equal_gluontss_network(likelihood_model, likelihood) -> None:
    trained = likelihood_model(likelihood)
    fast = modelfolder.load(trained.dir)
    plain = modelfolder.load(trained.dir, accelerated=False)
    assert type(fast.predictor.gluonts.prediction_net) is FastSamplingNetwork
    assert type(plain.predictor.gluonts.prediction_net) is DeepARPredictionNetwork
    assert fast.hp.likelihood == likelihood

    entries = held_out_entries(fast, trained.test)
    got, expected = samples(fast, entries), samples(plain, entries)
    assert got.shape == expected.shape == (len(entries), NUM_SAMPLES, TINY_PREDICTION_LENGTH)
    assert np.isfinite(got).all()
    if likelihood != "deterministic-L1":  # the others draw different paths per sample
        assert (got.std(axis=1) > 0).any()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
