"""Where a CPU-scale student run's wall time goes, and what `--eval_every` saves.

  python benchmarks/run_overhead.py          # → benchmarks/results/run_overhead.json (~5 minutes)

Runs reproduce_small's vanilla student command (WRN-16-1, 10 % of CIFAR-10, 15 epochs) once per
`--eval_every` value in a fresh run directory, and splits its wall time into training epochs, evaluation
(the 10,000 test images after an epoch) and the rest (start-up: TensorFlow, reading and decoding the data,
tracing). Training itself is a pure function of the seed, so the final accuracies must agree.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E402 (benchmarks.*)

from absl import app, flags  # noqa: E402

from benchmarks import docs_blocks  # noqa: E402
from benchmarks.reproduce_small import DEFAULT_DATA_DIR, FULL, RESULTS_DIR, student_command  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from benchmarks.timing import MachineWatch, timed  # noqa: E402
from iep.core.files import read_json  # noqa: E402

flags.DEFINE_list("eval_every", ["1", "5"], "The --eval_every values to time.")
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "CIFAR-10 TFRecords.")
flags.DEFINE_integer("epochs", FULL.student_epochs, "Epochs of each run (reproduce_small's student by default).")
flags.DEFINE_float("rate", 0.1, "Share of the training split each run trains on.")
flags.DEFINE_string("output", os.path.join(RESULTS_DIR, "run_overhead.json"), "Result JSON.")
flags.DEFINE_boolean("docs", True, "Rewrite the table in docs/benchmarks.md from the results.")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_run(eval_every: int, root: str) -> dict:
    protocol = dataclasses.replace(FULL, student_epochs=FLAGS.epochs)
    command = student_command(protocol, root, FLAGS.data_dir, "none", FLAGS.rate, 0) + [f"--eval_every={eval_every}"]
    run_dir = next(c.split("=", 1)[1] for c in command if c.startswith("--run_dir="))
    print("$ python " + " ".join(command), flush=True)
    with timed() as t:  # the child's CPU time counts once it has been waited for
        subprocess.run([sys.executable, *command], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    wall = t.wall
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    train = sum(h["seconds"] for h in metrics["history"])
    evaluation = sum(h["eval_seconds"] for h in metrics["history"])
    return {
        "eval_every": eval_every,
        "wall_seconds": wall,
        "cpu_seconds": t.cpu,
        "train_seconds": train,
        "eval_seconds": evaluation,
        "other_seconds": wall - train - evaluation,
        "evaluations": sum(h["eval_accuracy"] is not None for h in metrics["history"]),
        "last_accuracy": metrics["last_accuracy"],
        "final_train_loss": metrics["history"][-1]["train_loss"],
    }


def main(argv: list[str]) -> None:
    del argv
    watch = MachineWatch()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for value in FLAGS.eval_every:
            rows.append(time_run(int(value), os.path.join(root, f"every{value}")))
            print(rows[-1], flush=True)
    write_results(FLAGS.output, {"eval_every": [int(v) for v in FLAGS.eval_every]}, rows, watch.finish())
    if FLAGS.docs:
        docs_blocks.update_for(FLAGS.output)


if __name__ == "__main__":
    app.run(main)
