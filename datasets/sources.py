"""Readers that turn a data-set name and folder into labelled image records.

Every source yields the same thing, a `SplitRecords`: a deterministic
`tf.data.Dataset` of `(payload, label)` pairs plus a `decode` function from
payload to a uint8 H×W×3 image. Payloads are cheap (encoded bytes, file paths
or small arrays), so labels can be read for stratified sampling without
decoding a single image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from iep.core.errors import op_message
from iep.core.stderr import native_stderr_silenced

BUILTIN_DIGITS = "digits"
TFRECORD = "tfrecord"
FOLDER = "folder"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

_TFRECORD_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


class DataError(ValueError):
    """Bad data-set input, raised before any training starts."""


@dataclasses.dataclass(frozen=True)
class SplitRecords:
    records: tf.data.Dataset  # (payload, int32 label), in a fixed order
    decode: Callable[[tf.Tensor], tf.Tensor]  # payload -> uint8 [H, W, 3]
    size: int
    locate: Callable[[int], str] = lambda index: f"record {index}"  # where record `index` lives (file, shard)
    # every label in record order, when the loader has already read them
    labels: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)


def steps_per_epoch(num_train: int, batch_size: int, where: str = "") -> int:
    """Full batches of `batch_size` in `num_train` images (the loop drops the remainder). Refused: a batch size
    that is no int >= 1 (0 divided by zero, a negative count ran no step and called the phase done), and one past
    the images (`where` says which data)."""
    if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    steps = num_train // batch_size
    if steps == 0:
        raise DataError(f"TrainConfig.batch_size {batch_size} exceeds the {num_train} training images{where}")
    return int(steps)


def dataset_labels(records: tf.data.Dataset) -> np.ndarray:
    """Every label of a `(payload, label)` dataset in order, read in batches.

    Why batches: a Python step per record would cost more than the rest of a small run's start-up.
    """
    batches = list(records.map(lambda _, y: y).batch(8192).as_numpy_iterator())
    return np.concatenate(batches) if batches else np.zeros([0], np.int32)


def split_labels(split: SplitRecords) -> np.ndarray:
    """Every label of `split` in record order: the loader's own copy when it kept one, else one scan."""
    return split.labels if split.labels is not None else dataset_labels(split.records).astype(np.int32)


def first_undecodable(split: SplitRecords) -> tuple[int, str] | None:
    """(index, TensorFlow's message) of the first record whose image does not decode, or None.

    Why this way: a decode error inside a tf.data pipeline names no record; decoding with errors
    ignored and looking for the first missing index finds it in one vectorized pass.
    """
    decoded = split.records.enumerate().map(lambda i, record: (i, split.decode(record[0])))
    expected = 0
    for index, _ in decoded.ignore_errors().as_numpy_iterator():
        if index != expected:
            break
        expected += 1
    else:
        if expected == split.size:
            return None
    payload = next(iter(split.records.skip(expected).take(1)))[0]
    try:
        split.decode(payload)
    except tf.errors.OpError as error:
        return expected, op_message(error)
    return expected, "decode failed"


def raise_if_undecodable(split: SplitRecords, split_name: str, error: Exception) -> None:
    """Turns a decode failure of `split` into a DataError naming the record (re-raises `error` otherwise)."""
    with native_stderr_silenced():
        found = first_undecodable(split)
    if found is None:
        raise error
    index, message = found
    raise DataError(f"the {split_name} split: {split.locate(index)} is not a decodable image ({message})") from None


@dataclasses.dataclass(frozen=True)
class ImageSource:
    name: str
    class_names: tuple[str, ...]
    splits: dict[str, SplitRecords]
    fingerprint: str  # identifies the exact data, for caching statistics
    native_size: int | None = None  # square side of every image, when known

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> SplitRecords:
        if name not in self.splits:
            raise DataError(f"data set {self.name!r} has no split {name!r}; available: {sorted(self.splits)}")
        return self.splits[name]


def decode_image_bytes(encoded: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def _decode_file(path: tf.Tensor) -> tf.Tensor:
    return decode_image_bytes(tf.io.read_file(path))


def _files_fingerprint(paths: list[str]) -> str:
    digest = hashlib.sha1()
    for path in sorted(paths):
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}:{stat.st_size}:{int(stat.st_mtime)}\n".encode())
    return digest.hexdigest()[:16]


def _check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{where}: labels span [{labels.min()}, {labels.max()}] but there are {num_classes} classes; "
            "labels must be 0-based indices into the class list"
        )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageSource:
    """scikit-learn's bundled 8×8 digits (1,797 images), upscaled to 32×32 RGB.

    Why: a real image data set that needs no download, so the demo and the
    tests run on a fresh offline machine. The split is a fixed stratified
    80/20 one.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = (bunch.images / 16.0 * 255.0).astype(np.float32)[..., None]
    images = tf.image.resize(images, [32, 32], method="bilinear").numpy()
    images = np.repeat(np.clip(np.round(images), 0, 255).astype(np.uint8), 3, axis=-1)
    labels = bunch.target.astype(np.int32)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed
    )

    def split(idx: np.ndarray) -> SplitRecords:
        idx = np.sort(idx)
        records = tf.data.Dataset.from_tensor_slices((images[idx], labels[idx]))
        return SplitRecords(records, lambda image: image, len(idx), labels=labels[idx])

    return ImageSource(
        name=BUILTIN_DIGITS,
        class_names=tuple(str(d) for d in range(10)),
        splits={"train": split(train_idx), "test": split(test_idx)},
        fingerprint="sklearn-digits-32px-v1",
        native_size=32,
    )


def _require_dir(data_dir: str | None, dataset: str) -> str:
    if not data_dir:
        raise DataError(f"DataConfig.data_dir is required for DataConfig.dataset={dataset!r}")
    if not os.path.isdir(data_dir):
        raise DataError(f"DataConfig.data_dir {data_dir!r} does not exist or is not a directory")
    return data_dir


def _parse_example(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    example = tf.io.parse_single_example(serialized, _TFRECORD_FEATURES)
    return example["image/encoded"], tf.cast(example["image/class/label"], tf.int32)


def _records_file(path: str) -> tf.data.Dataset:
    """One shard's serialized records; gzip-compressed shards are read as such."""
    with open(path, "rb") as f:
        compression = "GZIP" if f.read(2) == b"\x1f\x8b" else ""
    return tf.data.TFRecordDataset(path, compression_type=compression)


def _tfrecord_shard(path: str) -> tf.data.Dataset:
    """One shard's (encoded image, label) records."""
    return _records_file(path).map(_parse_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _parse_labels(serialized: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.io.parse_example(serialized, _TFRECORD_FEATURES)["image/class/label"], tf.int32)


def _shard_labels(path: str) -> np.ndarray:
    """Every label of the shard (the cheap scan that finds a corrupt, truncated or wrong-schema shard).

    Why batches of serialized records: one vectorized parse per 4,096 records, where a parse per record
    (the training pipeline's `_tfrecord_shard`) spends most of the start-up of a small run.
    """
    labels: list[np.ndarray] = []
    try:
        for batch in _records_file(path).batch(4096).map(_parse_labels).as_numpy_iterator():
            labels.append(batch)
    except tf.errors.OpError as error:
        good = 0  # locate the first bad record, reading one at a time (only on failure)
        try:
            for _ in _tfrecord_shard(path).map(lambda _, y: y).as_numpy_iterator():
                good += 1
        except tf.errors.OpError:
            pass
        raise DataError(
            f"{path}: record {good} is unreadable ({error.__class__.__name__}: {op_message(error)}); "
            f"expected uncompressed or gzip TFRecords of tf.train.Example with {sorted(_TFRECORD_FEATURES)}"
        ) from None
    return np.concatenate(labels) if labels else np.zeros([0], np.int32)


def _shard_locator(files: list[str], ends: np.ndarray) -> Callable[[int], str]:
    def locate(index: int) -> str:
        shard = int(np.searchsorted(ends, index, side="right"))
        start = int(ends[shard - 1]) if shard else 0
        return f"{files[shard]} record {index - start}"

    return locate


def load_tfrecord_dir(data_dir: str) -> ImageSource:
    """TFRecords of `tf.train.Example` in the common image-classification schema.

    Files are `<split>-<anything>.tfrecord` or `<split>.tfrecord`, optionally with tfds's shard suffix
    (`-00000-of-00004`); class names come from `classes.txt` (line i = label i) when present. Other names that
    begin like a shard (`train-00000.tfrecord.bak`) are skipped, with a warning that names them.
    """
    data_dir = _require_dir(data_dir, TFRECORD)
    splits, labels, locators, all_files = {}, {}, {}, []
    for split in ("train", "validation", "test"):
        candidates = sorted(
            set(
                tf.io.gfile.glob(os.path.join(data_dir, f"{split}-*.tfrecord*"))
                + tf.io.gfile.glob(os.path.join(data_dir, f"{split}.tfrecord*"))
            )
        )
        pattern = re.compile(rf"{split}(-[^/]*)?\.tfrecord(-\d+-of-\d+)?")
        files = [f for f in candidates if pattern.fullmatch(os.path.basename(f))]
        if skipped := [os.path.basename(f) for f in candidates if f not in files]:
            print(
                f"warning: {data_dir!r}: skipped {skipped}, not named as a {split} shard "
                f"({split}-<name>.tfrecord or {split}.tfrecord, optionally -00000-of-00004 after it)",
                file=sys.stderr,
            )
        if not files:
            continue
        all_files += files
        shards = [_tfrecord_shard(f) for f in files]
        records = shards[0]
        for shard in shards[1:]:
            records = records.concatenate(shard)
        shard_labels = [_shard_labels(f) for f in files]
        counts = np.cumsum([len(x) for x in shard_labels])
        splits[split], labels[split] = records, np.concatenate(shard_labels)
        locators[split] = _shard_locator(files, counts)
    if "train" not in splits:
        raise DataError(
            f"DataConfig.data_dir {data_dir!r} holds no train-*.tfrecord files (expected <split>-*.tfrecord)"
        )

    if labels["train"].size == 0:  # before the class count is read off its labels
        raise DataError(f"DataConfig.data_dir {data_dir!r}: the train split has no records")
    classes_file = os.path.join(data_dir, "classes.txt")
    if os.path.exists(classes_file):
        with open(classes_file) as f:
            class_names = tuple(line.strip() for line in f if line.strip())
        against = classes_file
    else:
        class_names = tuple(f"class_{i}" for i in range(int(labels["train"].max()) + 1))
        against = f"the {len(class_names)} classes the train split's labels imply (no classes.txt in {data_dir})"
    for name, split_labels in labels.items():
        _check_labels(split_labels, len(class_names), f"{data_dir}/{name}-*.tfrecord vs {against}")
        if split_labels.size == 0:
            raise DataError(f"DataConfig.data_dir {data_dir!r}: the {name} split has no records")
    fingerprint = _files_fingerprint(all_files + ([classes_file] if os.path.exists(classes_file) else []))
    return ImageSource(
        name=f"{TFRECORD}:{os.path.abspath(data_dir)}",
        class_names=class_names,
        splits={
            n: SplitRecords(ds, decode_image_bytes, int(labels[n].size), locators[n], labels[n].astype(np.int32))
            for n, ds in splits.items()
        },
        fingerprint=fingerprint,
    )


def _visible(folder: str) -> list[str]:
    """Sorted entries of `folder` without hidden ones (.ipynb_checkpoints, .DS_Store, ...)."""
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def load_image_folder(data_dir: str) -> ImageSource:
    """A folder laid out as `<split>/<class>/<image>`; classes are the sorted train sub-folders."""
    data_dir = _require_dir(data_dir, FOLDER)
    train_dir = os.path.join(data_dir, "train")
    if not os.path.isdir(train_dir):
        raise DataError(f"DataConfig.data_dir {data_dir!r} has no train/ folder (expected <split>/<class>/<image>)")
    class_names = tuple(sorted(d for d in _visible(train_dir) if os.path.isdir(os.path.join(train_dir, d))))
    if not class_names:
        raise DataError(f"{train_dir!r} has no class sub-folders (expected train/<class>/<image>)")
    index = {name: i for i, name in enumerate(class_names)}
    splits, all_files = {}, []
    for split in _visible(data_dir):
        split_dir = os.path.join(data_dir, split)
        if not os.path.isdir(split_dir):
            continue
        paths, labels = [], []
        for class_name in _visible(split_dir):
            class_dir = os.path.join(split_dir, class_name)
            if not os.path.isdir(class_dir):
                continue
            if class_name not in index:
                raise DataError(
                    f"{class_dir!r}: class {class_name!r} is not among the train classes {list(class_names)}"
                )
            files = _visible(class_dir)
            for file in files:
                path = os.path.join(class_dir, file)
                if not file.lower().endswith(IMAGE_EXTENSIONS) or not os.path.isfile(path):
                    raise DataError(f"{path!r} is not an image file (expected extensions {IMAGE_EXTENSIONS})")
            if not files:
                raise DataError(f"class {class_name!r} of the {split} split has no images ({class_dir!r} is empty)")
            paths += [os.path.join(class_dir, f) for f in files]
            labels += [index[class_name]] * len(files)
        if not paths:
            raise DataError(f"{split_dir!r} holds no images with extensions {IMAGE_EXTENSIONS}")
        all_files += paths
        labels = np.asarray(labels, np.int32)
        records = tf.data.Dataset.from_tensor_slices((paths, labels))
        splits[split] = SplitRecords(records, _decode_file, len(paths), lambda i, paths=paths: paths[i], labels)
    return ImageSource(
        name=f"{FOLDER}:{os.path.abspath(data_dir)}",
        class_names=class_names,
        splits=splits,
        fingerprint=_files_fingerprint(all_files),
    )


def crop_to_box(image: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
    """`image` (H×W×3) cropped to `box` = [ymin, xmin, ymax, xmax] in [0, 1] (tfds's BBoxFeature), at least
    one pixel each way. Why: the paper's CUB-200-2011 protocol trains and tests on the bird's bounding box."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    top = tf.cast(tf.floor(box[0] * shape[0]), tf.int32)
    left = tf.cast(tf.floor(box[1] * shape[1]), tf.int32)
    bottom = tf.maximum(tf.cast(tf.math.ceil(box[2] * shape[0]), tf.int32), top + 1)
    right = tf.maximum(tf.cast(tf.math.ceil(box[3] * shape[1]), tf.int32), left + 1)
    size = tf.shape(image)[:2]
    top, left = tf.minimum(top, size[0] - 1), tf.minimum(left, size[1] - 1)
    return image[top : tf.minimum(bottom, size[0]), left : tf.minimum(right, size[1])]


def _decode_and_crop(payload) -> tf.Tensor:
    encoded, box = payload
    return crop_to_box(decode_image_bytes(encoded), box)


DOWNLOAD_PROBE_HOST = "storage.googleapis.com"  # TensorFlow Datasets' own mirror


def _internet(host: str = DOWNLOAD_PROBE_HOST, timeout: float = 5.0) -> bool:
    """Whether `host` resolves: without DNS a download would spend minutes in retries before failing."""
    import socket

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)


def load_tfds(name: str, data_dir: str | None, download: bool, crop_to_bbox: bool = False) -> ImageSource:
    """A TensorFlow Datasets image-classification set with `image` and `label` features.

    Uses already-prepared data under `data_dir` when present (offline use);
    downloads and prepares only when `download` is set. `crop_to_bbox`: every image is cropped to its
    `bbox` feature first (CUB-200-2011, `caltech_birds2011`).
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises several types for unknown names, with the whole catalogue inside
        import difflib

        close = difflib.get_close_matches(name, tfds.list_builders(), n=5, cutoff=0.5)
        hint = f"; closest TensorFlow Datasets names: {', '.join(close)}" if close else ""
        raise DataError(
            f"DataConfig.dataset={name!r} is not a known data set ({error.__class__.__name__}): use digits (built in), "
            f"tfrecord or folder (with DataConfig.data_dir), or a TensorFlow Datasets name{hint}"
        ) from None
    if not builder.is_prepared():
        offline = (
            f"on a machine with internet run `iep-train --dataset={name} --download --data_dir=DIR --epochs=1` (or "
            f"`tfds build {name} --data_dir=DIR`) and copy DIR here as DataConfig.data_dir, or give the images "
            "yourself (DataConfig.dataset='tfrecord' or 'folder')"
        )
        if not download:
            raise DataError(
                f"DataConfig.dataset={name!r} (TensorFlow Datasets) is not prepared under DataConfig.data_dir="
                f"{builder.data_dir!r}: set DataConfig.download to fetch it, or {offline}"
            )
        if not _internet():
            raise DataError(
                f"DataConfig.download: this machine has no internet (DNS finds no host) to fetch {name!r}; {offline}"
            )
        try:
            builder.download_and_prepare()
        except Exception as error:  # requests' ConnectionError and friends, after tfds's retries
            raise DataError(f"DataConfig.download of {name!r} failed ({error.__class__.__name__}); {offline}") from None
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise DataError(
            f"DataConfig.dataset={name!r} lacks 'image' and 'label' features; it is not an image classification set"
        )
    if crop_to_bbox and "bbox" not in features:
        raise DataError(
            f"DataConfig.crop_to_bbox: DataConfig.dataset={name!r} has no 'bbox' feature "
            f"(its features: {sorted(features)})"
        )
    splits = {}
    for split, info in builder.info.splits.items():
        ds = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
        if crop_to_bbox:
            records = ds.map(lambda ex: ((ex["image"], ex["bbox"]), tf.cast(ex["label"], tf.int32)))
            splits[split] = SplitRecords(records, _decode_and_crop, int(info.num_examples))
            continue
        records = ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)))
        splits[split] = SplitRecords(records, decode_image_bytes, int(info.num_examples))
    shape = features["image"].shape
    native = shape[0] if shape[0] is not None and shape[0] == shape[1] else None
    return ImageSource(
        name=name,
        class_names=tuple(features["label"].names),
        splits=splits,
        fingerprint=f"tfds-{name}-{builder.info.version}" + ("-bbox" if crop_to_bbox else ""),
        native_size=None if crop_to_bbox else native,
    )


def load_source(
    dataset: str, data_dir: str | None = None, download: bool = False, crop_to_bbox: bool = False
) -> ImageSource:
    """`digits`, `tfrecord` or `folder` (with --data_dir), else a tfds name (optionally `tfds:<name>`)."""
    if crop_to_bbox and dataset in (BUILTIN_DIGITS, TFRECORD, FOLDER):
        raise DataError(
            f"DataConfig.crop_to_bbox needs a tfds data set with a 'bbox' feature, not DataConfig.dataset={dataset!r}"
        )
    if dataset == BUILTIN_DIGITS:
        return load_digits()
    if dataset == TFRECORD:
        return load_tfrecord_dir(data_dir)
    if dataset == FOLDER:
        return load_image_folder(data_dir)
    if data_dir is not None and not os.path.isdir(data_dir) and not download:
        raise DataError(
            f"DataConfig.data_dir {data_dir!r} does not exist: DataConfig.dataset={dataset!r} is a TensorFlow Datasets "
            "set; set DataConfig.download to fetch and prepare it there (needs internet), or point DataConfig.data_dir "
            "at prepared tfds data"
        )
    return load_tfds(dataset.removeprefix("tfds:"), data_dir, download, crop_to_bbox)
