"""Caffe's Pooling layer (MAX and AVE) with Caffe's output sizes and average divisors.

Keras's pooling layers disagree with Caffe in three ways this module fixes:

* **Output size.** Caffe rounds the window count *up* by default (``round_mode: CEIL``)
  and then, when padded, drops a last window that would start in the padding; Keras's
  ``"valid"`` rounds down and ``"same"`` pads asymmetrically. GoogLeNet's 112 → 56 (k3 s2)
  is 55 in Keras.
* **MAX padding.** Caffe clips each window to the image, so padding never wins. Here the
  input is padded with ``-FLT_MAX`` (Caffe's initial value of each window's maximum), which
  gives the same result and, for a window that lies wholly outside the image (possible with
  no padding and kernel < stride), Caffe's ``-FLT_MAX`` too.
* **AVE divisor.** Caffe divides by the window size clipped to ``input + pad`` *before*
  clipping to the image: zero padding counts in the divisor, the ceil-mode overhang beyond
  the padding does not. Keras's ``"same"`` average ignores all padding. Here the zero-padded
  input is average-pooled over full windows, scaled back to a sum and divided by Caffe's
  divisor, which is separable (a product of one size per axis) and built from Python ints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

#: Caffe starts every MAX window at -FLT_MAX (float32's lowest finite value).
FLT_MAX = 3.4028234663852886e38

METHODS = ("max", "ave")
ROUND_MODES = ("ceil", "floor")


def pooled_size(size: int, kernel: int, stride: int, pad: int, *, ceil: bool, padded: bool) -> int:
    """Caffe's number of windows along one axis (``PoolingLayer::Reshape``).

    ``padded`` is whether the layer has padding on *any* axis: Caffe's drop-the-last-window
    rule is guarded by ``pad_h || pad_w``, not by this axis's pad.
    """
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if padded and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def window_sizes(size: int, out: int, kernel: int, stride: int, pad: int) -> list[int]:
    """Caffe's AVE divisor factor per window along one axis: ``min(start+k, size+pad) − start``."""
    sizes = []
    for index in range(out):
        start = index * stride - pad
        sizes.append(min(start + kernel, size + pad) - start)
    return sizes


class PoolGeometry:
    """Everything a Caffe pooling needs from static spatial sizes, as Python ints.

    Shared by :class:`CaffePooling` and the SPP layer, whose levels are Caffe poolings.
    """

    def __init__(
        self,
        spatial: Sequence[int],
        kernel: Sequence[int],
        stride: Sequence[int],
        pad: Sequence[int],
        *,
        ceil: bool = True,
    ) -> None:
        if any(p >= k for p, k in zip(pad, kernel, strict=True)):
            # Caffe's CHECK_LT(pad, kernel): a larger pad would allow windows wholly in the padding.
            raise ValueError(
                f"expected a pooling pad smaller than the kernel {tuple(kernel)}, received pad {tuple(pad)}"
            )
        padded = any(pad)
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.output = tuple(
            pooled_size(n, k, s, p, ceil=ceil, padded=padded)
            for n, k, s, p in zip(spatial, kernel, stride, pad, strict=True)
        )
        if any(n < 1 for n in self.output):
            raise ValueError(
                f"the pooling kernel does not fit: expected kernel {self.kernel} <= input + 2·pad, "
                f"received input {tuple(spatial)}, pad {tuple(pad)}"
            )
        # Pad below by ``pad`` and above by what the last window needs beyond the image. When
        # that is negative (floor mode, or a dropped last window) it is always more than
        # −stride, so a "valid" pooling of the unpadded tail still yields exactly ``out`` windows.
        self.pad_below = tuple(pad)
        self.pad_above = tuple(
            max(0, (o - 1) * s + k - p - n)
            for n, o, k, s, p in zip(spatial, self.output, kernel, stride, pad, strict=True)
        )
        self.divisors = [
            window_sizes(n, o, k, s, p) for n, o, k, s, p in zip(spatial, self.output, kernel, stride, pad, strict=True)
        ]
        self.volume = math.prod(self.kernel)
        self.full_windows = all(d == k for sizes, k in zip(self.divisors, kernel, strict=True) for d in sizes)

    def frame(self, x, fill: float):
        """Pad the channels-last ``x`` with ``fill`` so that every window lies inside it."""
        widths = [(0, 0), *zip(self.pad_below, self.pad_above, strict=True), (0, 0)]
        if any(self.pad_below) or any(self.pad_above):
            x = ops.pad(x, widths, constant_values=fill)
        return x

    def pool(self, x, method: str):
        """Caffe's pooling of the channels-last tensor ``x`` (rank 4 or 5)."""
        if method == "max":
            framed = self.frame(x, -FLT_MAX)
            return ops.max_pool(framed, self.kernel, self.stride, padding="valid", data_format="channels_last")
        mean = ops.average_pool(
            self.frame(x, 0.0), self.kernel, self.stride, padding="valid", data_format="channels_last"
        )
        if self.full_windows:
            return mean
        rank = len(self.divisors) + 2
        divisor = None
        for axis, sizes in enumerate(self.divisors, start=1):
            shape = [1] * rank
            shape[axis] = len(sizes)
            factor = ops.reshape(ops.convert_to_tensor(sizes, dtype=mean.dtype), shape)
            divisor = factor if divisor is None else divisor * factor
        return ops.divide(mean * float(self.volume), divisor)


@keras.saving.register_keras_serializable(package="netdef")
class CaffePooling(keras.layers.Layer):
    """Caffe's MAX/AVE pooling on channels-last ``(N, H, W, C)`` or ``(N, D, H, W, C)`` input.

    Args:
        method: ``"max"`` or ``"ave"`` (Caffe's STOCHASTIC pooling is GPU-only in Caffe and
            not supported).
        kernel, stride, pad: one int per spatial axis (D, H, W order).
        round_mode: ``"ceil"`` (Caffe's default) or ``"floor"``.
        global_pooling: pool over the whole spatial extent (kernel = input size, stride 1,
            pad 0); ``kernel``, ``stride`` and ``pad`` are then ignored.

    The spatial sizes must be static: Caffe's window arithmetic is integer arithmetic on
    them. See the module docstring for where Caffe's numbers differ from Keras's.
    """

    def __init__(
        self,
        method: str = "max",
        kernel: Sequence[int] | None = None,
        stride: Sequence[int] | None = None,
        pad: Sequence[int] | None = None,
        round_mode: str = "ceil",
        global_pooling: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"expected method in {METHODS}, received {method!r}")
        if round_mode not in ROUND_MODES:
            raise ValueError(f"expected round_mode in {ROUND_MODES}, received {round_mode!r}")
        if kernel is None and not global_pooling:
            raise ValueError("expected a kernel (one int per spatial axis) or global_pooling=True, received neither")
        self.method = method
        self.kernel = None if kernel is None else tuple(int(k) for k in kernel)
        self.stride = None if stride is None else tuple(int(s) for s in stride)
        self.pad = None if pad is None else tuple(int(p) for p in pad)
        self.round_mode = round_mode
        self.global_pooling = bool(global_pooling)
        self.geometry: PoolGeometry | None = None

    def _geometry(self, input_shape: Sequence[int | None]) -> PoolGeometry:
        if len(input_shape) not in (4, 5):
            raise ValueError(
                f"CaffePooling expected a channels-last input of rank 4 or 5, received shape {tuple(input_shape)}"
            )
        spatial = input_shape[1:-1]
        if any(n is None for n in spatial):
            raise ValueError(f"CaffePooling expected static spatial sizes, received shape {tuple(input_shape)}")
        spatial = [int(n) for n in spatial]  # type: ignore[arg-type]
        axes = len(spatial)
        if self.global_pooling:
            return PoolGeometry(spatial, spatial, (1,) * axes, (0,) * axes)
        kernel = self.kernel or ()
        stride = self.stride or (1,) * axes
        pad = self.pad or (0,) * axes
        if not len(kernel) == len(stride) == len(pad) == axes:
            raise ValueError(
                f"expected kernel, stride and pad with {axes} values each (one per spatial axis), "
                f"received kernel {kernel}, stride {stride}, pad {pad}"
            )
        return PoolGeometry(spatial, kernel, stride, pad, ceil=self.round_mode == "ceil")

    def build(self, input_shape) -> None:
        self.geometry = self._geometry(input_shape)

    def call(self, inputs):
        return self.geometry.pool(inputs, self.method)  # type: ignore[union-attr]

    def compute_output_shape(self, input_shape):
        geometry = self._geometry(input_shape)
        return (input_shape[0], *geometry.output, input_shape[-1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "method": self.method,
                "kernel": None if self.kernel is None else list(self.kernel),
                "stride": None if self.stride is None else list(self.stride),
                "pad": None if self.pad is None else list(self.pad),
                "round_mode": self.round_mode,
                "global_pooling": self.global_pooling,
            }
        )
        return config
