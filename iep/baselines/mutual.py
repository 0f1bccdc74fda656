"""DML — deep mutual learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018), as in the IEP author's TF1 benchmark.

Reference: `sseung0703/KD_methods_with_TF` at 9fb5414: `nets/Response.py` (`DML`, lines 12-20: the
symmetric KL at T = 1, halved), `op_util.py` (`Optimizer_w_DML`, lines 102-131: each network
minimizes its own cross-entropy + its own weight decay + that shared term,
SGD Nesterov at the student's learning-rate schedule) and
`train_w_distill.py` (the peer has the teacher's architecture and is *not*
loaded with the teacher's weights: it trains from scratch beside the
student; weight decay 5e-4).

How it fits the one loop (our design): the peer is a module of the
distiller, so its variables train with the student's optimizer and
schedule. The distillation terms are the peer's cross-entropy and the
mutual term ½[KL(p_P ‖ p_S) + KL(p_S ‖ p_P)]; the loop's weight decay
covers both networks' every variable (`decay_every_variable`: the TF1
benchmark's `ResNet_arg_scope` regularizes kernels, BN γ/β and the
classifier bias of student and peer alike, at the loop's `--weight_decay`).
Each network's gradient of that sum is exactly its own objective in the
reference (the other network's CE and decay do not reach it). One
difference: the reference updates the peer first and then the student
against the updated peer; here both update from the same forward pass
(simultaneous steps). The peer's BN trains (the reference's flag for it is
`logical_not(is_training)`, which we read as a slip). `--teacher` only names
the peer's architecture; its weights are not used.
"""

from __future__ import annotations

import tensorflow as tf

from iep.baselines.logit_kd import kd_loss
from iep.core.distiller import Distiller
from iep.nets import TappedNetwork, build_network, parse_arch


def mutual_kl(logits_a: tf.Tensor, logits_b: tf.Tensor) -> tf.Tensor:
    """½ · [mean_batch KL(softmax(a) ‖ softmax(b)) + mean_batch KL(softmax(b) ‖ softmax(a))]: KD's term at T = 1,
    both ways."""
    return (kd_loss(logits_b, logits_a, 1.0) + kd_loss(logits_a, logits_b, 1.0)) / 2.0


class DMLDistiller(Distiller):
    name, loss_names = "dml", ("mutual", "peer_cross_entropy")
    decay_every_variable = True

    def __init__(self, teacher: TappedNetwork, student: TappedNetwork):
        super().__init__(teacher)
        try:
            parse_arch(teacher.arch)
        except ValueError:
            raise ValueError(
                f"dml trains a peer of the teacher's architecture from scratch; {teacher.arch!r} is no architecture "
                "of ours (use a teacher run of ours)"
            ) from None
        standardize = student.model.get_layer("standardize")
        self.peer = build_network(
            teacher.arch,
            student.num_classes,
            student.input_shape,
            standardize.mean.numpy(),
            standardize.std.numpy(),
            dropout=0.0,
            name="dml_peer",
        )

    @property
    def trainable_variables(self):
        return list(self.peer.model.trainable_variables)

    def checkpointables(self):
        return {"dml_peer": self.peer.model}

    def losses(self, images, labels, student_outputs, epoch):
        peer = tf.cast(self.peer(images, training=True)["logits"], tf.float32)
        student = tf.cast(student_outputs["logits"], tf.float32)
        cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=peer))
        return {
            "mutual": mutual_kl(peer, student),
            "peer_cross_entropy": cross_entropy,
        }
