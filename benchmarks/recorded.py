"""Runs a committed results file records, so that a benchmark resumed on another machine trains only what is
missing.

Run directories live on the machine that trained them; the results files are committed. A multi-hour study
that spans sessions on different machines would otherwise train every finished run again. Each results file
keeps one record per run (`runs`, with its `seed`); a resumed study takes those records for the cells it has
no finished run directory of, and marks them `"recorded": true` in the new report.

Recorded students learnt from the recorded teacher, so they are kept only once the teacher retrained here
matches it: `check_teacher` compares every figure both records have and refuses to mix students of two
different teachers. Training is deterministic on one kind of machine, but not across CPUs (oneDNN and Eigen
pick kernels by the instruction set: on 2026-12-04 an AMD EPYC machine retrained the WRN-28-1 teacher to
83.60 % where the record says 83.48 %). `--teacher_tolerance=T` keeps recorded students whose teacher's test
accuracy is within T of the retrained one's, with a warning; the report then lists both teachers.
"""

from __future__ import annotations

import dataclasses
import os

from iep.engine.files import read_json

# The figures that tell a retrained teacher from the recorded one (whichever of them both records have).
TEACHER_FIGURES = ("test", "last_accuracy", "final_loss")


def finished_metrics(run_dir: str) -> dict | None:
    """The run's metrics.json if the run finished, else None (read once: the report needs its contents too)."""
    path = os.path.join(run_dir, "metrics.json")
    metrics = read_json(path) if os.path.exists(path) else None
    return metrics if metrics and metrics.get("finished") else None


def finished(run_dir: str) -> bool:
    return finished_metrics(run_dir) is not None


@dataclasses.dataclass(frozen=True)
class Recorded:
    """`runs`: (*cell, seed) → run record, the cell being the row fields that name it (protocol study:
    factor, method; reproduce_small: rate, method). `teachers`: teacher run dir relative to the study root →
    its record."""

    runs: dict = dataclasses.field(default_factory=dict)
    teachers: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def read(cls, path: str, cell: tuple[str, ...]) -> Recorded:
        if not os.path.exists(path):
            return cls()
        results = read_json(path)
        runs = {
            (*(row[k] for k in cell), run["seed"]): run
            for row in results.get("results", [])
            for run in row.get("runs", [])  # files written before runs were recorded have none
        }
        teachers = {t["run_dir"]: t for t in results.get("teachers", [])}
        if results.get("teacher"):  # reproduce_small: one teacher, in <root>/teacher
            teachers["teacher"] = results["teacher"]
        return cls(runs, teachers)

    def stands_in(self, run_dir: str, *key) -> bool:
        """Whether the record of (*cell, seed) stands in for training `run_dir`: it is recorded and did not
        finish here (a run that finished here is reported from its own metrics)."""
        return tuple(key) in self.runs and not finished(run_dir)

    def run(self, *key) -> dict | None:
        """The recorded run of (*cell, seed), marked as recorded; None if there is none."""
        found = self.runs.get(tuple(key))
        return None if found is None else {**found, "recorded": True}

    def check_teacher(self, name: str, retrained: dict, where: str, tolerance: float = 0.0) -> None:
        """Raises if the teacher retrained in `where` differs from the recorded teacher `name` (beyond `tolerance`
        of test accuracy, when given: then a warning)."""
        old = self.teachers.get(name)
        if old is None:
            return
        differ = {k: (old[k], retrained[k]) for k in TEACHER_FIGURES if k in old and k in retrained}
        differ = {k: v for k, v in differ.items() if v[0] != v[1]}
        accuracy = [v for k, v in differ.items() if k in ("test", "last_accuracy")]
        if differ and tolerance > 0 and accuracy and all(abs(a - b) <= tolerance for a, b in accuracy):
            print(
                f"warning: the teacher retrained in {where} differs from the recorded one ({differ}) within "
                f"--teacher_tolerance={tolerance:g}: its recorded students are kept (they learnt from the recorded "
                "teacher; the report lists both)"
            )
            return
        if differ:
            raise RuntimeError(
                f"the teacher retrained in {where} differs from the one the results file records "
                f"(recorded, retrained: {differ}), so its recorded students did not learn from this teacher. "
                "Re-run with --rerun_recorded to train every student again against this teacher."
            )


def define_rerun_flag(flags) -> None:
    flags.DEFINE_float(
        "teacher_tolerance",
        0.0,
        "Keep recorded students when the retrained teacher's test accuracy differs from the recorded one's by at "
        "most this much (another CPU trains a slightly different teacher; default 0: only an identical one).",
    )
    flags.DEFINE_boolean(
        "rerun_recorded",
        False,
        "Train runs again that the results file records but this machine has no run directory for (default: keep "
        "the record, once the retrained teacher matches the recorded one; see benchmarks/recorded.py).",
    )
