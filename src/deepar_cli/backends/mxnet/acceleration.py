"""Faster DeepAR on the CPU, over GluonTS's own networks and parameters.

Two costs dominate GluonTS's MXNet DeepAR on a CPU (profiled with mx.profiler):

* The LSTM stack runs cell by cell: per layer and time step a dozen small operators (the
  gate split alone was the largest), dispatched one at a time. `fused_unroll` runs each
  layer as MXNet's fused (oneDNN) LSTM operator over the cell's own weights instead.
* The sampling decoder keeps, for each of the 100 sample paths, the whole target history
  (context + the largest lag: 793 points for hourly data), copies it to append every new
  sample, and slices each lag out of it. `FastSamplingNetwork` gathers the lags that lie in
  the past once per series, as the training network does, and reads sampled values only
  for lags that reach into the forecast window.

At inference both are exact: zoneout is the identity there, and the samples equal
GluonTS's to float rounding for the same seed. In training the fused kernel cannot zone
out states step by step, so `dropout_rate` becomes dropout of the same rate on each
layer's output (measured on the notebook's data over 3 seeds: median RMSE 0.308 and
mean_wQuantileLoss 0.0334; with no dropout at all the model overfits, 0.376 on seed 0).
The model folder stays a plain GluonTS predictor; `--rnn gluonts` trains the original way.
"""

from __future__ import annotations

import types
import warnings
from typing import Any, List, Optional

import mxnet as mx
import numpy as np
from gluonts.mx.model.deepar._network import DeepARPredictionNetwork
from mxnet.gluon.parameter import DeferredInitializationError
from mxnet.gluon.rnn import HybridSequentialRNNCell, LSTMCell, ResidualCell, ZoneoutCell

_WEIGHTS = ("i2h_weight", "h2h_weight", "i2h_bias", "h2h_bias")
_warned: set = set()


def _warn_fallback(why: str) -> None:
    """Say once per reason that a network runs on GluonTS's own (slower) path."""
    if why not in _warned:
        _warned.add(why)
        warnings.warn(f"deepar-cli acceleration is off for {why}; running GluonTS's own "
                      "cell-by-cell LSTM (slower)", RuntimeWarning, stacklevel=3)


def _layers(stack: HybridSequentialRNNCell) -> Optional[List[tuple[LSTMCell, bool, float]]]:
    """(LSTM cell, residual?, zoneout rate) per layer, or None for stacks of another shape."""
    layers = []
    for cell in stack._children.values():
        rate, residual = 0.0, False
        if isinstance(cell, ZoneoutCell):
            if cell.zoneout_outputs:
                return None
            cell, rate = cell.base_cell, cell.zoneout_states
        if isinstance(cell, ResidualCell):
            cell, residual = cell.base_cell, True
        if type(cell) is not LSTMCell:
            return None
        layers.append((cell, residual, rate))
    return layers


def _packed(cell: LSTMCell) -> Any:
    """The cell's weights and biases as the flat vector the RNN operator takes."""
    return mx.nd.concat(*(cell.params.get(n).data().reshape(-1) for n in _WEIGHTS), dim=0)


def fused_unroll(stack: HybridSequentialRNNCell, length: int, inputs: Any,
                 begin_state: Any = None, layout: str = "NTC", merge_outputs: Any = None,
                 valid_length: Any = None) -> tuple[Any, List[Any]]:
    """`HybridSequentialRNNCell.unroll` (NTC, merged outputs) with one fused LSTM operator
    per layer. Imperative only; falls back to the cell-by-cell unroll where it must."""
    layers = _layers(stack)
    fallback = (layers is None or layout != "NTC" or valid_length is not None
                or not isinstance(inputs, mx.nd.NDArray) or begin_state is None)
    if not fallback:
        try:
            weights = [_packed(cell) for cell, _, _ in layers]
        except DeferredInitializationError:  # the first batch fixes the input width
            fallback = True
        if layers is None:
            _warn_fallback("an LSTM stack of an unexpected shape")
    if fallback:
        return HybridSequentialRNNCell.unroll(stack, length, inputs, begin_state=begin_state,
                                              layout=layout, merge_outputs=merge_outputs,
                                              valid_length=valid_length)
    training = mx.autograd.is_training()
    x = inputs.swapaxes(0, 1)  # the RNN operator wants TNC
    states: List[Any] = []
    for index, ((cell, residual, rate), flat) in enumerate(zip(layers, weights)):
        h, c = begin_state[2 * index], begin_state[2 * index + 1]
        out, h, c = mx.nd.RNN(x, flat, h.expand_dims(axis=0), c.expand_dims(axis=0),
                              state_size=cell._hidden_size, num_layers=1, mode="lstm",
                              state_outputs=True)
        if training and rate > 0:
            out = mx.nd.Dropout(out, p=rate)
        x = out + x if residual else out
        states += [h[0], c[0]]
    return x.swapaxes(0, 1), states


def fuse(network: Any) -> Any:
    """Make a DeepAR training network's LSTM stack unroll with fused kernels (run it
    imperatively)."""
    stack = network.rnn
    stack.unroll = types.MethodType(fused_unroll, stack)
    return network


# The sampling decoder's LSTM calls hold a multiple of DECODER_ROWS rows (padded), or, for
# fewer rows, a multiple of ROW_QUANTUM that the layer rounds alike. The fused operator's
# rounding of a row can depend on how many rows a call holds (not on their order, their
# values or the thread count): on a 2-core AVX2 machine, calls of a multiple of 48 rows
# rounded as calls of 3,200 did from 48 rows up at 40 cells, but only from 480 at 150 cells.
# So each small size is probed once per layer and process before it is used.
DECODER_ROWS = 3200
ROW_QUANTUM = 48


class _Layer:
    """An LSTM layer's weights, packed for the fused operator and as numpy arrays."""

    def __init__(self, cell: LSTMCell, residual: bool) -> None:
        data = {n: cell.params.get(n).data() for n in _WEIGHTS}
        self.residual = residual
        self.hidden = cell._hidden_size
        self.packed = _packed(cell)
        self.i2h = data["i2h_weight"].asnumpy()
        self.h2h = data["h2h_weight"].asnumpy()
        self.bias = (data["i2h_bias"] + data["h2h_bias"]).asnumpy()
        self._rounds_alike: dict[int, bool] = {}

    def run(self, x: Any, h: Any, c: Any) -> tuple[Any, Any, Any]:
        """The fused operator over (1, N, C) rows and (1, N, hidden) states."""
        out, h, c = mx.nd.RNN(x, self.packed, h, c, state_size=self.hidden, num_layers=1,
                              mode="lstm", state_outputs=True)
        return (out + x if self.residual else out), h, c

    def rounds_alike(self, rows: int) -> bool:
        """Whether a call of `rows` rows rounds each row as a call of DECODER_ROWS does:
        probed once on random rows (a different kernel or blocking shows in their bits)."""
        if rows not in self._rounds_alike:
            rng = np.random.default_rng(rows)
            shapes = [(1, DECODER_ROWS, self.i2h.shape[1])] + [(1, DECODER_ROWS, self.hidden)] * 2
            probe = [mx.nd.array(rng.standard_normal(shape, dtype=np.float32)) for shape in shapes]
            full = self.run(*probe)
            part = self.run(*(a.slice_axis(axis=1, begin=0, end=rows) for a in probe))
            self._rounds_alike[rows] = all(
                np.array_equal(f.asnumpy()[:, :rows], p.asnumpy()) for f, p in zip(full, part))
        return self._rounds_alike[rows]

    def encode(self, inputs: np.ndarray, h: np.ndarray, c: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every step over (N, T, C) rows in numpy: einsum sums each row's products in a
        fixed order (no blocking across rows, no threads), so a row's result is its own."""
        projected = np.einsum("ntc,gc->ntg", inputs, self.i2h) + self.bias
        outputs = np.empty((*inputs.shape[:2], self.hidden), dtype=np.float32)
        for t in range(inputs.shape[1]):
            gates = projected[:, t] + np.einsum("nk,gk->ng", h, self.h2h)
            in_gate, forget_gate, transform, out_gate = np.split(gates, 4, axis=1)
            c = _sigmoid(forget_gate) * c + _sigmoid(in_gate) * np.tanh(transform)
            h = _sigmoid(out_gate) * np.tanh(c)
            outputs[:, t] = h
        return (outputs + inputs if self.residual else outputs), h, c


def decoder_rows(layers: List[_Layer], rows: int) -> int:
    """The rows each decoder call holds for `rows` real ones (see DECODER_ROWS)."""
    small = -(-rows // ROW_QUANTUM) * ROW_QUANTUM
    if small < DECODER_ROWS and all(layer.rounds_alike(small) for layer in layers):
        return small
    return -(-rows // DECODER_ROWS) * DECODER_ROWS


def decoder_states(layers: List[_Layer], states: List[Any]) -> List[Any]:
    """The encoder's (N, hidden) states as the fused operator takes them: (1, N', hidden),
    N' = decoder_rows (padded once, not at every step)."""
    pad = decoder_rows(layers, states[0].shape[0]) - states[0].shape[0]
    return [(mx.nd.concat(s, mx.nd.zeros((pad, s.shape[1]), dtype=s.dtype), dim=0)
             if pad else s).expand_dims(axis=0) for s in states]


def decoder_step(layers: List[_Layer], x: Any, states: List[Any]) -> tuple[Any, List[Any]]:
    """One decoder step of the stack over (1, N, C) rows (the fused operator's layout),
    padded to the states' N'. Returns the top layer's (1, N, hidden) output and the states."""
    rows, pad = x.shape[1], states[0].shape[1] - x.shape[1]
    if pad:
        x = mx.nd.concat(x, mx.nd.zeros((1, pad, x.shape[2]), dtype=x.dtype), dim=1)
    new_states: List[Any] = []
    for index, layer in enumerate(layers):
        x, h, c = layer.run(x, states[2 * index], states[2 * index + 1])
        new_states += [h, c]
    return (x.slice_axis(axis=1, begin=0, end=rows) if pad else x), new_states


def _handed_over(array: np.ndarray, dtype: Any = None) -> Any:
    """A numpy array as an NDArray without a copy (a copy costs 0.2-0.4 ms a decoder step,
    most of it Python); the array becomes read-only, and the caller must not use it again."""
    return mx.nd.from_numpy(np.ascontiguousarray(array, dtype=dtype), zero_copy=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # the logistic function, without exp's overflow


def invariant_unroll(stack: HybridSequentialRNNCell, length: int, inputs: Any,
                     begin_state: Any = None, layout: str = "NTC", merge_outputs: Any = None,
                     valid_length: Any = None) -> tuple[Any, List[Any]]:
    """`HybridSequentialRNNCell.unroll` for inference, each row's result independent of the
    other rows of the batch and of the thread count (see `deepar_cli.model.forecasting`).

    A matrix product's rounding of a row can depend on the other rows of the call (its
    blocking and threading follow the batch's shape). The encoder (one row per series)
    runs in numpy, where it does not; the sampling decoder (`decoder_step`) runs the fused
    operator over row counts that round a row alike (`decoder_rows`).
    """
    if layout != "NTC" or valid_length is not None or begin_state is None:
        _warn_fallback(f"an unroll of layout {layout} or with valid lengths")
        return HybridSequentialRNNCell.unroll(stack, length, inputs, begin_state=begin_state,
                                              layout=layout, merge_outputs=merge_outputs,
                                              valid_length=valid_length)
    x, arrays = inputs.asnumpy(), []
    for index, layer in enumerate(stack._inference_layers):
        x, h, c = layer.encode(x, begin_state[2 * index].asnumpy(),
                               begin_state[2 * index + 1].asnumpy())
        arrays += [h, c]
    return mx.nd.array(x, dtype=inputs.dtype), [mx.nd.array(a, dtype=inputs.dtype)
                                                 for a in arrays]


class FastSamplingNetwork(DeepARPredictionNetwork):
    """DeepARPredictionNetwork whose sampling decoder does not copy the history per step,
    builds every step's input at once and runs each step as one fused operator per layer."""

    def _fused_layers(self) -> Optional[List[_Layer]]:
        layers = getattr(self.rnn, "_inference_layers", None)
        if self.target_shape != () or list(self.lags_seq) != sorted(self.lags_seq):
            return None
        return layers

    @property
    def rows_invariant(self) -> bool:
        """Whether a row's forecast is the same in a batch of any size (the numpy encoder,
        the fused decoder), so that a short batch need not be padded to a whole one."""
        return self._fused_layers() is not None

    def sampling_decoder(self, F: Any, static_feat: Any, past_target: Any, time_feat: Any,
                         scale: Any, begin_states: List[Any]) -> Any:
        layers = self._fused_layers()
        if layers is None:  # multivariate targets, an unexpected stack: GluonTS's own
            return super().sampling_decoder(F, static_feat, past_target, time_feat, scale,
                                            begin_states)
        samples_per_series = self.num_parallel_samples
        horizon = self.prediction_length
        # Lag l at step k reads history point (history_length + k - l): pad the history with
        # `horizon` placeholders and slice every lag for every step at once: (B, horizon, L).
        padded = F.concat(past_target, F.zeros_like(
            past_target.slice_axis(axis=1, begin=0, end=horizon)), dim=1)
        past_lags = self.get_lagged_subsequences(
            F=F, sequence=padded, sequence_length=self.history_length + horizon,
            indices=self.lags_seq, subsequences_length=horizon)
        past_lags = F.broadcast_div(past_lags, scale.expand_dims(axis=-1))
        # Every step's input with the past where the lags reach it (lags first, as GluonTS
        # lays them out), per series: (B, horizon, C), in numpy, where `_decode` writes
        # the sampled values into the columns of the lags that reach them.
        static = F.broadcast_to(static_feat.expand_dims(axis=1),
                                (0, horizon, static_feat.shape[-1]))
        inputs = F.concat(past_lags, time_feat, static, dim=2).asnumpy()
        repeated_scale = scale.repeat(repeats=samples_per_series, axis=0)
        states = decoder_states(layers, [s.repeat(repeats=samples_per_series, axis=0)
                                         for s in begin_states])
        return self._decode(F, layers, inputs, repeated_scale, states, samples_per_series)

    def _decode(self, F: Any, layers: List[_Layer], inputs: np.ndarray, repeated_scale: Any,
                states: List[Any], samples_per_series: int) -> Any:
        horizon, rows = self.prediction_length, inputs.shape[0] * samples_per_series
        lags = np.asarray(self.lags_seq)
        scale = repeated_scale.asnumpy().reshape(rows)
        samples = np.empty((rows, horizon), dtype=inputs.dtype)
        scaled = np.empty((horizon, rows), dtype=inputs.dtype)  # the samples over the scale
        for k in range(horizon):
            # Each series' input, repeated for its sample paths ((rows, C), rows of series i
            # first); the lags <= k (the leading columns, lags being sorted) read sampled
            # values.
            step = inputs[:, k].repeat(samples_per_series, axis=0)
            reached = int(np.searchsorted(lags, k, side="right"))
            if reached:
                step[:, :reached] = scaled[k - lags[:reached]].T
            rnn_outputs, states = decoder_step(layers, _handed_over(step[None]), states)
            distr = self.distr_output.distribution(self._project(F, rnn_outputs),
                                                   scale=repeated_scale)
            new_samples = self.post_process_samples(F, distr.sample(dtype=self.dtype))
            samples[:, k] = new_samples.asnumpy().reshape(rows)
            scaled[k] = samples[:, k] / scale
        return _handed_over(samples.reshape(-1, samples_per_series, horizon), self.dtype)

    def _project(self, F: Any, rnn_outputs: Any) -> Any:
        """The distribution's arguments from the (1, rows, hidden) outputs: the projection's
        Dense(1) layers as one numpy einsum, which sums each row's products on its own (a
        matrix product's rounding of a row would depend on the other rows)."""
        projection = self.proj_distr_args
        rows = rnn_outputs.shape[1]
        if any(dense.weight.shape[0] != 1 for dense in projection.proj):
            return projection(rnn_outputs.reshape((rows, 1, -1)))
        if not hasattr(self, "_projection"):
            self._projection = np.concatenate(
                [d.weight.data().asnumpy() for d in projection.proj])  # (A, hidden)
            self._projection_bias = np.concatenate(
                [d.bias.data().asnumpy() for d in projection.proj])
        args = np.einsum("nh,ah->na", rnn_outputs.asnumpy()[0], self._projection)
        args = _handed_over((args + self._projection_bias).reshape(rows, 1, -1), self.dtype)
        return projection.domain_map(*F.split(args, num_outputs=len(projection.proj),
                                              axis=-1, squeeze_axis=False))


def accelerate(predictor: Any) -> Any:
    """Give a loaded DeepAR predictor FastSamplingNetwork (same parameters) with fused LSTM
    layers; other predictors are returned unchanged."""
    net = predictor.prediction_net
    if type(net) is not DeepARPredictionNetwork:
        return predictor
    fast = FastSamplingNetwork(**net.__init_args__)
    fast.initialize()
    # The same architecture: its parameters in the same order. (GluonTS's copy_parameters
    # goes through a temporary file, which a read-only or full disk refuses.) `_load_init`
    # is what `load_parameters` calls: it also fixes the shapes left to the first batch.
    for source, target in zip(net.collect_params().values(), fast.collect_params().values()):
        target._load_init(source.data(), predictor.ctx)
    layers = _layers(fast.rnn)
    if layers is None:
        _warn_fallback("an LSTM stack of an unexpected shape")
    else:
        fast.rnn._inference_layers = [_Layer(cell, residual) for cell, residual, _ in layers]
        fast.rnn.unroll = types.MethodType(invariant_unroll, fast.rnn)
    predictor.prediction_net = fast
    return predictor
