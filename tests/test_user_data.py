"""The loop on a user's own data: tf.data datasets and arrays, seeded epochs, clear errors."""

import json

import numpy as np
import pytest
import tensorflow as tf

from iep.datasets import DataError
from iep.datasets.user_data import UserData
from iep.engine.trainer import TrainConfig, Trainer
from iep.methods import build_distiller
from iep.nets import build_network

RNG = np.random.default_rng(5)


def _arrays(n, classes=4, size=16):
    labels = np.arange(n) % classes
    images = RNG.integers(0, 60, size=(n, size, size, 3)).astype(np.uint8)
    images[np.arange(n), :, :, labels % 3] += 150  # learnable: the class lights one channel
    return images, labels


def test_user_data_counts_classes_and_statistics_like_numpy():
    images, labels = _arrays(40)
    data = UserData(tf.data.Dataset.from_tensor_slices((images, labels)).batch(7), splits={"test": (images, labels)})
    assert (data.num_train, data.num_classes, data.input_shape, data.splits) == (40, 4, (16, 16, 3), ("train", "test"))
    np.testing.assert_allclose(data.mean, images.reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(data.std, images.reshape(-1, 3).std(0), rtol=1e-5)
    assert data.steps_per_epoch(16) == 2


def test_keras_datasets_style_labels_of_shape_n_by_1_are_read():
    images, labels = _arrays(12)
    column = labels.reshape(-1, 1)  # keras.datasets.cifar10 gives labels [N, 1]
    for train in ((images, column), tf.data.Dataset.from_tensor_slices((images, column)).batch(5)):
        data = UserData(train, augment_images=False)
        assert data.num_train == 12 and data.num_classes == 4
        assert sorted(np.concatenate([y.numpy() for _, y in data.train_dataset(0, 4, 0)]).tolist()) == sorted(labels)


def test_epochs_are_seeded_and_cover_the_data():
    images, labels = _arrays(32)
    data = UserData((images, labels), augment_images=False)
    first = [y.numpy() for _, y in data.train_dataset(3, 8, seed=1)]
    again = [y.numpy() for _, y in data.train_dataset(3, 8, seed=1)]
    other = [y.numpy() for _, y in data.train_dataset(4, 8, seed=1)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))  # what makes resume exact
    assert not np.array_equal(np.concatenate(first), np.concatenate(other))
    assert sorted(np.concatenate(first).tolist()) == sorted(labels.tolist())
    x, _ = next(iter(data.train_dataset(0, 8, seed=0)))
    assert x.dtype == tf.float32 and x.shape == (8, 16, 16, 3)


@pytest.mark.parametrize(
    "train, message",
    [
        (tf.data.Dataset.from_tensor_slices({"image": np.zeros((4, 8, 8, 3))}), "expected a tf.data.Dataset of"),
        ((np.zeros((4, 8, 8, 3)), np.zeros(3)), r"images \[N, H, W, C\] and N labels .*; got images \(4, 8, 8, 3\)"),
        ((np.zeros((4, 8, 8)), np.zeros(4)), "expected images"),
        ("images.npy", "expected a tf.data.Dataset .* got str"),
        # were cast to int32 in silence: 2.5 trained as class 2; -1 reached the loss
        ((np.zeros((4, 8, 8, 3)), np.array([0, 1, 2.5, 3])), r"labels must be class indices 0, 1, ...; got \[2.5\]"),
        ((np.zeros((4, 8, 8, 3)), np.array([0, -1, 2, -3])), r"labels must be class indices 0, 1, ...; got \[-1, -3\]"),
        ((np.zeros((4, 8, 8, 3)), np.array(["cat", "dog", "cat", "dog"])), r"class indices 0, 1, ...; got \['cat'"),
        (tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 3)), [0, 1, -2, 1])), r"class indices .*; got -2"),
        # a NaN pixel reached the loss and stopped training epochs later, far from its cause
        (
            (np.where(np.arange(4)[:, None, None, None] == 2, np.nan, np.zeros((4, 8, 8, 3))), np.zeros(4)),
            r"^train data: 1 of 4 images hold a NaN or infinite pixel",
        ),
        (
            tf.data.Dataset.from_tensor_slices((np.full((4, 8, 8, 3), np.inf, np.float32), np.zeros(4))),
            r"^train data: 4 of 4 images hold a NaN",
        ),
    ],
)
def test_bad_user_data_is_refused_naming_what_is_expected(train, message):
    with pytest.raises(DataError, match=message):
        UserData(train)


def test_bad_user_data_settings_are_refused_naming_the_argument():
    images, labels = _arrays(8)
    # were taken: "no" switched augmentation on, a buffer of 0 failed in TF's words at the first epoch, a string
    # of class names gave one class per letter
    for kwargs, error, message in (
        ({"augment_images": "no"}, TypeError, r"^UserData.augment_images must be True or False, got 'no'$"),
        ({"cache": 1}, TypeError, r"^UserData.cache must be True or False, got 1$"),
        ({"shuffle_buffer": 0}, ValueError, r"^UserData.shuffle_buffer must be >= 1 \(examples held for shuffling\)"),
        ({"shuffle_buffer": 2.5}, TypeError, r"^UserData.shuffle_buffer must be an int, got 2.5$"),
        ({"class_names": "abcd"}, TypeError, r"^UserData.class_names must be a sequence of names, one per class"),
    ):
        with pytest.raises(error, match=message):
            UserData((images, labels), **kwargs)


def test_images_and_labels_may_come_as_two_arguments_like_keras_fit():
    images, labels = _arrays(12)
    apart, paired = UserData(images, labels, augment_images=False), UserData((images, labels), augment_images=False)
    assert (apart.num_train, apart.num_classes) == (paired.num_train, paired.num_classes) == (12, 4)
    for (x, y), (x2, y2) in zip(apart.train_dataset(0, 4, 0), paired.train_dataset(0, 4, 0), strict=True):
        np.testing.assert_array_equal(x.numpy(), x2.numpy())
        np.testing.assert_array_equal(y.numpy(), y2.numpy())
    with pytest.raises(DataError, match=r"^train data: labels are given beside a tf.data.Dataset"):
        UserData(tf.data.Dataset.from_tensor_slices((images, labels)), labels)


def test_an_eval_split_with_labels_past_the_train_classes_is_refused():
    images, labels = _arrays(12)  # classes 0-3
    with pytest.raises(DataError, match=r"split 'test': labels must be class indices 0 to 3 .*; got 5"):
        UserData((images, labels), splits={"test": (images, labels + 2)})
    with pytest.raises(DataError, match=r"split 'test': it is empty"):
        UserData((images, labels), splits={"test": (images[:0], labels[:0])})
    bad = images.astype(np.float32)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"split 'test': 1 of 12 images hold a NaN or infinite pixel"):
        UserData((images, labels), splits={"test": (bad, labels)})
    UserData((images, labels), splits={"test": (images[:3], labels[:3])})  # a split may miss classes


def test_splits_that_the_network_cannot_read_are_refused_naming_the_split():
    images, labels = _arrays(12)  # 16 x 16 px
    # were taken: another image size failed at the first evaluation, after a training epoch
    with pytest.raises(DataError, match=r"^split 'test': images \(8, 16, 3\), but the train data's are \(16, 16, 3\)"):
        UserData((images, labels), splits={"test": (images[:, :8], labels)})
    with pytest.raises(DataError, match=r"^split 'test': images \(16, 16, 1\), but the train data's are"):
        UserData((images, labels), splits={"test": tf.data.Dataset.from_tensor_slices((images[..., :1], labels))})
    # was an AttributeError ('list' object has no attribute 'items')
    with pytest.raises(DataError, match=r"^splits: expected evaluation splits by name, .*; got list"):
        UserData((images, labels), splits=[(images, labels)])
    # was taken: no eval_split can name a split called 3
    with pytest.raises(DataError, match=r"^splits: each split's name must be a string, e.g. 'test'; got 3$"):
        UserData((images, labels), splits={"test": (images, labels), 3: (images, labels)})


def test_a_student_built_for_other_images_or_classes_is_refused_by_the_trainer(tmp_path):
    images, labels = _arrays(16)
    data = UserData((images, labels), splits={"test": (images, labels)})
    wrong_size = r"train data: the student takes images \(32, 32, 3\) \[H, W, C\], got \(16, 16, 3\)"
    for student, message in (
        (build_network("resnet8", 4, (32, 32, 3)), wrong_size),
        (build_network("resnet8", 10, (16, 16, 3)), "the student has 10 outputs, but the data has 4 classes"),
    ):
        with pytest.raises(ValueError, match=message):
            Trainer(student, data, TrainConfig(epochs=1, batch_size=8), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_trainer_takes_a_tf_data_dataset_and_eval_arrays(tmp_path):
    images, labels = _arrays(96, size=32)
    train = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(96, seed=0).batch(32)
    probe = UserData((images, labels))
    student = build_network("resnet8", 4, (32, 32, 3), probe.mean, probe.std)
    config = TrainConfig(epochs=2, batch_size=32, progress=False, export=False, lr_schedule="constant", lr=0.05)
    with pytest.raises(ValueError, match=r"evaluation reads split 'test' .* has only \['train'\]"):
        Trainer(student, train, config, str(tmp_path / "no_eval"))
    trainer = Trainer(student, train, config, str(tmp_path / "run"), eval_data={"test": (images[:40], labels[:40])})
    summary = trainer.fit()
    history = json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all(np.isfinite(h["loss/total"]) for h in history)
    assert 0.0 <= summary["last_accuracy"] <= 1.0


def test_a_distiller_runs_on_user_data(tmp_path):
    images, labels = _arrays(64, size=32)
    data = UserData((images, labels), splits={"test": (images, labels)}, class_names=["a", "b", "c", "d"])
    teacher = build_network("resnet8", 4, (32, 32, 3), data.mean, data.std, name="teacher")
    student = build_network("resnet8", 4, (32, 32, 3), data.mean, data.std)
    distiller = build_distiller("at", teacher, student)
    config = TrainConfig(epochs=1, batch_size=32, progress=False, export=False, lr_schedule="constant", lr=0.05)
    record = Trainer(student, data, config, str(tmp_path), distiller)._main_epoch(0, tf.summary.create_noop_writer())
    assert record["loss/at"] > 0 and data.class_names == ("a", "b", "c", "d")


def test_a_pipelines_own_random_augmentation_draws_anew_every_epoch():
    """A user's map with random ops: not cached, so two epochs differ (they shared every draw when cached);
    cache=True freezes them on purpose."""
    n = 64
    images = np.zeros((n, 4, 4, 3), np.float32) + np.arange(n, dtype=np.float32)[:, None, None, None] * 4
    tf.keras.utils.set_random_seed(0)  # a global seed, as most users set: the pitfall of docs/extending.md
    generator = tf.random.Generator.from_seed(1)  # its state lives on across iterations (docs/extending.md)
    noisy = tf.data.Dataset.from_tensor_slices((images, np.arange(n) % 2)).map(
        lambda x, y: (x + generator.uniform([]), y)
    )

    def draws(data, epoch):
        batches = data.train_dataset(epoch, 16, seed=0)
        pixels = np.concatenate([x.numpy()[:, 0, 0, 0] for x, _ in batches])
        return {int(p // 4): p % 1 for p in pixels}  # example index → its random offset this epoch

    fresh = UserData(noisy, augment_images=False)
    first, second = draws(fresh, 0), draws(fresh, 1)
    assert not any(abs(first[i] - second[i]) < 1e-6 for i in set(first) & set(second))
    frozen = UserData(noisy, augment_images=False, cache=True)
    first, second = draws(frozen, 0), draws(frozen, 1)
    assert all(abs(first[i] - second[i]) < 1e-6 for i in set(first) & set(second))


def test_one_hot_labels_the_users_batch_size_and_unit_pixels_are_said(capsys):
    images, labels = _arrays(60)
    one_hot = np.eye(4)[labels]
    data = UserData((images, one_hot))
    assert (data.num_train, data.num_classes) == (60, 4)
    assert [int(y) for _, y in data.split("train")] == list(labels)
    batched = tf.data.Dataset.from_tensor_slices((images, one_hot)).batch(16)
    data = UserData(batched)
    assert data.source_batch_size == 16 and [int(y) for _, y in data.split("train")] == list(labels)
    list(data.train_dataset(0, 32, 0))
    list(data.train_dataset(1, 32, 0))
    out = capsys.readouterr().out
    assert out.count("came in batches of 16; the loop re-batches it in batches of 32") == 1  # said once
    assert "28 of 60 images left out each epoch" in out
    with pytest.raises(DataError, match=r"labels \(60, 4\) are neither class indices"):
        UserData((images, one_hot * 2))
    UserData((images.astype(np.float32) / 255.0, labels))
    assert "every pixel lies in [0, 0.82]; iep expects pixels in [0, 255]" in capsys.readouterr().err
    UserData((images.astype(np.float32), labels))
    assert "iep expects pixels" not in capsys.readouterr().err
