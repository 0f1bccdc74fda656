"""Where a CPU-scale student run's wall time goes, and what `--eval_every` saves.

  python benchmarks/run_overhead.py          # → benchmarks/results/run_overhead.json (~5 minutes)

Runs reproduce_small's vanilla student command (WRN-16-1, 10 % of CIFAR-10, 15 epochs) once per
`--eval_every` value in a fresh run directory, and splits its wall time into training epochs, evaluation
(the 10,000 test images after an epoch) and the rest (start-up: TensorFlow, reading and decoding the data,
tracing). Training itself is a pure function of the seed, so the final accuracies must agree.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E402 (benchmarks.*)

from absl import app, flags  # noqa: E402

from benchmarks.reproduce_small import DEFAULT_DATA_DIR, FULL, RESULTS_DIR, student_command  # noqa: E402
from iep.engine.files import read_json, write_json_atomic  # noqa: E402

flags.DEFINE_list("eval_every", ["1", "5"], "The --eval_every values to time.")
flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "CIFAR-10 TFRecords.")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def time_run(eval_every: int, root: str) -> dict:
    command = student_command(FULL, root, FLAGS.data_dir, "none", 0.1, 0) + [f"--eval_every={eval_every}"]
    run_dir = next(c.split("=", 1)[1] for c in command if c.startswith("--run_dir="))
    print("$ python " + " ".join(command), flush=True)
    start = time.monotonic()
    subprocess.run([sys.executable, *command], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    wall = time.monotonic() - start
    metrics = read_json(os.path.join(run_dir, "metrics.json"))
    train = sum(h["seconds"] for h in metrics["history"])
    evaluation = sum(h["eval_seconds"] for h in metrics["history"])
    return {
        "eval_every": eval_every,
        "wall_seconds": wall,
        "train_seconds": train,
        "eval_seconds": evaluation,
        "other_seconds": wall - train - evaluation,
        "evaluations": sum(h["eval_accuracy"] is not None for h in metrics["history"]),
        "last_accuracy": metrics["last_accuracy"],
        "final_train_loss": metrics["history"][-1]["train_loss"],
    }


def main(argv: list[str]) -> None:
    del argv
    import tensorflow as tf

    rows = []
    with tempfile.TemporaryDirectory() as root:
        for value in FLAGS.eval_every:
            rows.append(time_run(int(value), os.path.join(root, f"every{value}")))
            print(rows[-1], flush=True)
    result = {
        "command": f"python benchmarks/run_overhead.py --eval_every={','.join(FLAGS.eval_every)}",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "tensorflow": tf.__version__,
        "runs": rows,
    }
    os.makedirs(RESULTS_DIR, exist_ok=True)
    write_json_atomic(os.path.join(RESULTS_DIR, "run_overhead.json"), result)
    print(f"wrote {os.path.join(RESULTS_DIR, 'run_overhead.json')}")


if __name__ == "__main__":
    app.run(main)
