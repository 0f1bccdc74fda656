"""Damaged data is one error naming the shard and record, or the image file, before training starts."""

import gzip
import os

import pytest
import tensorflow as tf

from iep.datasets import DataConfig, DataError, build_pipeline
from tests.helpers import write_image_folder, write_tfrecords

LABELS = {"train": [0, 1, 2] * 4, "test": [0, 1, 2]}


def _shards(tmp_path):
    root = write_tfrecords(str(tmp_path / "records"), LABELS, classes=["a", "b", "c"])
    return root, os.path.join(root, "train-00000-of-00001.tfrecord")


def _pipeline(root, dataset="tfrecord", cache=None):
    return build_pipeline(DataConfig(dataset, root, cache_dir=str(cache or os.path.join(root, "..", "cache"))))


def test_corrupt_and_truncated_shards_name_the_shard_and_record(tmp_path):
    root, shard = _shards(tmp_path)
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside a record: its CRC no longer matches
    open(shard, "wb").write(bytes(data))
    with pytest.raises(DataError, match=rf"{shard}: record \d+ is unreadable \(DataLossError"):
        _pipeline(root)
    open(shard, "r+b").truncate(len(data) // 3)
    with pytest.raises(DataError, match=rf"{shard}: record \d+ is unreadable"):
        _pipeline(root)


def test_gzipped_shards_are_read(tmp_path):
    root, shard = _shards(tmp_path)
    raw = open(shard, "rb").read()
    with gzip.open(shard, "wb") as f:
        f.write(raw)
    assert _pipeline(root).num_train == 12


def test_wrong_schema_names_the_shard_and_the_expected_features(tmp_path):
    root = str(tmp_path / "records")
    os.makedirs(root)
    with tf.io.TFRecordWriter(os.path.join(root, "train-00000-of-00001.tfrecord")) as writer:
        feature = {"image/raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x"]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(DataError, match=r"train-00000-of-00001.tfrecord: record 0 is unreadable .*image/class/label"):
        _pipeline(root)


def test_undecodable_image_in_a_record_is_named_before_training(tmp_path):
    root = str(tmp_path / "records")
    write_tfrecords(root, LABELS, classes=["a", "b", "c"])
    path = os.path.join(root, "train-00000-of-00001.tfrecord")
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    bad = tf.train.Example.FromString(records[5])
    bad.features.feature["image/encoded"].bytes_list.value[0] = b"\xff\xd8 not a jpeg"
    records[5] = bad.SerializeToString()
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    with pytest.raises(DataError, match=rf"the train split: {path} record 5 is not a decodable image"):
        _pipeline(root)


def test_image_folder_hygiene(tmp_path):
    root = write_image_folder(str(tmp_path / "images"))
    os.makedirs(os.path.join(root, "train", ".ipynb_checkpoints"))  # hidden entries are skipped
    open(os.path.join(root, "train", "ant", ".DS_Store"), "w").write("junk")
    assert _pipeline(root, "folder").num_classes == 3

    notes = os.path.join(root, "train", "bee", "notes.txt")
    open(notes, "w").write("not an image")
    with pytest.raises(DataError, match=rf"'{notes}' is not an image file"):
        _pipeline(root, "folder")
    os.remove(notes)

    os.makedirs(os.path.join(root, "test", "cat_empty"))
    os.makedirs(os.path.join(root, "train", "cat_empty"))
    with pytest.raises(DataError, match=r"class 'cat_empty' of the test split has no images"):
        _pipeline(root, "folder")
    for split in ("train", "test"):
        os.rmdir(os.path.join(root, split, "cat_empty"))

    broken = os.path.join(root, "train", "cat", "zzz.png")
    open(broken, "wb").write(b"\x89PNG broken")
    with pytest.raises(DataError, match=rf"the train split: {broken} is not a decodable image"):
        _pipeline(root, "folder", cache=tmp_path / "cache2")


def test_mixed_image_sizes_are_resized_and_said(tmp_path, capsys):
    root = write_image_folder(str(tmp_path / "images"), size=12)
    odd = tf.io.encode_png(tf.zeros([20, 16, 3], tf.uint8)).numpy()
    open(os.path.join(root, "train", "bee", "zz_odd.png"), "wb").write(odd)
    pipeline = _pipeline(root, "folder")
    assert pipeline.image_size == 12
    images, _ = next(iter(pipeline.train_dataset(0, 4, 0)))
    assert images.shape == (4, 12, 12, 3)
    assert "note: 1 of 19 train images are not 12×12; they are resized to it" in capsys.readouterr().out
