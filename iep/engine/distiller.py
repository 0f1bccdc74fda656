"""The extension point of the training loop: what a KD method adds to plain training.

The loop is one; a method is a `Distiller` subclass plus its flags. Per step
the loop computes the task loss (cross-entropy + weight decay) on the student
and asks the distiller for

* `losses(...)`: named distillation terms (logged one by one), and
* `gradients(...)`: how task and distillation gradients combine (a plain sum
  by default; IEP overrides it with the norm-clipped combination).

A distiller may own trainable modules (adapters, regressors) trained with the
student (`trainable_variables`) and state that must be checkpointed
(`checkpointables`). Pre-phases (IEP's module training, FT's paraphraser, …)
plug in through the same object in later issues.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

from nets import TappedNetwork


class Distiller:
    """No distillation: plain supervised training. Subclasses add terms."""

    name = "none"
    loss_names: tuple[str, ...] = ()

    def __init__(self, teacher: TappedNetwork | None = None):
        self.teacher = teacher

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return []

    def checkpointables(self) -> Mapping[str, object]:
        return {}

    def losses(
        self, images: tf.Tensor, labels: tf.Tensor, student_outputs: Mapping[str, tf.Tensor], epoch: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        """Named scalar distillation losses for one batch (keys must equal `loss_names`)."""
        return {}

    def gradients(
        self,
        tape: tf.GradientTape,
        task_loss: tf.Tensor,
        distill_loss: tf.Tensor,
        variables: Sequence[tf.Variable],
        epoch: tf.Tensor,
    ) -> list[tf.Tensor]:
        """Gradient per variable of the combined objective; default: of the plain sum.

        Both losses were recorded on `tape`; anything computed from them here is
        not, so combine gradients, never losses (a list target sums them).
        """
        return tape.gradient([task_loss, distill_loss], variables)
