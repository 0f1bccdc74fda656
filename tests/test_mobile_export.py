"""--export_formats: the student as SavedModel, .keras, TFLite float and int8, each checked against the
SavedModel on the same images."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from iep.engine.mobile_export import TFLiteClassifier, check_formats
from tests.helpers import train_in_process


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tmp_path_factory.mktemp("mobile") / "run"
    train_in_process(
        run, "--arch=resnet8", "--epochs=2", "--export=true", "--export_formats=savedmodel,keras,tflite,tflite_int8"
    )
    return run


def _images():
    from iep.datasets import DataConfig, build_pipeline

    data = build_pipeline(DataConfig("digits", rate=0.5))
    images, labels = next(iter(data.eval_dataset("test", 64)))
    return images.numpy(), labels.numpy()


def test_every_format_is_written_and_agrees_with_the_saved_model(exported):
    for name in ("export/saved_model.pb", "student.keras", "student.tflite", "student_int8.tflite"):
        assert os.path.exists(exported / name), name
    images, _ = _images()
    loaded = tf.saved_model.load(str(exported / "export"))  # kept: its variables live as long as it does
    reference = loaded.serve(tf.constant(images))["logits"].numpy()
    from_keras = keras.saving.load_model(str(exported / "student.keras"))(images).numpy()
    np.testing.assert_allclose(from_keras, reference, rtol=1e-4, atol=1e-4)
    # a plain Keras program loads it too: no layer of ours in the file (Standardize became Normalization)
    import subprocess
    import sys

    np.save(exported / "images.npy", images[:4])
    code = (
        "import sys, numpy as np, keras; "
        f"m = keras.saving.load_model({str(exported / 'student.keras')!r}); "
        f"print(np.abs(m(np.load({str(exported / 'images.npy')!r})).numpy()).sum()); "
        "assert not [k for k in sys.modules if k == 'iep' or k.startswith('iep.')]"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split()[-1]) == pytest.approx(float(np.abs(reference[:4]).sum()), rel=1e-3)
    tflite = TFLiteClassifier(str(exported / "student.tflite"))
    np.testing.assert_allclose(tflite(images), reference, atol=1e-3)
    # one image [H, W, C] is one image (it came back as a batch of H rows), any other shape is refused
    np.testing.assert_allclose(tflite(images[0]), reference[0], atol=1e-3)
    with pytest.raises(ValueError, match=r"classifies images \[32, 32, 3\] .* got an array of shape \[32, 3\]"):
        tflite(images[0, 0])
    with pytest.raises(ValueError, match=r"takes pixels in \[0, 255\] .*\(multiply by 255\)"):  # chance, in silence
        tflite(images / 255.0)
    quantized = TFLiteClassifier(str(exported / "student_int8.tflite"))(images)
    assert np.mean(quantized.argmax(1) == reference.argmax(1)) >= 0.9  # int8 keeps nearly every decision
    assert np.abs(quantized - reference).max() < 0.2 * np.abs(reference).max() + 0.5
    # int8 weights: about a quarter of the float file (the graph's own bytes take the rest)
    assert os.path.getsize(exported / "student_int8.tflite") < 0.5 * os.path.getsize(exported / "student.tflite")


def test_unknown_formats_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"TrainConfig.export_formats \['onnx'\] unknown; choose from"):
        check_formats(["tflite", "onnx"])
    with pytest.raises(ValueError, match=r"--export_formats \['onnx'\] unknown"):
        train_in_process(tmp_path / "run", "--epochs=1", "--export=true", "--export_formats=onnx")
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_a_full_disk_at_export_is_one_error_and_leaves_no_half_written_folder(tmp_path, monkeypatch):
    from iep.engine.export import export_classifier
    from iep.nets import build_network

    def fill_the_disk(self, path, **kwargs):
        os.makedirs(os.path.join(path, "variables"))
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device\nmore lines")

    # ExportArchive() builds its backend's subclass (Keras 3.10+): patch the class it really is
    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", fill_the_disk)
    target = tmp_path / "export" / "savedmodel"
    with pytest.raises(ValueError, match=rf"cannot write the SavedModel {target} \(No space left on device\)$"):
        export_classifier(build_network("resnet8", 10).classifier, str(target))
    assert not os.path.exists(str(target) + ".tmp") and not target.exists()
