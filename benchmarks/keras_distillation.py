"""iep's model.fit step against Keras 3's own `keras.distillation.Distiller`, on the same networks and batches.

  python benchmarks/keras_distillation.py                 # results: benchmarks/results/keras_distillation.json
  python benchmarks/keras_distillation.py --steps=30 --rounds=3

Two pairs, WRN-28-1 teacher → WRN-16-1 student, batch 128 of 32×32 images, SGD:
* logits: `iep.DistillationModel` with KD (mdistiller's setting: 0.1·CE + 0.9·T²·KL, T = 4) against
  `keras.distillation.Distiller(LogitsDistillation(temperature=4, loss=keras.losses.KLDivergence()),
  student_loss_weight=0.1)` — the `KLDivergence` *instance*: with the default string `"kl_divergence"` Keras
  applies the KL function to logits/T without a softmax and without T² (tests/test_keras_distillation.py);
* features at the three sensing points: iep's `at` (one student pass: the loop reads every point from the
  same forward) against three `FeatureDistillation(loss="mse")` on the same layers (Keras runs the student
  once for its logits and once more through a feature extractor, in training mode, so BN statistics move
  twice a step).
Per mode: CPU and wall seconds per step, the median of `--rounds` rounds of `--steps` steps each (after one
warm-up round), the two frameworks' rounds interleaved; the ratio is taken from CPU time, with its range over the
rounds (benchmarks/timing.py says why), and the table in docs/benchmarks.md is rewritten from the results.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from benchmarks import docs_blocks  # noqa: E402
from benchmarks.docs_blocks import RESULTS_DIR  # noqa: E402
from benchmarks.timing import MachineWatch, Timing, ratio, spread, timed  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 20, "Steps per timed round.")
flags.DEFINE_integer("rounds", 3, "Timed rounds per framework and pair.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_string("output", os.path.join(RESULTS_DIR, "keras_distillation.json"), "Result JSON.")
flags.DEFINE_boolean("docs", True, "Rewrite the table in docs/benchmarks.md from the results.")


def _models(kind: str):
    import keras
    import numpy as np
    import tensorflow as tf

    import iep

    keras.utils.set_random_seed(0)
    teacher = iep.build_network("wrn-28-1", 10, name="teacher")
    teacher.model.trainable = False
    student_a = iep.build_network("wrn-16-1", 10, name="student_iep")
    student_b = iep.build_network("wrn-16-1", 10, name="student_keras")
    if kind == "logits":
        ours = iep.DistillationModel(student_a, iep.build_distiller("kd", teacher, student_a, setting="mdistiller"))
        losses = keras.distillation.LogitsDistillation(temperature=4.0, loss=keras.losses.KLDivergence())
        theirs = keras.distillation.Distiller(teacher.classifier, student_b.classifier, losses, student_loss_weight=0.1)
    else:
        ours = iep.DistillationModel(student_a, iep.build_distiller("at", teacher, student_a))
        losses = [
            keras.distillation.FeatureDistillation(loss="mse", teacher_layer_name=n, student_layer_name=n)
            for n in student_b.tap_names
        ]
        theirs = keras.distillation.Distiller(teacher.classifier, student_b.classifier, losses, student_loss_weight=0.5)
    ours.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True))
    theirs.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (FLAGS.batch_size, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, FLAGS.batch_size).astype("int32")
    data = tf.data.Dataset.from_tensors((images, labels)).repeat()
    return ours, theirs, data


def _per_step(model, data, steps: int) -> Timing:
    """Wall and CPU seconds per step over one `fit` of `steps` steps."""
    with timed() as t:
        model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return Timing(t.wall / steps, t.cpu / steps)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from benchmarks.results_io import write_results

    watch = MachineWatch()
    rows = []
    for kind in ("logits", "features"):
        ours, theirs, data = _models(kind)
        for model in (ours, theirs):  # warm-up: tracing and the first steps
            _per_step(model, data, 3)
        rounds = {"iep": [], "keras": []}
        for _ in range(FLAGS.rounds):
            rounds["iep"].append(_per_step(ours, data, FLAGS.steps))
            rounds["keras"].append(_per_step(theirs, data, FLAGS.steps))
        row = {"pair": kind}
        for clock in ("cpu", "wall"):
            iep_s, keras_s = ([getattr(t, clock) for t in rounds[name]] for name in ("iep", "keras"))
            row[f"iep_{clock}_seconds_per_step"] = spread(iep_s)
            row[f"keras_{clock}_seconds_per_step"] = spread(keras_s)
            row[f"keras_over_iep_{clock}"] = ratio(keras_s, iep_s)
        rows.append(row)
        cpu = row["keras_over_iep_cpu"]
        print(f"{kind}: CPU time per step iep {row['iep_cpu_seconds_per_step']['median'] * 1000:.0f} ms, "
              f"keras.distillation {row['keras_cpu_seconds_per_step']['median'] * 1000:.0f} ms: "
              f"{cpu['ratio']:.2f}x ({cpu['min']:.2f}-{cpu['max']:.2f} over rounds)")  # fmt: skip
    settings = {"steps": FLAGS.steps, "rounds": FLAGS.rounds, "batch_size": FLAGS.batch_size,
                "teacher": "wrn-28-1", "student": "wrn-16-1"}  # fmt: skip
    write_results(FLAGS.output, settings, rows, watch.finish())
    if FLAGS.docs:
        docs_blocks.update_for(FLAGS.output)


if __name__ == "__main__":
    app.run(main)
