"""tf.distribute for the one training loop: which strategy, how many replicas, who writes files.

Data parallel: every replica runs the step on its slice of the global batch;
losses are divided by the number of replicas so the all-reduced (summed)
gradients are the global-batch average. Batch-relation knowledge (IEP's
affinities, MPNN, MHGD graphs; RKD's potentials) is computed per replica, on
the per-replica batch — B in the B×B relations is the global batch divided by
the replicas, so keep the per-replica batch near the paper's 128 (e.g.
--batch_size=256 on 2 replicas). IEP's norm clip is applied per replica, to
per-replica gradients, before the all-reduce; IPCA state follows the first
replica's batches. Files (checkpoints, metrics, TensorBoard, export) are
written by the chief only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time

import tensorflow as tf

from iep.engine.signals import stop_signals_handled_by

DISTRIBUTIONS = ("none", "mirrored", "multi_worker")


def split_cpu(logical_cpus: int) -> None:
    """Splits the CPU into `logical_cpus` devices (to run several replicas on one CPU); call before any TF op."""
    if logical_cpus < 1:
        raise ValueError(f"--logical_cpus must be >= 1, got {logical_cpus}")
    if logical_cpus == 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    except RuntimeError as error:
        raise ValueError(f"--logical_cpus must be set before TensorFlow initializes its devices: {error}") from None


def build_strategy(kind: str, connect_timeout: float = 120.0) -> tf.distribute.Strategy:
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"--distribute must be one of {DISTRIBUTIONS}, got {kind!r}")
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    wait_for_peers(read_tf_config(), connect_timeout)
    with _keep_sigterm():
        return tf.distribute.MultiWorkerMirroredStrategy()


def read_tf_config() -> dict:
    """TF_CONFIG, checked: a cluster of chief/worker addresses and this task's place in it."""
    if "TF_CONFIG" not in os.environ:
        raise ValueError("--distribute=multi_worker needs the TF_CONFIG environment variable (cluster and task)")
    try:
        config = json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error})") from None
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        keys = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"TF_CONFIG must name 'cluster' and 'task'; got {keys}")
    cluster, task = config["cluster"], config["task"]
    if not isinstance(cluster, dict) or not all(isinstance(v, list) for v in cluster.values()):
        raise ValueError(f"TF_CONFIG cluster must map each task type to a list of addresses; got {cluster!r}")
    if not isinstance(task, dict):
        raise ValueError(f'TF_CONFIG task must be an object like {{"type": "worker", "index": 0}}; got {task!r}')
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise ValueError(f"TF_CONFIG task {task} is not in its cluster {cluster}")
    for name, address in _members(cluster):
        host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"TF_CONFIG: {name} has address {address!r}; expected host:port, a port 1 to 65535")
    return config


def _members(cluster: dict) -> list[tuple[str, str]]:
    """(name, address) of every task that takes part in the all-reduce (chief and workers)."""
    return [(f"{kind} {i}", address) for kind in ("chief", "worker") for i, address in enumerate(cluster.get(kind, []))]


def wait_for_peers(tf_config: dict, timeout: float, poll_seconds: float = 0.25) -> None:
    """Rendezvous before TensorFlow connects: TF's own start-up waits forever for a missing peer and, once its
    coordination agent runs, ignores SIGTERM. Here every task listens on its own port and connects to every
    peer's until all answer, in plain Python, so a missing peer becomes a one-line error naming it after
    `timeout` seconds (--connect_timeout), and SIGTERM/Ctrl-C stop the wait. TF's gRPC server takes the
    port over afterwards; a peer that connects in between is still answered by it. Our design: TF has no
    bounded start-up wait for MultiWorkerMirroredStrategy."""
    cluster, task = tf_config["cluster"], tf_config["task"]
    me = f"{task['type']} {task.get('index', 0)}"
    own_port = int(cluster[task["type"]][task.get("index", 0)].rpartition(":")[2])
    peers = {name: address for name, address in _members(cluster) if name != me}
    try:
        listener = socket.create_server(("", own_port), backlog=64)
    except OSError as error:
        raise ValueError(f"TF_CONFIG: this task ({me}) cannot listen on port {own_port}: {error.strerror}") from None
    print(f"multi_worker: {me} waiting up to {timeout:g} s for {', '.join(peers) or 'no peers'}", flush=True)
    deadline = time.monotonic() + timeout
    errors: dict[str, str] = {}
    with listener, _interrupt_as_error("waiting for the peers in TF_CONFIG; nothing was trained"):
        while peers:
            for name, address in list(peers.items()):
                host, _, port = address.rpartition(":")
                try:
                    socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
                    del peers[name]
                except OSError as error:
                    errors[name] = error.strerror or str(error)
            if peers and time.monotonic() >= deadline:
                missing = "; ".join(f"{name} at {peers[name]} ({errors[name]})" for name in peers)
                raise ValueError(
                    f"--distribute=multi_worker: could not reach {missing} within {timeout:g} s "
                    "(--connect_timeout); start every task of TF_CONFIG or correct its addresses"
                )
            time.sleep(poll_seconds if peers else 0)


@contextlib.contextmanager
def _interrupt_as_error(doing: str):
    """SIGTERM/Ctrl-C while waiting become TrainingInterrupted (one line, exit 128 + signal)."""
    from iep.core.errors import TrainingInterrupted

    def handler(number, frame):
        raise TrainingInterrupted(f"stopped by {signal.Signals(number).name} while {doing}", number)

    with stop_signals_handled_by(handler):
        yield


@contextlib.contextmanager
def _keep_sigterm():
    """TF's coordination agent installs a C++ SIGTERM handler that only records the signal (its preemption
    notifier, which we do not use); put back the Python one so SIGTERM keeps stopping the process."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, previous)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True except on the non-chief workers of a multi-worker strategy (worker 0 is chief when none is named)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def distribute_batches(strategy, batches):
    """`batches` spread over `strategy`'s replicas, sharded by data (each replica a slice of every batch)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(batches.with_options(options))
