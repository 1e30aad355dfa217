"""Every BVLC Caffe layer type, declared in the registry by family.

Importing this package registers the 61 types Caffe's ``layer_factory`` knows; the
registry imports it on first lookup.
"""

from netdef.layers.declarations import data, learnable, loss, neuron, recurrent, routing, vision

__all__ = ["data", "learnable", "loss", "neuron", "recurrent", "routing", "vision"]
