"""What a training run is asked to do: the loop's settings, checked before any compute."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence

from iep.engine.mobile_export import check_formats
from iep.engine.precision import check_precision

# The fields `validate` compares with numbers (eval_limit may also be None: all images).
NUMERIC = (
    "eval_limit",
    "epochs",
    "batch_size",
    "lr",
    "lr_decay_factor",
    "momentum",
    "weight_decay",
    "seed",
    "eval_every",
    "eval_batch_size",
    "log_every",
    "keep_checkpoints",
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.1
    lr_schedule: str = "step"
    lr_decay_points: Sequence[float] = (0.3, 0.6, 0.8)
    lr_decay_factor: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    eval_split: str = "test"
    eval_every: int = 1  # evaluate after every this many epochs, and always after the last
    eval_batch_size: int = 500
    eval_limit: int | None = None  # evaluate on the split's first this many images (quick runs); None: all
    log_every: int = 50
    keep_checkpoints: int = 3
    jit_compile: bool | str = "auto"  # XLA: True, False, or "auto" (on with a GPU and one replica, as Keras does)
    progress: bool = True
    export: bool = True
    export_formats: Sequence[str] = ("savedmodel",)  # any of iep.engine.mobile_export.EXPORT_FORMATS
    precision: str = "float32"  # the networks' policy (set when they were built); float16 adds loss scaling

    def uses_xla(self, replicas: int = 1) -> bool:
        """Whether the steps compile with XLA: `jit_compile` as given, "auto" resolved like Keras's `fit` (on where
        a GPU is visible; off on CPU, where XLA's backend is slower, and with several replicas)."""
        if self.jit_compile == "auto":
            import tensorflow as tf

            return replicas == 1 and bool(tf.config.list_physical_devices("GPU"))
        return bool(self.jit_compile)

    def validate(self) -> None:
        """Every numeric setting a number and in range (NaN fails every check) before anything is built or
        written; from Python, lr="0.1" would otherwise fail as a bare TypeError naming no field."""
        if self.jit_compile not in ("auto", True, False):
            raise ValueError(f"--jit_compile must be auto, true or false, got {self.jit_compile!r}")
        for name in NUMERIC:
            value = getattr(self, name)
            if (value is not None or name != "eval_limit") and (
                not isinstance(value, numbers.Real) or isinstance(value, bool)
            ):
                raise TypeError(f"TrainConfig.{name} must be a number, got {value!r}")
        check_precision(self.precision)
        check_formats(self.export_formats)
        checks = [
            ("--epochs", self.epochs, self.epochs >= 1, ">= 1"),
            ("--batch_size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("--lr", self.lr, math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("--lr_decay_factor", self.lr_decay_factor, 0 < self.lr_decay_factor <= 1, "in (0, 1]"),
            ("--weight_decay", self.weight_decay, math.isfinite(self.weight_decay) and self.weight_decay >= 0, ">= 0"),
            ("--momentum", self.momentum, 0.0 <= self.momentum < 1.0, "in [0, 1)"),
            ("--seed", self.seed, self.seed >= 0, ">= 0"),
            ("--log_every", self.log_every, self.log_every >= 1, ">= 1 (steps between TensorBoard writes)"),
            ("--eval_batch_size", self.eval_batch_size, self.eval_batch_size >= 1, ">= 1"),
            ("--eval_limit", self.eval_limit, self.eval_limit is None or self.eval_limit >= 1, ">= 1 images"),
            ("--eval_every", self.eval_every, self.eval_every >= 1, ">= 1 (epochs between evaluations)"),
            ("keep_checkpoints", self.keep_checkpoints, self.keep_checkpoints >= 1, ">= 1"),
        ]
        for flag, value, ok, expected in checks:
            if not ok:
                raise ValueError(f"{flag} must be {expected}, got {value}")
        points = list(self.lr_decay_points)
        if any(not 0 < p < 1 for p in points) or points != sorted(points):
            raise ValueError(f"--lr_decay_points must be increasing fractions in (0, 1), got {points}")
