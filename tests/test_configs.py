"""The shipped experiment configs (configs/paper) parse with train.py's own flags and name real choices."""

import glob
import os

import pytest
from absl import flags
from absl.testing import flagsaver

from tests.conftest import ROOT

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "paper", "**", "*.cfg"), recursive=True))
EXPERIMENTS = [c for c in CONFIGS if os.path.basename(c) != "cifar100.cfg"]


def _parse(path: str) -> dict:
    from iep.apps import train  # noqa: F401  (defines the flags)

    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train.py", f"--flagfile={os.path.relpath(path, ROOT)}"])
        return {name: flags.FLAGS[name].value for name in ("arch", "distill", "rate", "teacher", "run_dir", "epochs")}


def test_every_table_has_configs():
    tables = {os.path.relpath(c, os.path.join(ROOT, "configs", "paper")).split(os.sep)[0] for c in EXPERIMENTS}
    assert {"table1", "table3", "table4_second_pca", "table5_iterations", "table6_knowledge", "table7"} <= tables
    assert len(glob.glob(os.path.join(ROOT, "configs", "paper", "table1", "*", "*.cfg"))) == 4 * 13


def test_table7_has_every_method(monkeypatch):
    from iep.methods import METHODS, STATIC_METHODS

    monkeypatch.chdir(ROOT)
    rows = [_parse(p) for p in glob.glob(os.path.join(ROOT, "configs", "paper", "table7", "*.cfg"))]
    assert sorted(r["distill"] for r in rows) == sorted(set(METHODS) - set(STATIC_METHODS))  # not in the paper
    assert {(r["arch"], r["rate"]) for r in rows} == {("wrn-16-4", 1.0)}


def test_configs_parse_and_point_at_the_shared_teacher(monkeypatch):
    from iep.methods import METHODS, needs_teacher
    from iep.nets import parse_arch

    monkeypatch.chdir(ROOT)  # nested --flagfile paths are relative to the project root, as in the README
    teacher_run = _parse(os.path.join(ROOT, "configs", "paper", "teacher_wrn-40-4.cfg"))["run_dir"]
    run_dirs = set()
    for path in EXPERIMENTS:
        values = _parse(path)
        parse_arch(values["arch"])
        assert values["distill"] in METHODS, path
        assert values["epochs"] == 100 and 0 < values["rate"] <= 1, path
        if needs_teacher(values["distill"]):
            assert values["teacher"] == teacher_run, path
        assert values["run_dir"] not in run_dirs, f"{path} reuses a run directory"
        run_dirs.add(values["run_dir"])


@pytest.mark.parametrize("rate", ["0.1", "0.25", "0.5", "1.0"])
def test_table1_rows_differ_only_in_method(monkeypatch, rate):
    monkeypatch.chdir(ROOT)
    rows = [_parse(p) for p in glob.glob(os.path.join(ROOT, "configs", "paper", "table1", f"r{rate}", "*.cfg"))]
    assert {(r["arch"], r["rate"], r["epochs"]) for r in rows} == {("wrn-16-4", float(rate), 100)}
