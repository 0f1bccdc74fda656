"""Learning-rate schedules, indexed by optimizer step.

`step` is the original code's schedule: the base rate multiplied by `factor`
at each fraction of the run in `decay_points` (0.3, 0.6, 0.8 and 0.2 by
default, docs/methods.md §7). `cosine` decays to zero over the run.
"""

from __future__ import annotations

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
    if name == "constant":
        return base_lr
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps=max(1, total_steps))
    if name == "step":
        if any(not 0.0 < p < 1.0 for p in decay_points) or list(decay_points) != sorted(decay_points):
            raise ValueError(
                f"TrainConfig.lr_decay_points must be increasing fractions in (0, 1), got {list(decay_points)}"
            )
        boundaries = [int(round(p * total_steps)) for p in decay_points]
        values = [base_lr * decay_factor**i for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    raise ValueError(f"TrainConfig.lr_schedule must be one of {SCHEDULES}, got {name!r}")
