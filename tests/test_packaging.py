"""We install one import name, `iep`: a foreign top-level `datasets` (Hugging Face's) imports beside ours."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import ROOT

FOREIGN = 'FOREIGN = "huggingface-like"\n'


@pytest.fixture
def foreign_datasets(tmp_path):
    """A folder holding a top-level `datasets` package that is not ours, as site-packages would."""
    package = tmp_path / "site" / "datasets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FOREIGN)
    return str(tmp_path / "site")


def _python(code: str, cwd: str, pythonpath: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": pythonpath, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_installed_iep_and_a_foreign_datasets_both_import(foreign_datasets, tmp_path):
    probe = _python("import iep", str(tmp_path), foreign_datasets)
    if probe.returncode != 0:
        pytest.skip("iep is not installed in this interpreter (pip install -e .)")
    result = _python(
        "import datasets, iep.datasets, iep.nets, iep.op_utils\n"
        "print(datasets.FOREIGN)\n"
        "print(iep.datasets.build_pipeline.__module__, iep.datasets.__file__)\n",
        str(tmp_path),
        foreign_datasets,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    foreign, ours = result.stdout.splitlines()[-2:]
    assert foreign == "huggingface-like"
    assert ours.startswith("iep.datasets.pipeline ") and ours.endswith(os.path.join("datasets", "__init__.py"))


def test_inside_the_repository_our_scripts_leave_the_foreign_package_visible(foreign_datasets):
    """`python train.py` puts the root on sys.path, where our datasets/ folder is; the scripts take it off."""
    shadowed = _python("import datasets; print(datasets.__file__)", ROOT, foreign_datasets)
    assert shadowed.stdout.strip() == os.path.join(ROOT, "datasets", "__init__.py")  # what the scripts avoid
    result = _python(
        "import iep\niep.leave_source_root_off_sys_path()\nimport datasets, iep.datasets\n"
        "print(datasets.FOREIGN, iep.datasets.DataConfig.__module__)\n",
        ROOT,
        foreign_datasets,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["huggingface-like", "iep.datasets.pipeline"]
    help_text = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), "--helpfull"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": foreign_datasets},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--teacher_taps" in help_text.stdout and "Traceback" not in help_text.stderr  # absl's help exits 1


def test_console_script_runs_beside_a_foreign_datasets(foreign_datasets, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "iep-train")
    if not os.path.exists(script):
        pytest.skip("the iep-train console script is not installed beside this interpreter")
    result = subprocess.run(
        [script, "--helpfull"],
        cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": foreign_datasets},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--teacher_taps" in result.stdout and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_the_wheel_holds_one_top_level_package(tmp_path):
    """Built from a copy of the sources (a build writes build/ and *.egg-info into its folder)."""
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    for name in ("iep", "nets", "datasets", "op_utils", "configs"):
        shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=str(source),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"iep"}
    for module in ("iep/nets/base.py", "iep/datasets/pipeline.py", "iep/op_utils/svd.py", "iep/apps/train.py"):
        assert module in names
    shipped = {n for n in names if n.startswith("iep/configs/") and n.endswith(".cfg")}
    assert "iep/configs/paper/table1/r0.1/iep.cfg" in shipped and "iep/configs/paper/cifar100.cfg" in shipped
    assert len(shipped) == sum(f.endswith(".cfg") for _, _, fs in os.walk(os.path.join(ROOT, "configs")) for f in fs)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "iep-train = iep.apps.train:run" in zipfile.ZipFile(tmp_path / wheel).read(entry_points).decode()
