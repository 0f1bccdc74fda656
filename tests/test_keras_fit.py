"""`DistillationModel.fit` takes the loop's steps: same batches, same start → same weights as `Trainer`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from iep.datasets.user_data import UserData
from iep.engine.trainer import TrainConfig, Trainer
from iep.keras_fit import DistillationModel
from iep.methods import build_distiller
from iep.nets import build_network

RNG = np.random.default_rng(9)


def _data():
    labels = np.arange(64) % 4
    images = RNG.integers(0, 255, size=(64, 32, 32, 3)).astype(np.uint8)
    return UserData((images, labels), splits={"test": (images, labels)}, augment_images=False)


def _pair(data, method):
    """Teacher, student and distiller from one seed, so two calls build identical starting points."""
    keras.utils.set_random_seed(0)
    teacher = build_network("resnet8", 4, data.input_shape, data.mean, data.std, name="teacher")
    teacher.model.trainable = False
    student = build_network("resnet8", 4, data.input_shape, data.mean, data.std, name="student")
    extra = {"module_steps": 0} if method.startswith("iep") else {}
    distiller = build_distiller(method, teacher, student, seed=0, **extra)
    return student, distiller


@pytest.mark.parametrize("method", ["kd", "iep"])  # a plain sum, and IEP's norm-clipped combination
def test_fit_takes_the_same_steps_as_the_trainer(tmp_path, method):
    data = _data()
    config = TrainConfig(epochs=1, batch_size=32, lr=0.05, lr_schedule="constant", progress=False, export=False)
    student_a, distiller_a = _pair(data, method)
    Trainer(student_a, data, config, str(tmp_path / "trainer"), distiller_a).fit()

    student_b, distiller_b = _pair(data, method)
    start = [w.copy() for w in student_b.model.get_weights()]
    model = DistillationModel(student_b, distiller_b, weight_decay=config.weight_decay)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    history = model.fit(data.train_dataset(0, 32, config.seed), epochs=1, verbose=0)

    assert any(not np.array_equal(a, b) for a, b in zip(start, student_b.model.get_weights(), strict=True))
    for a, b in zip(student_a.model.get_weights(), student_b.model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.isfinite(history.history["loss_total"][-1])
    logs = model.evaluate(data.eval_dataset("test", 32), verbose=0, return_dict=True)
    assert 0.0 <= logs["accuracy"] <= 1.0


def test_methods_with_a_pre_phase_are_sent_to_the_trainer():
    data = _data()
    student, _ = _pair(data, "kd")
    teacher = build_network("resnet8", 4, data.input_shape, data.mean, data.std, name="t2")
    fitnet = build_distiller("fitnet", teacher, student, main_steps=10)
    with pytest.raises(ValueError, match=r"--distill=fitnet has pre-phases \['pre_phase'\] that keras.Model.fit"):
        DistillationModel(student, fitnet)


def test_the_epoch_reaches_the_clip_schedule():
    data = _data()
    student, distiller = _pair(data, "iep")
    model = DistillationModel(student, distiller)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(data.train_dataset(0, 32, 0).take(1).repeat(3), epochs=3, steps_per_epoch=1, verbose=0)
    assert float(model._epoch.numpy()) == 2.0  # the last epoch's index, as the loop counts them
    assert isinstance(model._epoch, tf.Variable)
