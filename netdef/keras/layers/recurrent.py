"""Caffe's recurrent layers (RNN, LSTM, LSTMUnit) with Caffe's unrolled semantics, Caffe layout.

Caffe unrolls a recurrent layer into a net over the static number of time steps T and
runs its streams ``N`` in parallel; ``cont[t, n]`` (0 at the start of a sequence, 1 after)
multiplies the previous hidden state (and, in LSTM, gates the previous cell), which is how
one batch holds several sequences back to back. These layers unroll the same way in
Python over ``range(T)`` and keep Caffe's blob order and shapes for their weights, so a
``.caffemodel``'s blobs load unchanged.

Keras's RNN layers differ in every respect that matters here: time is axis 1 rather than
0, there is no ``cont`` input, the LSTM gate order is i, f, c, o rather than Caffe's
i, f, o, g, and the weights are stored transposed.

Without ``expose_hidden`` Caffe carries the final hidden state of one forward pass into
the next as the initial state (it starts at 0); it only matters when a batch's first
``cont`` is non-zero, as when sequences are streamed across batches. These layers do the
same with non-trainable weights ``carried_*`` of shape ``(1, N, num_output)`` (which makes
the stream count N static); ``reset_state()`` zeroes them. With ``expose_hidden`` the
initial states are inputs and the final ones outputs, and nothing is carried.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from ._caffe_ops import with_gradient_of


def inner_product(x: Any, weight: Any) -> Any:
    """Caffe's bias-free InnerProduct over the last axis: ``x·Wᵀ`` with ``W`` in Caffe's ``(out, in)`` layout.

    An einsum rather than ``keras.ops.matmul``, which outside TensorFlow computes float64
    inputs in float32 (Keras's type promotion maps 64-bit floats to 32-bit).
    """
    return ops.einsum("...i,oi->...o", x, weight)


def lstm_unit(c_prev: Any, gates: Any, cont: Any) -> tuple[Any, Any]:
    """Caffe's LSTMUnit arithmetic: ``(c, h)`` from ``c_{t-1}``, the 4H gate inputs and ``cont``.

    ``gates`` splits into i, f, o, g in that order along its last axis; ``cont`` broadcasts
    against ``c_prev``. ``f = cont·sigmoid(f')`` (exactly 0 where ``cont == 0``). Caffe's
    backward takes ``df/df' = f·(1 - f)``, which is the derivative only for binary cont;
    the surrogate reproduces it for any cont. No gradient reaches ``cont``.
    """
    i_in, f_in, o_in, g_in = ops.split(gates, 4, axis=-1)
    forget = ops.where(cont == 0, 0.0, cont * ops.sigmoid(f_in))
    forget = with_gradient_of(forget, ops.stop_gradient(forget * (1.0 - forget)) * f_in)
    c = forget * c_prev + ops.sigmoid(i_in) * ops.tanh(g_in)
    return c, ops.sigmoid(o_in) * ops.tanh(c)


@keras.saving.register_keras_serializable(package="netdef")
class LSTMUnit(keras.layers.Layer):
    """Caffe's LSTMUnit layer: ``[c_prev (1,N,H), X (1,N,4H), cont (1,N)] -> [c, h]``, each ``(1,N,H)``.

    See :func:`lstm_unit` for the arithmetic and Caffe's forget-gate gradient.
    """

    def call(self, inputs: Sequence[Any]) -> list[Any]:
        c_prev, gates, cont = inputs
        c, h = lstm_unit(c_prev, gates, ops.expand_dims(ops.stop_gradient(cont), -1))
        return [c, h]


class _UnrolledRecurrent(keras.layers.Layer):
    """What Caffe's RecurrentLayer shares between RNN and LSTM: inputs, x transforms, unrolling, carry.

    Subclasses name their recurrent states (in Caffe's bottom/top order), create their
    weights in Caffe's blob order and compute one time step.
    """

    #: Caffe's recurrent state names, in the order of the exposed bottoms and tops.
    state_names: tuple[str, ...] = ()

    def __init__(self, num_output: int, expose_hidden: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(num_output) < 1:
            raise ValueError(f"{type(self).__name__}: expected num_output >= 1, received {num_output}")
        self.num_output = int(num_output)
        self.expose_hidden = bool(expose_hidden)

    def build(self, input_shape: Sequence[Sequence[int | None]]) -> None:
        name = type(self).__name__
        exposed = len(self.state_names) if self.expose_hidden else 0
        extra = len(input_shape) - 2 - exposed
        if extra not in (0, 1):
            raise ValueError(
                f"{name}: expected x, cont, an optional x_static and {exposed} hidden-state inputs, "
                f"received {len(input_shape)} inputs"
            )
        self._has_static = extra == 1
        x_shape = input_shape[0]
        if len(x_shape) < 2 or x_shape[0] is None or None in x_shape[2:]:
            raise ValueError(f"{name}: expected x of static shape (T, N, ...), received {tuple(x_shape)}")
        self._input_dim = math.prod(x_shape[2:])
        self._static_dim = None
        if self._has_static:
            static_shape = input_shape[2]
            if len(static_shape) < 1 or None in static_shape[1:]:
                raise ValueError(f"{name}: expected x_static of static shape (N, ...), received {tuple(static_shape)}")
            self._static_dim = math.prod(static_shape[1:])
        self._create_weights()
        if not self.expose_hidden:
            streams = x_shape[1]
            if streams is None:
                raise ValueError(f"{name}: expected a static stream count N to carry the hidden state, received None")
            self._carried = [
                self.add_weight(
                    name=f"carried_{state}", shape=(1, streams, self.num_output), initializer="zeros", trainable=False
                )
                for state in self.state_names
            ]

    def _create_weights(self) -> None:
        """Create the weights in Caffe's blob order, setting the three the base class projects with."""
        raise NotImplementedError

    def _step(self, x_term: Any, static_term: Any, cont: Any, states: list[Any]) -> tuple[list[Any], Any]:
        """One time step from the projected input (bias included) and static term: (new states, output)."""
        raise NotImplementedError

    def _gate_input(self, kernel: Any, h_prev: Any, cont: Any, x_term: Any, static_term: Any) -> Any:
        """``W·(cont·h_{t-1}) + x_term (+ static_term)``: Caffe's Scale, InnerProduct and Eltwise SUM, in its order."""
        total = inner_product(h_prev * cont, kernel) + x_term
        return total if static_term is None else total + static_term

    def call(self, inputs: Sequence[Any]) -> Any:
        x, cont, *rest = inputs
        static = rest.pop(0) if self._has_static else None
        steps = x.shape[0]
        projected = inner_product(ops.reshape(x, (steps, -1, self._input_dim)), self.input_kernel) + self.input_bias
        cont = ops.expand_dims(ops.stop_gradient(cont), -1)
        if self.expose_hidden:
            states = [state[0] for state in rest]
        else:
            # A copy: the carried variables are overwritten below, which PyTorch's autograd forbids for saved tensors.
            states = [ops.copy(carried)[0] for carried in self._carried]
        static_term = None
        if static is not None:
            static_term = inner_product(ops.reshape(static, (-1, self._static_dim)), self.static_kernel)
        outputs = []
        for t in range(steps):
            states, output = self._step(projected[t], static_term, cont[t], states)
            outputs.append(output)
        sequence = ops.stack(outputs, axis=0)
        finals = [ops.expand_dims(state, 0) for state in states]
        if self.expose_hidden:
            return [sequence, *finals]
        for carried, final in zip(self._carried, finals, strict=True):
            carried.assign(ops.stop_gradient(final))
        return sequence

    def reset_state(self) -> None:
        """Zero the carried hidden state, as Caffe's ``RecurrentLayer::Reset``."""
        for carried in getattr(self, "_carried", []):
            carried.assign(ops.zeros_like(carried))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_output": self.num_output, "expose_hidden": self.expose_hidden}


@keras.saving.register_keras_serializable(package="netdef")
class CaffeRNN(_UnrolledRecurrent):
    """Caffe's RNN layer: ``[x (T,N,...), cont (T,N)(, x_static (N,...))(, h_0 (1,N,H))]``.

    ``h_t = tanh(W_hh·(cont_t·h_{t-1}) + W_xh·x_t + b_h (+ W_xh_static·x_static))`` and the
    output ``o_t = tanh(W_ho·h_t + b_o)``, stacked to ``(T, N, H)``; with ``expose_hidden``
    also ``h_T (1,N,H)``. Weights in Caffe's blob order and shapes: ``W_xh (H, in)``,
    ``b_h (H,)``, [``W_xh_static (H, static_dim)``], ``W_hh (H, H)``, ``W_ho (H, H)``,
    ``b_o (H,)``; ``in`` flattens ``x``'s axes from 2, ``static_dim`` ``x_static``'s from 1.
    All start at 0 (Caffe's default filler). Keras's SimpleRNN has no second (output)
    transform.
    """

    state_names = ("h",)

    def _create_weights(self) -> None:
        hidden = self.num_output
        self.W_xh = self.add_weight(name="W_xh", shape=(hidden, self._input_dim), initializer="zeros")
        self.b_h = self.add_weight(name="b_h", shape=(hidden,), initializer="zeros")
        if self._has_static:
            self.W_xh_static = self.add_weight(
                name="W_xh_static", shape=(hidden, self._static_dim), initializer="zeros"
            )
        self.W_hh = self.add_weight(name="W_hh", shape=(hidden, hidden), initializer="zeros")
        self.W_ho = self.add_weight(name="W_ho", shape=(hidden, hidden), initializer="zeros")
        self.b_o = self.add_weight(name="b_o", shape=(hidden,), initializer="zeros")
        self.input_kernel, self.input_bias = self.W_xh, self.b_h
        self.static_kernel = self.W_xh_static if self._has_static else None

    def _step(self, x_term: Any, static_term: Any, cont: Any, states: list[Any]) -> tuple[list[Any], Any]:
        (h_prev,) = states
        h = ops.tanh(self._gate_input(self.W_hh, h_prev, cont, x_term, static_term))
        return [h], ops.tanh(inner_product(h, self.W_ho) + self.b_o)


@keras.saving.register_keras_serializable(package="netdef")
class CaffeLSTM(_UnrolledRecurrent):
    """Caffe's LSTM layer: ``[x (T,N,...), cont (T,N)(, x_static (N,...))(, h_0, c_0 (1,N,H))]``.

    Gate inputs ``W_hc·(cont_t·h_{t-1}) + W_xc·x_t + b_c (+ W_xc_static·x_static)`` split
    i, f, o, g along the 4H axis, then :func:`lstm_unit`. Output ``h`` ``(T, N, H)``; with
    ``expose_hidden`` also ``h_T`` and ``c_T`` ``(1,N,H)``. Weights in Caffe's blob order and
    shapes: ``W_xc (4H, in)``, ``b_c (4H,)``, [``W_xc_static (4H, static_dim)``],
    ``W_hc (4H, H)``; all start at 0 (Caffe's default filler).
    """

    state_names = ("h", "c")

    def _create_weights(self) -> None:
        hidden = self.num_output
        self.W_xc = self.add_weight(name="W_xc", shape=(4 * hidden, self._input_dim), initializer="zeros")
        self.b_c = self.add_weight(name="b_c", shape=(4 * hidden,), initializer="zeros")
        if self._has_static:
            self.W_xc_static = self.add_weight(
                name="W_xc_static", shape=(4 * hidden, self._static_dim), initializer="zeros"
            )
        self.W_hc = self.add_weight(name="W_hc", shape=(4 * hidden, hidden), initializer="zeros")
        self.input_kernel, self.input_bias = self.W_xc, self.b_c
        self.static_kernel = self.W_xc_static if self._has_static else None

    def _step(self, x_term: Any, static_term: Any, cont: Any, states: list[Any]) -> tuple[list[Any], Any]:
        h_prev, c_prev = states
        c, h = lstm_unit(c_prev, self._gate_input(self.W_hc, h_prev, cont, x_term, static_term), cont)
        return [h, c], h
