"""Training throughput (images/s) of our custom loop against Keras `model.fit`, same model and data.

  python benchmarks/loop_throughput.py                        # WRN-16-1 and WRN-16-4 on digits
  python benchmarks/loop_throughput.py --dataset=tfrecord --data_dir=../shared/data/cifar10

Both sides get the same network (fresh, same seed), the same SGD-Nesterov
optimizer and schedule, cross-entropy + the same L2 kernel penalty, and the
same tf.data batches. The first `--warmup` steps (tracing) are not timed;
measurements alternate ours/fit `--repeats` times and the median is reported.
Results go to benchmarks/results/loop_throughput.json.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import docs_blocks  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from benchmarks.timing import MachineWatch, Timing, cpu_seconds, ratio, spread, timed  # noqa: E402
from iep.datasets import DataConfig, build_pipeline  # noqa: E402
from iep.engine.trainer import TrainConfig, Trainer  # noqa: E402
from iep.nets import build_network  # noqa: E402
from iep.op_utils import decayed_variables  # noqa: E402

flags.DEFINE_list("archs", ["wrn-16-1", "wrn-16-4"], "Architectures to measure.")
flags.DEFINE_string("dataset", "digits", "Data set (as in train.py).")
flags.DEFINE_string("data_dir", None, "Data folder.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (tracing).")
flags.DEFINE_integer("steps", 10, "Timed steps per measurement.")
flags.DEFINE_integer("repeats", 3, "Alternating measurements per side.")
flags.DEFINE_string("output", os.path.join(docs_blocks.RESULTS_DIR, "loop_throughput.json"), "Result JSON.")
flags.DEFINE_boolean("docs", True, "Rewrite the table in docs/benchmarks.md from the results.")
FLAGS = flags.FLAGS


def _batches(data, count: int):
    """`count` training batches, cycling epochs, materialized once so both sides read the same tensors."""
    out, epoch = [], 0
    while len(out) < count:
        out += list(data.train_dataset(epoch, FLAGS.batch_size, seed=0))
        epoch += 1
    return out[:count]


def _time_ours(trainer: Trainer, batches) -> Timing:
    """Wall and CPU seconds of the timed steps (after the warm-up ones)."""
    for images, labels in batches[: FLAGS.warmup]:
        trainer._train_step(images, labels)
    with timed() as t:
        for images, labels in batches[FLAGS.warmup :]:
            trainer._train_step(images, labels)
        trainer.optimizer.iterations.numpy()  # wait for the last step
    return t


class _StepTimer(keras.callbacks.Callback):
    """Marks the wall and CPU clocks after the warm-up batches and after the last one."""

    def __init__(self, warmup: int):
        super().__init__()
        self.warmup, self.start, self.end = warmup, None, None

    def on_train_batch_end(self, batch, logs=None):
        now = Timing(time.perf_counter(), cpu_seconds())
        if batch + 1 == self.warmup:
            self.start = now
        self.end = now


def _fit_model(arch: str, data):
    keras.utils.set_random_seed(0)
    network = build_network(arch, data.num_classes, data.input_shape, data.mean, data.std)
    classifier = network.classifier
    for kernel in decayed_variables(classifier.trainable_variables):
        kernel.regularizer = keras.regularizers.L2(5e-4 / 2)  # = 5e-4 · ½‖W‖², as l2_penalty
    classifier.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return classifier


def _time_fit(model, batches) -> Timing:
    timer = _StepTimer(FLAGS.warmup)
    dataset = tf.data.Dataset.from_tensor_slices((tf.stack([b[0] for b in batches]), tf.stack([b[1] for b in batches])))
    model.fit(dataset, epochs=1, verbose=0, callbacks=[timer])
    return Timing(timer.end.wall - timer.start.wall, timer.end.cpu - timer.start.cpu)


def main(argv):
    del argv
    data = build_pipeline(DataConfig(FLAGS.dataset, FLAGS.data_dir))
    batches = _batches(data, FLAGS.warmup + FLAGS.steps)
    watch = MachineWatch()
    results = []
    for arch in FLAGS.archs:
        keras.utils.set_random_seed(0)
        student = build_network(arch, data.num_classes, data.input_shape, data.mean, data.std)
        config = TrainConfig(epochs=1, batch_size=FLAGS.batch_size, progress=False, export=False)
        trainer = Trainer(student, data, config, run_dir=os.path.join("runs", "benchmark_loop", arch))
        fit_model = _fit_model(arch, data)
        ours, fit = [], []
        for _ in range(FLAGS.repeats):  # alternating, so that a drift of the machine reaches both sides
            ours.append(_time_ours(trainer, batches))
            fit.append(_time_fit(fit_model, batches))
        images = FLAGS.steps * FLAGS.batch_size
        row = {"arch": arch}
        for clock in ("cpu", "wall"):
            ours_rate = [images / getattr(t, clock) for t in ours]
            fit_rate = [images / getattr(t, clock) for t in fit]
            row[f"ours_images_per_{clock}_second"] = spread(ours_rate)
            row[f"fit_images_per_{clock}_second"] = spread(fit_rate)
            row[f"ours_over_fit_{clock}"] = ratio(ours_rate, fit_rate)
        print(
            f"{arch}: ours {row['ours_images_per_cpu_second']['median']:.1f} img per CPU s, model.fit "
            f"{row['fit_images_per_cpu_second']['median']:.1f}, ratio {row['ours_over_fit_cpu']['ratio']:.3f}"
        )
        results.append(row)
    settings = {"dataset": FLAGS.dataset, "batch_size": FLAGS.batch_size, "warmup": FLAGS.warmup,
                "steps": FLAGS.steps, "repeats": FLAGS.repeats}  # fmt: skip
    write_results(FLAGS.output, settings, results, watch.finish())
    if FLAGS.docs:
        docs_blocks.update_for(FLAGS.output)


if __name__ == "__main__":
    app.run(main)
