"""Caffe's Deconvolution: the transpose of its convolution, with Caffe's output size and groups.

Caffe's forward pass is its convolution's backward-data pass with the same weight: every
input pixel scatters ``x·W`` into the output, which is then cut by ``pad`` on each side.
Keras's Conv2DTranspose computes the same scatter but sizes its output from
``padding``/``output_padding`` and has no groups; its TensorFlow CPU kernel also refuses
dilation. Here the full scatter (``stride·(in − 1) + dilation·(k − 1) + 1`` per axis) is
computed with ``padding="valid"``, then ``pad`` is cropped from both ends, giving Caffe's
``stride·(in − 1) + dilation·(k − 1) + 1 − 2·pad``. Dilation is applied by inserting zeros
into the kernel, which is exact and works on every backend.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops


def dilate_kernel(kernel, dilation: Sequence[int]):
    """Insert ``d − 1`` zero taps between the taps of each spatial axis of ``kernel``."""
    for axis, d in enumerate(dilation):
        if d == 1:
            continue
        taps = kernel.shape[axis]
        expanded = ops.expand_dims(kernel, axis + 1)
        spread = ops.concatenate([expanded] + [ops.zeros_like(expanded)] * (d - 1), axis=axis + 1)
        merged = list(kernel.shape)
        merged[axis] = taps * d
        index = [slice(None)] * len(kernel.shape)
        index[axis] = slice(0, d * (taps - 1) + 1)
        kernel = ops.reshape(spread, merged)[tuple(index)]
    return kernel


@keras.saving.register_keras_serializable(package="netdef")
class CaffeDeconvolution(keras.layers.Layer):
    """Caffe's Deconvolution on channels-last ``(N, H, W, C)`` or ``(N, D, H, W, C)`` input.

    Variables:

    * ``kernel``: ``(*k, filters // groups, C_in)``, Keras's Conv2DTranspose/Conv3DTranspose
      order. Caffe's blob is ``(C_in, filters // groups, *k)``;
      ``kernel = blob.transpose(2, 3, 1, 0)`` (``(2, 3, 4, 1, 0)`` for 3-D), the same
      permutation as a convolution kernel's, with no spatial flip: input channel ``c`` at
      ``p`` adds ``x·blob[c, o, i, j]`` to output channel ``g·filters/groups + o`` at
      ``p·stride − pad + (i, j)·dilation``, ``g = c // (C_in/groups)``.
    * ``bias``: ``(filters,)`` when ``use_bias``, Caffe's blob as it is.

    Initializers default to zeros, Caffe's filler when none is given.
    """

    def __init__(
        self,
        filters: int,
        kernel: Sequence[int],
        stride: Sequence[int] | None = None,
        pad: Sequence[int] | None = None,
        dilation: Sequence[int] | None = None,
        groups: int = 1,
        use_bias: bool = True,
        kernel_initializer="zeros",
        bias_initializer="zeros",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = tuple(int(k) for k in kernel)
        axes = len(self.kernel_size)
        self.stride = tuple(int(s) for s in stride) if stride is not None else (1,) * axes
        self.pad = tuple(int(p) for p in pad) if pad is not None else (0,) * axes
        self.dilation = tuple(int(d) for d in dilation) if dilation is not None else (1,) * axes
        self.groups = int(groups)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        if axes not in (2, 3) or not len(self.stride) == len(self.pad) == len(self.dilation) == axes:
            raise ValueError(
                f"expected kernel, stride, pad and dilation with 2 or 3 values each, received kernel "
                f"{self.kernel_size}, stride {self.stride}, pad {self.pad}, dilation {self.dilation}"
            )
        if self.groups < 1 or self.filters % self.groups:
            raise ValueError(f"expected filters ({self.filters}) divisible by groups, received groups {self.groups}")

    def _output_spatial(self, input_shape) -> tuple[int | None, ...]:
        if len(input_shape) != len(self.kernel_size) + 2:
            raise ValueError(
                f"CaffeDeconvolution expected a channels-last input of rank {len(self.kernel_size) + 2}, "
                f"received shape {tuple(input_shape)}"
            )
        geometry = zip(input_shape[1:-1], self.kernel_size, self.stride, self.pad, self.dilation, strict=True)
        out = tuple(None if n is None else s * (n - 1) + d * (k - 1) + 1 - 2 * p for n, k, s, p, d in geometry)
        if any(o is not None and o < 1 for o in out):
            raise ValueError(f"CaffeDeconvolution: pad {self.pad} leaves no output for input {tuple(input_shape)}")
        return out

    def build(self, input_shape) -> None:
        self._output_spatial(input_shape)
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(f"expected input channels divisible by groups ({self.groups}), received {channels}")
        shape = (*self.kernel_size, self.filters // self.groups, channels)
        self.kernel = self.add_weight(name="kernel", shape=shape, initializer=self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)

    def call(self, inputs):
        kernel = dilate_kernel(ops.cast(self.kernel, inputs.dtype), self.dilation)
        channels = inputs.shape[-1]
        step = channels // self.groups
        outputs = [
            ops.conv_transpose(
                inputs[..., g * step : (g + 1) * step] if self.groups > 1 else inputs,
                kernel[..., g * step : (g + 1) * step] if self.groups > 1 else kernel,
                strides=self.stride,
                padding="valid",
                output_padding=0,
                data_format="channels_last",
            )
            for g in range(self.groups)
        ]
        y = outputs[0] if self.groups == 1 else ops.concatenate(outputs, axis=-1)
        if any(self.pad):
            y = y[(slice(None), *(slice(p, -p if p else None) for p in self.pad), slice(None))]
        if self.use_bias:
            y = y + ops.cast(self.bias, y.dtype)
        return y

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self._output_spatial(input_shape), self.filters)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel": list(self.kernel_size),
                "stride": list(self.stride),
                "pad": list(self.pad),
                "dilation": list(self.dilation),
                "groups": self.groups,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
