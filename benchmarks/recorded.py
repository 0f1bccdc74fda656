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
accuracy is within T of the retrained one's, with a warning; the report then lists both teachers, and a study
resumed on a third machine compares its teacher with each of them (a teacher identical to any one is a match).
"""

from __future__ import annotations

import dataclasses
import os

from iep.core.files import read_json

# The figures that tell a retrained teacher from the recorded one (whichever of them both records have).
TEACHER_FIGURES = ("test", "last_accuracy", "final_loss")


def finished_metrics(run_dir: str) -> dict | None:
    """The run's metrics.json if the run finished, else None (read once: the report needs its contents too)."""
    path = os.path.join(run_dir, "metrics.json")
    metrics = read_json(path) if os.path.exists(path) else None
    return metrics if metrics and metrics.get("finished") else None


def finished(run_dir: str) -> bool:
    return finished_metrics(run_dir) is not None


def run_state(run_dir: str) -> str:
    """Where an unfinished run stands: "not started", or its newest checkpoint (where a resumed study continues)
    and how many main epochs its metrics.json logged."""
    from iep.engine.checkpointing import CHECKPOINT_SUBDIR, checkpoint_candidates

    newest = checkpoint_candidates(os.path.join(run_dir, CHECKPOINT_SUBDIR))
    if not newest:
        return "not started"
    path = os.path.join(run_dir, "metrics.json")
    metrics = read_json(path) if os.path.exists(path) else None
    logged = f"{metrics['epochs_completed']} of {metrics['epochs']} epochs logged" if metrics else "no epoch logged"
    return f"{logged}, checkpoint {os.path.basename(newest[0])}"


@dataclasses.dataclass(frozen=True)
class Recorded:
    """`runs`: (*cell, seed) → run record, the cell being the row fields that name it (protocol study:
    factor, method; reproduce_small: rate, method). `teachers`: teacher run dir relative to the study root →
    its records (more than one once a study kept students of two machines' teachers: see `check_teacher`)."""

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
        teachers: dict[str, list[dict]] = {}
        for teacher in results.get("teachers", []):
            teachers.setdefault(teacher["run_dir"], []).append(teacher)
        if results.get("teacher"):  # reproduce_small: its teacher in <root>/teacher, and any kept before it
            teachers["teacher"] = [results["teacher"], *results.get("other_teachers", [])]
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
        """Raises if the teacher retrained in `where` differs from the recorded teachers `name` (from any of them
        beyond `tolerance` of test accuracy, when given: then a warning). One identical to a recorded teacher is a
        match: the recorded students of that teacher stand, and those of another were kept within the tolerance
        once already."""
        olds = self.teachers.get(name, [])
        differs = [teacher_differences(old, retrained) for old in olds]
        if not olds or not all(differs):
            return
        accuracy = [v for differ in differs for k, v in differ.items() if k in ("test", "last_accuracy")]
        if tolerance > 0 and all(abs(a - b) <= tolerance for a, b in accuracy):
            print(
                f"warning: the teacher retrained in {where} differs from the recorded one ({_joined(differs)}) "
                f"within --teacher_tolerance={tolerance:g}: its recorded students are kept (they learnt from the "
                "recorded teacher; the report lists both)"
            )
            return
        raise RuntimeError(
            f"the teacher retrained in {where} differs from the one the results file records "
            f"(recorded, retrained: {_joined(differs)}), so its recorded students did not learn from this teacher. "
            "Re-run with --rerun_recorded to train every student again against this teacher, or with "
            "--teacher_tolerance to keep them."
        )


def teacher_differences(old: dict, new: dict) -> dict:
    """{figure: (old, new)} for each of TEACHER_FIGURES both records have and that differs ({}: the same teacher)."""
    return {k: (old[k], new[k]) for k in TEACHER_FIGURES if k in old and k in new and old[k] != new[k]}


def teachers_sentence(rows: list[dict], teachers: list[dict]) -> str | None:
    """When a study's students learnt from more than one teacher (resumed on another CPU, kept within
    --teacher_tolerance), which teachers and how many runs each, without a full stop: a table that mixes them
    says so. None for one teacher."""
    if len(teachers) < 2:
        return None
    runs = [r for row in rows for r in row["runs"] if r.get("teacher_test") is not None]
    tests = [t["test"] for t in teachers]
    counted = len(set(tests)) == len(tests)  # runs name their teacher by its test accuracy

    def one(teacher: dict) -> str:
        n = sum(r["teacher_test"] == teacher["test"] for r in runs)
        taught = f"; {n} run{'' if n == 1 else 's'}" if counted else ""
        return f"{100 * teacher['test']:.2f} % test ({teacher.get('cpu') or 'CPU not recorded'}{taught})"

    return f"The students learnt from {len(teachers)} teachers, one command retrained on different CPUs: " + ", ".join(
        one(t) for t in teachers
    )


def _joined(differs: list[dict]) -> str:
    return "; ".join(str(d) for d in differs)


def define_rerun_flag(flags) -> None:
    flags.DEFINE_float(
        "teacher_tolerance",
        0.0,
        "Keep recorded students when the retrained teacher's test accuracy differs from the recorded one's by at "
        "most this much, as a fraction: 0.005 is half a point (another CPU trains a slightly different teacher; "
        "default 0: only an identical one; at most 0.1, so that a figure meant in points is refused).",
        lower_bound=0.0,
        upper_bound=0.1,
    )
    flags.DEFINE_boolean(
        "rerun_recorded",
        False,
        "Train runs again that the results file records but this machine has no run directory for (default: keep "
        "the record, once the retrained teacher matches the recorded one; see benchmarks/recorded.py).",
    )
