"""Learning-rate schedules, indexed by optimizer step.

`step` is the original code's schedule: the base rate multiplied by `factor`
at each fraction of the run in `decay_points` (0.3, 0.6, 0.8 and 0.2 by
default, docs/methods.md §7). `cosine` decays to zero over the run.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras

SCHEDULES = ("step", "cosine", "constant")


def build_schedule(
    name: str,
    base_lr: float,
    total_steps: int,
    decay_points: Sequence[float] = (0.3, 0.6, 0.8),
    decay_factor: float = 0.2,
) -> keras.optimizers.schedules.LearningRateSchedule | float:
    if base_lr <= 0:
        raise ValueError(f"TrainConfig.lr must be positive, got {base_lr}")
    check_schedule(name, decay_points)
    if name == "constant":
        return base_lr
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps=max(1, total_steps))
    boundaries = [int(round(p * total_steps)) for p in decay_points]
    values = [base_lr * decay_factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def check_schedule(name: str, decay_points: Sequence[float]) -> None:
    """A known schedule, and decay points that are increasing fractions of the run (`step` reads them; they are
    checked for every schedule, so a config is refused for what it says, whichever schedule it names)."""
    if name not in SCHEDULES:
        raise ValueError(f"TrainConfig.lr_schedule must be one of {SCHEDULES}, got {name!r}")
    points = list(decay_points) if isinstance(decay_points, Sequence) and not isinstance(decay_points, str) else None
    if points is None or not all(isinstance(p, numbers.Real) and not isinstance(p, bool) for p in points):
        raise TypeError(f"TrainConfig.lr_decay_points must be a sequence of numbers, got {decay_points!r}")
    if any(not 0.0 < p < 1.0 for p in points) or points != sorted(points):
        raise ValueError(f"TrainConfig.lr_decay_points must be increasing fractions in (0, 1), got {points}")
