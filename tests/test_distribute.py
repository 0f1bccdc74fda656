"""tf.distribute on the CPU: 2 logical devices (MirroredStrategy) and 2 local workers on loopback ports
(MultiWorkerMirroredStrategy) run the same data-parallel step, so their loss histories must agree."""

import glob
import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from tests.helpers import subprocess_env

ARGS = [
    "--dataset=digits",
    "--rate=0.5",
    "--arch=wrn-10-1",
    "--dropout=0",
    "--epochs=2",
    "--progress=false",
    "--export=false",
]


def _train(run_dir, *flags, env=None):
    from tests.conftest import ROOT

    command = [sys.executable, os.path.join(ROOT, "train.py"), *ARGS, f"--run_dir={run_dir}", *flags]
    return subprocess.Popen(command, env=env or subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _finish(process) -> str:
    output = process.communicate(timeout=600)[0].decode()
    assert process.returncode == 0, output[-3000:]
    return output


def _losses(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return [round(h["train_loss"], 5) for h in json.load(f)["history"]]


def test_mirrored_on_logical_cpus_equals_two_local_workers(tmp_path):
    mirrored = _train(tmp_path / "mirrored", "--distribute=mirrored", "--logical_cpus=2")
    out = _finish(mirrored)
    assert "MirroredStrategy: 2 replicas, global batch 128" in out

    ports = [_free_port(), _free_port()]
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "iep_worker_checkpoints_*")))
    workers = []
    for index in range(2):
        env = subprocess_env()
        cluster = {"worker": [f"localhost:{p}" for p in ports]}
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(_train(tmp_path / "workers", "--distribute=multi_worker", env=env))
    outputs = [_finish(w) for w in workers]
    assert all("2 replicas" in o for o in outputs)

    # One data-parallel algorithm, two transports: the same losses, epoch by epoch, up to the all-reduce's
    # summation order (~1e-4; one replica instead of two differs by ~1e-2 through per-replica BN statistics).
    np.testing.assert_allclose(_losses(tmp_path / "workers"), _losses(tmp_path / "mirrored"), rtol=1e-3)
    assert len(glob.glob(str(tmp_path / "workers" / "checkpoints" / "epoch-*.index"))) == 2  # chief's saves
    after = set(glob.glob(os.path.join(tempfile.gettempdir(), "iep_worker_checkpoints_*")))
    assert after == before, "the non-chief worker left its private checkpoint copies behind"


def test_distribution_flags_fail_clearly(tmp_path):
    env = subprocess_env()
    env.pop("TF_CONFIG", None)
    process = _train(tmp_path / "x", "--distribute=multi_worker", env=env)
    out = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 2 and "needs the TF_CONFIG environment variable" in out
    process = _train(tmp_path / "y", "--distribute=mirrored", "--logical_cpus=2", "--jit_compile")
    out = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 2 and "--jit_compile with several replicas is not supported" in out


@pytest.fixture(autouse=True)
def _no_leftover_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
