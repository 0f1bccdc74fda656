"""Semantic vectors of a trained teacher run, learned post hoc, and the export of the static-knowledge file.

  python -m iep.static.learn --teacher=runs/teacher --dim=16      # writes runs/teacher/static_knowledge.npz

Post hoc: the teacher is frozen and runs forward over its training split (augmented and shuffled as in its
training, `--epochs` passes); only the vectors learn, with Adam (our choice: the vectors start from
nothing and the teacher's relations do not move, so an adaptive step converges in a few hundred steps).
The jointly learned variant is `train.py --semantic_vectors=d` (iep/static/distillers.py).
"""

from __future__ import annotations

import os

from iep.engine.startup import import_tensorflow_quietly, parse_flags_or_exit

import_tensorflow_quietly()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from iep.core.tracing import traced  # noqa: E402
from iep.static.distillers import SemanticVectorLearner, export_static_knowledge  # noqa: E402
from iep.static.knowledge_file import DEFAULT_NAME, StaticKnowledge  # noqa: E402


def learn_post_hoc(
    teacher_run: str,
    dim: int,
    epochs: int = 2,
    lr: float = 0.01,
    batch_size: int = 128,
    seed: int = 0,
    out: str | None = None,
    split: str = "test",
) -> StaticKnowledge:
    from iep.datasets import build_pipeline
    from iep.engine.runs import load_run_config, run_data_config
    from iep.engine.teacher import load_teacher

    if dim < 1 or epochs < 1 or batch_size < 2 or not lr > 0:
        raise ValueError(
            f"need dim >= 1, epochs >= 1, batch_size >= 2, lr > 0; got dim={dim}, epochs={epochs}, "
            f"batch_size={batch_size}, lr={lr}"
        )
    data = build_pipeline(run_data_config(load_run_config(teacher_run)))  # the run's own training images
    teacher = load_teacher(teacher_run, None, data.num_classes, data.input_shape, class_names=data.class_names)
    keras.utils.set_random_seed(seed)
    learner = SemanticVectorLearner(teacher, dim, seed)
    optimizer = keras.optimizers.Adam(lr)

    @traced
    def step(images):
        with tf.GradientTape() as tape:
            taps = teacher(images, training=False)["taps"]
            loss = learner.losses(images, None, {"taps": taps}, 0)["semantic_alignment"]
        optimizer.apply_gradients(zip(tape.gradient(loss, learner.vectors), learner.vectors, strict=True))
        return loss

    for epoch in range(epochs):
        losses = [float(step(images)) for images, _ in data.train_dataset(epoch, batch_size, seed) if len(images) >= 2]
        print(f"semantic vectors, pass {epoch + 1}/{epochs}: alignment loss {np.mean(losses):.4f}")
    path = out or os.path.join(teacher_run, DEFAULT_NAME)
    return export_static_knowledge(teacher, learner.vectors, data, split, path, "post_hoc", teacher_run)


FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("teacher", None, "A trained run directory of ours.", required=True)
    flags.DEFINE_integer("dim", 16, "Dimension of the semantic vectors.", lower_bound=1)
    flags.DEFINE_integer("epochs", 2, "Passes over the teacher's training split.", lower_bound=1)
    flags.DEFINE_float("lr", 0.01, "Adam learning rate of the vectors.", lower_bound=1e-12)
    flags.DEFINE_integer("batch_size", 128, "Images per step (the neuron relations are per batch).", lower_bound=2)
    flags.DEFINE_integer("seed", 0, "Seed of the vectors and the data order.", lower_bound=0)
    flags.DEFINE_string("split", "test", "Split the alignment score is measured on.")
    flags.DEFINE_string("out", None, f"Output file; default <teacher>/{DEFAULT_NAME}.")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from iep.apps.vocabulary import in_flags
    from iep.engine.cli import run_or_exit

    run_or_exit(
        lambda: learn_post_hoc(
            FLAGS.teacher, FLAGS.dim, FLAGS.epochs, FLAGS.lr, FLAGS.batch_size, FLAGS.seed, FLAGS.out, FLAGS.split
        ),
        lambda message: in_flags(message, set(FLAGS)),
    )


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=parse_flags_or_exit)
