"""The trained student in the formats a deployment wants: SavedModel, .keras, TFLite float and TFLite int8.

Why these: the paper's motivation is a small network on a phone. TFLite is what runs there; int8 is the
size (about ¼) and the integer kernels of mobile CPUs and NPUs, at some accuracy, which
`benchmarks/export_formats.py` measures against the SavedModel. Every format takes what the SavedModel
takes — float32 RGB pixels in [0, 255], [batch, H, W, 3] — and gives logits; the int8 model quantizes
its input and dequantizes its output itself (float32 in and out), so the caller changes nothing.

int8 needs a representative dataset to calibrate activation ranges: a few hundred training images
(`representative_images`), never test images.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf

from iep.core.files import write_bytes_atomic
from iep.engine.export import EXPORT_SUBDIR, export_classifier

EXPORT_FORMATS = ("savedmodel", "keras", "tflite", "tflite_int8")
FILE_NAMES = {"keras": "student.keras", "tflite": "student.tflite", "tflite_int8": "student_int8.tflite"}
REPRESENTATIVE_IMAGES = 256


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    unknown = sorted(set(formats) - set(EXPORT_FORMATS))
    if unknown:
        raise ValueError(f"TrainConfig.export_formats {unknown} unknown; choose from {list(EXPORT_FORMATS)}")
    return tuple(f for f in EXPORT_FORMATS if f in formats)


def export_path(run_dir: str, fmt: str) -> str:
    return os.path.join(run_dir, EXPORT_SUBDIR if fmt == "savedmodel" else FILE_NAMES[fmt])


def tflite_bytes(saved_model_dir: str, representative: Iterable[np.ndarray] | None = None) -> bytes:
    """A TFLite flatbuffer of the SavedModel's `serve` endpoint; int8 (float32 in/out) with `representative`."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serve"])
    if representative is not None:
        images = list(representative)
        if not images:
            raise ValueError("tflite_int8 needs representative images to calibrate; got none")

        def calibration():
            for image in images:
                yield [np.asarray(image, np.float32)[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def representative_images(batches: Iterable, count: int = REPRESENTATIVE_IMAGES) -> list[np.ndarray]:
    """Up to `count` single images [H, W, 3] from (images, labels) training batches."""
    out: list[np.ndarray] = []
    for images, _ in batches:
        out.extend(np.asarray(images, np.float32))
        if len(out) >= count:
            break
    return out[:count]


def with_builtin_layers(classifier: keras.Model) -> keras.Model:
    """The classifier with our `Standardize` layers as Keras's own `Normalization` (mean, variance = std²), so that
    `keras.saving.load_model("student.keras")` works without importing iep. Same weights, same logits."""
    from iep.nets.layers import Standardize

    def clone(layer):
        if isinstance(layer, Standardize):
            mean, std = (np.asarray(v.numpy(), np.float32) for v in (layer.mean, layer.std))
            return keras.layers.Normalization(axis=-1, mean=mean, variance=std**2, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    if not any(isinstance(layer, Standardize) for layer in classifier.layers):
        return classifier
    copy = keras.models.clone_model(classifier, clone_function=clone)
    for source, target in zip(classifier.layers, copy.layers, strict=True):
        if not isinstance(source, Standardize):
            target.set_weights(source.get_weights())
    return copy


def export_student(
    classifier: keras.Model,
    run_dir: str,
    formats: Sequence[str],
    class_names: Sequence[str] = (),
    representative: Iterable[np.ndarray] | None = None,
) -> dict[str, str]:
    """Writes each format under `run_dir` (the SavedModel first: the TFLite files are converted from it);
    returns {format: path}."""
    formats = check_formats(formats)
    saved_model = export_path(run_dir, "savedmodel")
    if any(f.startswith("tflite") for f in formats) or "savedmodel" in formats:
        export_classifier(classifier, saved_model, tuple(class_names))
    paths = {"savedmodel": saved_model} if "savedmodel" in formats else {}
    if "keras" in formats:
        path = export_path(run_dir, "keras")
        with_builtin_layers(classifier).save(path + ".tmp.keras")
        os.replace(path + ".tmp.keras", path)
        paths["keras"] = path
    if "tflite" in formats:
        paths["tflite"] = export_path(run_dir, "tflite")
        write_bytes_atomic(paths["tflite"], tflite_bytes(saved_model))
    if "tflite_int8" in formats:
        if representative is None:
            raise ValueError("tflite_int8 needs representative training images (representative=...)")
        paths["tflite_int8"] = export_path(run_dir, "tflite_int8")
        write_bytes_atomic(paths["tflite_int8"], tflite_bytes(saved_model, representative))
    return paths


class TFLiteClassifier:
    """Logits of one of our .tflite classifiers on float32 pixels, one image at a time (as on a phone), through
    its `serve` signature (input `images`, output `logits`): a batch [N, H, W, C] gives [N, classes], one image
    [H, W, C] gives [classes]; any other shape is refused, naming the model's."""

    def __init__(self, path: str, threads: int = 1):
        try:  # LiteRT, TFLite's successor, where installed (pip install ai-edge-litert); else TensorFlow's own
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            Interpreter = tf.lite.Interpreter  # noqa: N806
        self.interpreter = Interpreter(model_path=path, num_threads=threads)
        self.runner = self.interpreter.get_signature_runner("serve")
        self.path = path
        self.image_shape = tuple(int(d) for d in self.runner.get_input_details()["images"]["shape"][1:])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        given = np.asarray(images)
        images = given.astype(np.float32)
        # our classifiers standardize pixels in [0, 255] inside: float images all in (0, 1] would score chance
        if given.dtype.kind == "f" and images.size and images.min() >= 0.0 and 0.0 < images.max() <= 1.0:
            raise ValueError(
                f"{self.path} takes pixels in [0, 255] (it standardizes them itself); every pixel given lies in "
                f"[0, {float(images.max()):.3g}]: pass raw pixels (multiply by 255)"
            )
        single = images.shape == self.image_shape
        if single:
            images = images[None]
        if images.shape[1:] != self.image_shape:
            raise ValueError(
                f"{self.path} classifies images {list(self.image_shape)} (or batches [N, "
                f"{', '.join(map(str, self.image_shape))}]); got an array of shape {list(images.shape)}"
            )
        logits = np.stack([self.runner(images=image[None])["logits"][0] for image in images])
        return logits[0] if single else logits


def export_unless_done(classifier: keras.Model, run_dir: str, config, data, already_finished: bool) -> None:
    """A finished run's exports, unless a re-run of a finished command finds them all on disk already."""
    exported = all(os.path.exists(export_path(run_dir, f)) for f in config.export_formats)
    if already_finished and exported:
        print(f"{run_dir} had finished and exported: nothing to redo (Trainer.fit(resume=False) starts over)")
    elif config.export:
        export_run(classifier, run_dir, config, data)


def export_run(classifier: keras.Model, run_dir: str, config, data) -> dict[str, str]:
    """A finished run's exports in `config.export_formats`; tflite_int8 is calibrated on training images (never
    a test split)."""
    formats = config.export_formats
    representative = None
    if "tflite_int8" in formats:
        representative = representative_images(data.train_dataset(0, config.batch_size, 0))
    return export_student(classifier, run_dir, formats, data.class_names, representative)
