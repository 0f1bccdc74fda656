"""A method in a user's own file: `@register`, `--plugins`, its options and a run end to end."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from iep.core.distiller import Distiller
from iep.methods import METHODS, build_distiller, methods, register
from iep.nets import build_network
from tests.conftest import ROOT
from tests.helpers import train_in_process

EXAMPLE = os.path.join(ROOT, "examples", "logit_l2_method.py")


def _load_example():
    from iep.apps.train import _load_plugins

    _load_plugins([EXAMPLE])


def test_a_registered_method_builds_with_its_options_and_its_loss():
    _load_example()
    _load_example()  # importing the same file again is not a clash
    assert "logit_l2" in methods() and "logit_l2" not in METHODS
    teacher, student = build_network("wrn-10-1", 10), build_network("wrn-10-1", 10)
    distiller = build_distiller("logit_l2", teacher, student, overrides={"weight": "0.25"})
    assert distiller.weight == 0.25
    with pytest.raises(ValueError, match="weight for logit_l2 must be >= 0"):
        build_distiller("logit_l2", teacher, student, overrides={"weight": "-1"})
    with pytest.raises(ValueError, match=r"unknown for logit_l2; it accepts \['weight'\]"):
        build_distiller("logit_l2", teacher, student, overrides={"beta": "1"})
    images = tf.random.uniform((3, 32, 32, 3), 0, 255, seed=0)
    outputs = student(images, training=False)
    got = float(distiller.losses(images, tf.zeros([3], tf.int32), outputs, tf.constant(0.0))["logit_l2"])
    gap = outputs["logits"].numpy() - teacher(images)["logits"].numpy()
    assert got == pytest.approx(0.25 * np.mean(gap**2), rel=1e-5)


def test_register_refuses_a_taken_name_and_a_non_distiller():
    with pytest.raises(ValueError, match="method 'kd' exists already"):
        register("kd")(type("MyKD", (Distiller,), {}))
    with pytest.raises(TypeError, match="decorates a Distiller subclass"):
        register("not_a_distiller")(object)
    with pytest.raises(ValueError, match="letters, digits and '_'"):
        register("bad name")
    with pytest.raises(ValueError, match=r"letters, digits and '_', got 3$"):  # was an AttributeError
        register(3)


def test_train_py_runs_a_plugin_method_and_records_its_points(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    train_in_process(teacher, "--arch=resnet8", "--epochs=1")
    run = tmp_path / "student"
    train_in_process(
        run,
        "--arch=resnet8",
        "--epochs=1",
        f"--plugins={EXAMPLE}",
        "--distill=logit_l2",
        f"--teacher={teacher}",
        "--distill_args=weight=0.1",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["history"][0]["loss/logit_l2"] > 0
    # The points the run reads are printed and recorded, though the classes agree and no --teacher_taps was given.
    config = json.loads((run / "config.json").read_text())
    assert config["teacher_taps"] is None
    expected = [
        [name, list(shape)] for name, shape in ((t.name, t.shape) for t in build_network("resnet8", 10).tap_specs)
    ]
    assert config["teacher_points"] == config["student_points"] == expected
    out = capsys.readouterr().out
    assert f"teacher points: {expected[0][0]} {tuple(expected[0][1])}" in out and "student points: " in out
    with pytest.raises(ValueError, match="--plugins 'no_such_plugin_module'"):
        train_in_process(tmp_path / "x", "--plugins=no_such_plugin_module", "--distill=logit_l2")
    with pytest.raises(ValueError, match=r"--distill must be one of .*'logit_l2'.*, got 'nope'"):
        train_in_process(tmp_path / "y", "--distill=nope")


def test_a_plugin_that_does_not_import_is_one_error_naming_it_and_the_line(tmp_path):
    from iep.apps.train import _load_plugins

    broken, needs = tmp_path / "broken.py", tmp_path / "needs.py"
    broken.write_text("import os\n\ndef f(:\n    pass\n")
    needs.write_text("import a_module_nobody_installed\n")
    with pytest.raises(ValueError, match=rf"--plugins '{broken}': invalid syntax \({broken}, line 3\)"):
        _load_plugins([str(broken)])
    with pytest.raises(ValueError, match=rf"--plugins '{needs}': No module named 'a_module_nobody_installed'"):
        _load_plugins([str(needs)])
    raising, leaving = tmp_path / "raising.py", tmp_path / "leaving.py"
    raising.write_text("x = 1\nraise RuntimeError('no GPU here')\n")
    leaving.write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(ValueError, match=rf"'{raising}' raised RuntimeError: no GPU here \({raising}, line 2\)"):
        _load_plugins([str(raising)])
    with pytest.raises(ValueError, match=rf"'{leaving}' exited while it was imported \(sys.exit\(0\)\)"):
        _load_plugins([str(leaving)])


def test_every_method_answers_its_options_and_iep_knowledge_splits_on_commas():
    from iep.methods import IEP_OPTIONS, build_distiller, method_options
    from iep.nets import build_network

    iep_options = method_options("iep")
    assert set(iep_options) == set(IEP_OPTIONS) and iep_options["module_epochs"] == 20.0
    assert (iep_options["second_pca"], iep_options["clip_terms"]) == ("ipca", "per_term")
    assert method_options("none") == {"decay": "kernels"}
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        method_options("nope")
    teacher, student = build_network("wrn-10-1", 10, name="t"), build_network("wrn-10-1", 10, name="s")
    iep = build_distiller("iep", teacher, student, module_steps=1, knowledge="alteration,interim")
    assert iep.knowledge == ("alteration", "interim")
