"""netdef: Caffe's declarative model definitions (prototxt), compiled to Keras 3.

Importing netdef is cheap: Keras and TensorFlow are imported only by the parts that
compile or train, so parsing and inspecting nets works without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netdef.errors import NetdefError
from netdef.ir import Net
from netdef.load import load_net, load_solver

if TYPE_CHECKING:
    import keras

    from netdef.solver.trainer import Solver as Trainer

__all__ = ["Net", "NetdefError", "Solver", "codegen", "load_net", "load_solver", "to_keras"]


def to_keras(*args: Any, **kwargs: Any) -> keras.Model:
    """Compile a net to a Keras model; see :func:`netdef.keras.compiler.to_keras`.

    Imported on first use, so that ``import netdef`` does not start TensorFlow.
    """
    from netdef.keras.compiler import to_keras as compile_to_keras

    return compile_to_keras(*args, **kwargs)


def codegen(*args: Any, **kwargs: Any) -> str:
    """The source of a Python module building the net's Keras model; see :func:`netdef.codegen.generate`.

    Imported on first use, for the same reason as :func:`to_keras`.
    """
    from netdef.codegen import generate

    return generate(*args, **kwargs)


def Solver(*args: Any, **kwargs: Any) -> Trainer:
    """Caffe's solver on Keras, ``Solver(path).solve()``; see :class:`netdef.solver.trainer.Solver`.

    Imported on first use, for the same reason as :func:`to_keras`; a ``backend=`` given
    here is chosen before Keras is imported.
    """
    from netdef.solver.devices import select_backend

    select_backend(kwargs.get("backend"))
    from netdef.solver.trainer import Solver as Trainer

    return Trainer(*args, **kwargs)


__version__ = "0.1.0"
