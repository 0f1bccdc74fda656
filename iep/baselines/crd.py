"""CRD — contrastive representation distillation (Tian, Krishnan & Isola, ICLR 2020), as RepDistiller executes it.

Reference: `HobbitLong/RepDistiller`: `crd/criterion.py` (`CRDLoss.forward` lines 42-48, `ContrastLoss.forward`
59-76, `Embed` 79-90), `crd/memory.py` (`ContrastMemory`: initialization 18-21, scores 38-47, Z 49-61, memory
update 63-77), `dataset/cifar100.py` (`CIFAR100InstanceSample.__getitem__`, mode `exact`), `train_student.py`
(feat_dim 128, nce_k 16384, nce_t 0.07, nce_m 0.5) and `scripts/run_cifar_distill.sh` (`-a 0 -b 0.8`: CE + 0.8 ·
CRD, no KL term).

* Embeddings: the pooled last sensing point (`feat[-1]`) of each network through `Linear(·, 128)` and an L2
  normalization (`Embed`), one per side, both trained with the student.
* Memory: two banks of one row per training image (`memory_v1` for the student's embeddings, `memory_v2` for
  the teacher's), uniform in ±1/√(128/3) at start — state, checkpointed with the run.
* Sample (`exact` mode): for each image its own index, then K = 16384 negatives drawn from the images of the
  *other* classes (with replacement when K exceeds them, as `np.random.choice` there); ours are drawn in-graph
  from a seeded counter, so a resumed run draws what the uninterrupted one did.
* Scores: out_s = exp(memory_v2[idx] · e_s / T) / Z_s (the student's embedding against the teacher's memory) and
  out_t = exp(memory_v1[idx] · e_t / T) / Z_t, T = 0.07; each Z is set once, from the first batch, to
  mean(exp(·)) · N, then kept (checkpointed).
* Loss (`ContrastLoss`, the paper's Eq. 18), per side, with m = K and P_n = 1/N: −(Σ_b log(P_pos / (P_pos + m·P_n +
  ε)) + Σ_{b,k} log(m·P_n / (P_neg + m·P_n + ε))) / B, ε = 1e-7; CRD = the two sides' sum.
* Update (after the scores, no gradient): memory_v1[i] ← normalize(0.5 · memory_v1[i] + 0.5 · e_s), memory_v2[i]
  likewise with e_t.

The memory is 2 · N · 128 float32 (51 MB for CIFAR's 50,000 images); a data set whose memory and negative pools
exceed `max_memory_gb` is refused before training, naming the sizes.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from iep.baselines.repdistiller import pooled, torch_uniform
from iep.core.distiller import Distiller
from iep.nets import TappedNetwork

EPS = 1e-7


def contrast_scores(memory_s, memory_t, e_s, e_t, idx, temperature: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Unnormalized (exp_s, exp_t) [B, K+1]: e_s against the teacher's memory rows idx, e_t against the
    student's (ContrastMemory.forward's out_v1 and out_v2 before the division by Z); the rows outside the
    gradient."""
    rows_t = tf.stop_gradient(tf.gather(memory_t, idx))  # weight_v2
    rows_s = tf.stop_gradient(tf.gather(memory_s, idx))  # weight_v1
    exp_s = tf.exp(tf.einsum("bkd,bd->bk", rows_t, e_s) / temperature)
    exp_t = tf.exp(tf.einsum("bkd,bd->bk", rows_s, e_t) / temperature)
    return exp_s, exp_t


def nce_loss(scores: tf.Tensor, n_data: int) -> tf.Tensor:
    """ContrastLoss: the positive in column 0, the K negatives after it; noise P_n = 1/N."""
    batch = tf.cast(tf.shape(scores)[0], scores.dtype)
    m = float(scores.shape[1] - 1)
    noise = m / float(n_data)
    log_d1 = tf.math.log(scores[:, 0] / (scores[:, 0] + noise + EPS))
    log_d0 = tf.math.log(noise / (scores[:, 1:] + noise + EPS))
    return -(tf.reduce_sum(log_d1) + tf.reduce_sum(log_d0)) / batch


def updated_rows(memory: tf.Tensor, positions: tf.Tensor, embeddings: tf.Tensor, momentum: float) -> tf.Tensor:
    """The memory rows of `positions` after the momentum update, L2-normalized (ContrastMemory's update)."""
    rows = tf.gather(memory, positions) * momentum + embeddings * (1.0 - momentum)
    return rows / tf.sqrt(tf.reduce_sum(tf.square(rows), axis=1, keepdims=True))


def negative_pools(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, the positions of every image of the other classes ([C, max] padded) and how many there are."""
    classes = int(labels.max()) + 1
    pools = [np.flatnonzero(labels != c) for c in range(classes)]
    counts = np.array([p.size for p in pools], np.int64)
    padded = np.zeros((classes, counts.max()), np.int64)
    for c, pool in enumerate(pools):
        padded[c, : pool.size] = pool
    return padded, counts


class CRDDistiller(Distiller):
    name, loss_names = "crd", ("crd",)
    decay_every_variable = True  # RepDistiller's one SGD(trainable_list, weight_decay): the embeddings included
    batch_extras = ("indices",)
    min_batch_size = 1

    def __init__(
        self,
        teacher: TappedNetwork,
        student: TappedNetwork,
        data,
        weight: float = 0.8,
        embedding: int = 128,
        negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        max_memory_gb: float = 4.0,
        seed: int | None = None,
    ):
        super().__init__(teacher)
        labels = np.asarray(data.index_labels() if hasattr(data, "index_labels") else data, np.int64)
        if labels.ndim != 1 or labels.size == 0 or labels.min() < 0:
            raise ValueError(f"crd: data gives {labels.shape} labels; expected one class index ≥ 0 per training image")
        n_data = int(labels.size)
        pools, counts = negative_pools(labels)
        need = (2 * n_data * embedding * 4 + pools.size * 8) / 2**30
        if need > max_memory_gb:
            raise ValueError(
                f"crd keeps two memories of {n_data:,} images × {embedding} floats and the other-class pools "
                f"({need:.1f} GB) above max_memory_gb={max_memory_gb:g}: lower embedding, or raise max_memory_gb"
            )
        self.weight, self.temperature, self.momentum, self.n_data = weight, temperature, momentum, n_data
        self.negatives = negatives
        self.pools, self.counts = tf.constant(pools), tf.constant(counts)
        self._replace = negatives > int(counts.min())
        stdv = 1.0 / math.sqrt(embedding / 3)
        rng = np.random.default_rng(0 if seed is None else seed)
        self.memory_s = tf.Variable(rng.uniform(-stdv, stdv, (n_data, embedding)).astype(np.float32), trainable=False)
        self.memory_t = tf.Variable(rng.uniform(-stdv, stdv, (n_data, embedding)).astype(np.float32), trainable=False)
        self.z = tf.Variable([-1.0, -1.0], trainable=False)  # Z_s, Z_t: set from the first batch
        self.draws = tf.Variable(0, dtype=tf.int64, trainable=False)  # the sampler's counter (resumes exactly)
        self.sample_seed = 0 if seed is None else seed
        self.embeddings = []
        for side, network in (("student", student), ("teacher", teacher)):
            width = network.tap_specs[-1].shape[-1]
            bound = 1.0 / math.sqrt(width)
            layer = keras.layers.Dense(
                embedding,
                kernel_initializer=torch_uniform(),
                bias_initializer=keras.initializers.RandomUniform(-bound, bound),
                name=f"crd_embed_{side}",
            )
            layer.build((None, width))
            self.embeddings.append(layer)

    @property
    def trainable_variables(self):
        return [v for layer in self.embeddings for v in layer.trainable_variables]

    def checkpointables(self):
        return {
            "crd_embeddings": self.embeddings,
            "crd_memory": [self.memory_s, self.memory_t],
            "crd_state": [self.z, self.draws],
        }

    def _embed(self, side: int, feature_map: tf.Tensor) -> tf.Tensor:
        return tf.math.l2_normalize(self.embeddings[side](pooled(feature_map)), axis=1, epsilon=1e-24)

    def sample(self, indices: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """[B, K+1]: each image's own position, then K negatives of other classes."""
        seed = tf.stack([tf.constant(self.sample_seed, tf.int64), self.draws.assign_add(1)])
        labels = tf.cast(labels, tf.int64)
        if self._replace:
            count = tf.gather(self.counts, labels)
            draws = tf.random.stateless_uniform([tf.shape(labels)[0], self.negatives], seed, dtype=tf.float64)
            picks = tf.cast(tf.floor(draws * tf.cast(count[:, None], tf.float64)), tf.int64)
        else:  # without replacement: the K smallest random keys among each pool's entries
            count, width = tf.gather(self.counts, labels), self.pools.shape[1]
            keys = tf.random.stateless_uniform([tf.shape(labels)[0], width], seed)
            keys = tf.where(tf.range(width, dtype=tf.int64)[None, :] < count[:, None], keys, 2.0)
            picks = tf.cast(tf.math.top_k(-keys, self.negatives).indices, tf.int64)
        negatives = tf.gather(tf.gather(self.pools, labels), picks, batch_dims=1)
        return tf.concat([tf.cast(indices, tf.int64)[:, None], negatives], axis=1)

    def losses(self, images, labels, student_outputs, epoch, indices):
        teacher_map = tf.stop_gradient(self.teacher(images, training=False)["taps"][-1])
        e_s = self._embed(0, student_outputs["taps"][-1])
        e_t = self._embed(1, teacher_map)
        idx = self.sample(indices, labels)
        exp_s, exp_t = contrast_scores(self.memory_s, self.memory_t, e_s, e_t, idx, self.temperature)
        first = tf.stack([tf.reduce_mean(exp_s), tf.reduce_mean(exp_t)]) * float(self.n_data)
        z = self.z.assign(tf.where(self.z < 0, tf.stop_gradient(first), self.z))
        loss = nce_loss(exp_s / z[0], self.n_data) + nce_loss(exp_t / z[1], self.n_data)
        positions = tf.cast(indices, tf.int64)
        with tf.control_dependencies([loss]):  # the update follows the scores, as in ContrastMemory.forward
            new_s = updated_rows(self.memory_s, positions, tf.stop_gradient(e_s), self.momentum)
            new_t = updated_rows(self.memory_t, positions, tf.stop_gradient(e_t), self.momentum)
            update = tf.group(self.memory_s.scatter_nd_update(positions[:, None], new_s),
                              self.memory_t.scatter_nd_update(positions[:, None], new_t))  # fmt: skip
        with tf.control_dependencies([update]):
            return {"crd": tf.identity(self.weight * loss)}
