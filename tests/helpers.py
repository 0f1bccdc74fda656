"""Small data makers for tests: real encoded images on disk in our supported layouts."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf


def make_image(rng: np.random.Generator, size: int, label: int) -> np.ndarray:
    """A class-dependent colour blob plus noise, so a network can tell classes apart."""
    image = rng.integers(0, 60, size=(size, size, 3)).astype(np.int32)
    image[..., label % 3] += 120 + 30 * (label // 3)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_image_folder(root: str, classes=("ant", "bee", "cat"), per_class=None, size: int = 12, seed: int = 0) -> str:
    per_class = per_class or {"train": 6, "test": 2}
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label, name in enumerate(classes):
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
            for i in range(count):
                png = tf.io.encode_png(make_image(rng, size, label)).numpy()
                with open(os.path.join(root, split, name, f"{i:03d}.png"), "wb") as f:
                    f.write(png)
    return root


def write_tfrecords(
    root: str, labels_by_split: dict[str, list[int]], classes=None, size: int = 12, seed: int = 0
) -> str:
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, labels in labels_by_split.items():
        with tf.io.TFRecordWriter(os.path.join(root, f"{split}-00000-of-00001.tfrecord")) as writer:
            for label in labels:
                encoded = tf.io.encode_jpeg(make_image(rng, size, label)).numpy()
                feature = {
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
                    "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"jpeg"])),
                    "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    if classes is not None:
        with open(os.path.join(root, "classes.txt"), "w") as f:
            f.write("\n".join(classes) + "\n")
    return root
