"""`--config=NAME` finds a shipped flag file from any directory, nested flag files included."""

import os
import subprocess
import sys

import pytest
from absl import flags
from absl.testing import flagsaver

from iep.engine.configs import config_root, expand_configs
from tests.conftest import ROOT


def test_config_root_is_the_configs_folder():
    assert os.path.realpath(config_root()) == os.path.realpath(os.path.join(ROOT, "configs"))


def test_a_config_expands_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here: absl's own --flagfile=configs/... would fail
    argv = expand_configs(["train.py", "--config=paper/table1/r0.1/iep.cfg", "--epochs=1"])
    assert "--dataset=cifar100" in argv and "--weight_decay=5e-4" in argv  # from the nested cifar100.cfg
    assert argv[-1] == "--epochs=1" and "--epochs=100" in argv  # the nested file's, overridden after it
    from iep.apps import train  # noqa: F401 (defines the flags)

    with flagsaver.flagsaver():
        flags.FLAGS(argv)
        assert (flags.FLAGS.distill, flags.FLAGS.rate, flags.FLAGS.epochs) == ("iep", 0.1, 1)
        assert flags.FLAGS.arch == "wrn-16-4" and flags.FLAGS.lr_decay_points == ["0.3", "0.6", "0.8"]


def test_a_flagfile_of_ours_nests_shipped_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.cfg").write_text("# my run\n--flagfile=configs/paper/cifar100.cfg\n--epochs=3\n")
    argv = expand_configs(["train.py", "--flagfile=mine.cfg"])
    assert argv[1:3] == ["--dataset=cifar100", "--data_dir=data/tfds"] and argv[-1] == "--epochs=3"


def test_bad_configs_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--config=paper/nope.cfg: neither a file here nor a shipped config"):
        expand_configs(["train.py", "--config=paper/nope.cfg"])
    (tmp_path / "a.cfg").write_text("--flagfile=b.cfg\n")
    (tmp_path / "b.cfg").write_text("--flagfile=a.cfg\n")
    with pytest.raises(ValueError, match="include each other"):
        expand_configs(["train.py", "--flagfile=a.cfg"])


def test_train_py_reads_a_config_outside_the_repository(tmp_path):
    """The whole command from another folder: the config's flags reach train.py (here its teacher, which this
    machine does not have, is refused in one line before any compute)."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--config=paper/table7/kd.cfg"],
        cwd=str(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip() == (
        "error: --teacher 'runs/paper/teacher_wrn-40-4' does not exist: train it first with "
        "`iep-train --config=paper/teacher_wrn-40-4.cfg`"
    )
