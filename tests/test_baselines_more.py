"""FitNet, AB, CO, FT, MHGD: losses against NumPy, pre-phases that train only their own variables,
real-CIFAR-10 steps, and the per-method override flag."""

import math

import numpy as np
import pytest
import tensorflow as tf

from iep.baselines.factor_transfer import factor_loss, paraphraser_loss
from iep.baselines.hints import ab_loss, activation_boundary_loss, fitnet_loss, overhaul_loss, overhaul_margin
from iep.engine.trainer import TrainConfig, Trainer
from iep.methods import build_distiller, parse_distill_args
from iep.nets import build_network
from iep.procedure.black_box import MultiHeadGraph
from tests.helpers import frozen_teacher_and_student

RNG = np.random.default_rng(3)


def _maps(*shapes):
    return [RNG.normal(size=s).astype(np.float32) for s in shapes]


def test_fitnet_and_ab_losses_against_numpy():
    s, t = _maps((2, 4, 4, 3), (2, 2, 2, 5)), _maps((2, 4, 4, 3), (2, 2, 2, 5))
    expected = sum(((a - b) ** 2).sum() / (a.shape[0] * a.shape[1] * a.shape[2]) for a, b in zip(s, t, strict=True))
    np.testing.assert_allclose(fitnet_loss(s, t).numpy(), expected, rtol=1e-5)

    def boundary(a, b, m):
        total = 0.0
        for x, y in zip(a.ravel(), b.ravel(), strict=True):
            if y <= 0 and x > -m:
                total += (x + m) ** 2
            elif y > 0 and x <= m:
                total += (x - m) ** 2
        return total / (a.shape[0] * a.shape[1] * a.shape[2])

    np.testing.assert_allclose(activation_boundary_loss(s[0], t[0], 1.0).numpy(), boundary(s[0], t[0], 1.0), rtol=1e-5)
    expected = boundary(s[0], t[0], 0.5) / 2 + boundary(s[1], t[1], 0.5)  # point i of n weighted 2^(i-n+1)
    np.testing.assert_allclose(ab_loss(s, t, 0.5).numpy(), expected, rtol=1e-5)
    assert float(activation_boundary_loss(np.sign(t[0]) * 2, t[0], 1.0)) == 0.0  # right side, beyond the margin


def test_overhaul_margin_is_the_expected_negative_response():
    gamma, beta = np.array([1.0, 0.5, 2.0, 0.1]), np.array([0.0, 0.3, -1.0, 1.0])
    got = overhaul_margin(gamma, beta)
    for g, b, m in zip(gamma, beta, got, strict=True):
        x = np.linspace(b - 12 * g, 0.0, 200001)
        density = np.exp(-((x - b) ** 2) / (2 * g * g))
        mass = np.trapezoid(density, x)
        if mass / (g * math.sqrt(2 * math.pi)) > 1e-3:
            assert m == pytest.approx(np.trapezoid(x * density, x) / mass, rel=1e-4)
        else:  # almost never negative: the code's fallback
            assert m == pytest.approx(-3 * g)


def test_overhaul_loss_against_numpy():
    s, t = _maps((3, 2, 2, 4), (3, 1, 1, 4)), _maps((3, 2, 2, 4), (3, 1, 1, 4))
    margins = [np.full(4, -0.5, np.float32), np.full(4, -0.2, np.float32)]
    expected = 0.0
    for i, (a, b, m) in enumerate(zip(s, t, margins, strict=True)):
        b = np.maximum(b, m)
        expected += (((a - b) ** 2) * ((a > b) | (b > 0))).sum() / 2 ** (1 - i)
    got = overhaul_loss(s, t, [tf.constant(m) for m in margins], 1e-3).numpy()
    np.testing.assert_allclose(got, 1e-3 * expected / 3, rtol=1e-5)


def test_factor_transfer_losses_against_numpy():
    f, factor, rebuilt = _maps((2, 4, 4, 6), (2, 2, 2, 3), (2, 4, 4, 6))
    expected = (np.abs(f - rebuilt).sum() + 1e-6 * np.abs(factor).sum()) / 32
    np.testing.assert_allclose(paraphraser_loss(f, factor, rebuilt).numpy(), expected, rtol=1e-5)
    s, t = _maps((2, 2, 2, 3), (2, 2, 2, 3))

    def unit(x):
        return x / np.linalg.norm(x.reshape(2, -1), axis=1)[:, None, None, None]

    np.testing.assert_allclose(factor_loss(s, t, 100.0).numpy(), 100 * np.abs(unit(t) - unit(s)).mean(), rtol=1e-5)


def test_mhgd_heads_without_the_extrinsic_slot():
    module = MultiHeadGraph(6, 4, heads=8, seed=0, extrinsic_head=False)
    x_from, x_to = tf.random.normal((5, 6), seed=1), tf.random.normal((5, 4), seed=2)
    logits = module.attention(x_from, x_to)
    assert logits.shape == (8, 5, 5)  # all eight heads are learned
    estimate = module.estimate(x_from, logits, training=False)
    np.testing.assert_allclose(np.linalg.norm(estimate.numpy(), axis=-1), 1.0, rtol=1e-5)


def test_distill_args_are_checked_before_compute():
    teacher, student = build_network("wrn-10-1", 10), build_network("resnet8", 10)
    assert parse_distill_args(["beta=500", " margin = 2"]) == {"beta": "500", "margin": "2"}
    with pytest.raises(ValueError, match="key=value"):
        parse_distill_args(["beta"])
    with pytest.raises(ValueError, match="gives beta twice .'500' and '50'."):
        parse_distill_args(["beta=500", "beta=50"])
    with pytest.raises(ValueError, match=r"unknown for at; it accepts \['beta'\]"):
        build_distiller("at", teacher, student, overrides={"temperature": "2"})
    with pytest.raises(ValueError, match="beta='big' for at: expected a finite float"):
        build_distiller("at", teacher, student, overrides={"beta": "big"})
    assert build_distiller("at", teacher, student, overrides={"beta": "500"}).beta == 500.0
    assert build_distiller("ab", teacher, student, main_steps=100).pre_phase_steps == 30  # 30 % of the main steps
    assert build_distiller("ft", teacher, student, overrides={"pre_phase_steps": "7"}).pre_phase_steps == 7
    with pytest.raises(ValueError, match="BatchNormalization before each teacher sensing point"):
        build_distiller("co", build_network("resnet8", 10), student)


@pytest.mark.parametrize(
    "method, overrides, expected",
    [
        ("kd", {"temperature": "-1"}, "temperature for kd must be > 0, got -1"),
        ("kd", {"weight": "-0.5"}, "weight for kd must be >= 0"),
        ("dkd", {"warmup_fraction": "-0.5"}, r"warmup_fraction for dkd must be >= 0"),
        ("mhgd", {"heads": "0"}, "heads for mhgd must be >= 1"),
        ("fitnet", {"pre_phase_lr": "0"}, "pre_phase_lr for fitnet must be > 0"),
        ("rkd", {"angle_weight": "-50"}, "angle_weight for rkd must be >= 0"),
    ],
)
def test_distill_args_out_of_range_are_refused(method, overrides, expected):
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    with pytest.raises(ValueError, match=expected):
        build_distiller(method, teacher, student, main_steps=10, epochs=1, overrides=overrides)


def test_every_numeric_option_has_a_range():
    from iep.methods import OPTION_RANGES, REGISTRY, method_options

    numeric = {
        name
        for method in REGISTRY
        for name, default in method_options(method).items()
        if isinstance(default, (int, float)) and not isinstance(default, bool)
    }
    assert numeric <= set(OPTION_RANGES), sorted(numeric - set(OPTION_RANGES))


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(a, v.numpy()) for a, v in zip(before, variables, strict=True)]


# method with a pre-phase → does that pre-phase train the student (FitNet/AB initialize it)?
PRE_PHASES = {
    "fitnet": True,
    "ab": True,
    "ft": False,
    "mhgd": False,
}


@pytest.mark.parametrize("method", ["fitnet", "ab", "co", "ft", "mhgd"])
def test_method_pre_phase_and_steps_on_real_cifar10(cifar10_subset, tmp_path, method):
    data = cifar10_subset
    teacher, student = frozen_teacher_and_student(data, "wrn-10-1", "resnet8")
    overrides = {"pre_phase_steps": "3"} if method in PRE_PHASES else {}
    distiller = build_distiller(method, teacher, student, overrides=overrides, seed=0)
    config = TrainConfig(epochs=1, batch_size=100, progress=False, export=False, lr_schedule="constant", lr=0.05)
    trainer = Trainer(student, data, config, str(tmp_path), distiller)
    trainer.evaluate = lambda split=None: 0.0  # evaluation has its own tests; here only the steps matter
    writer = tf.summary.create_noop_writer()
    teacher_before, student_before = _snapshot(teacher.model.weights), _snapshot(student.model.weights)
    if method in PRE_PHASES:
        pre = distiller.pre_phase_variables
        pre_before = _snapshot(pre)
        trainer._pre_phase_epoch(0, writer)
        assert all(_changed(pre_before, pre)), "a pre-phase variable did not learn"
        assert not any(_changed(teacher_before, teacher.model.weights)), "the pre-phase touched the teacher"
        assert any(_changed(student_before, student.model.weights)) == PRE_PHASES[method]
    module_vars = [v for v in distiller.pre_phase_variables if not any(v is w for w in student.model.weights)]
    module_before = _snapshot(module_vars)
    record = trainer._main_epoch(0, writer)
    assert not any(_changed(teacher_before, teacher.model.weights)), "training touched the teacher"
    assert not any(_changed(module_before, module_vars)), "the main phase changed a pre-phase module"
    assert all(np.isfinite(record[f"loss/{n}"]) and record[f"loss/{n}"] > 0 for n in distiller.loss_names)
    parts = record["loss/cross_entropy"] + record["loss/weight_decay"]
    parts += sum(record[f"loss/{n}"] for n in distiller.loss_names)
    assert record["loss/total"] == pytest.approx(parts, rel=1e-5)
    assert all(np.isfinite(v.numpy()).all() for v in [*student.model.weights, *distiller.trainable_variables])


def _user_network(head_name: str):
    """A user's own functional Keras model, its classifier named anything."""
    import keras

    from iep.nets import TappedNetwork

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU(name="r1")(keras.layers.BatchNormalization(name="b1")(x))
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="c2")(x)
    y = keras.layers.ReLU(name="r2")(keras.layers.BatchNormalization(name="b2")(y))
    logits = keras.layers.Dense(10, name=head_name)(keras.layers.GlobalAveragePooling2D()(y))
    return TappedNetwork("user", inputs, logits, ["r1", "r2"], name=f"user_{head_name}")


def test_fitnet_finds_the_classifier_whatever_its_name():
    teacher, student = _user_network("logits"), _user_network("fc")
    assert student.head.name == "fc"
    distiller = build_distiller("fitnet", teacher, student, main_steps=10)
    head = {id(v) for v in student.model.get_layer("fc").weights}
    body = [v for v in distiller.pre_phase_variables if id(v) in {id(w) for w in student.model.trainable_variables}]
    assert body and not head & {id(v) for v in body}
    assert len(body) == len(student.model.trainable_variables) - 2  # all but the Dense kernel and bias
