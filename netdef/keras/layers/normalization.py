"""Caffe's normalisation layers: LRN, BatchNorm and MVN, with Caffe's formulas.

Keras has no exact counterpart of any of them: Caffe's LRN divides ``alpha`` by the window
size, its BatchNorm keeps running sums with a ``scale_factor`` blob and applies no affine
transform, and its MVN adds ``eps`` to the standard deviation rather than to the variance.
"""

from __future__ import annotations

import keras
from keras import ops

NORM_REGIONS = ("across_channels", "within_channel")


@keras.saving.register_keras_serializable(package="netdef")
class LRN(keras.layers.Layer):
    """Caffe's local response normalisation on channels-last ``(N, H, W, C)`` input.

    ``across_channels``: ``y = x·(k + alpha/n · Σ x²)^(−beta)``, the sum over the ``n``
    channels centred on each channel, zero beyond the first and last channel.
    ``within_channel``: ``y = x·(1 + alpha/n² · Σ x²)^(−beta)``, the sum over an ``n×n``
    zero-padded spatial window; ``k`` is not used (Caffe builds this mode from a pooling
    and a Power layer with shift 1).

    Keras has no LRN layer; ``tf.nn.local_response_normalization`` neither divides alpha
    by ``n`` nor runs on other backends. The channel sum is a sum of ``n`` shifted slices of
    the zero-padded squares: exact on every device, where a banded matmul would be rounded
    to TF32 on recent NVIDIA GPUs.
    """

    def __init__(
        self,
        local_size: int = 5,
        alpha: float = 1.0,
        beta: float = 0.75,
        k: float = 1.0,
        norm_region: str = "across_channels",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if local_size < 1 or local_size % 2 != 1:
            raise ValueError(f"expected an odd positive local_size, received {local_size}")
        if norm_region not in NORM_REGIONS:
            raise ValueError(f"expected norm_region in {NORM_REGIONS}, received {norm_region!r}")
        self.local_size = int(local_size)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.k = float(k)
        self.norm_region = norm_region

    def build(self, input_shape) -> None:
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"LRN expected a channels-last (N, H, W, C) input with static C, received shape {tuple(input_shape)}"
            )

    def call(self, inputs):
        half = (self.local_size - 1) // 2
        squares = ops.square(inputs)
        if self.norm_region == "across_channels":
            channels = inputs.shape[-1]
            padded = ops.pad(squares, [(0, 0), (0, 0), (0, 0), (half, half)])
            window = padded[..., 0:channels]
            for offset in range(1, self.local_size):
                window = window + padded[..., offset : offset + channels]
            scale = self.k + (self.alpha / self.local_size) * window
        else:
            padded = ops.pad(squares, [(0, 0), (half, half), (half, half), (0, 0)])
            size = (self.local_size, self.local_size)
            mean = ops.average_pool(padded, size, strides=1, padding="valid", data_format="channels_last")
            scale = 1.0 + self.alpha * mean
        # scale^(−beta) as exp(−beta·log(scale)): the same values within a few ulp for positive
        # scales (and inf at 0, NaN below, like pow for non-integer beta), ~6× faster than pow
        # on TensorFlow's CPU kernels, where pow dominated the layer's time.
        return inputs * ops.exp(-self.beta * ops.log(scale))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "local_size": self.local_size,
                "alpha": self.alpha,
                "beta": self.beta,
                "k": self.k,
                "norm_region": self.norm_region,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="netdef")
class CaffeBatchNorm(keras.layers.Layer):
    """Caffe's BatchNorm: ``(x − mean)/sqrt(var + eps)`` per channel, no scale or shift.

    Variables (all non-trainable, initialised to 0 as in Caffe, each exactly Caffe's blob):
    ``mean`` ``(C,)``, ``variance`` ``(C,)``, ``scale_factor`` ``(1,)``. Caffe stores running
    *sums*, not averages: the statistics in use are ``mean/scale_factor`` and
    ``variance/scale_factor`` (0 when scale_factor is 0).

    With batch statistics (TRAIN, unless ``use_global_stats``) the output uses the batch
    mean and biased variance over every axis but ``axis``, and the variables are updated
    as Caffe does: ``scale_factor = maf·scale_factor + 1``, ``mean = batch_mean + maf·mean``,
    ``variance = m/(m−1)·batch_var + maf·variance`` with ``m`` the values per channel.
    ``use_global_stats=None`` is Caffe's default: global statistics iff not training.

    Keras's BatchNormalization differs: it keeps momentum averages rather than sums with a
    scale factor, its moving variance is the biased batch variance, and it adds gamma/beta
    (Caffe nets follow BatchNorm with a Scale layer for that).
    """

    def __init__(
        self,
        use_global_stats: bool | None = None,
        moving_average_fraction: float = 0.999,
        eps: float = 1e-5,
        axis: int = -1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.use_global_stats = None if use_global_stats is None else bool(use_global_stats)
        self.moving_average_fraction = float(moving_average_fraction)
        self.eps = float(eps)
        self.axis = int(axis)

    def build(self, input_shape) -> None:
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ValueError(f"CaffeBatchNorm expected an axis in [{-rank}, {rank}), received {self.axis}")
        channels = input_shape[self.axis]
        if channels is None:
            raise ValueError(f"CaffeBatchNorm expected a static channel axis, received shape {tuple(input_shape)}")
        self.mean = self.add_weight(name="mean", shape=(channels,), initializer="zeros", trainable=False)
        self.variance = self.add_weight(name="variance", shape=(channels,), initializer="zeros", trainable=False)
        self.scale_factor = self.add_weight(name="scale_factor", shape=(1,), initializer="zeros", trainable=False)

    def call(self, inputs, training=None):
        rank = len(inputs.shape)
        axis = self.axis % rank
        reduce_axes = tuple(a for a in range(rank) if a != axis)
        broadcast = [1] * rank
        broadcast[axis] = -1
        global_stats = self.use_global_stats if self.use_global_stats is not None else not training
        if global_stats:
            factor = ops.divide_no_nan(ops.ones_like(self.scale_factor), self.scale_factor)
            mean = ops.cast(factor * self.mean, inputs.dtype)
            variance = ops.cast(factor * self.variance, inputs.dtype)
            centred = inputs - ops.reshape(mean, broadcast)
        else:
            mean = ops.mean(inputs, axis=reduce_axes)
            centred = inputs - ops.reshape(mean, broadcast)
            variance = ops.mean(ops.square(centred), axis=reduce_axes)
            self._update_statistics(inputs, mean, variance)
        return centred / ops.reshape(ops.sqrt(variance + self.eps), broadcast)

    def _update_statistics(self, inputs, mean, variance) -> None:
        """Caffe's running sums; ``m/(m−1)`` turns the biased batch variance into an unbiased one."""
        fraction = self.moving_average_fraction
        per_channel = ops.cast(ops.size(inputs), self.variance.dtype) / float(self.variance.shape[0])
        correction = ops.where(per_channel > 1, per_channel / (per_channel - 1), ops.ones_like(per_channel))
        mean = ops.cast(ops.stop_gradient(mean), self.mean.dtype)
        variance = ops.cast(ops.stop_gradient(variance), self.variance.dtype)
        self.scale_factor.assign(self.scale_factor * fraction + 1.0)
        self.mean.assign(mean + fraction * self.mean)
        self.variance.assign(correction * variance + fraction * self.variance)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "use_global_stats": self.use_global_stats,
                "moving_average_fraction": self.moving_average_fraction,
                "eps": self.eps,
                "axis": self.axis,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="netdef")
class MVN(keras.layers.Layer):
    """Caffe's mean-variance normalisation: ``(x − mean)/(std + eps)``, or ``x − mean``.

    Statistics are per sample and channel over the spatial axes, or per sample over
    everything with ``across_channels``; the variance is the biased ``E((x − E x)²)`` and
    ``eps`` is added to its square root (Keras-style layers add it under the root).

    Caffe reads the bottom through its 4-D accessors and always writes a 4-D top
    ``(N, C, H, W)``, so a ``(N, C)`` bottom gives a ``(N, C, 1, 1)`` top. Following the
    layout convention (rank 4 held channels-last, other ranks in Caffe's order) this layer
    takes ``(N,)``, ``(N, C)`` and ``(N, C, H)`` in Caffe's order or ``(N, H, W, C)``, and
    always returns the channels-last ``(N, H, W, C)``.

    Caffe's backward is not quite the derivative of its forward: it differentiates the
    standard deviation as ``1/(2·(std + eps))`` instead of ``1/(2·std)``. The layer makes
    automatic differentiation do the same, which also keeps the gradient finite where the
    variance is 0 (a ``(N, C)`` bottom normalised per channel).
    """

    def __init__(
        self,
        normalize_variance: bool = True,
        across_channels: bool = False,
        eps: float = 1e-9,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.normalize_variance = bool(normalize_variance)
        self.across_channels = bool(across_channels)
        self.eps = float(eps)

    def build(self, input_shape) -> None:
        if not 1 <= len(input_shape) <= 4:
            raise ValueError(f"MVN expected an input of rank 1 to 4, received shape {tuple(input_shape)}")

    @staticmethod
    def _legacy_4d(inputs):
        """A rank < 4 Caffe-ordered blob as Caffe's 4-D view ``(N, C, H, 1…)``, channels-last."""
        shape = inputs.shape
        if len(shape) == 4:
            return inputs
        caffe = [-1, *(shape[1:]), *([1] * (4 - len(shape)))]
        return ops.transpose(ops.reshape(inputs, caffe), (0, 2, 3, 1))

    def call(self, inputs):
        x = self._legacy_4d(inputs)
        axes = (1, 2, 3) if self.across_channels else (1, 2)
        centred = x - ops.mean(x, axis=axes, keepdims=True)
        if not self.normalize_variance:
            return centred
        variance = ops.mean(ops.square(centred), axis=axes, keepdims=True)
        denominator = ops.stop_gradient(ops.sqrt(variance) + self.eps)
        # Adds exactly 0 forward; backward, d(denominator)/d(variance) = 1/(2·(std + eps)) as in Caffe.
        denominator = denominator + (variance - ops.stop_gradient(variance)) / (2.0 * denominator)
        return centred / denominator

    def compute_output_shape(self, input_shape):
        if len(input_shape) == 4:
            return input_shape
        caffe = (*input_shape, *([1] * (4 - len(input_shape))))
        return (caffe[0], caffe[2], caffe[3], caffe[1])

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "normalize_variance": self.normalize_variance,
                "across_channels": self.across_channels,
                "eps": self.eps,
            }
        )
        return config
