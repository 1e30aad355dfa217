"""The graph IR: wiring, in-place blobs, loss weights, shared params and validation."""

from __future__ import annotations

import pytest

from netdef import load_net
from netdef.errors import NetdefErrors, NetDefinitionError, ShapeError
from netdef.ir import AUTOMATIC_TOP

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n'
LABEL = 'layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }\n'


def conv(name: str, bottom: str, top: str | None = None, extra: str = "") -> str:
    return (
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top or name}" {extra}'
        " convolution_param { num_output: 4 kernel_size: 3 } }\n"
    )


def relu(name: str, blob: str) -> str:
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def test_in_place_layers_keep_caffe_names_and_give_the_last_version() -> None:
    net = load_net(INPUT + conv("conv1", "data") + relu("relu1", "conv1"))
    versions = net.versions("conv1")
    assert [v.producer.name for v in versions] == ["conv1", "relu1"]
    assert net.blob("conv1") is versions[-1]
    assert net.layer("relu1").in_place(0)
    assert [v.key for v in versions] == ["conv1", "conv1@relu1"]
    assert net.blob("conv1").shape == (2, 4, 6, 6)


def test_outputs_are_unconsumed_blobs_sorted_by_name_and_inputs_are_input_tops() -> None:
    net = load_net(INPUT + conv("zeta", "data") + conv("alpha", "data") + relu("r", "alpha"))
    assert [v.blob for v in net.outputs] == ["alpha", "zeta"]
    assert [v.blob for v in net.inputs] == ["data"]


def test_loss_layers_default_to_weight_one_on_top_zero_and_get_automatic_tops() -> None:
    text = (
        INPUT
        + LABEL
        + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 5 } }\n'
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }\n'
        + 'layer { name: "weighted" type: "EuclideanLoss" bottom: "ip" bottom: "ip" top: "w" loss_weight: 0.5 }\n'
    )
    net = load_net(text)
    loss = net.layer("loss")
    assert [v.blob for v in loss.tops] == [AUTOMATIC_TOP]
    assert loss.tops[0].loss_weight == 1.0
    assert loss.tops[0].shape == ()
    assert net.blob("w").loss_weight == 0.5
    assert net.blob("ip").loss_weight == 0.0
    assert AUTOMATIC_TOP not in [v.blob for v in net.outputs]


def test_shared_params_are_counted_once_and_point_to_their_owner() -> None:
    shared = 'param { name: "w" } param { name: "b" }'
    net = load_net(INPUT + conv("a", "data", extra=shared) + conv("b", "data", extra=shared))
    assert net.layer("b").blobs[0].owner == ("a", 0)
    assert net.layer("a").param_count == net.layer("b").param_count == 4 * 3 * 9 + 4
    assert net.param_count == 4 * 3 * 9 + 4


def test_shared_param_shape_mismatch_is_reported() -> None:
    other = (
        'layer { name: "b" type: "Convolution" bottom: "data" top: "b" param { name: "w" }'
        " convolution_param { num_output: 4 kernel_size: 5 } }\n"
    )
    with pytest.raises(ShapeError, match="cannot share param 'w' owned by layer 'a'"):
        load_net(INPUT + conv("a", "data", extra='param { name: "w" }') + other)


def test_shared_lr_mult_must_agree_when_both_given() -> None:
    first = conv("a", "data", extra='param { name: "w" lr_mult: 1 }')
    second = conv("b", "data", extra='param { name: "w" lr_mult: 2 }')
    with pytest.raises(NetDefinitionError, match="different lr_mult"):
        load_net(INPUT + first + second)


def test_batchnorm_statistics_get_lr_mult_zero() -> None:
    net = load_net(INPUT + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n')
    assert [b.lr_mult for b in net.layer("bn").blobs] == [0.0, 0.0, 0.0]
    with pytest.raises(NetDefinitionError, match="statistics are not learned"):
        load_net(INPUT + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" param { lr_mult: 1 } }\n')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (INPUT + conv("c", "dta"), "no earlier layer produces bottom 'dta'; did you mean 'data'?"),
        (INPUT + conv("c", "data") + conv("d", "data", top="c"), "top 'c' is already produced by layer 'c'"),
        (INPUT + conv("a", "b") + conv("b", "a"), "bottom 'b' is produced by layer 'b', which forms a cycle"),
        (INPUT + conv("a", "b") + conv("b", "data"), "which comes later in the file"),
        (INPUT + 'layer { name: "x" type: "Convolutoin" bottom: "data" top: "x" }', "did you mean 'Convolution'?"),
        (INPUT + 'layer { name: "x" bottom: "data" top: "x" }', "the layer has no type"),
        (
            INPUT + 'layer { name: "s" type: "Softmax" bottom: "data" bottom: "data" top: "s" }',
            "wrong number of bottoms",
        ),
        (INPUT + 'layer { name: "f" type: "Flatten" bottom: "data" top: "data" }', "Flatten cannot run in place"),
        (INPUT + conv("c", "data", extra="loss_weight: 1 loss_weight: 2"), "loss_weight must be given once per top"),
        (INPUT + conv("c", "data", extra="propagate_down: true propagate_down: false"), "propagate_down must be given"),
        (
            INPUT + conv("c", "data") + 'layer { name: "p" type: "Pooling" bottom: "c" top: "p"'
            " pooling_param { kernel_size: 2 } }\n" + relu("r", "c"),
            "rewrites blob 'c' in place while layer 'p' also reads it",
        ),
        (
            'layer { name: "py" type: "Python" top: "x" python_param { module: "m" layer: "L" } }',
            "Python layer 'm.L' would run arbitrary code and is refused",
        ),
        ("", "the net defines no layers"),
    ],
)
def test_invalid_graphs_are_reported_with_the_layer(text: str, message: str) -> None:
    with pytest.raises((NetDefinitionError, NetdefErrors)) as caught:
        load_net(text)
    assert message in str(caught.value)


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(NetdefErrors) as caught:
        load_net(INPUT + conv("a", "nothing") + 'layer { name: "b" type: "Nope" bottom: "data" top: "b" }')
    assert len(caught.value.errors) == 2
    assert "2 problems found" in str(caught.value)


def test_errors_carry_file_line_and_layer(tmp_path) -> None:
    path = tmp_path / "net.prototxt"
    path.write_text(INPUT + "\n" + conv("conv9", "missing"))
    with pytest.raises(NetDefinitionError) as caught:
        load_net(path)
    assert str(caught.value).startswith(f"{path}:3:1: layer 'conv9' (Convolution): no earlier layer")


def test_unused_parameter_message_is_a_warning_not_an_error() -> None:
    net = load_net(INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" pooling_param { pool: AVE } }')
    assert any("pooling_param is set but ReLU does not use it" in str(w) for w in net.warnings)


def test_allowed_python_layer_leaves_its_tops_unknown() -> None:
    text = INPUT + 'layer { name: "py" type: "Python" bottom: "data" top: "y" python_param { module: "m" layer: "L" } }'
    net = load_net(text, allow_python=True)
    assert net.blob("y").shape is None


def ip(name: str, bottom: str, extra: str = "") -> str:
    return (
        f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" {extra}'
        " inner_product_param { num_output: 3 } }\n"
    )


def test_splits_are_named_as_caffe_names_them() -> None:
    net = load_net(INPUT + ip("ip1", "data") + ip("ip2", "data") + ip("ip3", "ip1"))
    [split] = net.splits
    assert split.name == "data_data_0_split"
    assert split.tops == ("data_data_0_split_0", "data_data_0_split_1")
    assert [node.name for node, _ in split.readers] == ["ip1", "ip2"]
    assert not split.carries_loss


def test_an_explicit_loss_weight_counts_as_a_reader_and_takes_split_zero() -> None:
    net = load_net(INPUT + ip("ip1", "data", "loss_weight: 2") + ip("ip2", "ip1"))
    [split] = net.splits
    assert split.name == "ip1_ip1_0_split"
    assert split.tops == ("ip1_ip1_0_split_0", "ip1_ip1_0_split_1")
    assert split.carries_loss
    # Default loss weights (of loss layers) are not counted, as in Caffe.
    loss = 'layer { name: "loss" type: "EuclideanLoss" bottom: "ip1" bottom: "ip1" top: "l" }\n'
    assert [s.name for s in load_net(INPUT + ip("ip1", "data") + loss).splits] == ["ip1_ip1_0_split"]


def test_in_place_chains_split_the_last_version() -> None:
    net = load_net(INPUT + conv("c", "data") + relu("r", "c") + ip("a", "c") + ip("b", "c"))
    [split] = net.splits
    assert split.name == "c_r_0_split"
    assert split.value is net.blob("c")


def test_net_summary_is_the_cli_table() -> None:
    net = load_net(INPUT + conv("c", "data"))
    assert net.summary().splitlines()[-1] == f"Total parameters: {4 * 3 * 9 + 4}"
