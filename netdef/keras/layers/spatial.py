"""Caffe's Crop, SPP and Im2col layers, which cut and rearrange spatial data.

Keras's Cropping2D crops fixed margins; Caffe's Crop takes its size from a second blob and
an offset per axis. Keras has neither spatial pyramid pooling nor an im2col layer. SPP and
Im2col work in Caffe's layout ``(N, C, H, W)``: their outputs flatten or stack channels
in Caffe's C-major order, which the layers produce directly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import keras
from keras import ops

from netdef.keras.layers.pooling import METHODS, PoolGeometry


@keras.saving.register_keras_serializable(package="netdef")
class Crop(keras.layers.Layer):
    """Cut ``x`` to the size of ``reference`` on the axes that have an offset.

    Called on ``[x, reference]``, both in the same layout. ``offsets`` has one entry per
    axis of ``x``: ``None`` keeps the axis whole, an int ``o`` keeps ``x[o : o + size]``
    with ``size`` the reference's size on that axis (Caffe's Crop with ``axis`` and
    ``offset`` translated by the compiler; ``reference`` lends only its shape, it gets no
    gradient).
    """

    def __init__(self, offsets: Sequence[int | None] = (), **kwargs) -> None:
        super().__init__(**kwargs)
        self.offsets = [None if o is None else int(o) for o in offsets]

    def _output_shape(self, x_shape, reference_shape) -> tuple[int | None, ...]:
        if len(self.offsets) != len(x_shape) or len(reference_shape) != len(x_shape):
            raise ValueError(
                f"Crop expected offsets, input and reference of one rank, received offsets {self.offsets}, "
                f"shapes {tuple(x_shape)} and {tuple(reference_shape)}"
            )
        shape = []
        for axis, (offset, size, target) in enumerate(zip(self.offsets, x_shape, reference_shape, strict=True)):
            if offset is None:
                shape.append(size)
                continue
            if offset < 0 or (size is not None and target is not None and offset + target > size):
                raise ValueError(
                    f"Crop: the crop on axis {axis} is out of bounds: expected offset + reference size <= {size}, "
                    f"received offset {offset} and reference size {target}"
                )
            shape.append(target)
        return tuple(shape)

    def build(self, input_shape) -> None:
        self._output_shape(*input_shape)

    def call(self, inputs):
        x, reference = inputs
        index = []
        for axis, offset in enumerate(self.offsets):
            if offset is None:
                index.append(slice(None))
                continue
            size = reference.shape[axis]
            if size is None:
                size = ops.shape(reference)[axis]
            index.append(slice(offset, offset + size))
        return x[tuple(index)]

    def compute_output_shape(self, input_shape):
        return self._output_shape(*input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"offsets": list(self.offsets)})
        return config


def spp_geometries(height: int, width: int, pyramid_height: int) -> list[PoolGeometry]:
    """Caffe's pooling for each pyramid level (``SPPLayer::GetPoolingParam``).

    Level ``l`` has ``2^l`` bins per axis: kernel = stride = ``ceil(size/bins)``, pad
    ``(kernel·bins − size + 1)/2`` (integer division), ceil rounding.
    """
    levels = []
    for level in range(pyramid_height):
        bins = 2**level
        kernel = [-(-size // bins) for size in (height, width)]
        pad = [(k * bins - size + 1) // 2 for k, size in zip(kernel, (height, width), strict=True)]
        levels.append(PoolGeometry((height, width), kernel, kernel, pad))
    return levels


@keras.saving.register_keras_serializable(package="netdef")
class SPP(keras.layers.Layer):
    """Caffe's spatial pyramid pooling, in Caffe's layout: ``(N, C, H, W)`` → ``(N, C·Σ bins)``.

    Level ``l`` is a Caffe pooling (``method`` ``"max"`` or ``"ave"``, see
    :class:`~netdef.keras.layers.pooling.CaffePooling`) into about ``2^l × 2^l`` bins,
    flattened in C, H, W order; the levels are concatenated in order. With
    ``pyramid_height=1`` Caffe skips the flatten and the output is ``(N, C, 1, 1)``.
    """

    def __init__(self, pyramid_height: int = 1, method: str = "max", **kwargs) -> None:
        super().__init__(**kwargs)
        if pyramid_height < 1:
            raise ValueError(f"expected a positive pyramid_height, received {pyramid_height}")
        if method not in METHODS:
            raise ValueError(f"expected method in {METHODS}, received {method!r}")
        self.pyramid_height = int(pyramid_height)
        self.method = method

    def _levels(self, input_shape) -> list[PoolGeometry]:
        if len(input_shape) != 4 or any(n is None for n in input_shape[1:]):
            raise ValueError(f"SPP expected a (N, C, H, W) input with static C, H, W, received {tuple(input_shape)}")
        return spp_geometries(int(input_shape[2]), int(input_shape[3]), self.pyramid_height)

    def build(self, input_shape) -> None:
        self.levels = self._levels(input_shape)

    def call(self, inputs):
        channels_last = ops.transpose(inputs, (0, 2, 3, 1))
        pooled = [ops.transpose(level.pool(channels_last, self.method), (0, 3, 1, 2)) for level in self.levels]
        if self.pyramid_height == 1:
            return pooled[0]
        channels = inputs.shape[1]
        sizes = [channels * math.prod(level.output) for level in self.levels]
        flat = [ops.reshape(p, (-1, size)) for p, size in zip(pooled, sizes, strict=True)]
        return ops.concatenate(flat, axis=1)

    def compute_output_shape(self, input_shape):
        levels = self._levels(input_shape)
        if self.pyramid_height == 1:
            return (input_shape[0], input_shape[1], *levels[0].output)
        return (input_shape[0], input_shape[1] * sum(math.prod(level.output) for level in levels))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update({"pyramid_height": self.pyramid_height, "method": self.method})
        return config


@keras.saving.register_keras_serializable(package="netdef")
class Im2col(keras.layers.Layer):
    """Caffe's Im2col, in Caffe's layout: ``(N, C, *spatial)`` → ``(N, C·Πk, *out)``.

    Output channel ``(c·k_h + i)·k_w + j`` (for two spatial axes; row-major over the kernel
    offsets in general) holds input channel ``c`` read at kernel offset ``(i, j)``:
    ``x[c, o_h·s_h − p_h + i·d_h, o_w·s_w − p_w + j·d_w]``, zero outside the image, with
    ``out = (in + 2p − d·(k−1) − 1)/s + 1`` (floor), as Caffe's ``im2col_cpu``. Each kernel
    offset is one strided slice of the zero-padded input, so the values are copied exactly.
    """

    def __init__(
        self,
        kernel: Sequence[int] = (1, 1),
        stride: Sequence[int] | None = None,
        pad: Sequence[int] | None = None,
        dilation: Sequence[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel = tuple(int(k) for k in kernel)
        axes = len(self.kernel)
        self.stride = tuple(int(s) for s in stride) if stride is not None else (1,) * axes
        self.pad = tuple(int(p) for p in pad) if pad is not None else (0,) * axes
        self.dilation = tuple(int(d) for d in dilation) if dilation is not None else (1,) * axes
        if not len(self.stride) == len(self.pad) == len(self.dilation) == axes:
            raise ValueError(
                f"expected kernel, stride, pad and dilation with one value per spatial axis, received kernel "
                f"{self.kernel}, stride {self.stride}, pad {self.pad}, dilation {self.dilation}"
            )

    def _output_spatial(self, input_shape) -> tuple[int, ...]:
        spatial = input_shape[2:]
        if len(spatial) != len(self.kernel) or any(n is None for n in input_shape[1:]):
            raise ValueError(
                f"Im2col expected a (N, C, *spatial) input with {len(self.kernel)} static spatial axes, "
                f"received shape {tuple(input_shape)}"
            )
        out = tuple(
            (n + 2 * p - (d * (k - 1) + 1)) // s + 1
            for n, k, s, p, d in zip(spatial, self.kernel, self.stride, self.pad, self.dilation, strict=True)
        )
        if any(o < 1 for o in out):
            raise ValueError(f"Im2col: the kernel does not fit in the padded input {tuple(input_shape)}")
        return out

    def build(self, input_shape) -> None:
        self._output_spatial(input_shape)

    def call(self, inputs):
        out = self._output_spatial(inputs.shape)
        padded = inputs
        if any(self.pad):
            padded = ops.pad(inputs, [(0, 0), (0, 0), *((p, p) for p in self.pad)])
        columns = []
        for offsets in itertools.product(*(range(k) for k in self.kernel)):
            index = [slice(None), slice(None)]
            for offset, o, s, d in zip(offsets, out, self.stride, self.dilation, strict=True):
                start = offset * d
                index.append(slice(start, start + (o - 1) * s + 1, s))
            columns.append(padded[tuple(index)])
        stacked = ops.stack(columns, axis=2)  # (N, C, Πk, *out)
        return ops.reshape(stacked, (-1, inputs.shape[1] * math.prod(self.kernel), *out))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1] * math.prod(self.kernel), *self._output_spatial(input_shape))

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "kernel": list(self.kernel),
                "stride": list(self.stride),
                "pad": list(self.pad),
                "dilation": list(self.dilation),
            }
        )
        return config
