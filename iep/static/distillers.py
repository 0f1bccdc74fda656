"""Static knowledge on the one training loop: learning the semantic vectors, and distilling from them.

* `SemanticVectorLearner` rides along plain training (`train.py --semantic_vectors=d`): the network trains
  on its labels exactly as without it (the alignment loss sees its features through stop_gradient), and
  the vectors of every sensing point follow the network's neuron relations as they form. The vectors are
  trained by the loop's optimizer (SGD with the run's LR schedule) and are not weight-decayed.
* `StaticKD` (`--distill=static_kd --static_knowledge=<file>`) never loads a teacher: the student's
  own neuron relations (channel correlations, through a trained linear map to the teacher's channel
  count where widths differ) are pulled to the cosine similarities of the teacher's semantic vectors,
  loss = weight · Σ_points MSE(S_sem, S_act(student)), plus the student's cross-entropy. With equal widths
  student channel i stands in for teacher neuron i (no map), as FitNet-style hints assume; with a map the
  student learns which mix of its channels plays each teacher neuron. weight = 1 (our default: the term is
  O(0.1) against a cross-entropy of O(1)).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from iep.core.distiller import Distiller
from iep.core.tracing import traced
from iep.datasets import ImagePipeline
from iep.datasets.user_data import UserData
from iep.nets import TappedNetwork
from iep.static.knowledge_file import StaticKnowledge, save_static_knowledge
from iep.static.semantic import alignment_loss, alignment_score, channel_similarity, init_vectors, vector_similarity


class SemanticVectorLearner(Distiller):
    name, loss_names = "semantic_vectors", ("semantic_alignment",)
    min_batch_size = 2  # a correlation across one image is undefined

    def __init__(self, network: TappedNetwork, dim: int, seed: int = 0):
        super().__init__(None)
        if dim < 1:
            raise ValueError(f"dim={dim}: the semantic vectors' dimension must be >= 1")
        self.network, self.dim = network, dim
        self.vectors = [
            init_vectors(spec.shape[-1], dim, (seed or 0) + i, f"semantic_vectors_{i}")
            for i, spec in enumerate(network.tap_specs)
        ]

    @property
    def trainable_variables(self):
        return list(self.vectors)

    def checkpointables(self):
        return {"semantic_vectors": self.vectors}

    def losses(self, images, labels, student_outputs, epoch):
        """Σ_points C · MSE: the MSE's mean over C² pairs would shrink each vector's gradient as 1/C, too
        slow for the loop's SGD; times C it is each row's summed error, averaged over the rows."""
        terms = [
            float(v.shape[0]) * alignment_loss(vector_similarity(v), tf.stop_gradient(channel_similarity(t)))
            for v, t in zip(self.vectors, student_outputs["taps"], strict=True)
        ]
        return {"semantic_alignment": tf.add_n(terms)}


class StaticKD(Distiller):
    name, loss_names = "static_kd", ("static",)
    min_batch_size = 2

    def __init__(
        self,
        teacher: None,
        student: TappedNetwork,
        static_knowledge: StaticKnowledge,
        weight: float = 1.0,
        seed: int = 0,
    ):
        super().__init__(None)
        if teacher is not None:
            raise ValueError("static_kd learns from its static knowledge (static_knowledge=) only; drop teacher=")
        student_channels = [spec.shape[-1] for spec in student.tap_specs]
        if len(student_channels) != len(static_knowledge.vectors):
            raise ValueError(
                f"the static knowledge (static_knowledge=) holds {static_knowledge.describe()}, but student "
                f"{student.arch} has "
                f"{len(student_channels)} sensing points; use knowledge of a network with as many points"
            )
        self.weight = weight
        self.targets = [tf.constant(vector_similarity(v).numpy()) for v in static_knowledge.vectors]
        self.maps = []
        for i, (c_s, c_t) in enumerate(zip(student_channels, static_knowledge.channels, strict=True)):
            if c_s == c_t:
                self.maps.append(None)
                continue
            layer = keras.layers.Dense(
                c_t,
                use_bias=False,
                kernel_initializer=keras.initializers.GlorotUniform(seed=(seed or 0) + i),
                name=f"static_map_{i}",
            )
            layer.build((None, c_s))
            self.maps.append(layer)

    @property
    def trainable_variables(self):
        return [w for m in self.maps if m is not None for w in m.trainable_weights]

    def checkpointables(self):
        return {"static_maps": [m for m in self.maps if m is not None]}

    def student_similarities(self, taps) -> list[tf.Tensor]:
        out = []
        for tap, layer in zip(taps, self.maps, strict=True):
            pooled = tf.reduce_mean(tf.cast(tap, tf.float32), axis=[1, 2])
            out.append(channel_similarity(pooled if layer is None else layer(pooled)))
        return out

    def losses(self, images, labels, student_outputs, epoch):
        similarities = self.student_similarities(student_outputs["taps"])
        terms = [alignment_loss(target, s) for target, s in zip(self.targets, similarities, strict=True)]
        return {"static": self.weight * tf.add_n(terms)}


def average_activation_similarity(network: TappedNetwork, batches) -> list[np.ndarray]:
    """Per point, S_act averaged over the batches of a split (what the alignment score compares with)."""

    @traced
    def step(images):
        return [channel_similarity(t) for t in network(images, training=False)["taps"]]

    total, count = None, 0
    for images, _ in batches:
        if int(tf.shape(images)[0]) < 2:
            continue
        sims = [s.numpy() for s in step(images)]
        total = sims if total is None else [a + b for a, b in zip(total, sims, strict=True)]
        count += 1
    if not count:
        raise ValueError("the alignment score needs at least one batch of 2 or more images")
    return [t / count for t in total]


def export_static_knowledge(
    network: TappedNetwork,
    vectors: list[tf.Variable],
    data: ImagePipeline | UserData,
    split: str,
    path: str,
    learned: str,
    source: str,
    batch_size: int = 500,
) -> StaticKnowledge:
    """Scores the vectors against the network's neuron relations averaged over `split` and writes the file."""
    activation = average_activation_similarity(network, data.eval_dataset(split, batch_size))
    semantic = [vector_similarity(v).numpy() for v in vectors]
    scores = [round(alignment_score(s, a), 4) for s, a in zip(semantic, activation, strict=True)]
    config = data.config
    knowledge = StaticKnowledge(
        [np.asarray(v.numpy(), np.float32) for v in vectors],
        {
            "arch": network.arch,
            "points": [{"name": spec.name, "shape": list(spec.shape)} for spec in network.tap_specs],
            "dim": int(vectors[0].shape[1]),
            "data": {"dataset": config.dataset, "data_dir": config.data_dir, "class_names": list(data.class_names)},
            "alignment_score": scores,
            "alignment_split": split,
            "learned": learned,
            "source": source,
        },
    )
    save_static_knowledge(path, knowledge)
    print(f"static knowledge: {path} ({knowledge.describe()}, d={knowledge.metadata['dim']}; alignment {scores})")
    return knowledge
