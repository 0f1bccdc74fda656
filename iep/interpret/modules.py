"""A trained IEP module (IPCA state + MPNN) from a run, and the relation matrices it reads off a few images."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from iep.datasets import ImagePipeline
from iep.engine.checkpointing import CHECKPOINT_SUBDIR, restore_part
from iep.engine.runs import load_run_config
from iep.engine.teacher import load_teacher
from iep.nets import TappedNetwork, build_network

if TYPE_CHECKING:
    from iep.procedure.distiller import IEPDistiller


def load_iep_modules(run_dir: str, data: ImagePipeline, teacher_run: str) -> IEPDistiller:
    """The IEPDistiller of an iep/iep_bb run with its trained modules restored; its teacher must be `teacher_run`."""
    from iep.core.registry import build_distiller

    config = load_run_config(run_dir)
    if config.get("distill") not in ("iep", "iep_bb"):
        raise ValueError(f"iep_run={run_dir!r} trained {config.get('distill')}; it needs an iep/iep_bb run")
    if os.path.normpath(os.path.abspath(config["teacher"])) != os.path.normpath(os.path.abspath(teacher_run)):
        raise ValueError(f"iep_run={run_dir!r} distilled from {config['teacher']!r}, not teacher={teacher_run!r}")
    teacher = load_teacher(
        config["teacher"],
        config.get("teacher_arch"),
        data.num_classes,
        data.input_shape,
        taps=config.get("teacher_taps"),
        preprocess=config.get("teacher_preprocess", "auto"),
    )
    student = build_network(config["arch"], data.num_classes, data.input_shape, config["mean"], config["std"])
    distiller = build_distiller(
        config["distill"],
        teacher,
        student,
        second_pca=config["iep_second_pca"],
        iterations=config["iep_iterations"],
        knowledge=config["iep_knowledge"],
        module_steps=0,
    )
    prefix = tf.train.latest_checkpoint(os.path.join(run_dir, CHECKPOINT_SUBDIR))
    if prefix is None:
        raise ValueError(f"iep_run={run_dir!r} holds no checkpoint")
    try:
        restore_part(prefix, **distiller.checkpointables())
    except ValueError as error:
        raise ValueError(f"iep_run={prefix!r} lacks the IEP modules: {error}") from None
    if not all(np.any(s.state_basis.numpy()) for s in distiller.spca):
        raise ValueError(f"iep_run={run_dir!r} has no trained IPCA state (did its phase 1 run?)")
    return distiller


def pick_graph_images(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` image indices: one per class first (in a seeded order), then any others; sorted by class."""
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen, seen = [], set()
    for i in order:
        if labels[i] not in seen:
            chosen.append(i), seen.add(labels[i])
        if len(chosen) == count:
            break
    rest = [i for i in order if i not in set(chosen)]
    chosen += rest[: count - len(chosen)]
    return np.array(sorted(chosen, key=lambda i: (labels[i], i)))


def graph_matrices(teacher: TappedNetwork, spca, iep, images: tf.Tensor) -> list[dict[str, np.ndarray]]:
    """Per sensing point: the affinity A; with an IEP module (whose teacher is `teacher`) also, per pair ending
    there, the MPNN readout R and the channel-mean message M (BN in inference mode)."""
    taps = teacher(images, training=False)["taps"]
    points = [layer(tap, update=False) for layer, tap in zip(spca, taps, strict=True)]
    out = [{"affinity": p["affinity"].numpy()} for p in points]
    if iep is not None:
        for i, mpnn in enumerate(iep.mpnn, start=1):
            readout, messages = mpnn(points[i - 1]["c"], points[i]["c"], training=False)
            out[i]["readout"] = tf.nn.softmax(readout, axis=-1).numpy()
            out[i]["message"] = tf.reduce_mean(messages, axis=-1).numpy()
    return out
