"""The shipped experiment configs (configs/paper) parse with train.py's own flags and name real choices."""

import functools
import glob
import os

import pytest
from absl import flags
from absl.testing import flagsaver

from tests.conftest import ROOT

PAPER = os.path.join(ROOT, "configs", "paper")
CONFIGS = sorted(glob.glob(os.path.join(PAPER, "**", "*.cfg"), recursive=True))
OTHER_PROTOCOLS = ("table2", "table1_tinyimagenet", "tinyimagenet.cfg", "teacher_tinyimagenet_wrn-40-4.cfg")
# The CIFAR-100 experiments (one recipe, one teacher); Table 2 and TinyImageNet are checked on their own below.
EXPERIMENTS = [
    c
    for c in CONFIGS
    if os.path.basename(c) != "cifar100.cfg" and os.path.relpath(c, PAPER).split(os.sep)[0] not in OTHER_PROTOCOLS
]
TABLE2_METHODS = ["none", "at", "ft", "ab", "rkd", "mhgd", "co", "iep", "iep_bb"]  # Table 1's columns


def _parse(path: str) -> dict:
    from iep.apps import train  # noqa: F401  (defines the flags)

    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train.py", f"--flagfile={os.path.relpath(path, ROOT)}"])
        names = ("arch", "distill", "rate", "teacher", "run_dir", "epochs", "dataset", "image_size", "protocol")
        names += ("knowledge_epochs", "teacher_taps", "crop_to_bbox", "batch_size", "lr", "lr_decay_points")
        names += ("distill_args",)
        return {name: flags.FLAGS[name].value for name in names}


def test_every_table_has_configs():
    tables = {os.path.relpath(c, os.path.join(ROOT, "configs", "paper")).split(os.sep)[0] for c in EXPERIMENTS}
    assert {"table1", "table3", "table4_second_pca", "table5_iterations", "table6_knowledge", "table7"} <= tables
    assert len(glob.glob(os.path.join(ROOT, "configs", "paper", "table1", "*", "*.cfg"))) == 4 * 13


def test_table7_has_every_method(monkeypatch):
    from iep.methods import METHODS, NOT_IN_THE_PAPER

    monkeypatch.chdir(ROOT)
    rows = [_parse(p) for p in glob.glob(os.path.join(ROOT, "configs", "paper", "table7", "*.cfg"))]
    assert sorted(r["distill"] for r in rows) == sorted(set(METHODS) - set(NOT_IN_THE_PAPER))
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


def test_tinyimagenet_rows_mirror_the_cifar_rows(monkeypatch):
    monkeypatch.chdir(ROOT)
    teacher = _parse(os.path.join(PAPER, "teacher_tinyimagenet_wrn-40-4.cfg"))
    assert (teacher["arch"], teacher["image_size"], teacher["dataset"]) == ("wrn-40-4", 64, "folder")
    for rate in ("0.1", "0.25", "0.5", "1.0"):
        cifar = sorted(os.listdir(os.path.join(PAPER, "table1", f"r{rate}")))
        assert sorted(os.listdir(os.path.join(PAPER, "table1_tinyimagenet", f"r{rate}"))) == cifar
        for name in cifar:
            row = _parse(os.path.join(PAPER, "table1_tinyimagenet", f"r{rate}", name))
            assert (row["arch"], row["rate"], row["image_size"], row["epochs"]) == ("wrn-16-4", float(rate), 64, 100)
            assert row["teacher"] == (None if row["distill"] == "none" else teacher["run_dir"])


@pytest.fixture(scope="module")
def resnet50_teacher_and_student():
    """keras:ResNet50 as the Table 2 configs name it, built without its ImageNet weights (no download here)."""
    import keras

    from iep.engine.outside_teacher import load_outside_teacher
    from iep.nets import build_network

    original = keras.applications.ResNet50

    @functools.wraps(original)  # keeps its module: the teacher's preprocess_input is found from it
    def weightless(**kwargs):
        return original(**{**kwargs, "weights": None})

    def build(taps=None):
        keras.applications.ResNet50 = weightless
        try:
            return load_outside_teacher("keras:ResNet50", (224, 224, 3), taps=taps)
        finally:
            keras.applications.ResNet50 = original

    return build, build_network("resnet18-imagenet", 67, (224, 224, 3), name="student")


@pytest.mark.parametrize("data", ["mit67", "cub200"])
def test_table2_configs_build_every_method_on_an_imagenet_teacher(monkeypatch, data, resnet50_teacher_and_student):
    from iep.methods import build_distiller, parse_distill_args
    from iep.transfer import transfer_protocol

    monkeypatch.chdir(ROOT)
    build_teacher, student = resnet50_teacher_and_student
    rows = {r["distill"]: r for r in (_parse(p) for p in glob.glob(os.path.join(PAPER, "table2", data, "*.cfg")))}
    assert sorted(rows) == sorted(TABLE2_METHODS)
    for method, row in rows.items():
        assert (row["arch"], row["image_size"], row["batch_size"], row["lr"]) == ("resnet18-imagenet", 224, 32, 0.01)
        assert row["lr_decay_points"] == ["0.5", "0.75"] and row["crop_to_bbox"] == (data == "cub200")
        if method == "none":
            assert row["teacher"] is None and row["protocol"] == "distill"
            continue
        assert (row["teacher"], row["protocol"], row["knowledge_epochs"]) == ("keras:ResNet50", "transfer", 50)
        teacher = build_teacher(row["teacher_taps"])
        overrides = parse_distill_args(row["distill_args"])
        assert overrides == ({"inputs": "spca"} if method == "mhgd" else {})  # ResNet-50's widths: no SVD alignment
        inner = build_distiller(
            method, teacher, student, main_steps=100, epochs=50, module_steps=10, overrides=overrides
        )
        stages = transfer_protocol(inner, student, 100, 0.01, (0.5, 0.75), 0.1, "step", 5e-4, epochs=50).pre_phases()
        assert stages and stages[-1].steps == 100, method
