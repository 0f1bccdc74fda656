import keras
import numpy as np
import pytest
import tensorflow as tf

from iep.nets import build_network, default_dropout, parse_arch
from iep.op_utils import decayed_variables


def trainable_count(network) -> int:
    return int(sum(np.prod(v.shape) for v in network.model.trainable_variables))


# Published WRN sizes (Zagoruyko & Komodakis 2016; KD papers) are for 10 classes.
PUBLISHED_WRN_MILLIONS = {
    "wrn-16-1": 0.17,
    "wrn-16-2": 0.69,
    "wrn-16-4": 2.75,
    "wrn-40-1": 0.56,
    "wrn-40-2": 2.2,
    "wrn-40-4": 8.9,
}
# Our exact trainable counts with 100 classes (conv + BN scale/offset + classifier).
WRN_100_CLASSES = {
    "wrn-16-1": 180_916,
    "wrn-16-2": 703_284,
    "wrn-16-4": 2_772_020,
    "wrn-40-1": 569_780,
    "wrn-40-2": 2_255_156,
    "wrn-40-4": 8_972_340,
}


@pytest.mark.parametrize("arch", sorted(PUBLISHED_WRN_MILLIONS))
def test_wrn_parameter_counts_match_published(arch):
    published = PUBLISHED_WRN_MILLIONS[arch]
    last_digit = 0.01 if published < 1 or arch == "wrn-16-4" else 0.1  # papers round or truncate
    ten_classes = trainable_count(build_network(arch, 10))
    assert abs(ten_classes / 1e6 - published) < last_digit, ten_classes
    hundred = trainable_count(build_network(arch, 100))
    assert hundred == WRN_100_CLASSES[arch]
    width = int(arch.split("-")[-1])
    assert hundred - ten_classes == 90 * (64 * width + 1)  # only the classifier grows


def test_wrn_16_4_and_40_4_sizes_from_the_issue():
    assert round(trainable_count(build_network("wrn-16-4", 100)) / 1e6, 2) == 2.77
    assert round(trainable_count(build_network("wrn-40-4", 100)) / 1e6, 1) == 9.0


def _conv_bn(cin, cout, k):
    return cin * cout * k * k + 2 * cout


def test_resnet_parameter_count_matches_formula():
    n, total, cin = 3, _conv_bn(3, 16, 3), 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(n):
            total += _conv_bn(cin, cout, 3) + _conv_bn(cout, cout, 3)
            if block == 0 and (stride != 1 or cin != cout):
                total += _conv_bn(cin, cout, 1)
            cin = cout
    total += 64 * 100 + 100
    assert trainable_count(build_network("resnet20", 100)) == total


def test_vgg_parameter_count_matches_formula():
    total, cin = 0, 3
    for widths in ((64,), (128,), (256,), (512,), (512,)):
        for width in widths:
            total += _conv_bn(cin, width, 3)
            cin = width
    total += 512 * 100 + 100
    assert trainable_count(build_network("vgg8", 100)) == total


def test_mobilenet_v2_matches_keras_applications():
    reference = keras.applications.MobileNetV2(weights=None, classes=100, input_shape=(32, 32, 3))
    ours = build_network("mobilenetv2", 100).classifier
    assert ours.count_params() - 6 == reference.count_params()  # +6: our standardization mean/std


TAP_SHAPES = {
    "wrn-16-4": [(32, 32, 64), (16, 16, 128), (8, 8, 256)],
    "wrn-40-4": [(32, 32, 64), (16, 16, 128), (8, 8, 256)],
    "wrn-16-1": [(32, 32, 16), (16, 16, 32), (8, 8, 64)],
    "resnet20": [(32, 32, 16), (16, 16, 32), (8, 8, 64)],
    "resnet8": [(32, 32, 16), (16, 16, 32), (8, 8, 64)],
    "mobilenetv2": [(32, 32, 24), (16, 16, 32), (8, 8, 1280)],
    "vgg8": [(32, 32, 64), (16, 16, 128), (8, 8, 256)],
    "vgg13": [(32, 32, 64), (16, 16, 128), (8, 8, 256)],
}


@pytest.mark.parametrize("arch", sorted(TAP_SHAPES))
def test_tap_shapes_and_outputs(arch):
    network = build_network(arch, 7)
    assert [spec.shape for spec in network.tap_specs] == TAP_SHAPES[arch]
    images = tf.random.uniform((2, 32, 32, 3), 0, 255, seed=1)
    outputs = network(images)
    assert outputs["logits"].shape == (2, 7)
    assert [tuple(t.shape[1:]) for t in outputs["taps"]] == TAP_SHAPES[arch]
    for spec in network.tap_specs:  # names let a KD method query the layer
        assert tuple(network.model.get_layer(spec.name).output.shape[1:]) == spec.shape


def test_wrn_taps_are_the_stage_preactivations():
    network = build_network("wrn-16-4", 10)
    assert network.tap_names == ("stage2_block0_preact", "stage3_block0_preact", "final_preact")


def test_large_input_uses_strided_7x7_stem():
    network = build_network("wrn-16-1", 200, input_shape=(224, 224, 3))
    assert network.model.get_layer("stem_conv").kernel.shape == (7, 7, 3, 16)
    assert network.tap_specs[0].shape == (112, 112, 16)


def test_classifier_shares_weights_and_carries_no_taps():
    network = build_network("resnet8", 10)
    images = tf.random.uniform((3, 32, 32, 3), 0, 255, seed=2)
    np.testing.assert_allclose(network.classifier(images).numpy(), network(images)["logits"].numpy(), rtol=1e-6)
    assert len(network.classifier.outputs) == 1
    assert {id(v) for v in network.classifier.weights} == {id(v) for v in network.model.weights}


def test_standardize_layer_uses_given_statistics():
    network = build_network("resnet8", 10, mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0))
    layer = network.model.get_layer("standardize")
    x = np.full((1, 32, 32, 3), 50.0, np.float32)
    np.testing.assert_allclose(layer(x).numpy()[0, 0, 0], [20.0, 7.5, 4.0])
    assert not layer.trainable_weights


def test_initialization_and_bn_settings():
    network = build_network("wrn-16-1", 10)
    bn = network.model.get_layer("final_bn")
    assert bn.momentum == 0.9 and bn.epsilon == 1e-5
    conv = network.model.get_layer("stage1_block0_conv0")
    assert conv.use_bias is False
    init = conv.kernel_initializer.get_config()
    assert (init["scale"], init["mode"], init["distribution"]) == (2.0, "fan_out", "truncated_normal")
    assert np.all(network.model.get_layer("logits").bias.numpy() == 0)


def test_dropout_defaults_follow_the_original():
    assert default_dropout("wrn-16-4", 32) == 0.3
    assert default_dropout("wrn-16-4", 224) == 0.0
    assert default_dropout("resnet20", 32) == 0.0
    rates = [layer.rate for layer in build_network("wrn-16-1", 10).model.layers if "dropout" in layer.name]
    assert rates == [0.3] * 6
    rates = [layer.rate for layer in build_network("wrn-16-1", 10, dropout=0.0).model.layers if "dropout" in layer.name]
    assert rates == [0.0] * 6


def test_checkpoint_of_a_dropout_net_restores_into_a_dropout_free_one(tmp_path):
    from iep.engine.checkpointing import restore_model_weights

    trained = build_network("wrn-16-1", 10, dropout=0.3)
    for variable in trained.model.weights:  # make every weight distinguishable
        variable.assign(tf.random.normal(variable.shape, seed=len(variable.path)))
    prefix = tf.train.Checkpoint(model=trained.model).save(str(tmp_path / "ckpt"))
    rebuilt = build_network("wrn-16-1", 10, dropout=0.0, name="teacher")
    restore_model_weights(rebuilt.model, prefix)
    images = tf.random.uniform((2, 32, 32, 3), 0, 255, seed=3)
    np.testing.assert_allclose(rebuilt.classifier(images).numpy(), trained.classifier(images).numpy(), rtol=1e-5)


def test_weight_decay_covers_kernels_only():
    network = build_network("mobilenetv2-0.5", 10)
    kernel_layers = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    kernels = {id(layer.kernel) for layer in network.model.layers if isinstance(layer, kernel_layers)}
    assert any(isinstance(layer, keras.layers.DepthwiseConv2D) for layer in network.model.layers)
    assert {id(v) for v in decayed_variables(network.model.trainable_variables)} == kernels
    not_decayed = {v.name for v in network.model.trainable_variables if id(v) not in kernels}
    assert not_decayed == {"gamma", "beta", "bias"}


@pytest.mark.parametrize(
    "arch",
    [
        "wrn-15-2",
        "wrn-16-0",
        "resnet21",
        "resnet18-imagenet7",
        "resnet50-imagenet",
        "vgg7",
        "densenet",
        "wrn-16",
        "mobilenetv2-0",
    ],
)
def test_unknown_architecture_is_a_clear_error(arch):
    with pytest.raises(ValueError, match=r"(architecture|depth|width)"):
        build_network(arch, 10)
    with pytest.raises(ValueError, match=r"(architecture|depth|width)"):
        parse_arch(arch)  # the cheap check train.py runs before any data is read


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"arch": 16}, TypeError, r"^arch must be a name such as 'wrn-16-1'; got int$"),
        ({"num_classes": "10"}, TypeError, r"^build_network: num_classes must be an int, got '10'$"),
        ({"num_classes": True}, TypeError, r"^build_network: num_classes must be an int, got True$"),
        ({"input_shape": (32, 32)}, ValueError, r"^build_network: input_shape must be \(height, width, channels\)"),
        ({"input_shape": (32, 0, 3)}, ValueError, r"^build_network: input_shape must be .* got \(32, 0, 3\)$"),
        ({"mean": (0.0, 0.0)}, ValueError, r"^build_network: mean must be 3 finite numbers .* got \(0.0, 0.0\)$"),
        ({"std": (1.0, 0.0, 1.0)}, ValueError, r"^build_network: std must be > 0 on every channel"),
        ({"std": "abc"}, ValueError, r"^build_network: std must be numbers, one per channel; got 'abc'$"),
        ({"dropout": "0.3"}, ValueError, r"^dropout must be in \[0, 1\), got '0.3'$"),
    ],
)
def test_build_network_names_the_argument_at_fault(kwargs, error, message):
    arguments = {"arch": "resnet8", "num_classes": 10, **kwargs}
    with pytest.raises(error, match=message):
        build_network(**arguments)


def test_standardize_layer_refuses_a_std_of_zero():
    """The layer and build_network share one check (nets.layers.positive_std); each names itself."""
    from nets.layers import Standardize

    with pytest.raises(ValueError, match=r"^Standardize: std must be > 0 on every channel, got \[1.0, 0.0, -2.0\]$"):
        Standardize(std=(1, 0, -2))
    # registered for .keras files under its own name (the check's function beside it is not a Keras object)
    assert keras.saving.get_registered_object("iep>Standardize") is Standardize
    assert keras.saving.get_registered_object("iep>positive_std") is None


def test_one_channel_input_needs_no_statistics():
    """mean/std default to no standardization on however many channels input_shape has."""
    network = build_network("resnet8", 10, input_shape=(28, 28, 1))
    layer = network.model.get_layer("standardize")
    np.testing.assert_array_equal(layer.mean.numpy(), [0.0])
    np.testing.assert_array_equal(layer.std.numpy(), [1.0])
    assert network.classifier(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)


def test_checkpoint_of_another_network_is_refused_without_burying_the_error(tmp_path, caplog):
    """The mismatch is named, and the half-done restore's hundreds of warnings do not bury the error."""
    import gc
    import logging

    from iep.engine.checkpointing import restore_model_weights

    prefix = tf.train.Checkpoint(model=build_network("wrn-16-2", 10).model).save(str(tmp_path / "ckpt"))
    wider = build_network("wrn-16-4", 10, name="teacher")  # the same variables, other widths
    before = [v.numpy().copy() for v in wider.model.weights]
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(caplog.handler)
    try:
        with pytest.raises(ValueError, match=r"does not match the 'teacher' network: .*incompatible tensor with shape"):
            restore_model_weights(wider.model, prefix)
        gc.collect()
    finally:
        tf_logger.removeHandler(caplog.handler)
    assert "unrestored values" not in caplog.text
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, wider.model.weights, strict=True))
    with pytest.raises(ValueError, match=r"does not match the 'model' network"):
        restore_model_weights(build_network("wrn-16-1", 10, name="model").model, prefix)  # no projection shortcut
