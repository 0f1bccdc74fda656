"""Data a user already holds — NumPy arrays or `tf.data` datasets of (image, label) — served to the loop.

`Trainer` reads data through a small interface (`steps_per_epoch`, `train_dataset(epoch, ...)`,
`eval_dataset(split, ...)`, `num_train`, `class_names`); `ImagePipeline` implements it for the data sets we
load, `UserData` for the user's own. Why a class and not a bare dataset: resume is exact only if every
epoch is a pure function of (seed, epoch), so the order is reshuffled here with a seed, never by the
dataset itself. Images are pixels in [0, 255] (our networks standardize inside; a user's own model gets
exactly what it is given, cast to float32); float images in [0, 1] get a warning, since a teacher of ours
expects [0, 255].

What happens to a user's `tf.data` pipeline:
* its own random ops (augmentation in its `map`) run again every epoch: it is not cached (`cache=True`
  caches it after the first pass, freezing those draws, for a pipeline that is costly and deterministic).
  An epoch is then a pure function of (seed, epoch) only if the pipeline's own ops are (seeded);
* its batching is undone: the loop batches by `TrainConfig.batch_size` with full batches only
  (`drop_remainder`, the remainder differs every epoch); a batch size other than the pipeline's own is
  said once;
* labels are class indices (integers from 0), [N] or [N, 1], or one-hot [N, K] rows (read by argmax); a
  fractional or negative label is refused, not cast; so is an image with a NaN or infinite pixel.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from iep.core.fields import check_bools, check_numbers
from iep.datasets import augment
from iep.datasets.sources import DataError, dataset_labels, steps_per_epoch

_AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER_RANGE = {"shuffle_buffer": (lambda v: v >= 1, ">= 1 (examples held for shuffling)")}
EXPECTED = "a tf.data.Dataset of (image, label) pairs (batched or not) or an (images, labels) pair of arrays"


def class_indices(labels: Any, name: str, num_classes: int | None = None) -> np.ndarray:
    """Labels as int32 class indices [N], from indices [N] / [N, 1] or one-hot rows [N, K] (Keras's
    `to_categorical`). Refused, by `name`: any other shape, a fractional or negative label (cast to int32, 2.5
    would silently become class 2), and a label at or past `num_classes` (a traceback deep in the loss)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        if not (np.isin(labels, (0, 1)).all() and (labels.sum(1) == 1).all()):
            raise DataError(
                f"{name}: labels {labels.shape} are neither class indices [N] / [N, 1] nor one-hot rows [N, K]"
            )
        if num_classes is not None and labels.shape[1] != num_classes:
            raise DataError(f"{name}: one-hot rows of {labels.shape[1]} classes, but the student has {num_classes}")
        labels = labels.argmax(1)
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1:
        raise DataError(f"{name}: expected labels [N], [N, 1] or one-hot [N, K]; got {labels.shape}")
    wrong = labels[(labels < 0) | (labels != np.floor(labels))] if labels.dtype.kind in "fiu" else labels
    if wrong.size:
        raise DataError(f"{name}: labels must be class indices 0, 1, ...; got {wrong[:5].tolist()}")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise DataError(
            f"{name}: label {int(labels.max())} is past the student's {num_classes} classes (indices 0 to "
            f"{num_classes - 1})"
        )
    return labels.astype(np.int32)


def pixel_scale_problem(images: Any, student_mean: Sequence[float] | None) -> str | None:
    """Why `images` cannot be what the student expects, or None: a student that standardizes pixels in
    [0, 255] (its channel means above 2) given float images all in [0, 1] would score chance without a word."""
    images = np.asarray(images)
    if student_mean is None or max(student_mean) <= 2.0 or images.dtype.kind != "f" or images.size == 0:
        return None
    if images.min() >= 0.0 and images.max() <= 1.0:
        return (
            f"every pixel lies in [0, {float(images.max()):.3g}], but the student standardizes pixels in [0, 255] "
            f"(its channel means {[round(float(m), 1) for m in student_mean]}): pass raw pixels (multiply by 255)"
        )
    return None


def _as_dataset(value: Any, name: str) -> tuple[tf.data.Dataset, int | None]:
    """One split as an unbatched dataset of (image [H, W, C], int32 label), and the batch size it came in."""
    if isinstance(value, tf.data.Dataset):
        spec = value.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(s, tf.TensorSpec) for s in spec)):
            raise DataError(f"{name}: expected {EXPECTED}; its elements are {spec}")
        images, labels = spec
        batched = images.shape.rank == 4
        # one label per image: [B] or [B, 1] for batches (keras.datasets' labels are [N, 1]), [] or [1] alone;
        # [B, K] / [K] (K > 1): one-hot rows
        label_dims = labels.shape.as_list()[1:] if batched else labels.shape.as_list()
        one_hot = len(label_dims) == 1 and label_dims[0] is not None and label_dims[0] > 1
        if images.shape.rank not in (3, 4) or not (label_dims in ([], [1]) or one_hot):
            raise DataError(
                f"{name}: images must be [H, W, C] (or batches [B, H, W, C]) with one label each (a class index "
                f"or a one-hot row); got images {images.shape} and labels {labels.shape}"
            )

        def index(y):
            y = tf.argmax(y, axis=-1, output_type=tf.int32) if one_hot else tf.cast(y, tf.int32)
            return tf.reshape(y, [-1] if batched else [])

        batch_size = None
        if batched:
            first = next(iter(value.take(1)), None)
            batch_size = int(first[0].shape[0]) if first is not None else None
        value = value.map(lambda x, y: (x, index(y)))
        return (value.unbatch() if batched else value), batch_size
    if isinstance(value, Sequence) and len(value) == 2:
        images, labels = np.asarray(value[0]), class_indices(value[1], name)
        if images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{name}: expected images [N, H, W, C] and N labels ([N], [N, 1] or one-hot [N, K]); got images "
                f"{images.shape}, labels {np.asarray(value[1]).shape}"
            )
        return tf.data.Dataset.from_tensor_slices((images, labels)), None
    raise DataError(f"{name}: expected {EXPECTED}; got {type(value).__name__}")


def _count_classes_and_range(dataset: tf.data.Dataset) -> tuple[int, int, int, float, int]:
    """(number of examples, smallest label, largest label + 1, largest finite pixel value, number of images with
    a NaN or infinite pixel) in one pass."""
    count, bottom, top, brightest, damaged = dataset.reduce(
        (
            tf.constant(0, tf.int64),
            tf.constant(0, tf.int32),
            tf.constant(-1, tf.int32),
            tf.constant(-np.inf, tf.float64),
            tf.constant(0, tf.int64),
        ),
        lambda state, example: _add_example(state, tf.cast(example[0], tf.float64), example[1]),
    )
    return int(count), int(bottom), int(top) + 1, float(brightest), int(damaged)


def _add_example(state: tuple, pixels: tf.Tensor, label: tf.Tensor) -> tuple:
    finite = tf.math.is_finite(pixels)
    return (
        state[0] + 1,
        tf.minimum(state[1], label),
        tf.maximum(state[2], label),
        tf.maximum(state[3], tf.reduce_max(tf.where(finite, pixels, -np.inf))),
        state[4] + tf.cast(tf.logical_not(tf.reduce_all(finite)), tf.int64),
    )


def refuse_non_finite(damaged: int, count: int, name: str) -> None:
    """A DataError if `damaged` of `count` images hold a NaN or infinite pixel: one would reach the loss as a NaN
    and stop training epochs later, far from its cause."""
    if damaged:
        raise DataError(f"{name}: {damaged} of {count} images hold a NaN or infinite pixel; expected finite pixels")


class UserData:
    """The loop's data from a user's arrays or datasets: seeded epochs of `train`, batches of every split."""

    def __init__(
        self,
        train: Any,
        labels: Any = None,
        *,
        splits: Mapping[str, Any] | None = None,
        class_names: Sequence[str] | None = None,
        augment_images: bool = True,
        shuffle_buffer: int = 10_000,
        cache: bool | None = None,
    ):
        """`train`: a `tf.data.Dataset` of (image, label) pairs, or images with `labels` beside them (or as one
        (images, labels) pair). `splits`: evaluation splits by name, e.g. {"test": (x_test, y_test)}.
        `augment_images`: random flips and 4-pixel shifts per batch (the CIFAR recipe), as our pipeline applies to
        small images. `cache`: keep the decoded examples after the first pass; default: for arrays (always the
        same), not for a `tf.data` pipeline (its own random ops then draw anew every epoch; see the module
        docstring)."""
        if labels is not None:  # UserData(x, y), as keras's fit(x, y) takes them
            if isinstance(train, tf.data.Dataset):
                raise DataError("train data: labels are given beside a tf.data.Dataset, whose elements hold their own")
            train = (train, labels)
        settings = types.SimpleNamespace(augment_images=augment_images, shuffle_buffer=shuffle_buffer, cache=cache)
        check_bools("UserData", settings, ("augment_images",) if cache is None else ("augment_images", "cache"))
        check_numbers("UserData", settings, SHUFFLE_BUFFER_RANGE, integers=("shuffle_buffer",))
        if isinstance(class_names, str):  # a sequence of letters, one per class
            raise TypeError(f"UserData.class_names must be a sequence of names, one per class; got {class_names!r}")
        if splits is not None and not isinstance(splits, Mapping):
            raise DataError(
                "splits: expected evaluation splits by name, e.g. {'test': (x_test, y_test)}; got "
                f"{type(splits).__name__}"
            )
        if unnamed := [name for name in splits or {} if not isinstance(name, str)]:  # eval_split names one
            raise DataError(f"splits: each split's name must be a string, e.g. 'test'; got {unnamed[0]!r}")
        cache = (not isinstance(train, tf.data.Dataset)) if cache is None else cache
        train_dataset, self.source_batch_size = _as_dataset(train, "train data")
        self._train = train_dataset.cache() if cache else train_dataset
        self._splits = {
            name: _as_dataset(value, f"split {name!r}")[0].cache() for name, value in (splits or {}).items()
        }
        images = self._train.element_spec[0]
        if not images.shape.is_fully_defined():
            raise DataError(f"train data: every image must have one known shape [H, W, C]; got {images.shape}")
        self.input_shape: tuple[int, int, int] = tuple(int(d) for d in images.shape)
        self.num_train, lowest, labelled, brightest, damaged = _count_classes_and_range(self._train)
        if self.num_train == 0:
            raise DataError("train data: it is empty")
        refuse_non_finite(damaged, self.num_train, "train data")
        if lowest < 0:
            raise DataError(f"train data: labels must be class indices 0, 1, ...; got {lowest}")
        if images.dtype.is_floating and brightest <= 1.0:
            print(
                f"warning: train data: every pixel lies in [0, {brightest:.3g}]; iep expects pixels in [0, 255] (its "
                "networks standardize inside, and a teacher of ours was trained on [0, 255]): multiply by 255",
                file=sys.stderr,
            )
        if class_names is not None and len(class_names) < labelled:
            raise DataError(f"train data: label {labelled - 1} has no name among the {len(class_names)} class_names")
        self.class_names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(labelled))
        for name, split in self._splits.items():  # a label past the classes would be scored wrong in silence
            shape = tuple(split.element_spec[0].shape)
            if shape != self.input_shape:  # the network reads one image shape: the train data's
                raise DataError(f"split {name!r}: images {shape}, but the train data's are {self.input_shape}")
            count, lowest, labelled, _, damaged = _count_classes_and_range(split)
            if count == 0:
                raise DataError(f"split {name!r}: it is empty")
            refuse_non_finite(damaged, count, f"split {name!r}")
            if lowest < 0 or labelled > len(self.class_names):
                raise DataError(
                    f"split {name!r}: labels must be class indices 0 to {len(self.class_names) - 1} (the train "
                    f"data's classes); got {lowest if lowest < 0 else labelled - 1}"
                )
        self.augment_images, self.shuffle_buffer = augment_images, shuffle_buffer
        self._stats: tuple[list[float], list[float]] | None = None
        self._said_batch_size: set[int] = set()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self._splits)

    @property
    def mean(self) -> list[float]:
        """Per-channel mean of the training images (for `build_network`'s standardization)."""
        return self._channel_stats()[0]

    @property
    def std(self) -> list[float]:
        return self._channel_stats()[1]

    def _channel_stats(self) -> tuple[list[float], list[float]]:
        if self._stats is None:

            def add(state, image):
                pixels = tf.reshape(tf.cast(image, tf.float64), [-1, self.input_shape[-1]])
                return state[0] + tf.reduce_sum(pixels, 0), state[1] + tf.reduce_sum(pixels**2, 0), state[2] + 1.0

            channels = self.input_shape[-1]
            start = (tf.zeros([channels], tf.float64), tf.zeros([channels], tf.float64), tf.constant(0.0, tf.float64))
            sums, squares, images = self._train.map(lambda x, _: x).reduce(start, add)
            pixels = images * self.input_shape[0] * self.input_shape[1]
            mean = sums / pixels
            std = tf.sqrt(tf.maximum(squares / pixels - mean * mean, 1e-12))
            self._stats = (mean.numpy().tolist(), std.numpy().tolist())
        return self._stats

    def steps_per_epoch(self, batch_size: int) -> int:
        return steps_per_epoch(self.num_train, batch_size)

    def split(self, name: str) -> tf.data.Dataset:
        if name == "train":
            return self._train
        if name not in self._splits:
            raise DataError(f"the data has no split {name!r}; it has {list(self.splits)} (UserData(splits=...))")
        return self._splits[name]

    def index_labels(self) -> np.ndarray:
        """The training examples' labels by position (the indices `train_dataset(extras=("indices",))` yields)."""
        return dataset_labels(self._train).astype(np.int64)

    def train_dataset(self, epoch: int, batch_size: int, seed: int, extras: tuple[str, ...] = ()) -> tf.data.Dataset:
        """Epoch `epoch`: a shuffle seeded by (seed, epoch), full batches, seeded augmentation; batches of
        (images, labels, *extras), `extras` as `ImagePipeline.train_dataset`'s: "indices" (the examples'
        positions in the training data), "strong_view" (a RandAugment-ed second view)."""
        extras = augment.check_extras(extras)
        if self.source_batch_size and batch_size != self.source_batch_size and batch_size not in self._said_batch_size:
            self._said_batch_size.add(batch_size)
            dropped = self.num_train % batch_size
            print(
                f"note: the train data came in batches of {self.source_batch_size}; the loop re-batches it in "
                f"batches of {batch_size} (TrainConfig.batch_size), full batches only"
                + (
                    f" ({dropped} of {self.num_train} images left out each epoch, a different few each time)"
                    if dropped
                    else ""
                )
            )
        shuffle_seed = int(np.random.default_rng([seed, epoch]).integers(2**31))
        train = self._train.enumerate().map(lambda i, xy: (*xy, i))
        ds = train.shuffle(min(self.num_train, self.shuffle_buffer), seed=shuffle_seed)
        ds = ds.batch(batch_size, drop_remainder=True).enumerate()

        def prepare(index, batch):
            images, labels, positions = batch
            pair = augment.augment_seed(seed, epoch, index)
            # the strong view whatever augment_images says: it is the method's input
            more = augment.extra_values(extras, positions, lambda: augment.strong_view_batch(images, pair))
            if self.augment_images:
                images = augment.flip_pad_crop_batch(images, pair)
            return (tf.cast(images, tf.float32), labels, *more)

        return ds.map(prepare, num_parallel_calls=_AUTOTUNE).prefetch(_AUTOTUNE)

    def eval_dataset(self, split: str, batch_size: int) -> tf.data.Dataset:
        ds = self.split(split).batch(batch_size)
        return ds.map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(_AUTOTUNE)


def as_loop_data(data: Any, eval_data: Mapping[str, Any] | None = None) -> Any:
    """`data` if it already serves the loop (an `ImagePipeline`, a `UserData`), else `UserData(data, ...)`."""
    if hasattr(data, "train_dataset") and hasattr(data, "steps_per_epoch"):
        if eval_data:
            raise DataError("eval_data goes with raw arrays or datasets; give UserData(splits=...) its splits instead")
        return data
    return UserData(data, splits=eval_data)
