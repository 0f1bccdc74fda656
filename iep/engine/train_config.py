"""What a training run is asked to do: the loop's settings, checked before any compute."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from iep.core.fields import check_bools, check_numbers
from iep.engine.mobile_export import check_formats
from iep.engine.precision import check_precision
from iep.op_utils.schedules import check_schedule

# Each numeric field → (whether a value is in range, what is expected); errors name the field (TrainConfig.lr),
# and the commands say the flag (iep/apps/vocabulary.py). eval_limit may be None: all images.
RANGES = {
    "epochs": (lambda v: v >= 1, ">= 1"),
    "batch_size": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "lr_decay_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "weight_decay": (lambda v: math.isfinite(v) and v >= 0, ">= 0"),
    "momentum": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "seed": (lambda v: v >= 0, ">= 0"),
    "log_every": (lambda v: v >= 1, ">= 1 (steps between TensorBoard writes)"),
    "eval_batch_size": (lambda v: v >= 1, ">= 1"),
    "eval_limit": (lambda v: v >= 1, ">= 1 images"),
    "eval_every": (lambda v: v >= 1, ">= 1 (epochs between evaluations)"),
    "keep_checkpoints": (lambda v: v >= 1, ">= 1"),
}

# counts: a fractional value (epochs=2.5) has no meaning, and would reach range() or a step count as a float
INTEGERS = (
    "epochs",
    "batch_size",
    "seed",
    "log_every",
    "eval_batch_size",
    "eval_limit",
    "eval_every",
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

    def __post_init__(self) -> None:
        # Refused where it is written (TrainConfig(epochs=0)), not later where a Trainer first reads it.
        self.validate()

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
            raise ValueError(f"TrainConfig.jit_compile must be auto, true or false, got {self.jit_compile!r}")
        check_numbers("TrainConfig", self, RANGES, optional=("eval_limit",), integers=INTEGERS)
        check_bools("TrainConfig", self, ("progress", "export"))
        check_schedule(self.lr_schedule, self.lr_decay_points)
        check_precision(self.precision)
        if isinstance(self.export_formats, str) or not isinstance(self.export_formats, Sequence):
            raise TypeError(
                f"TrainConfig.export_formats must be a sequence of format names, e.g. ('savedmodel', 'tflite'); got "
                f"{self.export_formats!r}"
            )
        check_formats(self.export_formats)
        if not isinstance(self.eval_split, str):
            raise TypeError(f"TrainConfig.eval_split must be a split's name, e.g. 'test'; got {self.eval_split!r}")
