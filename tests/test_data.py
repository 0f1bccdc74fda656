import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from iep.datasets import DataConfig, DataError, build_pipeline, load_source, stratified_indices
from iep.datasets.augment import PAD, flip_pad_crop_batch
from iep.datasets.sources import dataset_labels
from iep.datasets.stats import compute_channel_stats
from tests.helpers import write_image_folder, write_tfrecords


def test_builtin_digits_split_and_shapes(digits_pipeline):
    source = digits_pipeline.source
    assert source.class_names == tuple(str(d) for d in range(10))
    assert (source.split("train").size, source.split("test").size) == (1437, 360)
    images, labels = next(iter(digits_pipeline.eval_dataset("test", 16)))
    assert images.shape == (16, 32, 32, 3) and images.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    assert labels.dtype == tf.int32


def test_shared_cifar10_tfrecords(cifar10_dir):
    source = load_source("tfrecord", cifar10_dir)
    assert source.num_classes == 10 and source.class_names[0] == "airplane"
    assert (source.split("train").size, source.split("test").size) == (50_000, 10_000)
    # the labels the loader kept from its shard scan are the records' own, in order
    np.testing.assert_array_equal(source.split("test").labels, dataset_labels(source.split("test").records))
    assert np.bincount(source.split("train").labels).tolist() == [5000] * 10
    data = build_pipeline(DataConfig("tfrecord", cifar10_dir, rate=0.02))
    assert data.image_size == 32 and data.num_train == 1000
    assert np.bincount(data.train_labels, minlength=10).tolist() == [100] * 10
    # RGB statistics of the training split: CIFAR-10's are about (125, 123, 114) / (63, 62, 67).
    np.testing.assert_allclose(data.mean, [125.3, 123.0, 113.9], atol=2.5)
    np.testing.assert_allclose(data.std, [63.0, 62.1, 66.7], atol=2.5)
    images, labels = next(iter(data.train_dataset(0, 50, seed=0)))
    assert images.shape == (50, 32, 32, 3)
    assert set(labels.numpy().tolist()) <= set(range(10))


def test_image_folder_reader_and_pipeline(tmp_path):
    root = write_image_folder(str(tmp_path / "imgs"), size=12)
    source = load_source("folder", root)
    assert source.class_names == ("ant", "bee", "cat")
    train = source.split("train")
    labels = [int(y) for _, y in train.records.as_numpy_iterator()]
    assert labels == [0] * 6 + [1] * 6 + [2] * 6 == train.labels.tolist()
    first = train.decode(next(iter(train.records))[0])
    assert first.shape == (12, 12, 3) and first.dtype == tf.uint8
    data = build_pipeline(DataConfig("folder", root, image_size=16))
    images, _ = next(iter(data.train_dataset(0, 4, seed=1)))
    assert images.shape == (4, 16, 16, 3)
    assert data.eval_dataset("test", 10).cardinality().numpy() in (1, tf.data.UNKNOWN_CARDINALITY)


def test_large_images_stream_with_random_resized_crop(tmp_path):
    root = write_image_folder(str(tmp_path / "big"), size=90, per_class={"train": 3, "test": 1})
    data = build_pipeline(DataConfig("folder", root))
    assert data.image_size == 224 and not data.small
    images, labels = next(iter(data.train_dataset(0, 3, seed=0)))
    assert images.shape == (3, 224, 224, 3)
    eval_images, _ = next(iter(data.eval_dataset("test", 3)))
    assert eval_images.shape == (3, 224, 224, 3)


def test_channel_stats_equal_numpy(tmp_path):
    root = write_image_folder(str(tmp_path / "stats"), size=10)
    source = load_source("folder", root)
    pixels = np.concatenate(
        [source.split("train").decode(p).numpy().reshape(-1, 3) for p, _ in source.split("train").records]
    )
    mean, std = compute_channel_stats(source)
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-6)


def test_stratified_sampling_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(5), [100, 50, 30, 10, 3])
    picked = stratified_indices(labels, 0.1, seed=3)
    assert np.bincount(labels[picked]).tolist() == [10, 5, 3, 1, 1]
    np.testing.assert_array_equal(picked, stratified_indices(labels, 0.1, seed=3))
    assert not np.array_equal(picked, stratified_indices(labels, 0.1, seed=4))
    assert np.all(np.diff(picked) > 0)
    np.testing.assert_array_equal(stratified_indices(labels, 1.0), np.arange(labels.size))


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_rate_outside_unit_interval_is_rejected(rate):
    with pytest.raises(ValueError, match=r"DataConfig.rate must be in \(0, 1\]"):
        build_pipeline(DataConfig("digits", rate=rate))


def test_sampled_pipeline_is_identical_across_builds():
    a = build_pipeline(DataConfig("digits", rate=0.25, sample_seed=7))
    b = build_pipeline(DataConfig("digits", rate=0.25, sample_seed=7))
    np.testing.assert_array_equal(a.train_indices, b.train_indices)
    all_labels = np.array([int(y) for _, y in a.source.split("train").records.as_numpy_iterator()])
    expected = [max(1, round(0.25 * n)) for n in np.bincount(all_labels)]
    assert np.bincount(a.train_labels).tolist() == expected
    # a source that keeps no labels (tfds) is scanned for them, and samples the same images
    train = a.source.split("train")
    splits = {**a.source.splits, "train": dataclasses.replace(train, labels=None)}
    unlabelled = dataclasses.replace(a.source, splits=splits)
    c = build_pipeline(DataConfig("digits", rate=0.25, sample_seed=7), unlabelled)
    np.testing.assert_array_equal(c.train_indices, a.train_indices)
    np.testing.assert_array_equal(c.train_labels, a.train_labels)


def test_epochs_are_a_pure_function_of_seed_and_epoch(digits_pipeline):
    def first_batch(epoch, seed):
        images, labels = next(iter(digits_pipeline.train_dataset(epoch, 32, seed)))
        return images.numpy(), labels.numpy()

    a, b = first_batch(2, 5), first_batch(2, 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], first_batch(3, 5)[1])


def test_flip_pad_crop_returns_a_crop_of_the_padded_image():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(6, 8, 8, 3)).astype(np.uint8)
    out = flip_pad_crop_batch(tf.constant(images), tf.constant([1, 2], tf.int64)).numpy()
    assert out.shape == images.shape
    found_flip = []
    for image, crop in zip(images, out, strict=True):
        matches = []
        for flipped, source in ((False, image), (True, image[:, ::-1])):
            padded = np.pad(source, [(PAD, PAD), (PAD, PAD), (0, 0)], mode="reflect")
            matches += [
                (flipped, dy, dx)
                for dy in range(2 * PAD + 1)
                for dx in range(2 * PAD + 1)
                if np.array_equal(padded[dy : dy + 8, dx : dx + 8], crop)
            ]
        assert matches, "augmented image is not a reflect-padded crop of its input"
        found_flip.append(any(m[0] for m in matches))
    assert any(found_flip) and not all(found_flip)  # both branches happen for this seed


def test_missing_and_empty_data_dirs(tmp_path):
    with pytest.raises(DataError, match="DataConfig.data_dir is required for DataConfig.dataset='tfrecord'"):
        load_source("tfrecord", None)
    with pytest.raises(DataError, match="does not exist"):
        load_source("folder", str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no train-\\*.tfrecord"):
        load_source("tfrecord", str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no train/ folder"):
        load_source("folder", str(tmp_path / "empty"))


def test_labels_beyond_the_class_list_are_rejected(tmp_path):
    root = write_tfrecords(str(tmp_path / "rec"), {"train": [0, 1, 5], "test": [0]}, classes=["a", "b", "c"])
    with pytest.raises(DataError, match=r"labels span \[0, 5\] but there are 3 classes"):
        load_source("tfrecord", root)


def test_tfrecords_without_class_file(tmp_path):
    root = write_tfrecords(str(tmp_path / "rec"), {"train": [0, 1, 2, 1], "test": [2]})
    source = load_source("tfrecord", root)
    assert source.class_names == ("class_0", "class_1", "class_2")


def test_folder_test_split_with_unknown_class(tmp_path):
    root = write_image_folder(str(tmp_path / "imgs"))
    os.rename(os.path.join(root, "test", "cat"), os.path.join(root, "test", "dog"))
    with pytest.raises(DataError, match="'dog' is not among the train classes"):
        load_source("folder", root)


def test_unprepared_tfds_dataset_offline(tmp_path):
    with pytest.raises(DataError, match="not prepared under DataConfig.data_dir"):
        load_source("cifar100", str(tmp_path))


def test_unknown_tfds_name():
    with pytest.raises(DataError, match="not a known data set"):
        load_source("no_such_dataset_xyz", None)


def test_crop_to_box_equals_numpy_slicing():
    from iep.datasets.sources import crop_to_box

    image = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)
    cropped = crop_to_box(tf.constant(image), tf.constant([0.2, 0.25, 0.7, 0.9]))
    np.testing.assert_array_equal(cropped, image[2:7, 5:18])  # floor of the top-left, ceil of the bottom-right
    np.testing.assert_array_equal(crop_to_box(tf.constant(image), tf.constant([0.5, 0.5, 0.5, 0.5])), image[5:6, 10:11])
    np.testing.assert_array_equal(crop_to_box(tf.constant(image), tf.constant([0.0, 0.0, 1.0, 1.0])), image)


class _FakeBirds:
    """A prepared tfds builder in the shape of caltech_birds2011 (image, label, bbox), two 10×20 images."""

    def __init__(self, with_bbox: bool = True):
        import types

        import tensorflow_datasets as tfds

        features = {"image": tfds.features.Image(), "label": tfds.features.ClassLabel(names=["tern", "wren"])}
        if with_bbox:
            features["bbox"] = tfds.features.BBoxFeature()
        split = types.SimpleNamespace(num_examples=2)
        self.info = types.SimpleNamespace(features=features, splits={"train": split, "test": split}, version="0.0.1")
        self.data_dir = "/nowhere"
        self.image = np.arange(10 * 20 * 3, dtype=np.uint8).reshape(10, 20, 3)

    def is_prepared(self):
        return True

    def as_dataset(self, split, shuffle_files, decoders):
        encoded = tf.io.encode_png(self.image)
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": tf.stack([encoded, encoded]),
                "label": tf.constant([0, 1], tf.int64),
                "bbox": tf.constant([[0.2, 0.25, 0.7, 0.9], [0.0, 0.0, 1.0, 1.0]]),
            }
        )


def test_tfds_images_are_cropped_to_their_boxes(monkeypatch, tmp_path):
    import tensorflow_datasets as tfds

    fake = _FakeBirds()
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: fake)
    source = load_source("caltech_birds2011", str(tmp_path), crop_to_bbox=True)
    train = source.split("train")
    images = [train.decode(payload).numpy() for payload, _ in train.records]
    np.testing.assert_array_equal(images[0], fake.image[2:7, 5:18])
    np.testing.assert_array_equal(images[1], fake.image)
    assert source.native_size is None and source.fingerprint.endswith("-bbox")
    plain = load_source("caltech_birds2011", str(tmp_path))
    assert [plain.split("train").decode(p).shape for p, _ in plain.split("train").records] == [(10, 20, 3)] * 2
    monkeypatch.setattr(tfds, "builder", lambda name, data_dir=None: _FakeBirds(with_bbox=False))
    with pytest.raises(DataError, match="crop_to_bbox: DataConfig.dataset='caltech_birds2011' has no 'bbox'"):
        load_source("caltech_birds2011", str(tmp_path), crop_to_bbox=True)
    with pytest.raises(DataError, match="DataConfig.crop_to_bbox needs a tfds data set"):
        load_source("folder", str(tmp_path), crop_to_bbox=True)


def test_validation_split_is_carved_out_of_training_before_the_rate_subset(digits_pipeline):
    from iep.datasets.pipeline import VALIDATION_SEED

    data = build_pipeline(DataConfig("digits", rate=0.5, validation_fraction=0.2))
    train = data.source.split("train")
    labels = np.fromiter(train.records.map(lambda _, y: y).as_numpy_iterator(), np.int32)
    held_out = stratified_indices(labels, 0.2, VALIDATION_SEED)
    assert not set(held_out) & set(data.train_indices)  # never trained on
    assert data.split("validation").size == held_out.size == sum(round(0.2 * c) for c in np.bincount(labels))
    images = np.concatenate([x for x, _ in data.eval_dataset("validation", 100).as_numpy_iterator()])
    expected = np.stack([image for i, (image, _) in enumerate(train.records.as_numpy_iterator()) if i in set(held_out)])
    np.testing.assert_array_equal(images, expected.astype(np.float32))
    again = build_pipeline(DataConfig("digits", rate=0.5, validation_fraction=0.2))
    np.testing.assert_array_equal(again.train_indices, data.train_indices)
    # without the flag the --rate subset is exactly what it always was
    np.testing.assert_array_equal(
        build_pipeline(DataConfig("digits", rate=0.5)).train_indices, stratified_indices(labels, 0.5, 0)
    )
    with pytest.raises(DataError, match=r"DataConfig.validation_fraction must be in \[0, 1\)"):
        build_pipeline(DataConfig("digits", validation_fraction=1.0))


def test_tfds_data_that_is_not_here_says_how_to_get_it(tmp_path, monkeypatch):
    """Offline: a missing --data_dir names the data set and --download; --download without DNS fails at once,
    in one line naming the data set and how to bring it offline (it retried for minutes); the download path's
    own dependency is installed."""
    import importlib

    from iep.datasets import DataError, sources

    importlib.import_module("importlib_resources")  # tfds's download path needs it; setup.py installs it
    said = r"data_dir '.*nowhere' does not exist: DataConfig.dataset='cifar100' .* DataConfig.download"
    with pytest.raises(DataError, match=said):
        sources.load_source("cifar100", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"is not prepared under .*set DataConfig.download .*tfds build cifar100"):
        sources.load_source("cifar100", str(tmp_path))
    monkeypatch.setattr(sources, "_internet", lambda *a, **k: False)
    with pytest.raises(
        DataError, match=r"DataConfig.download: this machine has no internet .* 'cifar100'; on a machine"
    ):
        sources.load_source("cifar100", str(tmp_path), download=True)


def test_a_missing_teacher_of_a_shipped_config_names_the_config_that_trains_it():
    from iep.engine.configs import config_training

    assert config_training("runs/paper/teacher_wrn-40-4") == "paper/teacher_wrn-40-4.cfg"
    assert config_training("runs/nobody") is None


def test_only_shard_names_are_read_and_the_skipped_files_are_named(tmp_path, capsys):
    """A backup copy `train-00000-of-00001.tfrecord.bak` would double the training split if read as a shard."""
    import shutil

    root = write_tfrecords(str(tmp_path / "d"), {"train": [0, 1, 2, 0], "test": [0, 1]}, classes=["a", "b", "c"])
    shard = os.path.join(root, "train-00000-of-00001.tfrecord")
    shutil.copy(shard, shard + ".bak")
    shutil.copy(shard, os.path.join(root, "train.tfrecord-00001-of-00002"))  # tfds's shard names are read
    source = load_source("tfrecord", root)
    assert len(dataset_labels(source.splits["train"].records)) == 8  # the shard and the tfds-named copy, not the .bak
    assert "skipped ['train-00000-of-00001.tfrecord.bak']" in capsys.readouterr().err


def test_an_empty_train_shard_without_a_class_file_is_named(tmp_path):
    root = write_tfrecords(str(tmp_path / "rec"), {"train": [], "test": [0]})
    with pytest.raises(DataError, match="the train split has no records"):
        load_source("tfrecord", root)
