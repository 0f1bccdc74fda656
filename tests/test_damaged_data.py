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


def _undecodable(path: str, index: int) -> str:
    """The shard with record `index`'s image bytes replaced by bytes no decoder reads; returns its path."""
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    bad = tf.train.Example.FromString(records[index])
    bad.features.feature["image/encoded"].bytes_list.value[0] = b"\xff\xd8 not a jpeg"
    records[index] = bad.SerializeToString()
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return path


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
    path = _undecodable(os.path.join(root, "train-00000-of-00001.tfrecord"), 5)
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


def test_a_record_with_a_wrong_feature_name_names_the_missing_feature_in_plain_words(tmp_path):
    root = str(tmp_path / "records")
    os.makedirs(root)
    with tf.io.TFRecordWriter(os.path.join(root, "train-00000-of-00001.tfrecord")) as writer:
        encoded = tf.io.encode_png(tf.zeros((4, 4, 3), tf.uint8)).numpy()
        feature = {
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
            "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[0])),  # not image/class/label
        }
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    with pytest.raises(DataError) as raised:
        _pipeline(root)
    message = str(raised.value)
    assert "Feature: image/class/label (data type: int64) is required but could not be found" in message
    for internal in ("{{function_node", "Error in user-defined function", "[[{{node", "[Op:", "Iterator::"):
        assert internal not in message, internal


def test_a_missing_classes_txt_is_not_named_as_a_file(tmp_path):
    root = write_tfrecords(str(tmp_path / "records"), {"train": [0, 1] * 3, "test": [0, 3]}, classes=None)
    assert not os.path.exists(os.path.join(root, "classes.txt"))
    with pytest.raises(DataError, match=r"vs the 2 classes the train split's labels imply \(no classes.txt in"):
        _pipeline(root)


def test_op_message_keeps_the_ops_own_words():
    from iep.core.errors import op_message

    try:
        list(tf.data.Dataset.from_tensor_slices([b"\xff\xd8garbage"]).map(tf.io.decode_jpeg))
    except tf.errors.OpError as error:
        text = op_message(error)
    assert text.startswith("Unknown image file format") and "{{" not in text and "[Op:" not in text

    @tf.function
    def checked_log(x):
        return tf.debugging.check_numerics(tf.math.log(x), "distillation loss")

    try:
        checked_log(tf.constant(-1.0))  # a graph op: TF adds "Detected at node ..." and the Python frames
    except tf.errors.InvalidArgumentError as error:
        text = op_message(error)
    assert text == "distillation loss : Tensor had NaN values"
    long = ValueError("word " * 100)
    cut = op_message(long, limit=52)
    assert cut.endswith(" …") and all(w == "word" for w in cut[:-2].split())  # cut between words, never inside


def test_a_corrupt_jpeg_is_one_line_on_stderr(tmp_path):
    """train.py on an image folder with a truncated JPEG: our one error line, no raw libjpeg lines before it."""
    import subprocess

    from tests.helpers import subprocess_env, train_command

    root = write_image_folder(str(tmp_path / "images"))
    victim = os.path.join(root, "train", "bee", "001.png")
    jpeg = tf.io.encode_jpeg(tf.zeros((12, 12, 3), tf.uint8)).numpy()
    os.remove(victim)
    with open(victim.replace(".png", ".jpg"), "wb") as f:
        f.write(jpeg[: len(jpeg) // 2])
    command = train_command(tmp_path / "run", "--dataset=folder", f"--data_dir={root}", "--rate=1", "--epochs=1")
    env = {k: v for k, v in subprocess_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    env["IEP_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "001.jpg" in lines[0], done.stderr


def test_an_undecodable_test_image_is_named_before_the_first_epoch(tmp_path):
    """The test split is decoded at the first evaluation: a bad image there used to surface after an epoch had
    trained, before its checkpoint. The trainer decodes its evaluation split before training."""
    from iep.engine.trainer import TrainConfig, Trainer
    from iep.nets import build_network

    root = str(tmp_path / "records")
    write_tfrecords(root, LABELS, classes=["a", "b", "c"])
    path = _undecodable(os.path.join(root, "test-00000-of-00001.tfrecord"), 1)
    data = _pipeline(root)
    student = build_network("resnet8", 3, data.input_shape, data.mean, data.std)
    config = TrainConfig(epochs=1, batch_size=4, progress=False, export=False)
    trainer = Trainer(student, data, config, str(tmp_path / "run"))
    with pytest.raises(DataError, match=rf"the test split: {path} record 1 is not a decodable image"):
        trainer.fit()
    assert int(trainer.optimizer.iterations.numpy()) == 0 and not os.path.exists(tmp_path / "run" / "checkpoints")
