"""Keras 3's own `keras.distillation`, on one batch beside ours: the pitfall of its default logits loss, and what
its feature path costs (a second student pass)."""

import keras
import numpy as np
import pytest

from iep.baselines.logit_kd import kd_loss

keras_distillation = pytest.importorskip("keras.distillation")


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_logits_distillations_default_loss_is_not_t2_kl_of_the_softened_distributions():
    """`LogitsDistillation()` gets `keras.losses.get("kl_divergence")`, the *function*: not the `KLDivergence`
    instance its code checks for, so it applies KL to logits/T (clipped to [1e-7, 1], no softmax) and skips T²."""
    rng = np.random.default_rng(0)
    z_s, z_t = (rng.normal(size=(8, 10)) * 3).astype("float32"), (rng.normal(size=(8, 10)) * 5).astype("float32")
    temperature = 3.0
    p_t, p_s = _softmax(z_t / temperature), _softmax(z_s / temperature)
    t2_kl = temperature**2 * (p_t * (np.log(p_t) - np.log(p_s))).sum(1).mean()
    default = float(keras_distillation.LogitsDistillation(temperature=temperature).compute_loss(z_t, z_s))
    instance = keras_distillation.LogitsDistillation(temperature=temperature, loss=keras.losses.KLDivergence())
    assert float(instance.compute_loss(z_t, z_s)) == pytest.approx(t2_kl, rel=1e-4)
    assert float(kd_loss(z_s, z_t, temperature)) == pytest.approx(t2_kl, rel=1e-4)  # ours, T²·KL
    assert abs(default - t2_kl) > 1.0, (default, t2_kl)  # 27.21 against 8.76 on this batch (keras 3.15)
    print(f"LogitsDistillation() {default:.2f}, T²·KL {t2_kl:.2f}")


def test_feature_distillation_runs_the_student_twice():
    """FeatureDistillation with layer names: `Distiller.compute_loss` runs the student for its logits and again
    through a feature extractor in training mode, so a BN layer's moving mean moves twice per step."""
    import iep

    keras.utils.set_random_seed(0)
    teacher, student = iep.build_network("resnet8", 4, name="t"), iep.build_network("resnet8", 4, name="s")
    teacher.model.trainable = False
    name = student.tap_names[-1]
    distiller = keras_distillation.Distiller(
        teacher.classifier,
        student.classifier,
        keras_distillation.FeatureDistillation(loss="mse", teacher_layer_name=name, student_layer_name=name),
        student_loss_weight=0.5,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(True))
    bn = next(layer for layer in student.classifier.layers if isinstance(layer, keras.layers.BatchNormalization))
    images = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    labels = np.arange(16) % 4
    before = bn.moving_mean.numpy().copy()
    distiller.train_on_batch(images, labels)
    after_keras = bn.moving_mean.numpy().copy()
    bn.moving_mean.assign(before)
    student.classifier(images, training=True)  # one training-mode pass, as iep's step makes
    once = bn.moving_mean.numpy().copy()
    bn.moving_mean.assign(before)
    student.classifier(images, training=True)
    student.classifier(images, training=True)
    twice = bn.moving_mean.numpy()
    np.testing.assert_allclose(after_keras, twice, rtol=1e-5, atol=1e-6)
    assert not np.allclose(after_keras, once)
