"""Stratified, seeded subsets of a training split (`--rate`).

Why a function of (labels, rate, seed) only: the same subset must come out for
every method and every run, so KD methods are compared on identical data.
"""

from __future__ import annotations

import numpy as np


def stratified_indices(labels: np.ndarray, rate: float, seed: int = 0) -> np.ndarray:
    """Sorted indices keeping round(rate·n_c) samples (at least 1) of every class c."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    labels = np.asarray(labels)
    if rate == 1.0:
        return np.arange(labels.size)
    rng = np.random.default_rng(seed)
    keep = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = max(1, int(round(rate * members.size)))
        keep.append(rng.choice(members, size=count, replace=False))
    return np.sort(np.concatenate(keep))
