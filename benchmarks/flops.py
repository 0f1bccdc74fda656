"""Forward FLOPs per image (TensorFlow's profiler on the frozen inference graph), and the step-time floor they
imply for online distillation: why "IEP step ≤ 1.3× the plain step" cannot hold for WRN-40-4 → WRN-16-4.

  python benchmarks/flops.py            # writes benchmarks/results/flops.json

A training step costs ≈ 3 forward passes (forward + backward ≈ 2×). Any KD step adds the teacher's forward;
IEP's per-variable clip adds a second backward pass through the student (∇CE and ∇dist apart).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: E402

from benchmarks.results_io import write_results  # noqa: E402
from iep.nets import build_network  # noqa: E402

flags.DEFINE_string("pair", "wrn-40-4:wrn-16-4", "teacher:student.")
flags.DEFINE_integer("classes", 100, "Classes.")
flags.DEFINE_string("output", "benchmarks/results/flops.json", "Result JSON.")
FLAGS = flags.FLAGS


def forward_flops(arch: str, classes: int) -> int:
    net = build_network(arch, classes)
    spec = tf.TensorSpec([1, 32, 32, 3], tf.float32)
    concrete = tf.function(lambda x: net.model(x, training=False)["logits"]).get_concrete_function(spec)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    graph = convert_variables_to_constants_v2(concrete).graph
    return int(tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops)


def main(argv):
    del argv
    teacher_arch, student_arch = FLAGS.pair.split(":")
    teacher, student = forward_flops(teacher_arch, FLAGS.classes), forward_flops(student_arch, FLAGS.classes)
    plain = 3 * student
    floors = {
        "any_online_kd_over_plain": (plain + teacher) / plain,
        "iep_clipped_over_plain": (plain + teacher + 2 * student) / plain,
    }
    print(f"forward FLOPs/image: {teacher_arch} {teacher:,}, {student_arch} {student:,} ({teacher / student:.2f}x)")
    any_kd, iep = floors["any_online_kd_over_plain"], floors["iep_clipped_over_plain"]
    print(f"step floors vs plain: any KD {any_kd:.2f}x, IEP {iep:.2f}x")
    write_results(
        FLAGS.output,
        {"pair": FLAGS.pair, "classes": FLAGS.classes},
        [{"teacher_forward_flops": teacher, "student_forward_flops": student, **floors}],
    )


if __name__ == "__main__":
    app.run(main)
