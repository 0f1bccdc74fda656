"""Input pipelines: one object that serves shuffled, augmented training epochs and eval batches.

Images leave the pipeline as float32 pixels in [0, 255]; the network
standardizes them itself (see `nets.layers.Standardize`).

Small images (≤ 64 px) are decoded once into memory (the "cache of decoded
images"), and every epoch is a seeded permutation of them with batch-level
augmentation. Larger images stream from their records with per-image decode.
Both are a pure function of (seed, epoch), which is what makes resume exact.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import tensorflow as tf

from iep.core.fields import check_bools, check_numbers
from iep.core.stderr import native_stderr_silenced
from iep.datasets import augment
from iep.datasets.sampling import stratified_indices
from iep.datasets.sources import (
    DataError,
    ImageSource,
    SplitRecords,
    raise_if_undecodable,
    split_labels,
    steps_per_epoch,
)
from iep.datasets.stats import channel_stats

SMALL_IMAGE_MAX = 64
VALIDATION = "validation"
VALIDATION_SEED = 1_000_003  # fixed, and unlike any --sample_seed: one held-out set for every run
LARGE_IMAGE_DEFAULT = 224
_AUTOTUNE = tf.data.AUTOTUNE


# DataConfig's numeric fields → (in range, what is expected); image_size may be None (the data set's own size).
DATA_RANGES = {
    "rate": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "sample_seed": (lambda v: math.isfinite(v) and v >= 0 and v == int(v), "an int >= 0"),
    "image_size": (lambda v: math.isfinite(v) and 8 <= v <= 1024 and v == int(v), "between 8 and 1024 pixels"),
    "validation_fraction": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    rate: float = 1.0
    sample_seed: int = 0
    image_size: int | None = None
    cache_dir: str | None = None
    crop_to_bbox: bool = False
    validation_fraction: float = 0.0  # > 0: carve a stratified validation split out of the training split

    def __post_init__(self) -> None:
        """Refused where it is written (DataConfig(rate=2)), before any shard is scanned."""
        if not isinstance(self.dataset, str) or not self.dataset:
            raise DataError(f"DataConfig.dataset must be a name such as 'cifar10' or 'tfrecord', got {self.dataset!r}")
        for name in ("data_dir", "cache_dir"):
            if (value := getattr(self, name)) is not None and not isinstance(value, str | os.PathLike):
                raise TypeError(f"DataConfig.{name} must be a path, got {value!r}")
        check_numbers("DataConfig", self, DATA_RANGES, optional=("image_size",), error=DataError)
        check_bools("DataConfig", self, ("download", "crop_to_bbox"))


def _epoch_seed(seed: int, epoch: int) -> np.ndarray:
    return np.array([seed, epoch], dtype=np.int64)


def _resize_if_needed(image: tf.Tensor, size: int) -> tf.Tensor:
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    resized = tf.cond(
        same,
        lambda: image,
        lambda: tf.cast(
            tf.clip_by_value(
                tf.round(tf.image.resize(tf.cast(image, tf.float32), [size, size], antialias=True)), 0, 255
            ),
            tf.uint8,
        ),
    )
    return tf.ensure_shape(resized, [size, size, 3])


def _select(records: tf.data.Dataset, indices: np.ndarray, total: int) -> tf.data.Dataset:
    if indices.size == total:
        return records
    keep = np.zeros(total, dtype=bool)
    keep[indices] = True
    keep = tf.constant(keep)
    return records.enumerate().filter(lambda i, _: tf.gather(keep, i)).map(lambda _, record: record)


def _peek_size(split: SplitRecords) -> int:
    for payload, _ in split.records.take(1):
        try:
            with native_stderr_silenced():
                return int(max(split.decode(payload).shape[:2]))
        except tf.errors.InvalidArgumentError as error:
            raise_if_undecodable(split, "train", error)
    raise DataError("the train split is empty")


class ImagePipeline:
    """Training epochs and evaluation batches for one data set at one sampling rate."""

    def __init__(self, source: ImageSource, config: DataConfig):
        self.source = source
        self.config = config
        train = source.split("train")
        size = config.image_size or source.native_size or _peek_size(train)
        if not config.image_size and size > SMALL_IMAGE_MAX:
            size = LARGE_IMAGE_DEFAULT
        self.image_size = int(size)
        self.small = self.image_size <= SMALL_IMAGE_MAX

        labels = split_labels(train)
        pool, self._validation = np.arange(labels.size), None
        if config.validation_fraction > 0:  # held out first, so no --rate subset ever contains these images
            if VALIDATION in source.splits:
                raise DataError(
                    f"DataConfig.validation_fraction carves a {VALIDATION} split, but {source.name} has one; "
                    f"set it to 0 and evaluate on {source.name}'s own {VALIDATION} split"
                )
            held_out = stratified_indices(labels, config.validation_fraction, VALIDATION_SEED)
            pool = np.setdiff1d(pool, held_out)
            records = _select(train.records, held_out, train.size)
            self._validation = SplitRecords(records, train.decode, int(held_out.size), lambda i: f"validation {i}")
        self.train_indices = pool[stratified_indices(labels[pool], config.rate, config.sample_seed)]
        self.train_labels = labels[self.train_indices]
        self._source_labels = labels
        missing = sorted(set(range(source.num_classes)) - set(np.unique(labels).tolist()))
        if missing:
            raise DataError(f"the train split of {source.name} has no images of classes {missing[:10]}")
        self.mean, self.std = channel_stats(source, config.cache_dir)
        self._train_records = _select(train.records, self.train_indices, train.size)
        self._memory: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if self.small:
            self._memory["train"] = self._decode_all(self._train_records, train, "train")

    # -- facts ------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.source.class_names

    @property
    def num_train(self) -> int:
        return int(self.train_indices.size)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    def steps_per_epoch(self, batch_size: int) -> int:
        return steps_per_epoch(self.num_train, batch_size, f" at DataConfig.rate {self.config.rate}")

    # -- datasets ---------------------------------------------------------
    def _decode_all(self, records: tf.data.Dataset, split: SplitRecords, name: str) -> tuple[np.ndarray, np.ndarray]:
        size = self.image_size

        def decode(payload, label):
            image = split.decode(payload)
            other_size = tf.reduce_any(tf.not_equal(tf.shape(image)[:2], size))
            return _resize_if_needed(image, size), label, other_size

        decoded = records.map(decode, num_parallel_calls=_AUTOTUNE)
        images, labels, resized = [], [], 0
        try:
            with native_stderr_silenced():  # libjpeg's own lines per corrupt image; our error names the file
                for x, y, other in decoded.batch(2048).as_numpy_iterator():
                    images.append(x)
                    labels.append(y)
                    resized += int(other.sum())
        except tf.errors.InvalidArgumentError as error:
            raise_if_undecodable(split, name, error)
        if resized:  # deliberate and said: mixed sizes are resized, never silently stretched
            total = sum(len(y) for y in labels)
            print(
                f"note: {resized} of {total} {name} images are not {size}×{size}; they are resized to it "
                "(antialiased; image_size chooses the size)"
            )
        return np.concatenate(images), np.concatenate(labels)

    def train_dataset(self, epoch: int, batch_size: int, seed: int, extras: tuple[str, ...] = ()) -> tf.data.Dataset:
        """Epoch `epoch` of training batches (images, labels, *extras): a deterministic function of (seed, epoch).
        `extras` (`augment.BATCH_EXTRAS`): "indices", the images' positions in the training set (0 … num_train
        − 1, the order of `index_labels()`), for methods that keep one entry per training image (CRD's memory);
        "strong_view", a second, RandAugment-ed view of the same images (MLKD)."""
        extras = augment.check_extras(extras)
        epoch_seed = _epoch_seed(seed, epoch)
        if self.small:
            images, labels = self._memory["train"]
            order = np.random.default_rng(epoch_seed.tolist()).permutation(labels.size)
            ds = tf.data.Dataset.from_tensor_slices((images[order], labels[order], order.astype(np.int64)))
            ds = ds.batch(batch_size, drop_remainder=True).enumerate()

            def augment_batch(index, batch):
                x, y, positions = batch
                seed_pair = augment.augment_seed(seed, epoch, index)
                more = augment.extra_values(extras, positions, lambda: augment.strong_view_batch(x, seed_pair))
                return (tf.cast(augment.flip_pad_crop_batch(x, seed_pair), tf.float32), y, *more)

            return ds.map(augment_batch, num_parallel_calls=_AUTOTUNE).prefetch(_AUTOTUNE)

        decode, size = self.source.split("train").decode, self.image_size

        def augment_one(index, record):
            (payload, label), position = record
            pair = augment.augment_seed(seed, epoch, index)
            image = decode(payload)
            more = augment.extra_values(extras, position, lambda: augment.strong_view_one(image, size, pair))
            return (augment.random_resized_crop(image, size, pair), label, *more)

        # (record, its position), shuffled alike: tf.data's shuffle order depends on the seed only
        records = self._train_records.enumerate().map(lambda i, record: (record, i))
        ds = records.shuffle(
            min(self.num_train, 10_000), seed=int(np.random.default_rng(epoch_seed.tolist()).integers(2**31))
        )
        ds = ds.enumerate().map(augment_one, num_parallel_calls=_AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=True).prefetch(_AUTOTUNE)

    def index_labels(self) -> np.ndarray:
        """The training images' labels by position (the indices `train_dataset(extras=("indices",))` yields)."""
        if self.small:
            return np.asarray(self._memory["train"][1])
        return self._source_labels[np.sort(self.train_indices)]  # `_select` keeps the records' own order

    def split(self, name: str) -> SplitRecords:
        """A split of the source, or the validation split carved out of its training split."""
        if name == VALIDATION and self._validation is not None:
            return self._validation
        return self.source.split(name)

    def prepare_eval(self, split: str) -> None:
        """Decodes `split` now (small images into memory, as the first evaluation would; large ones in one
        pass), so that an undecodable image is named before training, not after its first epoch."""
        records = self.split(split)
        if self.small:
            if split not in self._memory:
                self._memory[split] = self._decode_all(records.records, records, split)
            return
        shapes = records.records.map(lambda p, y: tf.shape(records.decode(p)), num_parallel_calls=_AUTOTUNE)
        try:
            with native_stderr_silenced():
                for _ in shapes.batch(1024):
                    pass
        except tf.errors.OpError as error:
            raise_if_undecodable(records, split, error)

    def eval_dataset(self, split: str, batch_size: int) -> tf.data.Dataset:
        records = self.split(split)
        if self.small:
            if split not in self._memory:
                self._memory[split] = self._decode_all(records.records, records, split)
            images, labels = self._memory[split]
            ds = tf.data.Dataset.from_tensor_slices((images, labels))
            return ds.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y)).prefetch(_AUTOTUNE)
        size = self.image_size
        ds = records.records.map(
            lambda p, y: (augment.resize_center_crop(records.decode(p), size), y), num_parallel_calls=_AUTOTUNE
        )
        return ds.batch(batch_size).prefetch(_AUTOTUNE)


def build_pipeline(config: DataConfig, source: ImageSource | None = None) -> ImagePipeline:
    """`source`: the config's data set when the caller has already loaded it (loading scans every shard)."""
    from iep.datasets.sources import load_source

    source = source or load_source(config.dataset, config.data_dir, config.download, config.crop_to_bbox)
    return ImagePipeline(source, config)
