"""Per-channel mean/std of a training split, computed once and cached on disk.

Why the full training split (not the `--rate` subset): every sampling rate and
every method then sees identically normalized inputs. The original code used
hard-coded CIFAR-100 statistics in B,G,R order; we compute ours in RGB.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys

import numpy as np
import tensorflow as tf

from iep.core.files import read_json, write_json_atomic
from iep.core.stderr import native_stderr_silenced
from iep.datasets.sources import ImageSource, raise_if_undecodable


def default_cache_dir() -> str:
    return os.environ.get("IEP_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "iep"))


def compute_channel_stats(source: ImageSource, split: str = "train") -> tuple[list[float], list[float]]:
    records = source.split(split)

    def moments(payload, _label):
        pixels = tf.reshape(tf.cast(records.decode(payload), tf.float64), [-1, 3])
        return tf.reduce_sum(pixels, 0), tf.reduce_sum(tf.square(pixels), 0), tf.cast(tf.shape(pixels)[0], tf.float64)

    zeros = tf.zeros([3], tf.float64)
    try:
        with native_stderr_silenced():  # libjpeg's own lines per corrupt image; our error names the file
            total, total_sq, count = records.records.map(moments, num_parallel_calls=tf.data.AUTOTUNE).reduce(
                (zeros, zeros, tf.constant(0.0, tf.float64)),
                lambda acc, m: (acc[0] + m[0], acc[1] + m[1], acc[2] + m[2]),
            )
    except tf.errors.InvalidArgumentError as error:  # an undecodable image: name it (this is the cheap scan)
        raise_if_undecodable(records, split, error)
    mean = total.numpy() / count.numpy()
    std = np.sqrt(np.maximum(total_sq.numpy() / count.numpy() - mean**2, 1e-12))
    return mean.tolist(), std.tolist()


def _checksum(fingerprint: str, mean: list[float], std: list[float]) -> str:
    """Ties the cached values to the data they were computed from: an edited value (or a cache file copied
    beside another data set's fingerprint) no longer matches."""
    text = json.dumps({"source": fingerprint, "mean": mean, "std": std}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def channel_stats(source: ImageSource, cache_dir: str | None = None) -> tuple[list[float], list[float]]:
    """Cached `compute_channel_stats` of the train split, keyed by the source's fingerprint; a cache whose
    checksum does not match its values and that fingerprint is recomputed with a warning."""
    path = os.path.join(cache_dir or default_cache_dir(), "stats", f"{source.fingerprint}.json")
    if os.path.exists(path):
        try:
            cached = read_json(path)
            mean, std = [float(v) for v in cached["mean"]], [float(v) for v in cached["std"]]
            if not (len(mean) == len(std) and all(math.isfinite(v) for v in mean + std) and min(std) > 0):
                raise ValueError("statistics out of range")
            if cached.get("checksum") != _checksum(source.fingerprint, mean, std):
                raise ValueError("its checksum does not match its values and data")
            return mean, std
        except (ValueError, KeyError, TypeError) as error:  # a damaged cache is recomputed, not trusted
            print(f"warning: statistics cache {path} is damaged ({error}); recomputing it", file=sys.stderr)
    mean, std = compute_channel_stats(source)
    try:
        checksum = _checksum(source.fingerprint, mean, std)
        write_json_atomic(path, {"source": source.name, "mean": mean, "std": std, "checksum": checksum})
    except ValueError as error:  # a read-only or full cache only costs the next run this pass
        print(f"warning: statistics not cached: {error}", file=sys.stderr)
    return mean, std
