"""Training-step speed: plain vs IEP vs IEP+BB phase-2 steps, eager vs tf.function vs XLA, float32 vs bfloat16,
and the input pipeline (synthetic in-memory batches vs real CIFAR-10 TFRecords).

  python benchmarks/step_speed.py                               # this machine; writes results/step_speed.json
  python benchmarks/step_speed.py --precisions=float32,mixed_float16 --modes=function,xla   # on a GPU
  python benchmarks/step_speed.py --pair=wrn-28-1:wrn-16-1 --classes=10 --methods=plain,static_kd,rkd,iep \
      --modes=function --precisions=float32 --steps=20 --pipeline_rows=false \
      --output=benchmarks/results/static_kd_step_speed.json   # static KD (no teacher) vs the others

The same script runs on a GPU unchanged (mixed_float16 is the GPU's half
type; bfloat16 needs AVX512-BF16/AMX on a CPU, Ampere or newer on a GPU).
Where the time of an IEP step goes is broken down by
benchmarks/iep_step_time.py.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import docs_blocks  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from benchmarks.synthetic import synthetic_batch, synthetic_data, timed_distiller  # noqa: E402
from benchmarks.timing import MachineWatch, clocks, per_call  # noqa: E402
from iep.core.clipped import CLIP_TERMS  # noqa: E402
from iep.core.distiller import Distiller  # noqa: E402
from iep.datasets import DataConfig, build_pipeline  # noqa: E402
from iep.engine.precision import precision_policy  # noqa: E402
from iep.engine.trainer import TrainConfig, Trainer  # noqa: E402
from iep.methods import STATIC_METHODS, build_distiller  # noqa: E402
from iep.nets import build_network  # noqa: E402
from iep.static.knowledge_file import StaticKnowledge  # noqa: E402

flags.DEFINE_string("pair", "wrn-40-4:wrn-16-4", "teacher:student.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("classes", 100, "Classes (CIFAR-100 shapes).")
flags.DEFINE_list("modes", ["eager", "function", "xla"], "Execution modes.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Network compute dtypes.")
flags.DEFINE_list("methods", ["plain", "iep", "iep_bb"], "Steps to time (plain or any --distill name).")
flags.DEFINE_boolean("pipeline_rows", True, "Also time the real input pipeline.")
flags.DEFINE_integer("steps", 3, "Timed steps per row.")
flags.DEFINE_integer("warmup", 2, "Untimed steps per row (tracing, compilation).")
flags.DEFINE_string("data_dir", "../shared/data/cifar10", "Real CIFAR-10 TFRecords for the input-pipeline rows.")
flags.DEFINE_enum(
    "iep_clip_terms", "sum", list(CLIP_TERMS), "IEP's clip (docs/methods.md); the recorded figures are of sum."
)
flags.DEFINE_string("output", os.path.join(docs_blocks.RESULTS_DIR, "step_speed.json"), "Result JSON.")
flags.DEFINE_boolean("docs", True, "Rewrite the table in the docs from the results (the documented files only).")
FLAGS = flags.FLAGS


def _timed(trainer: Trainer, step, batches) -> dict:
    """{"cpu": spread, "wall": spread} of seconds per step, FLAGS.steps after FLAGS.warmup; `batches` yields
    (images, labels)."""
    iterator = iter(batches)
    timings = per_call(
        lambda: step(*next(iterator)),
        warmup=FLAGS.warmup,
        calls=FLAGS.steps,
        sync=lambda _: trainer.optimizer.iterations.numpy(),  # wait for the update
    )
    return clocks(timings)


def _trainer(method: str, precision: str, jit: bool, data) -> Trainer:
    teacher_arch, student_arch = FLAGS.pair.split(":")
    keras.utils.set_random_seed(0)
    shape = (32, 32, 3)
    with precision_policy(precision):
        classes = data.num_classes
        student = build_network(student_arch, classes, shape, data.mean, data.std, name="student")
        teacher = build_network(teacher_arch, classes, shape, data.mean, data.std, dropout=0.0, name="teacher")
    teacher.model.trainable = False
    if method == "plain":
        distiller = Distiller()
    elif method in STATIC_METHODS:  # the teacher's semantic vectors only (values do not change the step's cost)
        vectors = [np.random.default_rng(i).normal(size=(s.shape[-1], 16)) for i, s in enumerate(teacher.tap_specs)]
        points = [{"name": s.name, "shape": list(s.shape)} for s in teacher.tap_specs]
        knowledge = StaticKnowledge(vectors, {"arch": teacher_arch, "points": points, "dim": 16})
        distiller = build_distiller(method, None, student, seed=0, static_knowledge=knowledge)
    else:
        distiller = timed_distiller(method, teacher, student, FLAGS.iep_clip_terms)
    config = TrainConfig(
        epochs=1, batch_size=FLAGS.batch_size, progress=False, export=False, jit_compile=jit, precision=precision
    )
    return Trainer(student, data, config, os.path.join("runs", "benchmark_step_speed", method), distiller)


def _repeat(batch):
    while True:
        yield batch


def main(argv):
    del argv
    synthetic = synthetic_data(FLAGS.batch_size, FLAGS.classes)  # a Trainer's data of FLAGS.classes classes
    batch = synthetic_batch(FLAGS.batch_size, FLAGS.classes)
    watch = MachineWatch()
    rows = []
    for precision in FLAGS.precisions:
        for method in FLAGS.methods:
            for mode in FLAGS.modes:
                trainer = _trainer(method, precision, mode == "xla", synthetic)
                step = trainer._step if mode == "eager" else trainer._train_step
                timing = _timed(trainer, step, _repeat(batch))
                rows.append(_row("synthetic", precision, method, mode, timing))
                cpu = timing["cpu"]["median"]
                print(f"{precision:15s} {method:7s} {mode:9s} {cpu:7.3f} CPU s/step", flush=True)
    # The input pipeline: a plain step fed by the real TFRecord pipeline against the same step on one in-memory
    # batch of it (the data's own classes), and the pipeline alone.
    if FLAGS.pipeline_rows:
        data = build_pipeline(DataConfig("tfrecord", FLAGS.data_dir))
        trainer = _trainer("plain", "float32", False, data)
        real = _timed(trainer, trainer._train_step, data.train_dataset(0, FLAGS.batch_size, 0))
        one = next(iter(data.train_dataset(0, FLAGS.batch_size, 0)))
        in_memory = _timed(trainer, trainer._train_step, _repeat(one))
        for name, timing in (("real_data", real), ("in_memory", in_memory), ("pipeline_alone", _timed_pipeline(data))):
            rows.append(_row(name, "float32", "plain", "function", timing))
            print(f"plain step, {name}: {timing['cpu']['median']:.3f} CPU s/step")
    settings = {"pair": FLAGS.pair, "batch_size": FLAGS.batch_size, "classes": FLAGS.classes, "steps": FLAGS.steps,
                "iep_clip_terms": FLAGS.iep_clip_terms}  # fmt: skip
    write_results(FLAGS.output, settings, rows, watch.finish())
    if FLAGS.docs:
        docs_blocks.update_for(FLAGS.output)


def _row(source: str, precision: str, method: str, mode: str, timing: dict) -> dict:
    return {
        "input": source,
        "precision": precision,
        "method": method,
        "mode": mode,
        "cpu_seconds_per_step": timing["cpu"],
        "wall_seconds_per_step": timing["wall"],
    }


def _timed_pipeline(data) -> dict:
    """Seconds per batch the input pipeline alone delivers (decode, augment, batch)."""
    iterator = iter(data.train_dataset(1, FLAGS.batch_size, 0))
    return clocks(per_call(lambda: next(iterator), warmup=1, calls=20, sync=lambda _: None))


if __name__ == "__main__":
    app.run(main)
