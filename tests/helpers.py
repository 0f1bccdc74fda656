"""Small data makers for tests: real encoded images on disk in our supported layouts."""

from __future__ import annotations

import os
from pathlib import Path

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


def train_command(run_dir, *flags: str) -> list[str]:
    """`python train.py` on a digits subset, no progress bar or export, plus `flags`."""
    import sys

    from tests.conftest import ROOT

    return [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--dataset=digits",
        "--rate=0.5",
        "--arch=wrn-16-1",
        "--batch_size=64",
        "--progress=false",
        "--export=false",
        f"--run_dir={run_dir}",
        *flags,
    ]


def train_in_process(run_dir, *flags: str) -> dict:
    """The same run as `train_command`, in this process (no second TensorFlow start-up): for fixtures."""
    return train_with_flags(*train_command(run_dir, *flags)[2:])


def train_with_flags(*argv: str) -> dict:
    """train.py's run for `argv` in this process; a refusal says what the command says (its flags' words)."""
    from absl import flags as absl_flags
    from absl.testing import flagsaver

    from iep.apps import train
    from iep.apps.vocabulary import in_flags

    with flagsaver.flagsaver():
        absl_flags.FLAGS.unparse_flags()  # every flag not in argv at its default, whatever ran before
        absl_flags.FLAGS(["train.py", *argv])
        try:
            return train._train()
        except ValueError as error:  # run_or_exit translates the library's words the same way
            raise type(error)(in_flags(str(error), set(absl_flags.FLAGS))) from None


def subprocess_env() -> dict:
    from tests.conftest import ROOT

    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def kill_after_checkpoint(command: list[str], run_dir, number: int) -> None:
    """Starts `command`, SIGKILLs it as soon as checkpoint `epoch-<number>` is the latest one, and
    asserts it was still there (not already past it), so a resume test cannot pass vacuously."""
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = os.path.join(run_dir, "checkpoints", "checkpoint")  # swapped in by rename once a save is complete
    marker = f'model_checkpoint_path: "epoch-{number}"'
    deadline = time.time() + 600
    while not (os.path.exists(state) and marker in open(state).read()):
        assert process.poll() is None and time.time() < deadline, "run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert marker in open(state).read(), f"killed too late: the run had gone past checkpoint {number}"


def kill_and_resume(tmp_path, flags: tuple[str, ...], kill_after: int, capsys) -> tuple[Path, Path, str]:
    """The run of `flags` twice: uninterrupted, and by a child SIGKILLed right after checkpoint `kill_after`,
    then resumed. Only the killed run needs a child process; the other two run here. Returns both run
    directories (uninterrupted, killed) and what the resumed run printed."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train_in_process(straight, *flags)
    kill_after_checkpoint(train_command(killed, *flags), killed, kill_after)
    capsys.readouterr()
    train_in_process(killed, *flags)
    return straight, killed, capsys.readouterr().out


def checkpoint_values(run_dir) -> tuple[str, dict[str, np.ndarray]]:
    """The newest checkpoint's prefix and every saved value (bookkeeping entries excluded)."""
    prefix = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    reader = tf.train.load_checkpoint(prefix)
    return prefix, {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(prefix) if not n.startswith("_")}


def frozen_teacher_and_student(data, teacher_arch: str, student_arch: str):
    """A frozen, untrained teacher and a student for `data` (seeded): enough to exercise a method's steps."""
    import keras

    from iep.nets import build_network

    keras.utils.set_random_seed(0)
    teacher = build_network(teacher_arch, data.num_classes, data.input_shape, data.mean, data.std, name="teacher")
    teacher.model.trainable = False
    student = build_network(student_arch, data.num_classes, data.input_shape, data.mean, data.std, name="student")
    return teacher, student


class IndexedLabels:
    """Just what CRD asks of a run's data: each training image's label, in index order."""

    def __init__(self, labels):
        self.labels = np.asarray(labels)

    def index_labels(self) -> np.ndarray:
        return self.labels


def tiny_user_data(rng: np.random.Generator):
    """64 random 32×32 images of 4 classes as `UserData` (the same images as its test split), unaugmented."""
    from iep.datasets.user_data import UserData

    labels = np.arange(64) % 4
    images = rng.integers(0, 255, size=(64, 32, 32, 3)).astype(np.uint8)
    return UserData((images, labels), splits={"test": (images, labels)}, augment_images=False)
