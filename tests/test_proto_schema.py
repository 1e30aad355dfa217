"""The schema's compatibility with Caffe's caffe.proto, and the freshness of its generated bindings.

netdef reads files written by Caffe, so a field number, default or packing that drifts from
caffe.proto silently misreads models. The facts below are taken from Caffe's caffe.proto; each one
is something a real prototxt or caffemodel depends on.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from netdef.proto import netdef_pb2 as pb

REPO = Path(__file__).resolve().parent.parent


def message(path: str) -> Descriptor:
    """A message descriptor by its path below the package, e.g. "V1LayerParameter"."""
    return pb.DESCRIPTOR.pool.FindMessageTypeByName(f"netdef.{path}")


def enum(path: str) -> EnumDescriptor:
    """An enum descriptor by its path below the package, e.g. "PoolingParameter.RoundMode"."""
    return pb.DESCRIPTOR.pool.FindEnumTypeByName(f"netdef.{path}")


def field(path: str) -> FieldDescriptor:
    """A field descriptor by "Message.field" (the message part may be nested)."""
    owner, name = path.rsplit(".", 1)
    return message(owner).fields_by_name[name]


def test_committed_bindings_match_the_schema() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "generate_proto.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


FIELD_NUMBERS = [
    ("BlobShape.dim", 1),
    ("BlobProto.shape", 7),
    ("BlobProto.data", 5),
    ("BlobProto.double_data", 8),
    ("BlobProto.num", 1),
    ("Datum.encoded", 7),
    ("FillerParameter.variance_norm", 8),
    ("NetParameter.name", 1),
    ("NetParameter.layers", 2),
    ("NetParameter.input", 3),
    ("NetParameter.input_dim", 4),
    ("NetParameter.state", 6),
    ("NetParameter.input_shape", 8),
    ("NetParameter.layer", 100),
    ("SolverParameter.net", 24),
    ("SolverParameter.test_initialization", 32),
    ("SolverParameter.type", 40),
    ("SolverParameter.layer_wise_reduce", 41),
    ("SolverParameter.weights", 42),
    ("SolverState.current_step", 4),
    ("NetStateRule.not_stage", 5),
    ("ParamSpec.decay_mult", 4),
    ("LayerParameter.phase", 10),
    ("LayerParameter.propagate_down", 11),
    ("LayerParameter.include", 8),
    ("LayerParameter.exclude", 9),
    ("LayerParameter.transform_param", 100),
    ("LayerParameter.loss_param", 101),
    ("LayerParameter.convolution_param", 106),
    ("LayerParameter.pooling_param", 121),
    ("LayerParameter.prelu_param", 131),
    ("LayerParameter.batch_norm_param", 139),
    ("LayerParameter.input_param", 143),
    ("LayerParameter.recurrent_param", 146),
    ("LayerParameter.swish_param", 147),
    ("LayerParameter.clip_param", 148),
    ("LossParameter.normalize", 2),
    ("LossParameter.normalization", 3),
    ("ConvolutionParameter.stride", 6),
    ("ConvolutionParameter.dilation", 18),
    ("ConvolutionParameter.axis", 16),
    ("ConcatParameter.concat_dim", 1),
    ("ConcatParameter.axis", 2),
    ("SliceParameter.axis", 3),
    ("PoolingParameter.pad", 4),
    ("PoolingParameter.round_mode", 13),
    ("DataParameter.backend", 8),
    ("SPPParameter.engine", 6),
    ("V1LayerParameter.layer", 1),
    ("V1LayerParameter.include", 32),
    ("V1LayerParameter.param", 1001),
    ("V1LayerParameter.blob_share_mode", 1002),
    ("V1LayerParameter.loss_param", 42),
    ("V0LayerParameter.k", 22),
    ("V0LayerParameter.det_context_pad", 58),
    ("V0LayerParameter.hdf5_output_param", 1001),
]


@pytest.mark.parametrize(("path", "number"), FIELD_NUMBERS)
def test_field_number(path: str, number: int) -> None:
    assert field(path).number == number


DEFAULTS = [
    ("FillerParameter.type", "constant"),
    ("FillerParameter.sparse", -1),
    ("FillerParameter.variance_norm", "FAN_IN"),
    ("SolverParameter.solver_mode", "GPU"),
    ("SolverParameter.solver_type", "SGD"),
    ("SolverParameter.snapshot_format", "BINARYPROTO"),
    ("SolverParameter.type", "SGD"),
    ("SolverParameter.regularization_type", "L2"),
    ("SolverParameter.delta", 1e-8),
    ("SolverParameter.momentum2", 0.999),
    ("SolverParameter.rms_decay", 0.99),
    ("SolverParameter.clip_gradients", -1.0),
    ("SolverParameter.random_seed", -1),
    ("SolverParameter.test_initialization", True),
    ("NetState.phase", "TEST"),
    ("ParamSpec.lr_mult", 1.0),
    ("LossParameter.normalization", "VALID"),
    ("BatchNormParameter.moving_average_fraction", 0.999),
    ("BatchNormParameter.eps", 1e-5),
    ("ConvolutionParameter.bias_term", True),
    ("ConvolutionParameter.group", 1),
    ("CropParameter.axis", 2),
    ("DataParameter.backend", "LEVELDB"),
    ("DataParameter.prefetch", 4),
    ("EltwiseParameter.operation", "SUM"),
    ("ExpParameter.base", -1.0),
    ("FlattenParameter.end_axis", -1),
    ("HingeLossParameter.norm", "L1"),
    ("ImageDataParameter.batch_size", 1),
    ("LRNParameter.local_size", 5),
    ("LRNParameter.beta", 0.75),
    ("MVNParameter.eps", 1e-9),
    ("PoolingParameter.pool", "MAX"),
    ("PoolingParameter.stride", 1),
    ("PoolingParameter.round_mode", "CEIL"),
    ("ReductionParameter.operation", "SUM"),
    ("ReshapeParameter.num_axes", -1),
    ("WindowDataParameter.crop_mode", "warp"),
    ("WindowDataParameter.fg_fraction", 0.25),
    ("V0LayerParameter.biasterm", True),
    ("V0LayerParameter.det_crop_mode", "warp"),
]


@pytest.mark.parametrize(("path", "expected"), DEFAULTS)
def test_field_default(path: str, expected: object) -> None:
    descriptor = field(path)
    assert descriptor.has_default_value
    if descriptor.enum_type is not None:
        assert descriptor.enum_type.values_by_number[descriptor.default_value].name == expected
    elif isinstance(expected, float):
        # float fields hold their default in single precision.
        assert descriptor.default_value == pytest.approx(expected, rel=1e-6)
    else:
        assert descriptor.default_value == expected


PACKED = ["BlobShape.dim", "BlobProto.data", "BlobProto.diff", "BlobProto.double_data", "BlobProto.double_diff"]


@pytest.mark.parametrize("path", PACKED)
def test_packed_field(path: str) -> None:
    assert field(path).is_packed


# Repeated scalars that Caffe leaves unpacked: packing them would change the bytes written.
UNPACKED = ["Datum.float_data", "NetParameter.input_dim", "LayerParameter.loss_weight", "ConvolutionParameter.pad"]


@pytest.mark.parametrize("path", UNPACKED)
def test_unpacked_repeated_field(path: str) -> None:
    assert field(path).is_repeated
    assert not field(path).is_packed


TYPES = [
    ("BlobShape.dim", FieldDescriptor.TYPE_INT64),
    ("BlobProto.double_data", FieldDescriptor.TYPE_DOUBLE),
    ("Datum.data", FieldDescriptor.TYPE_BYTES),
    ("SolverParameter.random_seed", FieldDescriptor.TYPE_INT64),
    ("ConvolutionParameter.kernel_size", FieldDescriptor.TYPE_UINT32),
    ("ConvolutionParameter.axis", FieldDescriptor.TYPE_INT32),
    ("LayerParameter.propagate_down", FieldDescriptor.TYPE_BOOL),
]


@pytest.mark.parametrize(("path", "field_type"), TYPES)
def test_field_type(path: str, field_type: int) -> None:
    assert field(path).type == field_type


def test_clip_bounds_are_required() -> None:
    assert field("ClipParameter.min").is_required
    assert field("ClipParameter.max").is_required


def test_legacy_layers_field_holds_v1_layers() -> None:
    assert field("NetParameter.layers").message_type is message("V1LayerParameter")
    assert field("V1LayerParameter.layer").message_type is message("V0LayerParameter")


ENUM_VALUES = [
    ("Phase", "TRAIN", 0),
    ("Phase", "TEST", 1),
    ("SolverParameter.SolverType", "ADAM", 5),
    ("LossParameter.NormalizationMode", "NONE", 3),
    ("ParamSpec.DimCheckMode", "PERMISSIVE", 1),
    ("HingeLossParameter.Norm", "L2", 2),
    ("ReductionParameter.ReductionOp", "MEAN", 4),
    ("PoolingParameter.RoundMode", "FLOOR", 1),
    ("ConvolutionParameter.Engine", "CUDNN", 2),
    ("V1LayerParameter.LayerType", "NONE", 0),
    ("V1LayerParameter.LayerType", "SOFTMAX_LOSS", 21),
    ("V1LayerParameter.LayerType", "DUMMY_DATA", 32),
    ("V1LayerParameter.LayerType", "ABSVAL", 35),
    ("V1LayerParameter.LayerType", "DECONVOLUTION", 39),
    ("V1LayerParameter.LayerType", "THRESHOLD", 31),
]


@pytest.mark.parametrize(("path", "name", "number"), ENUM_VALUES)
def test_enum_value(path: str, name: str, number: int) -> None:
    assert enum(path).values_by_name[name].number == number


def test_v1_layer_types_are_complete() -> None:
    assert len(enum("V1LayerParameter.LayerType").values) == 40


def test_the_message_set_is_caffes() -> None:
    assert set(pb.DESCRIPTOR.message_types_by_name) == {
        *("BlobShape", "BlobProto", "BlobProtoVector", "Datum", "FillerParameter", "NetParameter"),
        *("SolverParameter", "SolverState", "NetState", "NetStateRule", "ParamSpec", "LayerParameter"),
        *("TransformationParameter", "LossParameter", "AccuracyParameter", "ArgMaxParameter"),
        *("ClipParameter", "ConcatParameter", "BatchNormParameter", "BiasParameter"),
        *("ContrastiveLossParameter", "ConvolutionParameter", "CropParameter", "DataParameter"),
        *("DropoutParameter", "DummyDataParameter", "EltwiseParameter", "ELUParameter", "EmbedParameter"),
        *("ExpParameter", "FlattenParameter", "HDF5DataParameter", "HDF5OutputParameter"),
        *("HingeLossParameter", "ImageDataParameter", "InfogainLossParameter", "InnerProductParameter"),
        *("InputParameter", "LogParameter", "LRNParameter", "MemoryDataParameter", "MVNParameter"),
        *("ParameterParameter", "PoolingParameter", "PowerParameter", "PythonParameter"),
        *("RecurrentParameter", "ReductionParameter", "ReLUParameter", "ReshapeParameter"),
        *("ScaleParameter", "SigmoidParameter", "SliceParameter", "SoftmaxParameter", "SwishParameter"),
        *("TanHParameter", "TileParameter", "ThresholdParameter", "WindowDataParameter", "SPPParameter"),
        *("V1LayerParameter", "V0LayerParameter", "PReLUParameter"),
    }
    assert set(pb.DESCRIPTOR.enum_types_by_name) == {"Phase"}


def test_package_is_netdef_so_it_can_coexist_with_caffe() -> None:
    assert pb.DESCRIPTOR.package == "netdef"
    assert pb.DESCRIPTOR.name == "netdef.proto"
    assert pb.NetParameter.DESCRIPTOR.full_name == "netdef.NetParameter"
    assert field("LayerParameter.convolution_param").message_type.full_name == "netdef.ConvolutionParameter"


NET = """
name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer {
  name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 dilation: 2 weight_filler { type: "xavier" } }
  include { phase: TEST }
}
layer {
  name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: AVE kernel_size: 2 round_mode: FLOOR }
}
layers { name: "old" type: SOFTMAX_LOSS bottom: "pool" blobs_lr: 1 }
"""


def test_text_and_binary_round_trip() -> None:
    net = text_format.Parse(NET, pb.NetParameter())
    assert net.layer[0].convolution_param.dilation == [2]
    assert net.layers[0].type == pb.V1LayerParameter.SOFTMAX_LOSS
    again = pb.NetParameter.FromString(net.SerializeToString())
    assert again == net
    assert text_format.Parse(text_format.MessageToString(again), pb.NetParameter()) == net


@pytest.mark.parametrize(
    ("built", "wire"),
    [
        # Packed int64 dims: tag (1 << 3 | 2), length 3, then the varints 1 and 300.
        (pb.BlobShape(dim=[1, 300]), b"\x0a\x03\x01\xac\x02"),
        # Packed floats: tag (5 << 3 | 2), length 4, then 1.0f little-endian.
        (pb.BlobProto(data=[1.0]), b"\x2a\x04\x00\x00\x80\x3f"),
        # A layer under field 100: tag (100 << 3 | 2) = 802 is the varint a2 06.
        (pb.NetParameter(layer=[pb.LayerParameter(name="a")]), b"\xa2\x06\x03\x0a\x01a"),
        # A V1 layer under field 2 whose type (field 5) is SOFTMAX_LOSS = 21.
        (pb.NetParameter(layers=[pb.V1LayerParameter(type=21)]), b"\x12\x02\x28\x15"),
    ],
)
def test_bytes_match_caffes_encoding(built: Message, wire: bytes) -> None:
    """Hand-encoded bytes, as Caffe writes them, pin field numbers, types and packing on the wire."""
    assert built.SerializeToString() == wire
    assert type(built).FromString(wire) == built


def _nested(descriptor: Descriptor):
    yield descriptor
    for nested in descriptor.nested_types:
        yield from _nested(nested)


#: Every field numbered above 1000: Caffe's own (in its legacy V0/V1 layers) and netdef's one
#: documented extension to caffe.proto, per-axis N-D pooling (proto/netdef.proto, PoolingParameter).
HIGH_NUMBERED = {
    "V1LayerParameter.param": 1001,
    "V1LayerParameter.blob_share_mode": 1002,
    "V0LayerParameter.hdf5_output_param": 1001,
    "PoolingParameter.kernel_nd": 1001,
    "PoolingParameter.stride_nd": 1002,
    "PoolingParameter.pad_nd": 1003,
}


def test_fields_numbered_above_caffes_are_exactly_the_known_ones() -> None:
    found = {
        f"{descriptor.full_name.removeprefix('netdef.')}.{f.name}": f.number
        for top in pb.DESCRIPTOR.message_types_by_name.values()
        for descriptor in _nested(top)
        for f in descriptor.fields
        if f.number > 1000
    }
    assert found == HIGH_NUMBERED


def test_pooling_parameter_is_caffes_plus_the_nd_extension() -> None:
    caffe = {"pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w", "stride", "stride_h"}
    caffe |= {"stride_w", "engine", "global_pooling", "round_mode"}
    extension = {"kernel_nd", "stride_nd", "pad_nd"}
    assert set(message("PoolingParameter").fields_by_name) == caffe | extension
    for name in extension:
        descriptor = field(f"PoolingParameter.{name}")
        assert descriptor.is_repeated
        assert not descriptor.is_packed
        assert descriptor.type == FieldDescriptor.TYPE_UINT32


def test_caffe_reads_past_the_extension_fields() -> None:
    """A parser with Caffe's PoolingParameter (the schema without the three fields) skips them as
    unknown fields and reads the Caffe fields around them as before."""
    schema = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(schema)
    (pooling,) = [m for m in schema.message_type if m.name == "PoolingParameter"]
    kept = [f for f in pooling.field if f.number < 1000]
    del pooling.field[:]
    pooling.field.extend(kept)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(schema)
    caffes = message_factory.GetMessageClass(pool.FindMessageTypeByName("netdef.PoolingParameter"))
    wire = pb.PoolingParameter(kernel_size=2, stride=2, kernel_nd=[1, 2, 2], pad_nd=[0, 1, 1]).SerializeToString()
    # Plain (unpacked) varints under tag 1001 << 3 = 8008, i.e. c8 3e.
    assert b"\xc8\x3e\x01\xc8\x3e\x02\xc8\x3e\x02" in wire
    read = caffes.FromString(wire)
    assert (read.kernel_size, read.stride) == (2, 2)
    assert "kernel_nd" not in caffes.DESCRIPTOR.fields_by_name
