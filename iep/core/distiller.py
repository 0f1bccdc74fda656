"""The extension point of the training loop: what a KD method adds to plain training.

The loop is one; a method is a `Distiller` subclass plus its flags. Per step
the loop computes the student's cross-entropy and weight decay and asks the
distiller for

* `losses(...)`: named distillation terms (each logged), and
* `gradients(...)`: how the three gradients combine (a plain sum by default;
  IEP uses the norm-clipped combination of `op_utils.clipping`).

A distiller may own trainable modules trained with the student
(`trainable_variables`, e.g. adapters) and state to checkpoint
(`checkpointables`). A method with a *pre-phase* (IEP's module training, FT's paraphraser, AB's
initialization, ...) sets `pre_phase_steps > 0` and implements
`pre_phase_losses` for `pre_phase_variables`; the loop runs it first, with
its own optimizer, and checkpoints and resumes it like the main phase. A
method with several stages before the main phase (SRM: dictionary, then
student initialization) overrides `pre_phases()` instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import tensorflow as tf

from iep.nets import TappedNetwork
from iep.op_utils import decayed_variables


@dataclasses.dataclass(frozen=True)
class PrePhase:
    """One stage the loop runs before the main phase, with an optimizer of its own.

    `lr_boundaries` are fractions of `steps` at which the learning rate is
    multiplied by `lr_decay` (SRM's Adam schedules); `optimizer` is "sgd"
    (Nesterov, momentum 0.9, as the author's code) or "adam".
    """

    name: str
    steps: int
    loss_names: tuple[str, ...]
    losses: Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]
    variables: Sequence[tf.Variable]
    lr: float = 0.1
    optimizer: str = "sgd"
    lr_boundaries: tuple[float, ...] = ()
    lr_decay: float = 0.1

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"pre-phase {self.name!r} needs steps >= 1, got {self.steps}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"pre-phase {self.name!r}: optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")


class Distiller:
    """No distillation: plain supervised training. Subclasses add terms."""

    name = "none"
    loss_names: tuple[str, ...] = ()
    metric_names: tuple[str, ...] = ()  # per-step diagnostics returned by `step_metrics`
    uses_teacher_logits = False  # True: the method compares logits, so teacher and student need the same classes
    cross_entropy_weight = 1.0  # weight of the student's own cross-entropy (KD's reference setting uses 0.1)
    separate_gradients = False  # True when `gradients` calls tape.gradient more than once (persistent tape)
    gradient_reads_terms = False  # True: `gradients` also receives `terms`, each named loss (scaled) apart
    # What `losses` receives beside the batch, by keyword, and the loop asks the data for
    # (`train_dataset(extras=...)`): "indices", the batch's positions in the training set (one state entry per
    # training image, CRD's memory); "strong_view", a second, strongly augmented view of the same images (MLKD).
    batch_extras: tuple[str, ...] = ()
    pre_phase_loss_names: tuple[str, ...] = ()
    pre_phase_steps: int = 0
    pre_phase_lr: float = 0.1
    # `build_distiller` notes the student it built the method for (a weak reference; None: built by hand).
    built_for = None
    # Relation methods compare the samples of a batch; below this many per replica their loss is identically 0.
    min_batch_size: int = 1
    # What weight decay reaches. False: conv/dense kernels of the student (`op_utils.regularizers`, our reading
    # of IEPKT, whose arg scopes set no regularizer). True: every trained variable — the student's BN γ/β and
    # biases and the method's own modules (`trainable_variables`: connectors, translator, adapters) — as the
    # baselines' reference code does (torch `SGD(..., weight_decay)` over all parameters; the TF2 benchmark's
    # `op_util.py` adds wd·v to every gradient; the TF1 benchmark's arg scope regularizes kernels, BN and biases).
    decay_every_variable: bool = False

    def __init__(self, teacher: TappedNetwork | None = None):
        self.teacher = teacher

    def check_batch_size(self, per_replica: int) -> None:
        """Refuses a batch too small for the method, before any compute, naming the minimum."""
        if per_replica < self.min_batch_size:
            raise ValueError(
                f"{self.name} relates the samples of a batch and needs at least {self.min_batch_size} "
                f"per replica (with fewer its loss is identically 0); got {per_replica}: raise TrainConfig.batch_size"
            )

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return []

    def decayed(self, variables: Sequence[tf.Variable]) -> list[tf.Variable]:
        """The variables weight decay reaches among `variables` (plus this method's own modules when it decays
        every variable); see `decay_every_variable`."""
        if not self.decay_every_variable:
            return decayed_variables(variables)
        out, seen = [], set()
        for v in (*variables, *self.trainable_variables):
            if v.trainable and id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    @property
    def pre_phase_variables(self) -> list[tf.Variable]:
        return []

    def checkpointables(self) -> Mapping[str, object]:
        return {}

    def pre_phases(self) -> tuple[PrePhase, ...]:
        """The stages before the main phase, in order; by default the one `pre_phase_*` attributes describe."""
        if self.pre_phase_steps <= 0:
            return ()
        return (
            PrePhase(
                "pre_phase",
                self.pre_phase_steps,
                self.pre_phase_loss_names,
                self.pre_phase_losses,
                self.pre_phase_variables,
                self.pre_phase_lr,
            ),
        )

    def losses(
        self, images: tf.Tensor, labels: tf.Tensor, student_outputs: Mapping[str, tf.Tensor], epoch: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """Named scalar distillation losses for one batch (keys must equal `loss_names`)."""
        return {}

    def step_metrics(self) -> dict[str, tf.Tensor]:
        """Diagnostics of the step being traced (keys = `metric_names`), read after `gradients`."""
        return {}

    def pre_phase_losses(self, images: tf.Tensor, labels: tf.Tensor) -> dict[str, tf.Tensor]:
        """Named scalar losses of one pre-phase step (keys must equal `pre_phase_loss_names`)."""
        raise NotImplementedError(f"{self.name} has no pre-phase")

    def gradients(
        self,
        tape: tf.GradientTape,
        task_loss: tf.Tensor,
        weight_decay: tf.Tensor,
        distill_loss: tf.Tensor,
        variables: Sequence[tf.Variable],
        epoch: tf.Tensor,
    ) -> list[tf.Tensor]:
        """Gradient per variable of the combined objective; default: of the plain sum.

        `task_loss` is the student's cross-entropy times `cross_entropy_weight`. A distiller that sets
        `gradient_reads_terms` is called with `terms=` too: its named losses, scaled as the three are.

        The losses were recorded on `tape`; anything computed from them here is
        not, so combine gradients, never losses (a list target sums them).
        """
        return tape.gradient([task_loss, weight_decay, distill_loss], variables)
