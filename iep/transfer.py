"""The transfer-learning protocol of the paper's Table 2: the teacher's knowledge first, then fine-tuning.

`--protocol=transfer` wraps any method. The student is trained in two stages on the target data:

1. **Knowledge stage** (`--knowledge_epochs`, default `--epochs`): the method's own pre-phases first, as in
   the CIFAR protocol (IEP's module training on teacher features, FT's paraphraser, ...), then the student
   (and the method's adapters) learn from the method's distillation terms **alone**, plus weight decay — no
   label, no cross-entropy. The distillation gradient is applied as it is: IEP's (and MHGD's, KD-SVD's)
   clip bounds it by the cross-entropy gradient's norm, and with no task loss in this stage there is nothing
   to bound it by. Methods that are themselves an initialization (FitNet, AB, FSP: distillation, then plain
   training) already are this stage, and their pre-phase is sized to it.
2. **Fine-tuning** (`--epochs`): plain training with labels (cross-entropy + weight decay), no teacher.

Both stages use the run's SGD (Nesterov) settings and step schedule: `--lr`, `--lr_decay_points`,
`--lr_decay_factor` (the paper's supplementary: batch 32, LR 0.01 ×0.1 at 50 % and 75 %).

Where this comes from: the paper says the student "is first trained with the teacher's knowledge and then
fine-tuned"; its published code (sseung0703/IEPKT) holds only the CIFAR protocol, so the stage boundaries
above (knowledge alone in stage 1, labels alone in stage 2, the unclipped gradient) are our reading.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import tensorflow as tf

from iep.baselines.hints import student_body_variables
from iep.core.distiller import Distiller, PrePhase
from iep.nets import TappedNetwork
from iep.op_utils import decayed_variables, l2_penalty

PROTOCOLS = ("distill", "transfer")
KNOWLEDGE_STAGE = "knowledge"


class KnowledgeThenFineTune(Distiller):
    """`inner`'s knowledge as a student-training stage before the main phase; the main phase is plain."""

    def __init__(
        self,
        inner: Distiller,
        student: TappedNetwork,
        *,
        knowledge_steps: int,
        lr: float,
        lr_boundaries: Sequence[float] = (),
        lr_decay: float = 0.1,
        weight_decay: float = 5e-4,
        epochs: int = 1,
    ):
        super().__init__(inner.teacher)
        if knowledge_steps < 1:
            raise ValueError(
                f"the transfer protocol needs a knowledge stage of >= 1 step; got knowledge_steps={knowledge_steps}"
            )
        if not inner.loss_names and not inner.pre_phases():
            raise ValueError(f"the transfer protocol needs a distillation method, not {inner.name}")
        self.inner, self.student = inner, student
        self.name = inner.name
        self.min_batch_size = inner.min_batch_size
        self.knowledge_steps, self.weight_decay, self.epochs = knowledge_steps, weight_decay, epochs
        self._schedule = {"lr": lr, "lr_boundaries": tuple(lr_boundaries), "lr_decay": lr_decay, "optimizer": "sgd"}
        # Logit methods reach the classifier; for feature methods it gets no gradient, so weight decay
        # alone would shrink it: the knowledge stage trains the body only, as FitNet's initialization does.
        body = student_body_variables(student)
        self._student_variables = list(student.model.trainable_variables) if inner.uses_teacher_logits else body

    @property
    def initialization_only(self) -> bool:
        """FitNet, AB, FSP: no main-phase term; their (last) pre-phase trains the student on the hint."""
        return not self.inner.loss_names

    def pre_phases(self) -> tuple[PrePhase, ...]:
        phases = list(self.inner.pre_phases())
        if self.initialization_only:
            phases[-1] = dataclasses.replace(phases[-1], steps=self.knowledge_steps, **self._schedule)
            return tuple(phases)
        stage = PrePhase(
            KNOWLEDGE_STAGE,
            self.knowledge_steps,
            (*self.inner.loss_names, "weight_decay"),
            self._knowledge_losses,
            self._student_variables + list(self.inner.trainable_variables),
            **self._schedule,
        )
        return (*phases, stage)

    def _knowledge_losses(self, images: tf.Tensor, labels: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = self.student(images, training=True)
        # Epoch-dependent weights (DKD's warm-up) are fractions of the run: at its end they are at full weight.
        terms = dict(self.inner.losses(images, labels, outputs, tf.constant(float(self.epochs))))
        terms["weight_decay"] = l2_penalty(decayed_variables(self._student_variables), self.weight_decay)
        return terms

    def checkpointables(self) -> Mapping[str, object]:
        return self.inner.checkpointables()


def transfer_protocol(
    inner: Distiller,
    student: TappedNetwork,
    knowledge_steps: int,
    lr: float,
    lr_decay_points: Sequence[float],
    lr_decay_factor: float,
    lr_schedule: str,
    weight_decay: float,
    epochs: int,
) -> KnowledgeThenFineTune:
    """The wrapper with the run's optimizer settings (a step schedule; others are refused, not approximated)."""
    if lr_schedule == "cosine":
        raise ValueError(
            "the transfer protocol uses the step schedule in both stages, not TrainConfig.lr_schedule='cosine'"
        )
    boundaries = tuple(lr_decay_points) if lr_schedule == "step" else ()
    return KnowledgeThenFineTune(
        inner,
        student,
        knowledge_steps=knowledge_steps,
        lr=lr,
        lr_boundaries=boundaries,
        lr_decay=lr_decay_factor,
        weight_decay=weight_decay,
        epochs=epochs,
    )
