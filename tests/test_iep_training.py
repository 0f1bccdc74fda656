import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from iep.datasets import DataConfig, build_pipeline
from iep.engine.trainer import TrainConfig, Trainer
from iep.nets import build_network
from iep.procedure.distiller import IEPDistiller
from tests.helpers import train_with_flags

CONFIG = dict(batch_size=64, log_every=5, progress=False, export=False, lr_schedule="constant", lr=0.05)


@pytest.fixture(scope="module")
def digits():
    return build_pipeline(DataConfig("digits", rate=0.5))


def _pair(data, teacher_arch="wrn-16-1", student_arch="resnet8"):
    keras.utils.set_random_seed(1)
    teacher = build_network(teacher_arch, data.num_classes, data.input_shape, data.mean, data.std, name="teacher")
    teacher.model.trainable = False
    student = build_network(student_arch, data.num_classes, data.input_shape, data.mean, data.std, name="student")
    return teacher, student


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, variables):
    return [not np.array_equal(a, v.numpy()) for a, v in zip(before, variables, strict=True)]


def test_phase_one_trains_modules_only_and_phase_two_freezes_them(digits, tmp_path):
    teacher, student = _pair(digits)
    distiller = IEPDistiller(teacher, student, knowledge=("alteration", "interim", "black_box"), module_steps=8, seed=0)
    trainer = Trainer(student, digits, TrainConfig(epochs=1, **CONFIG), str(tmp_path), distiller)
    writer = tf.summary.create_noop_writer()
    student_before = _snapshot(student.model.weights)
    teacher_before = _snapshot(teacher.model.weights)
    modules = [v for m in (*distiller.mpnn, *distiller.mhgd) for v in m.trainable_variables]
    modules_before = _snapshot(modules)
    trainer._pre_phase_epoch(0, writer)
    assert not any(_changed(student_before, student.model.weights)), "phase 1 touched the student"
    assert not any(_changed(teacher_before, teacher.model.weights)), "phase 1 touched the teacher"
    assert all(_changed(modules_before, modules)), "phase 1 left a module weight untrained"
    ipca = [v for s in distiller.spca for v in s.weights]
    assert all(np.abs(v.numpy()).sum() > 0 for v in ipca), "IPCA state was not updated"

    frozen_after_phase_one = _snapshot(distiller.frozen_variables)
    trainer._main_epoch(0, writer)
    assert not any(_changed(frozen_after_phase_one, distiller.frozen_variables)), "phase 2 changed a frozen variable"
    assert any(_changed(student_before, student.model.weights))


def test_degenerate_constant_images_give_finite_losses(digits):
    teacher, student = _pair(digits)
    distiller = IEPDistiller(teacher, student, knowledge=("alteration", "interim", "black_box"), seed=0)
    for images in (tf.zeros((16, 32, 32, 3)), tf.fill((16, 32, 32, 3), 128.0)):
        pre = distiller.pre_phase_losses(images, tf.zeros(16, tf.int32))
        post = distiller.losses(images, tf.zeros(16, tf.int32), student.model(images, training=True), tf.constant(0.0))
        for name, value in {**pre, **post}.items():
            assert np.isfinite(value.numpy()), name


def test_module_and_ipca_state_resume_from_checkpoints(digits, tmp_path):
    teacher, student = _pair(digits)
    first = IEPDistiller(teacher, student, module_steps=14, seed=0)  # 2 pre-phase passes of 11 and 3 steps
    Trainer(student, digits, TrainConfig(epochs=1, **CONFIG), str(tmp_path), first).fit()
    expected = _snapshot([v for m in (*first.mpnn, *first.spca) for v in m.weights])

    teacher2, student2 = _pair(digits)
    second = IEPDistiller(teacher2, student2, module_steps=14, seed=0)
    trainer = Trainer(student2, digits, TrainConfig(epochs=1, **CONFIG), str(tmp_path), second)
    trainer.checkpoints.restore_latest()
    got = [v.numpy() for m in (*second.mpnn, *second.spca) for v in m.weights]
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert int(trainer._pre_epoch.numpy()) == 2


def test_heterogeneous_student_gets_trained_adapters(digits, tmp_path):
    teacher, student = _pair(digits, teacher_arch="wrn-16-2", student_arch="vgg8")
    distiller = IEPDistiller(teacher, student, module_steps=4, seed=0)
    assert [a is not None for a in distiller.adapters] == [True, True, True]  # vgg8 taps: 64/128/256 channels
    before = _snapshot(distiller.trainable_variables)
    summary = Trainer(student, digits, TrainConfig(epochs=1, **CONFIG), str(tmp_path), distiller).fit()
    assert all(_changed(before, distiller.trainable_variables))
    assert np.isfinite(summary["history"][-1]["train_loss"])


def test_mismatched_tap_counts_are_rejected(digits):
    teacher, _ = _pair(digits)
    fake = build_network("resnet8", 10)
    fake.tap_specs = fake.tap_specs[:2]
    with pytest.raises(ValueError, match="same number"):
        IEPDistiller(teacher, fake)


def _train(*argv):
    return train_with_flags("--progress=false", "--batch_size=64", *argv)


def _logged_steps(run_dir, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    return [event.step for event in events.Tensors(tag)]


def test_short_iep_runs_on_real_cifar10(cifar10_dir, tmp_path):
    # scored on the test split's first 2,000 images: chance (0.10) has a standard error of 0.007 there
    data = ["--dataset=tfrecord", f"--data_dir={cifar10_dir}", "--rate=0.05", "--arch=resnet8", "--eval_limit=2000"]
    teacher = _train(*data, "--epochs=3", "--lr_schedule=constant", "--lr=0.05", f"--run_dir={tmp_path / 't'}")
    assert teacher["last_accuracy"] > 0.2
    for method in ("iep_bb",):  # its terms include all of IEP's; plain IEP trains in the phase and resume tests
        run = tmp_path / method
        summary = _train(
            *data,
            f"--distill={method}",
            f"--teacher={tmp_path / 't'}",
            "--epochs=2",
            "--iep_module_epochs=1",  # one pass: 2,500 images // 64 = 39 module steps
            "--lr_schedule=constant",
            "--lr=0.05",
            f"--run_dir={run}",
        )
        assert _logged_steps(run, "pre_phase/module_kld")[-1] == 39
        last = summary["history"][-1]
        terms = ["loss/alteration", "loss/interim"] + (["loss/black_box"] if method == "iep_bb" else [])
        assert all(np.isfinite(last[t]) for t in terms + ["train_loss"])
        assert 0.0 < last["distill/clip_ratio"] <= 1.0 and last["distill/clip_scale"] == pytest.approx(
            1 / (1 + np.exp(-1)), rel=1e-5
        )  # σ(1), 2nd epoch
        assert summary["last_accuracy"] > 0.15, summary["last_accuracy"]  # 10 classes: chance is 0.10
        assert os.path.exists(run / "export" / "saved_model.pb")
        assert json.load(open(run / "config.json"))["clip_terms"] == "per_term"  # the default, as resolved


def test_kill_during_phase_one_and_resume_reproduces_the_uninterrupted_run(tmp_path, capsys):
    from tests.helpers import checkpoint_values, kill_and_resume

    teacher = tmp_path / "teacher"
    _train("--arch=resnet8", "--rate=0.5", "--epochs=1", f"--run_dir={teacher}")
    # The summed clip: the default per-term clip repeats bit for bit on CPU only with TF_ENABLE_ONEDNN_OPTS=0
    # (docs/methods.md), so two runs of it, killed or not, can differ in their last bits.
    flags_ = ("--epochs=2", "--arch=resnet8", "--distill=iep", f"--teacher={teacher}", "--iep_module_steps=30")
    flags_ += ("--distill_args=clip_terms=sum",)
    straight, killed, resumed = kill_and_resume(tmp_path, flags_, 1, capsys)  # after pre-phase pass 1 of 3
    assert "pre-phase passes done: 1/3" in resumed
    assert json.load(open(killed / "config.json"))["clip_terms"] == "sum"  # as resolved, for a later resume

    (_, a), (_, b) = checkpoint_values(straight), checkpoint_values(killed)
    assert a.keys() == b.keys()
    assert any(k.startswith("iep_mpnn") for k in a) and any(k.startswith("iep_spca") for k in a)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
