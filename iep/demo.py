"""The README's main job: the whole IEP story on the built-in digits set, offline, in a few minutes on a CPU.

  python -m iep.demo                      # writes runs/demo/

It runs the project's own command lines (printed as it goes, so you can
re-run any step): train a WRN-16-2 teacher on all training images; train a
WRN-16-1 student on a 25 % stratified subset without and with IEP
distillation (phase 1: MPNN module on teacher features; phase 2: clipped
transfer); evaluate all three on the test split; and point to the student's
SavedModel export. Re-running resumes finished steps instantly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from absl import app, flags

flags.DEFINE_string("root", "runs/demo", "Where the demo's run directories go.")
flags.DEFINE_integer("teacher_epochs", 15, "Teacher epochs.")
flags.DEFINE_integer("student_epochs", 30, "Student epochs (vanilla and IEP alike).")
flags.DEFINE_float("rate", 0.25, "Fraction of the training split the students see.")
flags.DEFINE_integer("module_steps", 100, "IEP phase-1 steps (the paper's 8,000 scaled to this data).")
FLAGS = flags.FLAGS


COMMANDS = {"train": "iep.apps.train", "eval": "iep.apps.evaluate"}


def _run(args: list[str]) -> None:
    """`iep-train ...` / `iep-eval ...`, run as `python -m iep.apps.<module>` (the same code)."""
    command = [sys.executable, "-m", COMMANDS[args[0]], *args[1:]]
    print("\n$ " + " ".join([f"iep-{args[0]}", *args[1:]]), flush=True)
    subprocess.run(command, check=True)


def main(argv: list[str]) -> None:
    del argv
    root = FLAGS.root
    common = ["--dataset=digits", "--progress=false"]
    student = [
        *common,
        "--arch=wrn-16-1",
        f"--rate={FLAGS.rate}",
        "--batch_size=64",
        f"--epochs={FLAGS.student_epochs}",
    ]
    runs = {
        "teacher (wrn-16-2, all data)": (
            f"{root}/teacher",
            ["train", *common, "--arch=wrn-16-2", f"--epochs={FLAGS.teacher_epochs}"],
        ),
        f"student (wrn-16-1, {FLAGS.rate:g} of data)": (f"{root}/student", ["train", *student]),
        f"student + IEP (wrn-16-1, {FLAGS.rate:g} of data)": (
            f"{root}/student_iep",
            [
                "train",
                *student,
                "--distill=iep",
                f"--teacher={root}/teacher",
                f"--iep_module_steps={FLAGS.module_steps}",
            ],
        ),
    }
    for run_dir, args in runs.values():
        _run([*args, f"--run_dir={run_dir}"])
    for run_dir, _ in runs.values():
        _run(["eval", f"--run_dir={run_dir}", "--split=test"])
    print("\nResults on the digits test split (360 images):")
    for name, (run_dir, _) in runs.items():
        with open(os.path.join(run_dir, "eval_test.json")) as f:
            report = json.load(f)
        print(f"  {name:<40} top-1 {report['top1']:.4f}")
    print(f"\nStudent SavedModel: {root}/student_iep/export  (input: float32 RGB pixels in [0, 255])")
    print(f"TensorBoard: tensorboard --logdir {root}")


if __name__ == "__main__":
    import iep

    iep.leave_source_root_off_sys_path()
    app.run(main)
