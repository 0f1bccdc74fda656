"""`DistillationModel.fit` takes the loop's steps: same batches, same start → same weights as `Trainer`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from iep.engine.trainer import TrainConfig, Trainer
from iep.keras_fit import DistillationModel
from iep.methods import build_distiller
from iep.nets import build_network
from tests.helpers import tiny_user_data

RNG = np.random.default_rng(9)


def _data():
    return tiny_user_data(RNG)


def _pair(data, method, module_steps=0):
    """Teacher, student and distiller from one seed, so two calls build identical starting points."""
    keras.utils.set_random_seed(0)
    teacher = build_network("resnet8", 4, data.input_shape, data.mean, data.std, name="teacher")
    teacher.model.trainable = False
    student = build_network("resnet8", 4, data.input_shape, data.mean, data.std, name="student")
    extra = {"module_steps": module_steps} if method.startswith("iep") else {}
    if method == "crd":
        extra = {"data": data, "negatives": 16}
    distiller = build_distiller(method, teacher, student, seed=0, main_steps=2, epochs=1, **extra)
    return student, distiller


def _state(distiller) -> list[np.ndarray]:
    """Every value the method checkpoints: its modules' variables and its own state variables."""
    values = []
    for item in tf.nest.flatten(list(distiller.checkpointables().values())):
        values += [v.numpy() for v in (item.variables if isinstance(item, keras.layers.Layer) else [item])]
    return values


# a plain sum; IEP's norm-clipped combination; with pre-phases run inside fit: IEP+BB's module phase
# (3 steps: 2 passes of 2 and 1), FitNet's student initialization (30 % of 2 main steps: 1 step); CRD's
# memory of one row per image, on batches that carry their images' indices; ReviewKD's ABFs (BN statistics too);
# MLKD, on batches that carry a strong (RandAugment) view of each image
@pytest.mark.parametrize(
    "method, module_steps",
    [("kd", 0), ("iep", 0), ("iep_bb", 3), ("fitnet", 0), ("crd", 0), ("reviewkd", 0), ("mlkd", 0)],
)
def test_fit_takes_the_same_steps_as_the_trainer(tmp_path, method, module_steps):
    data = _data()
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, lr_schedule="constant", progress=False, export=False)
    student_a, distiller_a = _pair(data, method, module_steps)
    Trainer(student_a, data, config, str(tmp_path / "trainer"), distiller_a).fit()

    student_b, distiller_b = _pair(data, method, module_steps)
    start = [w.copy() for w in student_b.model.get_weights()]
    model = DistillationModel(student_b, distiller_b, weight_decay=config.weight_decay)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    assert model.pre_phases_done == (not distiller_b.pre_phases())
    train = data.train_dataset(0, 32, config.seed, extras=distiller_b.batch_extras)
    history = model.fit(train, epochs=1, verbose=0, pre_phase_data=data, batch_size=32)
    assert model.pre_phases_done
    for a, b in zip(distiller_a.pre_phase_variables, distiller_b.pre_phase_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)  # the modules the trainer trained

    assert any(not np.array_equal(a, b) for a, b in zip(start, student_b.model.get_weights(), strict=True))
    for a, b in zip(student_a.model.get_weights(), student_b.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for a, b in zip(_state(distiller_a), _state(distiller_b), strict=True):  # CRD's memory, Z and counter too
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.isfinite(history.history["loss_total"][-1])
    logs = model.evaluate(data.eval_dataset("test", 32), verbose=0, return_dict=True)
    assert 0.0 <= logs["accuracy"] <= 1.0


def test_crd_under_fit_asks_for_the_indices():
    data = _data()
    student, distiller = _pair(data, "crd")
    model = DistillationModel(student, distiller)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    with pytest.raises(ValueError, match=r"crd reads indices beside each batch: .* \(images, labels, indices\)"):
        model.fit(data.train_dataset(0, 32, 0), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="crd reads indices beside each batch"):
        model.fit(np.zeros((64, 32, 32, 3), np.uint8), np.zeros(64), epochs=1, verbose=0)
    # refused before tracing: the same model then fits on batches that carry the indices
    history = model.fit(data.train_dataset(0, 32, 0, extras=("indices",)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss_total"][-1]) and model.optimizer.iterations.numpy() > 0


def test_a_method_name_or_a_bare_keras_model_is_refused_with_what_to_pass():
    data = _data()
    student, _ = _pair(data, "kd")
    with pytest.raises(TypeError, match=r"distiller must be a Distiller, e.g. iep.build_distiller\('kd', teacher"):
        DistillationModel(student, "kd")  # was an AttributeError on 'str'
    with pytest.raises(TypeError, match=r"^student must be a TappedNetwork: iep.build_network\(...\) or iep.tap_model"):
        DistillationModel(student.model)
    with pytest.raises(ValueError, match=r"^weight_decay must be a finite number >= 0 \(e.g. 5e-4\), got '5e-4'$"):
        DistillationModel(student, weight_decay="5e-4")
    with pytest.raises(ValueError, match=r"^weight_decay must be a finite number >= 0 \(e.g. 5e-4\), got -1$"):
        DistillationModel(student, weight_decay=-1)


def test_a_distiller_built_for_another_student_is_refused():
    """FitNet's connectors are sized on the student it was built for: another student failed on a shape in the
    first traced step, or trained with modules sized for someone else."""
    data = _data()
    student, distiller = _pair(data, "fitnet")
    other = build_network("wrn-10-2", 4, data.input_shape, data.mean, data.std, name="other")
    with pytest.raises(ValueError, match=r"^the distiller \(fitnet\) was built for another student than 'other': "):
        DistillationModel(other, distiller)
    config = TrainConfig(epochs=1, batch_size=32, progress=False, export=False)
    with pytest.raises(ValueError, match=r"^the distiller \(fitnet\) was built for another student than 'other': "):
        Trainer(other, data, config, "unused", distiller)  # the trainer too, before its run directory is made
    assert DistillationModel(student, distiller).student is student
    assert DistillationModel(other).distiller.built_for is None  # plain training, built by hand


def test_pre_phases_need_a_sized_source():
    data = _data()
    student, distiller = _pair(data, "fitnet")
    model = DistillationModel(student, distiller)
    with pytest.raises(ValueError, match="give batch_size with a UserData"):
        model.fit_pre_phases(data)
    with pytest.raises(ValueError, match="length is unknown or infinite"):
        model.fit_pre_phases(data.train_dataset(0, 32, 0).repeat())
    # -1 ran no step and marked the pre-phases done; 0 divided by zero
    with pytest.raises(ValueError, match=r"^fit_pre_phases.batch_size must be >= 1, got -1$"):
        model.fit_pre_phases(data, batch_size=-1)
    with pytest.raises(ValueError, match=r"^batch_size must be an int >= 1, got 0$"):
        data.steps_per_epoch(0)
    assert not model.pre_phases_done


def test_the_epoch_reaches_the_clip_schedule():
    data = _data()
    student, distiller = _pair(data, "iep")
    model = DistillationModel(student, distiller)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(data.train_dataset(0, 32, 0).take(1).repeat(3), epochs=3, steps_per_epoch=1, verbose=0)
    assert float(model._epoch.numpy()) == 2.0  # the last epoch's index, as the loop counts them
    assert isinstance(model._epoch, tf.Variable)


def test_evaluate_and_the_history_report_the_epoch_mean_not_the_last_batch():
    """1,000 images, batch sizes that leave a short last batch: evaluate() is the accuracy over every image
    (it said the last 104 images' at batch 128), and the history's training loss is the epoch's mean."""
    keras.utils.set_random_seed(1)
    images = RNG.integers(0, 255, size=(1000, 32, 32, 3)).astype(np.float32)
    labels = RNG.integers(0, 4, size=1000)
    student = build_network("resnet8", 4, (32, 32, 3), [127.0] * 3, [64.0] * 3, name="student")
    model = DistillationModel(student)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    predicted = np.argmax(student.model.predict(images, batch_size=250, verbose=0)["logits"], -1)
    true_accuracy = float(np.mean(predicted == labels))
    for batch_size in (128, 7):
        logs = model.evaluate(images, labels, batch_size=batch_size, verbose=0, return_dict=True)
        assert logs["accuracy"] == pytest.approx(true_accuracy, abs=1e-6), batch_size
    # The history's training values: the mean over the epoch's images (lr 0 keeps the weights, so each
    # batch's value can be recomputed with the same step outside fit).
    from iep.engine.trainer import distillation_gradients

    model.compile(optimizer=keras.optimizers.SGD(0.0))
    history = model.fit(images[:300], labels[:300], batch_size=128, epochs=1, verbose=0, shuffle=False)
    per_batch = []
    for start in (0, 128, 256):
        stop = min(start + 128, 300)
        x, y = tf.constant(images[start:stop]), tf.constant(labels[start:stop], tf.int32)
        _, values = distillation_gradients(student, model.distiller, x, y, model._distill_variables, [], 0.0,
                                           model._epoch)  # fmt: skip
        per_batch.append((float(values["accuracy/train"]), len(y)))
    expected = sum(a * n for a, n in per_batch) / 300
    assert history.history["accuracy_train"][0] == pytest.approx(expected, abs=1e-6)
    assert history.history["accuracy_train"][0] != pytest.approx(per_batch[-1][0], abs=1e-6)


def test_save_writes_the_students_classifier_that_plain_keras_loads(tmp_path):
    data = _data()
    student, distiller = _pair(data, "kd")
    model = DistillationModel(student, distiller)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(data.train_dataset(0, 32, 0), epochs=1, verbose=0)
    model.save(str(tmp_path / "student.keras"))
    loaded = keras.saving.load_model(str(tmp_path / "student.keras"))
    images = next(iter(data.eval_dataset("test", 8)))[0]
    np.testing.assert_allclose(loaded(images), student.classifier(images), rtol=1e-5, atol=1e-5)
    assert not [layer for layer in loaded.layers if layer.__class__.__module__.startswith("iep")]


def _pixel_student():
    """A student that standardizes pixels in [0, 255], as every network of ours built on real data."""
    return build_network("resnet8", 10, (32, 32, 3), [125.0, 122.0, 113.0], [63.0, 62.0, 66.0])


def test_images_on_the_wrong_scale_and_bad_labels_are_refused_before_the_first_step():
    from iep.datasets import DataError

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 16)
    model = DistillationModel(_pixel_student())
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    for call, args in ((model.fit, (x / 255.0, y)), (model.evaluate, (x / 255.0, y)), (model.predict, (x / 255.0,))):
        with pytest.raises(DataError, match=r"pixels in \[0, 255\].*multiply by 255"):
            call(*args, verbose=0)
    with pytest.raises(DataError, match=r"fit y: labels must be class indices.*2\.5"):
        model.fit(x, np.full(16, 2.5), verbose=0)
    with pytest.raises(DataError, match="label 12 is past the student's 10 classes"):
        model.fit(x, np.full(16, 12), verbose=0)
    damaged = x.copy()
    damaged[[3, 7], 5, 5, 0] = (np.nan, np.inf)
    for call, args in ((model.fit, (damaged, y)), (model.evaluate, (damaged, y)), (model.predict, (damaged,))):
        with pytest.raises(DataError, match=r"x: 2 of 16 images hold a NaN or infinite pixel"):
            call(*args, verbose=0)
    one_hot_of_five = tf.data.Dataset.from_tensor_slices((x, keras.utils.to_categorical(y % 5, 5))).batch(8)
    with pytest.raises(DataError, match="fit labels: one-hot rows of 5 classes, but the student has 10"):
        model.fit(one_hot_of_five, verbose=0)
    # one channel passed predict in silence (the standardization broadcast it over three); another size and
    # unequal lengths failed in Keras's words
    one_channel = r"x: the student takes images \(32, 32, 3\) \[H, W, C\], got \(32, 32, 1\)"
    for call, args in ((model.fit, (x[..., :1], y)), (model.evaluate, (x[..., :1], y)), (model.predict, (x[..., :1],))):
        with pytest.raises(DataError, match=one_channel):
            call(*args, verbose=0)
    with pytest.raises(DataError, match=r"^fit x: the student takes images \(32, 32, 3\) .*, got \(16, 32, 3\)"):
        model.fit(tf.data.Dataset.from_tensor_slices((x[:, :16], y)).batch(8), verbose=0)
    with pytest.raises(DataError, match=r"^fit: x holds 16 images but y 5 labels; expected one label each"):
        model.fit(x, y[:5], verbose=0)
    assert model.optimizer.iterations.numpy() == 0  # nothing trained


def test_one_hot_labels_train_as_their_indices():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 16)
    histories = []
    for labels in (y, keras.utils.to_categorical(y, 10)):
        keras.utils.set_random_seed(0)
        model = DistillationModel(_pixel_student())
        model.compile(optimizer=keras.optimizers.SGD(0.01))
        history = model.fit(x, labels, batch_size=8, epochs=1, shuffle=False, verbose=0).history
        histories.append({k: v[-1] for k, v in history.items()})
        dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(8)
        histories.append(model.evaluate(dataset, verbose=0, return_dict=True))
    assert histories[0] == pytest.approx(histories[2]) and histories[1] == pytest.approx(histories[3])


def _compiled(data, method, **kwargs):
    student, distiller = _pair(data, method, **kwargs)
    model = DistillationModel(student, distiller)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    return model


def _training_state(model) -> list[np.ndarray]:
    return [np.asarray(v) for v in (*model._state_variables(), *model.optimizer.variables)]


def test_save_weights_and_model_checkpoint_keep_the_whole_training_state(tmp_path):
    """Built at construction, so save_weights works before fit; the file holds the student, VID's regressors and
    its raw tf.Variable scales, the optimizer's momenta, the epoch counter: a second model loads all of it."""
    data = _data()
    model = _compiled(data, "vid")
    model.save_weights(str(tmp_path / "start.weights.h5"))  # "has not yet been built" before
    checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch.weights.h5"), save_weights_only=True)
    model.fit(data.train_dataset(0, 32, 0), epochs=2, verbose=0, callbacks=[checkpoint])
    other = _compiled(data, "vid")  # untrained: loading must overwrite every value, momenta included
    changed = [not np.array_equal(a, b) for a, b in zip(_training_state(model), _training_state(other), strict=True)]
    assert sum(changed) > 50
    other.load_weights(str(tmp_path / "epoch.weights.h5"))
    for a, b in zip(_training_state(model), _training_state(other), strict=True):
        np.testing.assert_array_equal(a, b)
    assert float(other._epoch.numpy()) == 1.0
    with pytest.raises(ValueError, match="saved from another student or method"):
        _compiled(data, "kd").load_weights(str(tmp_path / "epoch.weights.h5"))


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_without_repeating_the_pre_phases(tmp_path):
    """FitNet's pre-phase runs once: the interrupted fit's backup holds it done, and the resumed fit ends on the
    uninterrupted run's weights."""
    data = _data()
    train = data.eval_dataset("test", 32)  # no augmentation, the same batches every epoch
    straight = _compiled(data, "fitnet")
    straight.fit(train, epochs=2, verbose=0, shuffle=False, pre_phase_data=data, batch_size=32)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    first = _compiled(data, "fitnet")
    with pytest.raises(RuntimeError, match="interrupted"):
        first.fit(train, epochs=2, verbose=0, pre_phase_data=data, batch_size=32, callbacks=[backup, _Interrupt()])
    resumed = _compiled(data, "fitnet")
    resumed.fit_pre_phases = lambda *a, **k: pytest.fail("the restored model ran its pre-phases again")
    resumed.fit(train, epochs=2, verbose=0, pre_phase_data=data, batch_size=32, callbacks=[backup])
    assert resumed.pre_phases_done and resumed.optimizer.iterations.numpy() == straight.optimizer.iterations.numpy()
    for a, b in zip(straight.student.model.get_weights(), resumed.student.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
