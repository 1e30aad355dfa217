"""Caffe names as Keras layer names and Python identifiers, in one deterministic mapping.

Caffe allows any string as a layer or blob name; Keras refuses "/" in layer names (GoogLeNet's
``inception_3a/1x1``) and Python needs identifiers. Every stage that needs such a name asks
this module, so the compiled model, the generated code and weight files agree.
"""

from __future__ import annotations

import keyword
import re

#: Keras forbids "/" in layer names; "__" reads as a path separator and rarely occurs in Caffe.
SLASH = "__"


def keras_name(caffe_name: str) -> str:
    """The Keras layer name for a Caffe name (reversible with :func:`caffe_name`)."""
    return caffe_name.replace("/", SLASH) or "unnamed"


def caffe_name(name: str) -> str:
    return name.replace(SLASH, "/")


def identifier(caffe_name: str) -> str:
    """A readable Python identifier for a Caffe name: ``inception_3a/1x1`` → ``inception_3a_1x1``."""
    text = re.sub(r"\W+", "_", caffe_name).strip("_") or "blob"
    if text[0].isdigit():
        text = f"x{text}"
    return f"{text}_" if keyword.iskeyword(text) else text


class UniqueNames:
    """Hands out names that have not been handed out yet, adding ``_2``, ``_3``... on clashes."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def take(self, name: str) -> str:
        candidate, suffix = name, 1
        while candidate in self._taken:
            suffix += 1
            candidate = f"{name}_{suffix}"
        self._taken.add(candidate)
        return candidate
