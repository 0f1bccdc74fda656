"""TensorBoard event files of a resumed run: the events past the restored checkpoint are dropped.

Why: a run killed after its last checkpoint has already logged the steps it will now train again, and
TensorBoard would draw both (two values at one step). TF2's summary writer cannot purge, so the event
files are rewritten (TFRecord files of `Event` protos) before the resumed run writes new ones.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable

import tensorflow as tf


def scalars(log_dir: str, prefix: str) -> dict[str, dict[int, float]]:
    """tag → step → value of every scalar whose tag starts with `prefix` (the last write of a step wins)."""
    out: dict[str, dict[int, float]] = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            for value in event.summary.value:
                if value.tag.startswith(prefix):
                    out.setdefault(value.tag, {})[int(event.step)] = float(tf.make_ndarray(value.tensor))
    return out


def purge_events_after(log_dir: str, limit_for_tag: Callable[[str], int]) -> int:
    """Drops every summary event whose step is beyond `limit_for_tag(tag)`; returns how many were dropped."""
    dropped = 0
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        kept, removed = [], 0
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            values = event.summary.value
            if values and event.step > limit_for_tag(values[0].tag):
                removed += 1
            else:
                kept.append(record)
        if removed:
            tmp = path + ".purging"
            with tf.io.TFRecordWriter(tmp) as writer:
                for record in kept:
                    writer.write(record)
            os.replace(tmp, path)
            dropped += removed
    return dropped


def purge_for_resume(log_dir: str, main_step: int, stages: dict[str, int], epochs_completed: int) -> None:
    """Before a resumed run logs again: drops what the killed run logged past the restored state."""
    if os.path.isdir(log_dir):
        purge_events_after(log_dir, logged_step_limit(main_step, stages, epochs_completed))


def logged_step_limit(main_step: int, stages: dict[str, int], epochs_completed: int) -> Callable[[str], int]:
    """tag → the last step a restored state had logged (each family counts steps its own way: `epoch/*` by
    epoch, a pre-phase stage's `<name>/*` by its optimizer's steps, the rest by the main optimizer's)."""

    def limit(tag: str) -> int:
        if tag.startswith("epoch/"):
            return epochs_completed
        return next((step for prefix, step in stages.items() if tag.startswith(prefix)), main_step)

    return limit
