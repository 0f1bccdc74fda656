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
    process = _train(tmp_path / "y", "--distribute=mirrored", "--logical_cpus=2", "--jit_compile=true")
    out = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 2 and "--jit_compile with several replicas is not supported" in out


@pytest.fixture(autouse=True)
def _no_leftover_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)


def _worker_env(ports, index):
    env = subprocess_env()
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    return env


def test_unreachable_peer_is_named_after_the_connect_timeout(tmp_path):
    ports = [_free_port(), _free_port()]  # nobody starts worker 1
    process = _train(tmp_path / "run", "--distribute=multi_worker", "--connect_timeout=2", env=_worker_env(ports, 0))
    out = process.communicate(timeout=120)[0].decode()
    assert process.returncode == 2, out
    assert f"could not reach worker 1 at localhost:{ports[1]}" in out and "--connect_timeout" in out
    assert "Traceback" not in out and not (tmp_path / "run").exists()


def test_sigterm_stops_the_wait_for_peers(tmp_path):
    import signal
    import time

    ports = [_free_port(), _free_port()]
    process = _train(tmp_path / "run", "--distribute=multi_worker", env=_worker_env(ports, 1))
    first_line = process.stdout.readline().decode()  # printed when the wait starts
    assert "worker 1 waiting up to 120 s for worker 0" in first_line
    time.sleep(1)
    process.send_signal(signal.SIGTERM)
    out = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 128 + signal.SIGTERM, out
    assert "stopped by SIGTERM while waiting for the peers" in out and "Traceback" not in out


@pytest.mark.parametrize(
    "tf_config, expected",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG must name 'cluster' and 'task'"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "is not in its cluster"),
        ('{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}', "expected host:port"),
        ('{"cluster": {"worker": ["a:1"]}, "task": "worker"}', "task must be an object like"),
        ('{"cluster": {"worker": [8080]}, "task": {"type": "worker", "index": 0}}', "has address 8080; expected"),
        ('{"cluster": {"worker": ["a:70000"]}, "task": {"type": "worker", "index": 0}}', "a port 1 to 65535"),
        ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "to a list of addresses"),
    ],
)
def test_bad_tf_config_is_named(monkeypatch, tf_config, expected):
    from iep.engine.distribute import read_tf_config

    monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        read_tf_config()


def test_port_in_use_is_named():
    from iep.engine.distribute import wait_for_peers

    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = {"cluster": {"worker": [f"localhost:{port}"]}, "task": {"type": "worker", "index": 0}}
        with pytest.raises(ValueError, match=f"worker 0.*cannot listen on port {port}"):
            wait_for_peers(config, timeout=1)


def test_lost_peer_message_is_one_line():
    from iep.core.errors import op_message

    recorded = (  # TF 2.21's message on the surviving worker after its peer was killed with SIGKILL
        "{{function_node __wrapped__CollectiveBcastSend_device_/job:worker/replica:0/task:0/device:CPU:0}} "
        "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are unhealthy "
        "(stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.\n"
        "The error could be from a previous operation. Restart your program to reset. [Op:CollectiveBcastSend]"
    )
    assert op_message(RuntimeError(recorded), limit=400) == (
        "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks are unhealthy "
        "(stopped sending heartbeats): /job:worker/replica:0/task:1 The tasks have crashed"
    )


def _config(ports, index, kind="worker"):
    return {"cluster": {kind: [f"localhost:{p}" for p in ports]}, "task": {"type": kind, "index": index}}


def _in_thread(function, *args):
    import threading

    outcome = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except Exception as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_two_tasks_meet_through_the_handshake():
    from iep.engine.distribute import wait_for_peers

    ports = [_free_port(), _free_port()]
    other, outcome = _in_thread(wait_for_peers, _config(ports, 1), 20)
    wait_for_peers(_config(ports, 0), 20)
    other.join(30)
    assert not other.is_alive() and outcome == {"value": None}
    for port in ports:  # both ports are free again for TF's gRPC servers
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("localhost", port))


def test_a_port_answered_by_another_program_is_named_not_waited_on():
    """It hung in TF's start-up past the timeout, deaf to SIGTERM, when anything accepted connections there."""
    import threading
    import time

    from iep.engine.distribute import wait_for_peers

    impostor = socket.create_server(("localhost", 0))
    stop = threading.Event()

    def accept_and_hold():  # a server that accepts and never speaks (a database, a stale process...)
        held = []
        impostor.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(impostor.accept()[0])
            except OSError:
                pass
        for conn in held:
            conn.close()

    server = threading.Thread(target=accept_and_hold)
    server.start()
    ports = [_free_port(), impostor.getsockname()[1]]
    start = time.monotonic()
    try:
        with pytest.raises(ValueError, match=r"could not reach worker 1 at .*answers on that port but not the hands"):
            wait_for_peers(_config(ports, 0), timeout=2)
    finally:
        stop.set()
        server.join()
        impostor.close()
    assert time.monotonic() - start < 10


def test_a_worker_of_another_cluster_is_not_a_peer():
    from iep.engine.distribute import wait_for_peers

    ports = [_free_port(), _free_port()]
    foreign = _config(ports, 1)
    foreign["cluster"]["worker"].append(f"localhost:{_free_port()}")  # its job has a third worker
    other, outcome = _in_thread(wait_for_peers, foreign, 3)
    with pytest.raises(ValueError, match="worker 1 at .*an iep worker of another cluster answers there"):
        wait_for_peers(_config(ports, 0), timeout=2)
    other.join(30)
    assert isinstance(outcome.get("error"), ValueError)
