"""Protobuf bindings for Caffe's message formats (nets, solvers, weights), under package ``netdef``.

``netdef_pb2`` is generated from proto/netdef.proto by tools/generate_proto.py; never edit it by hand.
The schema mirrors Caffe's caffe.proto field for field, so anything Caffe writes, in text or binary,
parses here unchanged; only the package name differs, so these classes can coexist with pycaffe's.
"""

from netdef.proto import netdef_pb2

__all__ = ["netdef_pb2"]
