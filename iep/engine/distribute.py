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
import hashlib
import json
import numbers
import os
import select
import signal
import socket
import threading
import time

import tensorflow as tf

from iep.engine.signals import stop_signals_handled_by

DISTRIBUTIONS = ("none", "mirrored", "multi_worker")


def split_cpu(logical_cpus: int) -> None:
    """Splits the CPU into `logical_cpus` devices (to run several replicas on one CPU); call before any TF op."""
    if logical_cpus < 1:
        raise ValueError(f"logical_cpus={logical_cpus}: must be >= 1")
    if logical_cpus == 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    except RuntimeError as error:
        raise ValueError(
            f"logical_cpus={logical_cpus}: must be set before TensorFlow initializes its devices: {error}"
        ) from None


def build_strategy(kind: str, connect_timeout: float = 120.0) -> tf.distribute.Strategy:
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"distribute={kind!r}: must be one of {DISTRIBUTIONS}")
    if (
        isinstance(connect_timeout, bool)
        or not isinstance(connect_timeout, numbers.Real)
        or not 0 < connect_timeout < float("inf")
    ):
        raise ValueError(f"connect_timeout={connect_timeout!r}: must be a finite number of seconds > 0")
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
        raise ValueError("distribute='multi_worker' needs the TF_CONFIG environment variable (cluster and task)")
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


HELLO, ANSWER = b"iep-multi-worker-hello", b"iep-multi-worker"


def _cluster_key(cluster: dict) -> bytes:
    """Names the cluster in the handshake: a worker of another job (another TF_CONFIG) is not a peer."""
    return hashlib.sha256(json.dumps(cluster, sort_keys=True).encode()).hexdigest()[:16].encode()


def _task_id(name: str) -> bytes:
    return name.replace(" ", ":").encode()  # "worker 1" → b"worker:1", one token of the handshake line


def _read_line(conn: socket.socket, limit: int = 256) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(limit - len(data))
        if not chunk:
            break
        data += chunk
    return data.strip()


class _Answering:
    """Answers the peers' hellos on this task's port, in a thread, and records which peers of this cluster
    said hello; a connection that does not say hello in time is closed unanswered."""

    def __init__(self, listener: socket.socket, me: str, key: bytes):
        self.listener, self.me, self.key = listener, _task_id(me), key
        self.heard: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="iep-multi-worker-answer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.listener], [], [], 0.1)[0]:
                continue
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(1.0)
                    words = _read_line(conn).split()
                    if len(words) == 3 and words[0] == HELLO:
                        same = words[2] == self.key
                        conn.sendall(b" ".join([ANSWER, self.me, b"same" if same else b"other"]) + b"\n")
                        if same:
                            self.heard.add(words[1])
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _greet(address: str, me: str, peer: str, key: bytes, timeout: float = 1.0) -> str | None:
    """None when the task at `address` answers the handshake as `peer` of this cluster, else why not."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(b" ".join([HELLO, _task_id(me), key]) + b"\n")
            words = _read_line(conn).split()
    except TimeoutError:
        return "something answers on that port but not the handshake: another program, or not an iep worker"
    except OSError as error:
        return error.strerror or str(error)
    if len(words) != 3 or words[0] != ANSWER:
        return f"something answers on that port but not as an iep worker (it said {b' '.join(words)[:40]!r})"
    if words[2] != b"same":
        return "an iep worker of another cluster answers there (its TF_CONFIG cluster differs from this one's)"
    if words[1] != _task_id(peer):
        return f"the iep worker there is {words[1].decode().replace(':', ' ')}, not {peer} (TF_CONFIG orders differ)"
    return None


def wait_for_peers(tf_config: dict, timeout: float, poll_seconds: float = 0.25) -> None:
    """Rendezvous before TensorFlow connects: TF's own start-up waits forever for a missing peer (or for a port
    that something else answers) and, once its coordination agent runs, ignores SIGTERM. Here, in plain
    Python, every task answers a handshake on its own port (in a thread) and greets every peer's, until each
    peer has answered as the task TF_CONFIG names, of the same cluster, and has greeted this task back.
    A missing, foreign or misaddressed peer becomes a one-line error naming it after `timeout` seconds
    (connect_timeout), and SIGTERM/Ctrl-C stop the wait. A task leaves only when it has heard every peer and
    every peer has heard it, so no peer is still greeting a port that TF's gRPC server has taken over. Our
    design: TF has no bounded start-up wait for MultiWorkerMirroredStrategy."""
    cluster, task = tf_config["cluster"], tf_config["task"]
    me = f"{task['type']} {task.get('index', 0)}"
    own_port = int(cluster[task["type"]][task.get("index", 0)].rpartition(":")[2])
    peers = {name: address for name, address in _members(cluster) if name != me}
    key = _cluster_key(cluster)
    try:
        listener = socket.create_server(("", own_port), backlog=64)
    except OSError as error:
        raise ValueError(f"TF_CONFIG: this task ({me}) cannot listen on port {own_port}: {error.strerror}") from None
    print(f"multi_worker: {me} waiting up to {timeout:g} s for {', '.join(peers) or 'no peers'}", flush=True)
    deadline = time.monotonic() + timeout
    reached: set[str] = set()
    why: dict[str, str] = {}
    answering = _Answering(listener, me, key)
    try:
        with _interrupt_as_error("waiting for the peers in TF_CONFIG; nothing was trained"):
            while True:
                for name in sorted(set(peers) - reached):
                    problem = _greet(peers[name], me, name, key)
                    if problem is None:
                        reached.add(name)
                    else:
                        why[name] = problem
                unheard = [name for name in peers if _task_id(name) not in answering.heard]
                if len(reached) == len(peers) and not unheard:
                    return
                if time.monotonic() >= deadline:
                    missing = [f"{name} at {peers[name]} ({why[name]})" for name in peers if name not in reached]
                    missing += [
                        f"{name} at {peers[name]} answers but has not reached this task on port {own_port} "
                        "(its TF_CONFIG address for this task, or a firewall)"
                        for name in unheard
                        if name in reached
                    ]
                    raise ValueError(
                        f"distribute='multi_worker': could not reach {'; '.join(missing)} within {timeout:g} s "
                        f"(connect_timeout={timeout:g}); start every task of TF_CONFIG or correct its addresses"
                    )
                time.sleep(poll_seconds)
    finally:
        answering.close()  # before the port closes: TF's gRPC server takes it over next
        listener.close()


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


def distribute_batches(strategy: tf.distribute.Strategy, batches: tf.data.Dataset) -> tf.distribute.DistributedDataset:
    """`batches` spread over `strategy`'s replicas, sharded by data (each replica a slice of every batch)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(batches.with_options(options))
