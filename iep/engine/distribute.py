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

import json
import os

import tensorflow as tf

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


def build_strategy(kind: str) -> tf.distribute.Strategy:
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"--distribute must be one of {DISTRIBUTIONS}, got {kind!r}")
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if "TF_CONFIG" not in os.environ:
        raise ValueError("--distribute=multi_worker needs the TF_CONFIG environment variable (cluster and task)")
    cluster = json.loads(os.environ["TF_CONFIG"])
    if "cluster" not in cluster or "task" not in cluster:
        raise ValueError(f"TF_CONFIG must name 'cluster' and 'task'; got keys {sorted(cluster)}")
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True except on the non-chief workers of a multi-worker strategy (worker 0 is chief when none is named)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
