"""netdef's custom Keras layers for Caffe operations (conventions: docs/keras-layers.md).

Importing this package registers every layer with Keras's serialization, so that
``keras.saving.load_model`` can rebuild a compiled model in a fresh process.
"""

from netdef.keras.layers import (
    affine,
    deconvolution,
    elementwise,
    losses,
    normalization,
    pooling,
    recurrent,
    routing,
    spatial,
)

__all__ = [
    "affine",
    "deconvolution",
    "elementwise",
    "losses",
    "normalization",
    "pooling",
    "recurrent",
    "routing",
    "spatial",
]
