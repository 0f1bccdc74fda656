"""A new KD method in a file of your own: L2 between student and teacher logits (Ba & Caruana, 2014).

    python train.py --plugins=examples/logit_l2_method.py --distill=logit_l2 --teacher=runs/teacher \
        --distill_args=weight=0.5

`register` makes the class `--distill=logit_l2`; its keyword defaults become `--distill_args` options
(`weight` is range-checked as every method's `weight`). The loop adds `losses(...)` to the student's
cross-entropy and weight decay, logs it as loss/logit_l2, checkpoints and resumes as for any method.
"""

import tensorflow as tf

from iep.core.distiller import Distiller
from iep.methods import register


@register("logit_l2")
class LogitL2(Distiller):
    name, loss_names = "logit_l2", ("logit_l2",)
    uses_teacher_logits = True  # refuse a teacher with other classes
    decay_every_variable = True  # decay BN and biases too, as most references do

    def __init__(self, teacher, weight: float = 1.0):
        super().__init__(teacher)
        self.weight = weight

    def losses(self, images, labels, student_outputs, epoch):
        teacher_logits = tf.stop_gradient(self.teacher(images, training=False)["logits"])
        gap = student_outputs["logits"] - teacher_logits
        return {"logit_l2": self.weight * tf.reduce_mean(tf.square(gap))}  # MSE over batch and classes
