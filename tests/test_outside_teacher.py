"""Teachers from outside: a .keras file, a SavedModel, Keras Applications names; taps by name; clear errors."""

from __future__ import annotations

import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import subprocess_env, train_command, train_in_process

WIDTHS = (8, 16, 24)  # unlike wrn-16-1's 16/32/64 points: every method's adapters are exercised


def _small_cnn(classes: int = 10, size: int = 32, stem_stride: int = 1) -> keras.Model:
    """A functional CNN that scales its own pixels (as an outside model does) with BN-ReLU stage outputs."""
    x = keras.Input((size, size, 3), name="pixels")
    y = keras.layers.Rescaling(1 / 255.0, name="scale")(x)
    for i, width in enumerate(WIDTHS):
        stride = stem_stride if i == 0 else 2
        y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", name=f"conv{i}")(y)
        y = keras.layers.BatchNormalization(name=f"bn{i}")(y)
        y = keras.layers.ReLU(name=f"relu{i}")(y)
    y = keras.layers.GlobalAveragePooling2D(name="pool")(y)
    return keras.Model(x, keras.layers.Dense(classes, name="head")(y), name="small_cnn")


@pytest.fixture(scope="module")
def outside_files(tmp_path_factory):
    """The same random network as a .keras file and as a SavedModel whose outputs are a dict."""
    keras.utils.set_random_seed(3)
    root = tmp_path_factory.mktemp("outside")
    model = _small_cnn()
    keras_file = str(root / "small.keras")
    model.save(keras_file)
    outputs = {"logits": model.output, **{f"relu{i}": model.get_layer(f"relu{i}").output for i in range(3)}}
    saved_model = str(root / "small_saved_model")
    keras.Model(model.input, outputs).export(saved_model, verbose=False)
    return model, keras_file, saved_model


def _images(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (4, size, size, 3)).astype(np.float32)


def test_keras_file_teacher_matches_the_model_at_every_view(outside_files):
    from iep.engine.outside_teacher import load_outside_teacher

    model, keras_file, _ = outside_files
    teacher = load_outside_teacher(keras_file, (32, 32, 3))
    assert teacher.tap_names == ("relu0", "relu1", "relu2")  # the stage outputs, found by resolution
    assert [t.shape for t in teacher.tap_specs] == [(32, 32, 8), (16, 16, 16), (8, 8, 24)]
    images = _images()
    out = teacher(images)
    reference = keras.Model(
        model.input,
        {
            "logits": model.output,
            "taps": [model.get_layer(f"relu{i}").output for i in range(3)],
            "preact": [model.get_layer(f"bn{i}").output for i in range(3)],  # before the ReLU
            "stage": [model.get_layer(f"conv{i}").output for i in range(3)],  # before the BN
        },
    )(images)
    np.testing.assert_allclose(out["logits"], reference["logits"], rtol=1e-5, atol=1e-5)
    for view, ref in (("taps", "taps"), ("preact_taps", "preact"), ("stage_outputs", "stage")):
        for ours, theirs in zip(out[view], reference[ref], strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    assert [bn.name for bn in teacher.preact_batch_norms] == ["bn0", "bn1", "bn2"]  # CO's margins
    assert not teacher.model.trainable_weights


def test_saved_model_teacher_taps_its_named_outputs(outside_files):
    from iep.engine.outside_teacher import load_outside_teacher

    model, _, saved_model = outside_files
    teacher = load_outside_teacher(saved_model, (32, 32, 3), taps=["relu2", "relu0"])
    assert teacher.tap_names == ("relu2", "relu0")
    out, images = teacher(_images(1)), _images(1)
    np.testing.assert_allclose(out["logits"], model(images), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        out["taps"][1], keras.Model(model.input, model.get_layer("relu0").output)(images), atol=1e-5
    )
    with pytest.raises(ValueError, match=r"taps=\['nope'\] are not outputs of the SavedModel .*'relu0'"):
        load_outside_teacher(saved_model, (32, 32, 3), taps=["nope"])


def test_preprocessing_reaches_the_teacher_only():
    """A 224-px ImageNet-style model behind the 'torch' scaling: the wrapper resizes and scales raw pixels."""
    import tensorflow as tf

    from iep.engine.outside_teacher import TeacherInput

    images = _images(2, size=40)
    layer = TeacherInput((64, 64), "torch")
    expected = (tf.image.resize(images, (64, 64)).numpy() / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(layer(images), expected, rtol=1e-5, atol=1e-5)
    caffe = TeacherInput(None, "caffe")(images)
    np.testing.assert_allclose(caffe, images[..., ::-1] - [103.939, 116.779, 123.68], atol=1e-4)
    via_keras = TeacherInput(None, "raw", application="resnet50")(images)  # the module's own preprocess_input
    np.testing.assert_allclose(via_keras, caffe, atol=1e-4)
    np.testing.assert_allclose(TeacherInput(None, "symmetric")(images), images / 127.5 - 1.0, atol=1e-5)
    np.testing.assert_allclose(TeacherInput(None, "unit")(images), images / 255.0, atol=1e-6)
    np.testing.assert_allclose(TeacherInput(None, "raw")(images), images, atol=0)


@pytest.mark.parametrize("kind", ["keras_file", "saved_model"])
@pytest.mark.parametrize("method", ["kd", "iep"])
def test_outside_teacher_trains_a_student(outside_files, tmp_path, kind, method):
    import json

    _, keras_file, saved_model = outside_files
    teacher = keras_file if kind == "keras_file" else saved_model
    summary = train_in_process(
        tmp_path, "--epochs=1", "--rate=0.3", f"--distill={method}", f"--teacher={teacher}", "--iep_module_steps=3"
    )
    assert summary["finished"] and np.isfinite(summary["history"][0]["train_loss"])
    losses = {k for k in summary["history"][0] if k.startswith("loss/")}
    assert ({"loss/kd"} if method == "kd" else {"loss/alteration", "loss/interim"}) <= losses
    config = json.load(open(tmp_path / "config.json"))
    assert config["teacher"] == teacher and config["teacher_preprocess"] == "auto"


def test_bad_outside_teachers_are_one_line_errors(outside_files, tmp_path):
    _, keras_file, _ = outside_files
    result = subprocess.run(
        train_command(tmp_path / "run", "--distill=iep", f"--teacher={keras_file}", "--teacher_taps=relu0,bogus"),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert (
        "--teacher_taps=['bogus'] are not layers of --teacher=" in lines[0]
        and "['relu0', 'relu1', 'relu2']" in lines[0]
    )


def test_a_keras_file_that_is_no_zip_is_named_as_such(tmp_path):
    from iep.engine.outside_teacher import load_outside_teacher

    junk = tmp_path / "teacher.keras"
    junk.write_text("garbage")  # Keras itself says "File not found" of it
    with pytest.raises(ValueError, match=r"teacher='.*teacher.keras' is not a .keras archive \(not a zip file\)"):
        load_outside_teacher(str(junk), (32, 32, 3))


def test_offline_download_names_the_cache_file(tmp_path, monkeypatch):
    from iep.engine.outside_teacher import load_outside_teacher

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(ValueError) as error:
        load_outside_teacher("keras:MobileNetV3Small", (32, 32, 3))
    message = str(error.value)
    assert "\n" not in message and "could not be downloaded" in message
    assert os.path.join(str(tmp_path / "keras_home"), "models") in message
    assert "weights_mobilenet_v3_small" in message  # the file to put there
    with pytest.raises(ValueError, match="not a Keras Applications model; known: .*ResNet50"):
        load_outside_teacher("keras:ResNet5O", (32, 32, 3))


def test_logit_methods_refuse_a_teacher_over_other_classes(tmp_path):
    keras.utils.set_random_seed(0)
    five = str(tmp_path / "five.keras")
    _small_cnn(classes=5).save(five)
    with pytest.raises(ValueError, match=r"^kd compares logits, but the teacher has 5 classes and the data 10"):
        train_in_process(tmp_path / "run", "--epochs=1", "--distill=kd", f"--teacher={five}")
    with pytest.raises(ValueError, match=r"--teacher_arch is for teachers of ours"):
        train_in_process(tmp_path / "run2", "--distill=at", f"--teacher={five}", "--teacher_arch=wrn-16-1")
    summary = train_in_process(tmp_path / "run3", "--epochs=1", "--rate=0.2", "--distill=at", f"--teacher={five}")
    assert summary["finished"]  # a feature method needs no common classes


def test_our_runs_can_be_retapped_by_name():
    from iep.nets import build_network

    net = build_network("wrn-16-1", 10)
    retapped = net.retapped(["stage1_block0_add", "final_preact"])
    assert retapped.tap_names == ("stage1_block0_add", "final_preact")
    images = _images(4)
    np.testing.assert_allclose(retapped(images)["taps"][1], net(images)["taps"][2], atol=1e-6)  # shared weights


def _fake_keras_hub(monkeypatch, fail: bool = False):
    """A stand-in for the keras_hub package with the ImageClassifier API our loader uses (backbone with a
    feature pyramid, pooler + output_dense head, preprocessor.image_converter): KerasHub is an optional
    dependency, not installed for the tests."""
    import sys
    import types

    keras.utils.set_random_seed(7)
    backbone = _small_cnn(size=48, stem_stride=2)
    backbone = keras.Model(backbone.input, backbone.get_layer("relu2").output, name="backbone")
    backbone.pyramid_outputs = {"P2": backbone.get_layer("relu1").output, "P3": backbone.get_layer("relu2").output}
    converter = keras.layers.Rescaling(1 / 255.0, name="image_converter")

    class ImageClassifier:
        @staticmethod
        def from_preset(preset):
            if fail:
                raise OSError("Kaggle API unreachable\nmore detail")
            task = types.SimpleNamespace(backbone=backbone, pooler=keras.layers.GlobalAveragePooling2D())
            task.output_dense = keras.layers.Dense(4, name="predictions")
            task.preprocessor = types.SimpleNamespace(image_converter=converter)
            return task

    module = types.ModuleType("keras_hub")
    module.models = types.SimpleNamespace(ImageClassifier=ImageClassifier)
    monkeypatch.setitem(sys.modules, "keras_hub", module)
    return backbone, converter


def test_kerashub_preset_taps_the_feature_pyramid(monkeypatch):
    from iep.engine.outside_teacher import load_outside_teacher

    backbone, converter = _fake_keras_hub(monkeypatch)
    teacher = load_outside_teacher("kerashub:tiny_imagenet_preset", (32, 32, 3))
    assert teacher.tap_names == ("relu1", "relu2") and teacher.num_classes == 4
    images = _images(5)
    expected = keras.Model(backbone.input, backbone.pyramid_outputs["P3"])(
        converter(keras.layers.Resizing(48, 48)(images))
    )
    np.testing.assert_allclose(teacher(images)["taps"][1], expected, rtol=1e-5, atol=1e-5)
    _fake_keras_hub(monkeypatch, fail=True)
    with pytest.raises(
        ValueError, match=r"teacher='kerashub:x': the preset could not be loaded \(OSError: Kaggle API unreachable\)"
    ):
        load_outside_teacher("kerashub:x", (32, 32, 3))


def test_kerashub_without_the_package_names_the_install(monkeypatch):
    import sys

    from iep.engine.outside_teacher import load_outside_teacher

    monkeypatch.setitem(sys.modules, "keras_hub", None)  # import fails as when it is not installed
    with pytest.raises(ValueError, match="needs KerasHub: pip install keras-hub"):
        load_outside_teacher("kerashub:resnet_18_imagenet", (32, 32, 3))


def test_adapters_pass_gradients_when_they_shrink_a_point():
    """An ImageNet teacher's 7×7 point against a student's 8×8 one: the resize must be differentiable."""
    import tensorflow as tf

    from iep.procedure.adapters import TapAdapter

    adapter = TapAdapter((8, 8, 16), (7, 7, 24))
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 8, 8, 16)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = adapter(x, training=True)
        loss = tf.reduce_sum(y**2)
    grad = tape.gradient(loss, x)
    assert y.shape == (2, 7, 7, 24) and np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).min() > 0


def test_tap_model_wraps_a_users_own_keras_model():
    """iep.tap_model: a user's functional model as a teacher (frozen) or a student (trainable), tapped at its
    stage outputs by default or at named layers; refused with a message when it cannot be tapped."""
    import iep

    def users_model():
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="block1")(x)
        x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="block2")(x)
        logits = keras.layers.Dense(10, name="head")(keras.layers.GlobalAveragePooling2D()(x))
        return keras.Model(inputs, logits, name="mine")

    model = users_model()
    teacher = iep.tap_model(model)
    assert teacher.num_classes == 10 and [s.shape for s in teacher.tap_specs] == [(16, 16, 8), (8, 8, 16)]
    assert not teacher.model.trainable_variables
    images = tf.random.uniform((2, 32, 32, 3), 0, 255)
    np.testing.assert_allclose(teacher(images)["logits"], model(images), rtol=1e-5, atol=1e-5)
    student = iep.tap_model(users_model(), taps=["block2"], trainable=True)
    assert len(student.tap_specs) == 1 and student.model.trainable_variables
    distiller = iep.build_distiller("rkd", teacher, student)
    assert distiller.losses(images, tf.constant([0, 1]), student(images), 0)["rkd"] >= 0
    with pytest.raises(ValueError, match="no fixed input size; give input_shape"):
        dynamic = keras.Input((None, None, 3))
        pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(dynamic))
        iep.tap_model(keras.Model(dynamic, keras.layers.Dense(2)(pooled)))
    with pytest.raises(ValueError, match=r"taps=\['block9'\] are not layers of tap_model: 'mine'"):
        iep.tap_model(users_model(), taps=["block9"])
    with pytest.raises(TypeError, match=r"^tap_model: model must be a keras.Model, got str$"):
        iep.tap_model("resnet50")
    # one name alone is one tap, not its letters ("block2" was read as taps b, l, o, ...)
    assert [t.name for t in iep.tap_model(users_model(), taps="block2").tap_specs] == ["block2"]

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.conv, self.head = keras.layers.Conv2D(4, 3), keras.layers.Dense(10)

        def call(self, x):
            return self.head(keras.layers.GlobalAveragePooling2D()(self.conv(x)))

    with pytest.raises(ValueError, match="'sub' is a subclassed .or unbuilt. keras.Model; tap_model reads"):
        iep.tap_model(Subclassed(), input_shape=(32, 32, 3))
