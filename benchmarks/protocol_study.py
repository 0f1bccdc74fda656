"""Why IEP ranks below FitNet and CO at CPU scale: the scaled-down protocol changed one factor at a time.

  python benchmarks/protocol_study.py --factors=baseline,module_20_epochs,dropout_0.3,wide_teacher,epochs_30,no_clip
  python benchmarks/protocol_study.py --factors=combined --combine=auto # after the single factors
  python benchmarks/protocol_study.py                                  # all of the above in one go (many hours)
  python benchmarks/protocol_study.py --report_only
  python benchmarks/protocol_study.py --factors=paper_schedule --results_name=paper_schedule  # 100 epochs
  python benchmarks/protocol_study.py --factors=paper_schedule --results_name=paper_schedule --methods=all \
      --parallel=2                                                     # the table: every method, 100 epochs
  python benchmarks/protocol_study.py --factors=rate_0.01,rate_0.025,rate_0.05,rate_0.01_main_steps,\
      rate_0.01_pre_phase_steps,rate_0.01_no_clip --results_name=scarce_data --parallel=2 --teacher_tolerance=0.005 \
      --methods=none,iep,iep_termclip,iep_bb,iep_bb_termclip,co,fitnet,dkd,at,ab,mhgd,rkd,ft  # scarce data
  python benchmarks/protocol_study.py --quick                          # plumbing only (minutes)

The study's definition (protocol, factors, methods, seeds) is `benchmarks/study_design.py`; its tables and
sentences are `benchmarks/study_report.py`; this file runs it: flags, run directories, the train.py commands,
resuming, and collecting each finished run into rows.

Per run the report gives the mean clip ratio of IEP's distillation gradient (`distill/clip_ratio`), the phase-1
loss at its last TensorBoard write (IEP's `pre_phase/module_kld`, FitNet's `pre_phase/hint`), and where the
wall time went; per factor, how far IEP and IEP+BB are from the better of FitNet and CO. It ends with the runs of
--methods still to train, in the order the study trains them, and where each stands (its newest checkpoint).
"""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import statistics
import sys
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E402 (benchmarks.*)

from absl import app, flags  # noqa: E402

from benchmarks import reproduce_small as small  # noqa: E402
from benchmarks.recorded import (  # noqa: E402
    Recorded,
    define_rerun_flag,
    finished,
    finished_metrics,
    run_state,
    teacher_differences,
)
from benchmarks.results_io import cpu_model  # noqa: E402
from benchmarks.study_design import (  # noqa: E402
    DECAY_KERNELS_ONLY,
    EVAL_EVERY,
    FACTORS,
    IEP_METHODS,
    METHODS,
    MODULE_PHASE_METHODS,
    RETIRED,
    TABLE_METHODS,
    VALIDATION_FRACTION,
    VANILLA,
    Factor,
    combined_factor,
    run_source,
    steps_per_epoch,
    variant_of,
)
from benchmarks.study_report import (  # noqa: E402
    auto_combination,
    gaps,
    known_mean,
    markdown,
    overhead,
    to_train_lines,
    vanilla_of,
    vanilla_rows,
)
from iep.core.files import read_json, write_json_atomic  # noqa: E402
from iep.methods import PRE_PHASE, default_pre_phase_steps, parse_distill_args  # noqa: E402

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string("data_dir", small.DEFAULT_DATA_DIR, "CIFAR-10 TFRecords (see ../shared/data/README).")
    flags.DEFINE_string("root", None, "Where the runs go; default runs/protocol_study[_quick].")
    flags.DEFINE_list("factors", [*FACTORS, "combined"], f"Factors to run: {[*FACTORS, 'combined']}.")
    flags.DEFINE_list(
        "methods",
        list(METHODS),
        f"Methods ('none' is the vanilla student; 'all': {', '.join(TABLE_METHODS)}).",
    )
    flags.DEFINE_integer(
        "parallel", 1, "Student runs at a time, each on cores/parallel threads, output in <run_dir>.log."
    )
    flags.DEFINE_integer("seeds", 2, "Seeds per factor and method.")
    flags.DEFINE_list("combine", ["auto"], "Factors of `combined`: auto (those that raised IEP and IEP+BB) or names.")
    flags.DEFINE_boolean("quick", False, "Tiny protocol that only checks the plumbing.")
    flags.DEFINE_boolean("report_only", False, "Only aggregate finished runs.")
    define_rerun_flag(flags)
    flags.DEFINE_string(
        "results_name",
        None,
        "benchmarks/results/<name>.{json,md}; default protocol_study[_quick]. The paper schedule writes its own "
        "(paper_schedule): its runs use the baselines as fixed after the single-factor study was measured.",
    )


@dataclasses.dataclass(frozen=True)
class Study:
    """Where one study's runs live, what they read, and how many seeds each cell has."""

    protocol: small.Protocol
    root: str
    data_dir: str = small.DEFAULT_DATA_DIR
    seeds: int = 2


def teacher_dir(study: Study, factor: Factor) -> str:
    p = study.protocol
    arch = factor.teacher_arch or p.teacher_arch
    return os.path.join(study.root, "teacher" if arch == p.teacher_arch else f"teacher_{arch}")


def teacher_run(study: Study, factor: Factor) -> tuple[list[str], str]:
    """(train.py command, run dir) of the factor's teacher: reproduce_small's, on the students' training split."""
    p = study.protocol
    run_dir = teacher_dir(study, factor)
    arch_protocol = dataclasses.replace(p, teacher_arch=factor.teacher_arch or p.teacher_arch)
    command = small.teacher_command(arch_protocol, study.root, study.data_dir)
    command = [c for c in command if not c.startswith("--run_dir=")] + [f"--run_dir={run_dir}"]
    # The students' validation images are held out from the teacher too, so selection never sees an image
    # that shaped any network of the run (the teacher still reports test accuracy; it is not selected).
    command += [f"--validation_fraction={VALIDATION_FRACTION}", f"--eval_every={EVAL_EVERY}"]
    return command, run_dir


def one_distill_args(command: list[str]) -> list[str]:
    """`command` with its --distill_args flags as one, a later option over an earlier one (a variant's
    `clip_terms=per_term` over reproduce_small's `clip_terms=sum`): train.py would keep only the last flag."""
    options: dict[str, str] = {}
    for flag in (c for c in command if c.startswith("--distill_args=")):
        options.update(parse_distill_args(flag.removeprefix("--distill_args=").split(",")))
    kept = [c for c in command if not c.startswith("--distill_args=")]
    return kept + ([f"--distill_args={','.join(f'{k}={v}' for k, v in options.items())}"] if options else [])


def student_run(study: Study, factor_name: str, factor: Factor, method: str, seed: int) -> tuple[list[str], str]:
    """(train.py command, run dir) of one student of one factor: reproduce_small's command, changed."""
    p = study.protocol
    rate = factor.rate or min(p.rates)
    epochs = factor.epochs or p.student_epochs
    if factor.main_steps_of_rate:  # as many main steps as at that rate: more epochs over the smaller data
        epochs = math.ceil(epochs * steps_per_epoch(factor.main_steps_of_rate) / steps_per_epoch(rate))
    protocol = dataclasses.replace(p, student_epochs=epochs)
    base = os.path.join(study.root, factor_name)
    distill, extra = variant_of(method)
    run_dir = small.student_dir(base, method, rate, seed)
    command = small.student_command(protocol, base, study.data_dir, distill, rate, seed)
    command = [c for c in command if not c.startswith(("--dropout=", "--teacher=", "--run_dir="))]
    command += [f"--run_dir={run_dir}", *extra]
    command += [f"--dropout={factor.dropout:g}", f"--validation_fraction={VALIDATION_FRACTION}"]
    # about 20 evaluations a run at most (the step-matched control's 1,167 epochs would spend hours evaluating)
    command += ["--eval_split=validation", f"--eval_every={max(EVAL_EVERY, epochs // 20)}"]
    if distill != "none":  # the vanilla students (either decay rule) have no teacher
        command.append(f"--teacher={teacher_dir(study, factor)}")
    if factor.module_epochs and distill in MODULE_PHASE_METHODS:  # the module phase as the reference counts it
        command = [c for c in command if not c.startswith(("--iep_module_steps=", "--distill_args=pre_phase_steps"))]
        if distill in IEP_METHODS:
            command.append(f"--iep_module_epochs={factor.module_epochs}")
    if factor.pre_phase_steps_of_rate and distill in PRE_PHASE:  # each pre-phase as long as at that rate
        main_steps = steps_per_epoch(factor.pre_phase_steps_of_rate) * epochs
        steps = default_pre_phase_steps(distill, main_steps, epochs)
        command = [c for c in command if not c.startswith(("--iep_module_epochs=", "--iep_module_steps="))]
        flag = "--iep_module_steps" if distill in IEP_METHODS else "--distill_args=pre_phase_steps"
        command.append(f"{flag}={steps}")
    if not factor.clip and distill in IEP_METHODS:
        command.append("--noiep_clip")
    return one_distill_args(command), run_dir


# The loss each method's phase 1 minimizes, read at its last TensorBoard write (a mean over the last
# `--log_every` steps): IEP's module KLD, FitNet's hint regression, AB's activation-boundary loss, FSP's
# FSP-matrix L2, FT's paraphraser reconstruction, MHGD's estimator loss. The rest have no single phase 1 (SRM
# has two, its log gives both).
PHASE1_LOSS = {
    "iep": "pre_phase/module_kld",
    "iep_bb": "pre_phase/module_kld",
    "fitnet": "pre_phase/hint",
    "ab": "pre_phase/activation_boundary",
    "fsp": "pre_phase/fsp",
    "ft": "pre_phase/paraphrase",
    "mhgd": "pre_phase/estimator",
}


def _last_scalar(run_dir: str, tag: str) -> float | None:
    import tensorflow as tf

    values = []
    for path in sorted(glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            values += [(event.step, float(tf.make_ndarray(v.tensor))) for v in event.summary.value if v.tag == tag]
    return max(values)[1] if values else None


def final_test_accuracy(run_dir: str) -> float:
    """The test split, once, after the run (cached beside it)."""
    path = os.path.join(run_dir, "study_test.json")
    if not os.path.exists(path):
        from iep.engine.evaluation import evaluate

        write_json_atomic(path, {"top1": evaluate(run_dir=run_dir, split="test")["top1"]})
    return read_json(path)["top1"]


def check_teacher_matches_record(study: Study, factor: Factor, recorded: Recorded, tolerance: float = 0.0) -> None:
    """Recorded students learnt from the recorded teacher (see benchmarks/recorded.py)."""
    run_dir = teacher_dir(study, factor)
    if metrics := finished_metrics(run_dir):
        retrained = teacher_record(study, run_dir, metrics, {})
        recorded.check_teacher(retrained["run_dir"], retrained, run_dir, tolerance)


def factor_of(study: Study, name: str) -> Factor:
    return FACTORS.get(name) or combined_factor(read_json(os.path.join(study.root, "combined.json"))["factors"])


def run_record(run_dir: str, metrics: dict, method: str, seed: int, wall_times: dict) -> dict:
    """One finished student: accuracies, its phase-1 plateau and clip ratio, and where its wall time went."""
    history = metrics["history"]
    clip = [h["distill/clip_ratio"] for h in history if "distill/clip_ratio" in h]
    evals = [h["eval_seconds"] for h in history if h.get("eval_accuracy") is not None]
    phase1_tag = PHASE1_LOSS.get(variant_of(method)[0])
    return {
        "seed": seed,
        "teacher_test": _teacher_test(run_dir),  # the teacher this run learnt from (recorded runs keep theirs)
        "validation": metrics["last_accuracy"],
        "test": final_test_accuracy(run_dir),
        "clip_ratio": statistics.mean(clip) if clip else None,
        # each loss term's epoch mean at the first and the last epoch (which term dominates, and how it moved)
        "losses": {
            k: [history[0][k], history[-1][k]]
            for k in history[-1]
            if k.startswith(("loss/", "distill/")) and k in history[0] and history[0][k] is not None
        },
        "phase1_loss": _last_scalar(run_dir, phase1_tag) if phase1_tag else None,
        "pre_phase_steps": metrics.get("pre_phase_steps"),  # None: a run from before metrics.json recorded them
        # the last epoch's training cross-entropy: whether the student still had the training data to fit
        "final_cross_entropy": history[-1].get("loss/cross_entropy"),
        "epochs": len(history),
        "train_seconds": sum(h["seconds"] for h in history),
        "evaluations": len(evals),
        "eval_seconds": sum(evals),
        "wall_seconds": small.wall_seconds(run_dir, metrics, wall_times),
    }


def _teacher_test(run_dir: str) -> float | None:
    """The test accuracy of the teacher a student's config.json names (None for the vanilla student)."""
    config = os.path.join(run_dir, "config.json")
    teacher = read_json(config).get("teacher") if os.path.exists(config) else None
    metrics = finished_metrics(teacher) if teacher and os.path.isdir(teacher) else None
    return metrics["last_accuracy"] if metrics else None


def summarize(
    study: Study, factor_names: list[str], wall_times: dict | None = None, recorded: Recorded | None = None
) -> list[dict]:
    """One row per (factor, method) with finished runs: means and spreads over seeds, and every run. A run
    finished here wins; else a `recorded` one (marked `"recorded": true`) stands in for it."""
    wall_times = wall_times or {}
    recorded = recorded or Recorded()
    rows = []
    for name in factor_names:
        factor = factor_of(study, name)
        for method in (*TABLE_METHODS, *RETIRED):
            if method not in RETIRED and run_source(name, factor, method) != name:  # that factor's row has these runs
                continue
            runs = []
            for seed in range(factor.seeds_of(method, study.seeds)):
                if method in RETIRED:  # its code is gone: its record, if the results file keeps one
                    runs += [old] if (old := recorded.run(name, method, seed)) else []
                    continue
                _, run_dir = student_run(study, name, factor, method, seed)
                if metrics := finished_metrics(run_dir):
                    record = run_record(run_dir, metrics, method, seed, wall_times)
                    runs.append({**record, "run_dir": os.path.relpath(run_dir, study.root)})
                elif old := recorded.run(name, method, seed):
                    runs.append(old)
            if not runs:
                continue
            validation, test = [r["validation"] for r in runs], [r["test"] for r in runs]
            rows.append(
                {
                    "factor": name,
                    "method": method,
                    "rate": factor.rate or min(study.protocol.rates),
                    "vanilla_factor": run_source(name, factor, "none"),  # whose vanilla student it is measured by
                    "seeds": len(runs),
                    "validation": statistics.mean(validation),
                    "validation_std": statistics.stdev(validation) if len(runs) > 1 else 0.0,
                    "test": statistics.mean(test),
                    "test_std": statistics.stdev(test) if len(runs) > 1 else 0.0,
                    "clip_ratio": known_mean([r["clip_ratio"] for r in runs]),
                    "phase1_loss": known_mean([r["phase1_loss"] for r in runs]),
                    "train_seconds": statistics.mean(r["train_seconds"] for r in runs),
                    "runs": runs,
                }
            )
    base = {r["method"]: r for r in rows if r["factor"] == "baseline"}
    vanillas = vanilla_rows(rows)
    for row in rows:
        ref_vanilla = vanilla_of(row, vanillas) if row["method"] != VANILLA else None
        row["decays_every_variable"] = row["method"] not in DECAY_KERNELS_ONLY
        row["vanilla"] = ref_vanilla["method"] if ref_vanilla else None  # the vanilla student it is measured by
        for split in ("validation", "test"):
            row[f"{split}_over_vanilla"] = row[split] - ref_vanilla[split] if ref_vanilla else None
        ref = base.get(row["method"])
        row["validation_gain"] = row["validation"] - ref["validation"] if ref else None
        row["test_gain"] = row["test"] - ref["test"] if ref else None
        # Seeds pair runs (same initialization and data order), so per-seed gains show whether a gain is consistent.
        ref_runs = {r["seed"]: r for r in ref["runs"]} if ref else {}
        row["validation_gain_per_seed"] = [
            r["validation"] - ref_runs[r["seed"]]["validation"] for r in row["runs"] if r["seed"] in ref_runs
        ]
    return rows


def teacher_record(study: Study, run_dir: str, metrics: dict, wall_times: dict) -> dict:
    """One finished teacher in run_record's shape (for accuracy and overhead), with its last epoch's loss, the
    figure that tells a retrained teacher from the recorded one."""
    history = metrics["history"]
    evals = [h["eval_seconds"] for h in history if h.get("eval_accuracy") is not None]
    return {
        "run_dir": os.path.relpath(run_dir, study.root),
        "arch": metrics["arch"],
        "test": metrics["last_accuracy"],
        "final_loss": history[-1].get("train_loss"),
        # every epoch's loss: where a teacher retrained elsewhere parts from this one (oneDNN picks kernels by the
        # CPU, so another machine can train a different teacher from the same seed)
        "train_losses": [h.get("train_loss") for h in history],
        "cpu": cpu_model(),
        "epochs": len(history),
        "train_seconds": sum(h["seconds"] for h in history),
        "evaluations": len(evals),
        "eval_seconds": sum(evals),
        "wall_seconds": small.wall_seconds(run_dir, metrics, wall_times),
    }


def teacher_records(
    study: Study, factor_names: list[str], wall_times: dict, recorded: Recorded | None = None
) -> list[dict]:
    """The teachers of these factors' students: the one finished here, and each recorded one that differs from it
    (students kept within --teacher_tolerance learnt from those), or the recorded ones where none finished here."""
    recorded = recorded or Recorded()
    out: dict[str, list[dict]] = {}
    for name in factor_names:
        run_dir = teacher_dir(study, factor_of(study, name))
        key = os.path.relpath(run_dir, study.root)
        if key in out:
            continue
        here = [teacher_record(study, run_dir, metrics, wall_times)] if (metrics := finished_metrics(run_dir)) else []
        others = [t for t in recorded.teachers.get(key, []) if not here or teacher_differences(t, here[0])]
        out[key] = here + [{**t, "recorded": True} for t in others]
    return [teacher for teachers in out.values() for teacher in teachers]


def unknown_choice(factors: list[str], methods: list[str], combine: list[str]) -> str | None:
    """The first flag naming a factor or method the study does not have, as its error (None: all known)."""
    for flag, given, known in (
        ("factors", factors, [*FACTORS, "combined"]),
        ("methods", methods, list(TABLE_METHODS)),  # or `all` alone
        ("combine", combine, ["auto", *(f for f in FACTORS if f != "baseline")]),
    ):
        if unknown := [value for value in given if value not in known]:
            return f"unknown --{flag} {unknown}; choose from {known}" + (" (or all)" if flag == "methods" else "")
    return None


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    small.exit_on_sigterm()
    methods = list(TABLE_METHODS) if FLAGS.methods == ["all"] else FLAGS.methods
    if error := unknown_choice(FLAGS.factors, methods, FLAGS.combine):
        raise app.UsageError(error)
    if FLAGS.seeds < 1:
        raise app.UsageError(f"--seeds must be >= 1, got {FLAGS.seeds}")
    if FLAGS.parallel < 1:
        raise app.UsageError(f"--parallel must be at least 1 (runs at a time), got {FLAGS.parallel}")
    if not os.path.isdir(FLAGS.data_dir):
        raise app.UsageError(f"--data_dir {FLAGS.data_dir!r} is not a directory of CIFAR-10 TFRecords")
    quick = "_quick" if FLAGS.quick else ""
    study = Study(
        small.QUICK if FLAGS.quick else small.FULL,
        FLAGS.root or os.path.join("runs", f"protocol_study{quick}"),
        FLAGS.data_dir,
        FLAGS.seeds,
    )
    if FLAGS.report_only and not os.path.isdir(study.root):
        raise app.UsageError(f"--root {study.root!r} does not exist: there are no runs to report")
    try:
        os.makedirs(study.root, exist_ok=True)
    except OSError as error:
        raise app.UsageError(f"--root {study.root!r} cannot be created ({error.strerror})") from None
    name = FLAGS.results_name or f"protocol_study{quick}"
    recorded = Recorded() if FLAGS.rerun_recorded else Recorded.read(results_path(name), ("factor", "method"))
    if not FLAGS.report_only:
        factors = [f for f in FLAGS.factors if f != "combined"]
        run_factors(study, factors, methods, recorded, FLAGS.parallel, FLAGS.teacher_tolerance)
        if "combined" in FLAGS.factors:
            run_combined(study, FLAGS.combine, methods)
    report(study, name, recorded, FLAGS.factors, methods)


def results_path(name: str) -> str:
    return os.path.join(small.RESULTS_DIR, f"{name}.json")


def run_factors(
    study: Study,
    names: list[str],
    methods: list[str],
    recorded: Recorded | None = None,
    parallel: int = 1,
    teacher_tolerance: float = 0.0,
) -> None:
    """Each factor's teacher, then its students seed by seed, `parallel` at a time (skipping runs the factor
    cannot change, and runs the results file records that this machine has no finished run of: see `Recorded`)."""
    recorded = recorded or Recorded()
    wall_times = os.path.join(study.root, "wall_times.json")
    for name in names:
        factor = FACTORS[name]
        teacher = teacher_run(study, factor)
        small.run_job(*teacher, wall_times)
        check_teacher_matches_record(study, factor, recorded, teacher_tolerance)
        students = []
        for method, seed, command, run_dir in factor_students(study, name, factor, methods):
            if recorded.stands_in(run_dir, name, method, seed):
                print(f"recorded in the results file, not trained again: {name} {method} seed {seed}")
                continue
            students.append((command, run_dir))
        small.run_students(students, wall_times, parallel)


def factor_students(
    study: Study, name: str, factor: Factor, methods: list[str]
) -> Iterator[tuple[str, int, list[str], str]]:
    """(method, seed, train.py command, run dir) of each student run that is factor `name`'s own (not one it
    reuses from another factor), seed by seed in the `methods` order: the order the study trains them."""
    for seed in range(max((factor.seeds_of(m, study.seeds) for m in methods), default=0)):
        for method in methods:
            if seed >= factor.seeds_of(method, study.seeds):
                continue
            if run_source(name, factor, method) == name and factor.trains(method):
                yield method, seed, *student_run(study, name, factor, method, seed)


def run_combined(study: Study, combine: list[str], methods: list[str]) -> None:
    chosen = auto_combination(summarize(study, list(FACTORS))) if combine == ["auto"] else combine
    if not chosen:
        print("combined: no single factor raised both IEP and IEP+BB on validation; nothing to combine")
        return
    write_json_atomic(os.path.join(study.root, "combined.json"), {"factors": chosen})
    factor = combined_factor(chosen)
    wall_times = os.path.join(study.root, "wall_times.json")
    small.run_job(*teacher_run(study, factor), wall_times)
    for _, _, command, run_dir in factor_students(study, "combined", factor, methods):  # else a single factor's
        small.run_job(command, run_dir, wall_times)


def still_to_train(study: Study, names: list[str], methods: list[str], recorded: Recorded | None = None) -> list[dict]:
    """The runs of `names` × `methods` × seeds that neither finished here nor are recorded, in the order the study
    trains them, each with where it stands (`run_state`): what a study spread over sessions has left."""
    recorded = recorded or Recorded()
    left = []
    for name in names:
        for method, seed, _, run_dir in factor_students(study, name, factor_of(study, name), methods):
            if not finished(run_dir) and (name, method, seed) not in recorded.runs:
                left.append({"factor": name, "method": method, "seed": seed, "state": run_state(run_dir)})
    return left


def report_factors(study: Study, factors: list[str]) -> list[str]:
    """The factors a report covers: those asked for, in the study's order (`combined` once it has been chosen).
    Why: studies share a root and a teacher, so a 100-epoch table must not pick up the 15-epoch runs beside it."""
    combined = os.path.exists(os.path.join(study.root, "combined.json"))
    return [n for n in FACTORS if n in factors] + (["combined"] if combined and "combined" in factors else [])


def report(
    study: Study,
    name: str,
    recorded: Recorded | None = None,
    factors: list[str] | None = None,
    methods: list[str] | None = None,
) -> None:
    """Aggregates the finished (or recorded) runs of `factors` (default: all) into benchmarks/results/<name>.*,
    and lists the runs of `methods` still to train (none given: no list)."""
    from benchmarks.results_io import write_results

    combined = os.path.join(study.root, "combined.json")
    names = report_factors(study, [*FACTORS, "combined"] if factors is None else factors)
    wall_times = os.path.join(study.root, "wall_times.json")
    times = read_json(wall_times) if os.path.exists(wall_times) else {}
    rows = summarize(study, names, times, recorded)
    gap_rows = gaps(rows, {n: factor_of(study, n) for n in names if any(r["factor"] == n for r in rows)})
    teachers = teacher_records(study, names, times, recorded)
    order = [n for n in (factors or []) if n in names] or names  # the order the study trains them in
    left = None if methods is None else still_to_train(study, order, methods, recorded)
    settings = {
        "protocol": dataclasses.asdict(study.protocol),
        "seeds": study.seeds,
        "validation_fraction": VALIDATION_FRACTION,
        "eval_every": EVAL_EVERY,
        "combined_factors": read_json(combined)["factors"] if os.path.exists(combined) else None,
        "teachers": teachers,
        "overhead": overhead(rows, teachers),
        "gaps": gap_rows,
        "still_to_train": left,
    }
    os.makedirs(small.RESULTS_DIR, exist_ok=True)
    write_results(results_path(name), settings, rows)
    table = markdown(rows, gap_rows, teachers)
    if left is not None:
        table += "\n".join(to_train_lines(left, methods)) + "\n"
    with open(os.path.join(small.RESULTS_DIR, f"{name}.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
