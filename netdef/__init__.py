"""netdef: Caffe's declarative model definitions (prototxt), compiled to Keras 3.

Importing netdef is cheap: Keras and TensorFlow are imported only by the parts that
compile or train, so parsing and inspecting nets works without them.
"""

from netdef.errors import NetdefError
from netdef.ir import Net
from netdef.load import load_net, load_solver

__all__ = ["Net", "NetdefError", "load_net", "load_solver"]
__version__ = "0.1.0"
