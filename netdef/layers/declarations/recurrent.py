"""RNN, LSTM and LSTMUnit.

Caffe's recurrent layers are time-major: ``x`` is ``(T, N, ...)`` and the sequence
continuation indicators ``cont`` are ``(T, N)`` (0 starts a new sequence). Bottoms are
``x, cont[, x_static][, h_0(, c_0)]``; hidden states are ``(1, N, H)``. Caffe builds an
unrolled net of InnerProduct layers; the learnable blobs are that net's parameters in
order of first use, which is the order below.
"""

from __future__ import annotations

from dataclasses import replace

from netdef.layers.declarations.common import (
    count,
    declare,
    fmt,
    require_axes,
    require_positive,
    require_top_count,
)
from netdef.layers.declarations.keras_plans import caffe_layout, netdef_layer
from netdef.layers.registry import KerasContext, KerasPlan, LayerContext, Shape, WeightLink, between, exactly


def _check_inputs(ctx: LayerContext, hidden_states: int) -> Shape | None:
    """Check the bottoms and tops of an RNN/LSTM; return ``x_static``'s shape, if given.

    ``hidden_states`` is how many states the cell carries (RNN: h; LSTM: h and c); with
    ``expose_hidden`` they are extra bottoms (initial) and tops (final).
    """
    param = ctx.layer.recurrent_param
    require_positive(ctx, "num_output", param.num_output)
    exposed = hidden_states if param.expose_hidden else 0
    if not 2 + exposed <= len(ctx.bottoms) <= 3 + exposed:
        raise ctx.fail(
            "wrong number of bottoms",
            expected=f"{2 + exposed} or {3 + exposed}: x, cont, optional x_static"
            + (", then the initial hidden states" if exposed else ""),
            received=len(ctx.bottoms),
        )
    require_top_count(ctx, 1 + exposed, "the output, plus the final hidden states with expose_hidden")
    x, cont = ctx.bottoms[:2]
    require_axes(ctx, x, at_least=3, what="input x", meaning="(T, N, features...)")
    if cont != x[:2]:
        raise ctx.fail("cont must be (T, N) like x's first two axes", expected=fmt(x[:2]), received=fmt(cont))
    if x[0] < 1:
        raise ctx.fail("the input needs at least one timestep", received=fmt(x))
    static = ctx.bottoms[2] if len(ctx.bottoms) > 2 + exposed else None
    if static is not None:
        require_axes(ctx, static, at_least=2, what="static input", meaning="(N, features...)")
        if static[0] != x[1]:
            raise ctx.fail(
                "x_static must have one row per stream",
                expected=f"({x[1]}, ...)",
                received=fmt(static),
            )
    hidden = _hidden_shape(ctx)
    for index in range(len(ctx.bottoms) - exposed, len(ctx.bottoms)):
        if ctx.bottoms[index] != hidden:
            raise ctx.fail(
                f"initial hidden state (bottom {index}) must be (1, N, num_output)",
                expected=fmt(hidden),
                received=fmt(ctx.bottoms[index]),
            )
    return static


def _hidden_shape(ctx: LayerContext) -> Shape:
    return (1, ctx.bottoms[0][1], ctx.layer.recurrent_param.num_output)


def _recurrent_tops(ctx: LayerContext, hidden_states: int) -> list[Shape]:
    _check_inputs(ctx, hidden_states)
    t, n = ctx.bottoms[0][:2]
    return [(t, n, ctx.layer.recurrent_param.num_output)] + [_hidden_shape(ctx)] * (len(ctx.tops) - 1)


def _rnn_shape(ctx: LayerContext) -> list[Shape]:
    """Output ``o`` ``(T, N, H)``, H = num_output; with expose_hidden also ``h_T`` ``(1, N, H)``."""
    return _recurrent_tops(ctx, hidden_states=1)


def _rnn_blobs(ctx: LayerContext) -> list[Shape]:
    """W_xh ``(H, in)``, b_h, [W_xh_static ``(H, static)``], W_hh ``(H, H)``, W_ho ``(H, H)``, b_o.

    Biases are ``(H,)``; ``in`` is ``count(x, 2)``, ``static`` is ``count(x_static, 1)``.
    """
    static = _check_inputs(ctx, 1)
    h = ctx.layer.recurrent_param.num_output
    static_blobs = [] if static is None else [(h, count(static, 1))]
    return [(h, count(ctx.bottoms[0], 2)), (h,), *static_blobs, (h, h), (h, h), (h,)]


def _lstm_shape(ctx: LayerContext) -> list[Shape]:
    """Output ``h`` ``(T, N, num_output)``; with expose_hidden also ``h_T`` and ``c_T``."""
    return _recurrent_tops(ctx, hidden_states=2)


def _lstm_blobs(ctx: LayerContext) -> list[Shape]:
    """W_xc ``(4H, in)``, b_c ``(4H,)``, [W_xc_static ``(4H, static)``], W_hc ``(4H, H)``.

    The 4H rows are the gates in Caffe's order i, f, o, g (Keras uses i, f, c, o).
    """
    static = _check_inputs(ctx, 2)
    h = ctx.layer.recurrent_param.num_output
    static_blobs = [] if static is None else [(4 * h, count(static, 1))]
    return [(4 * h, count(ctx.bottoms[0], 2)), (4 * h,), *static_blobs, (4 * h, h)]


def _recurrent_keras(ctx: KerasContext) -> KerasPlan:
    """Caffe's unrolled RNN/LSTM on (T, N, ...) blobs; weights keep Caffe's blob order and shapes."""
    param = ctx.layer.recurrent_param
    kwargs = {"num_output": param.num_output, "expose_hidden": param.expose_hidden}
    links = tuple(WeightLink(i, 0, i) for i in range(len(ctx.blob_shapes)))
    name = "CaffeLSTM" if ctx.layer.type == "LSTM" else "CaffeRNN"
    plan = caffe_layout(ctx, netdef_layer("recurrent", name), kwargs, weights=links)
    # Axis 0 is time here: the unrolled steps need it fixed.
    return replace(plan, static_batch=True)


def _lstm_unit_keras(ctx: KerasContext) -> KerasPlan:
    return replace(caffe_layout(ctx, netdef_layer("recurrent", "LSTMUnit")), static_batch=True)


for _type, _shape, _blobs, _states in (
    ("RNN", _rnn_shape, _rnn_blobs, 1),
    ("LSTM", _lstm_shape, _lstm_blobs, 2),
):
    declare(
        _type,
        # The exact counts depend on expose_hidden; the shape rule checks them.
        bottoms=between(2, 3 + _states),
        tops=between(1, 1 + _states),
        shape=_shape,
        blobs=_blobs,
        params=("recurrent_param",),
        no_gradient=frozenset({1}),
        keras=_recurrent_keras,
    )


def _lstm_unit_shape(ctx: LayerContext) -> list[Shape]:
    """One LSTM step: ``c_prev (1, N, H)``, gates ``(1, N, 4H)``, ``cont (1, N)`` → c, h."""
    c_prev, gates, cont = ctx.bottoms
    require_axes(ctx, c_prev, exactly=3, what="previous cell (bottom 0)", meaning="(1, N, H)")
    require_axes(ctx, gates, exactly=3, what="gate input (bottom 1)", meaning="(1, N, 4H)")
    require_axes(ctx, cont, exactly=2, what="cont (bottom 2)", meaning="(1, N)")
    _, n, h = c_prev
    if c_prev[0] != 1 or gates[:2] != (1, n) or cont != (1, n) or gates[2] != 4 * h:
        raise ctx.fail(
            "LSTMUnit bottoms must be (1, N, H), (1, N, 4H) and (1, N)",
            received=f"{fmt(c_prev)}, {fmt(gates)}, {fmt(cont)}",
        )
    return [c_prev, c_prev]


declare(
    "LSTMUnit",
    bottoms=exactly(3),
    tops=exactly(2),
    shape=_lstm_unit_shape,
    no_gradient=frozenset({2}),
    keras=_lstm_unit_keras,
)
