"""Time per phase-2 training step: plain student vs IEP vs IEP+BB, with a breakdown of where time goes.

  python benchmarks/iep_step_time.py                    # WRN-40-4→WRN-16-4 and WRN-16-2→WRN-16-1
  python benchmarks/iep_step_time.py --pairs=wrn-40-4:wrn-16-4 --batch_size=128 --jit_compile

Same student, same in-memory batches (so the input pipeline is not measured),
one process. Rows:
  plain               the student's own step (cross-entropy + weight decay)
  plain+teacher       plus a teacher forward pass: the floor of any feature-based KD step
  iep, iep_bb         the full IEP / IEP+BB phase-2 step (clipped multi-task gradient)
and components, timed alone: teacher forward, teacher SPCA (SVDs + IPCA
projection), MPNN knowledge for teacher and student. Writes
benchmarks/results/iep_step_time.json.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from benchmarks import docs_blocks  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from benchmarks.synthetic import synthetic_batch, synthetic_data, timed_distiller  # noqa: E402
from benchmarks.timing import MachineWatch, clocks, per_call, ratio  # noqa: E402
from iep.core.clipped import CLIP_TERMS  # noqa: E402
from iep.core.distiller import Distiller  # noqa: E402
from iep.engine.trainer import TrainConfig, Trainer  # noqa: E402
from iep.nets import build_network  # noqa: E402

flags.DEFINE_list("pairs", ["wrn-40-4:wrn-16-4", "wrn-16-2:wrn-16-1"], "teacher:student pairs.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("classes", 100, "Number of classes (CIFAR-100 shapes).")
flags.DEFINE_integer("warmup", 2, "Untimed steps (tracing).")
flags.DEFINE_integer("steps", 5, "Timed steps per row.")
flags.DEFINE_boolean("jit_compile", False, "Compile steps with XLA.")
flags.DEFINE_enum(
    "iep_clip_terms", "sum", list(CLIP_TERMS), "IEP's clip (docs/methods.md); the recorded figures are of sum."
)
flags.DEFINE_string("output", os.path.join(docs_blocks.RESULTS_DIR, "iep_step_time.json"), "Result JSON.")
flags.DEFINE_boolean("docs", True, "Rewrite the table in docs/benchmarks.md from the results.")
FLAGS = flags.FLAGS


class _TeacherForward(Distiller):
    """Runs the teacher and adds nothing: isolates the cost every feature-KD step pays."""

    name, loss_names = "teacher_forward", ("zero",)

    def losses(self, images, labels, student_outputs, epoch):
        taps = self.teacher(images, training=False)["taps"]
        return {"zero": 0.0 * tf.add_n([tf.reduce_mean(t) for t in taps])}


def _per_call(fn, *args) -> dict:
    """{"cpu": spread, "wall": spread} of FLAGS.steps calls after FLAGS.warmup."""
    return clocks(per_call(fn, *args, warmup=FLAGS.warmup, calls=FLAGS.steps))


def _components(teacher, student, iep, images, labels) -> dict:
    """The IEP step's pieces, each compiled and timed alone."""
    jit = FLAGS.jit_compile
    pieces = {
        "component: teacher forward": lambda x: teacher(x, training=False)["taps"],
        "component: teacher forward + SPCA": lambda x: iep.teacher_points(x, update=False),
        "component: student forward": lambda x: student.model(x, training=True),
        "component: student forward + all IEP losses": lambda x: iep.losses(
            x, labels, student.model(x, training=True), tf.constant(0.0)
        ),
    }
    timings = {name: _per_call(tf.function(fn, jit_compile=jit), images) for name, fn in pieces.items()}
    for name, timing in timings.items():
        print(f"    {name}: {timing['cpu']['median']:.3f} CPU s", flush=True)
    return timings


def _measure_pair(teacher_arch: str, student_arch: str, data, images, labels) -> dict:
    keras.utils.set_random_seed(0)
    shape = (32, 32, 3)
    teacher = build_network(teacher_arch, FLAGS.classes, shape, data.mean, data.std, dropout=0.0, name="teacher")
    teacher.model.trainable = False
    config = TrainConfig(
        epochs=1, batch_size=FLAGS.batch_size, progress=False, export=False, jit_compile=FLAGS.jit_compile
    )
    rows = {}
    for label in ("plain", "plain+teacher", "iep", "iep_bb"):
        keras.utils.set_random_seed(0)
        student = build_network(student_arch, FLAGS.classes, shape, data.mean, data.std, name="student")
        if label == "plain":
            distiller = Distiller()
        elif label == "plain+teacher":
            distiller = _TeacherForward(teacher)
        else:
            distiller = timed_distiller(label, teacher, student, FLAGS.iep_clip_terms)
        trainer = Trainer(student, data, config, os.path.join("runs", "benchmark_iep", label), distiller)
        rows[label] = _per_call(trainer._train_step, images, labels)
        print(f"  {teacher_arch}->{student_arch} {label}: {rows[label]['cpu']['median']:.3f} CPU s/step", flush=True)
        if label == "iep":
            rows.update(_components(teacher, student, distiller, images, labels))
    out = {"teacher": teacher_arch, "student": student_arch}
    for clock in ("cpu", "wall"):
        out[f"{clock}_seconds_per_step"] = {label: timing[clock] for label, timing in rows.items()}
        values = {label: timing[clock]["values"] for label, timing in rows.items()}
        for method in ("iep", "iep_bb"):
            out[f"{method}_over_plain_{clock}"] = ratio(values[method], values["plain"])
            out[f"{method}_over_plain_plus_teacher_{clock}"] = ratio(values[method], values["plain+teacher"])
    return out


def main(argv):
    del argv
    data = synthetic_data(FLAGS.batch_size, FLAGS.classes)  # a Trainer's data of FLAGS.classes classes
    images, labels = synthetic_batch(FLAGS.batch_size, FLAGS.classes)
    watch = MachineWatch()
    results = [_measure_pair(*pair.split(":"), data, images, labels) for pair in FLAGS.pairs]
    for r in results:
        print(
            f"{r['teacher']}->{r['student']} (CPU time): IEP {r['iep_over_plain_cpu']['ratio']:.2f}x plain "
            f"({r['iep_over_plain_plus_teacher_cpu']['ratio']:.2f}x plain+teacher), IEP+BB "
            f"{r['iep_bb_over_plain_cpu']['ratio']:.2f}x ({r['iep_bb_over_plain_plus_teacher_cpu']['ratio']:.2f}x)"
        )
    settings = {"batch_size": FLAGS.batch_size, "classes": FLAGS.classes, "jit_compile": FLAGS.jit_compile,
                "steps": FLAGS.steps, "iep_clip_terms": FLAGS.iep_clip_terms}  # fmt: skip
    write_results(FLAGS.output, settings, results, watch.finish())
    if FLAGS.docs:
        docs_blocks.update_for(FLAGS.output)


if __name__ == "__main__":
    app.run(main)
