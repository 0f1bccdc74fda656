"""The paper's small-network-enhancement experiment (Table 1) at a scale a 2-core CPU finishes.

  python benchmarks/reproduce_small.py                 # full CPU protocol, resumable (hours)
  python benchmarks/reproduce_small.py --quick         # plumbing check, ~10 minutes (every method, 1 epoch, 2 %)
  python benchmarks/reproduce_small.py --report_only   # re-aggregate finished runs
  python benchmarks/reproduce_small.py --parallel=2    # students two at a time, one core each
  python benchmarks/reproduce_small.py --methods=srm,rkd --rates=0.1 --results_name=reproduce_small_fidelity

Protocol (same as the paper's, scaled down; every method gets the same
seeds, epochs, schedule and data subset):
  * teacher: one WRN-28-1 trained on all 50,000 CIFAR-10 training images,
    cached in <root>/teacher and reused;
  * students: WRN-16-1 (the teacher's stage widths: the homogeneous setting)
    on stratified 10 % and 25 % subsets (`--sample_seed=0` for all), seeds
    0..n-1, trained without distillation and with every method of
    `iep.methods.METHODS`;
  * controls, opt in with --methods: `none_long`, the vanilla student with
    30 % more epochs (the passes FitNet's and AB's initialization adds);
  * IEP phase 1 is `--module_steps` steps (the paper's 8,000 at ~78k main
    steps; here 200, 14-34 % of the main phase, because the modules start
    from scratch and the main phase is short).

Each run is the project's own `train.py` command (printed), so re-running this
script resumes the interrupted run and skips finished ones. Results:
benchmarks/results/reproduce_small[_quick].{json,csv}; learning curves:
<root>/curves_r<rate>.png.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from benchmarks.recorded import Recorded, define_rerun_flag, finished, finished_metrics, teacher_differences  # noqa: E402
from iep.core.files import read_json, write_json_atomic  # noqa: E402
from iep.methods import METHODS, PRE_PHASE  # noqa: E402

# Controls: runs that test an explanation of the results, not methods of the paper. Opt in with --methods.
# `none_long` asks whether FitNet's / AB's lead is just the extra passes of their initialization phase: it is
# the vanilla student trained for as many more epochs as that phase adds (see `control_epochs`).
CONTROLS = ("none_long",)


def _define_flags() -> None:
    """Only when run as a script: the test suite imports this module beside train.py, whose flags overlap."""
    flags.DEFINE_string("data_dir", DEFAULT_DATA_DIR, "CIFAR-10 TFRecords (see ../shared/data/README).")
    flags.DEFINE_string("root", None, "Run directories; default runs/reproduce_small[_quick].")
    flags.DEFINE_boolean("quick", False, "Tiny protocol that only checks the plumbing.")
    flags.DEFINE_list(
        "methods",
        list(METHODS),
        f"Methods to train ('none' is the vanilla student); controls (opt in): {sorted(CONTROLS)}.",
    )
    flags.DEFINE_list("rates", None, "Student data rates; default 0.1,0.25 (quick: 0.02,0.05).")
    flags.DEFINE_integer("seeds", None, "Seeds per rate for the smallest rate; default 2 (quick: 1).")
    flags.DEFINE_integer("seeds_other_rates", 1, "Seeds for the other rates (compute is scarce).")
    flags.DEFINE_boolean("report_only", False, "Only aggregate finished runs and draw the curves.")
    flags.DEFINE_string(
        "results_name",
        None,
        "Base name of the results files in benchmarks/results; default reproduce_small[_quick]. A re-run of some "
        "methods under another name keeps the earlier results file as the record of the earlier numbers.",
    )
    define_rerun_flag(flags)
    flags.DEFINE_integer(
        "parallel",
        1,
        "Student runs at a time, each on cores/parallel threads, output in <run_dir>.log (teacher alone).",
    )


FLAGS = flags.FLAGS

DEFAULT_DATA_DIR = "../shared/data/cifar10"
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


@dataclasses.dataclass(frozen=True)
class Protocol:
    teacher_arch: str = "wrn-28-1"
    teacher_epochs: int = 10
    teacher_rate: float = 1.0
    student_arch: str = "wrn-16-1"
    student_epochs: int = 15
    module_steps: int = 200
    rates: tuple[float, ...] = (0.1, 0.25)
    seeds: int = 2


FULL = Protocol()
QUICK = Protocol(
    teacher_arch="wrn-16-1",
    teacher_epochs=1,
    teacher_rate=0.1,
    student_epochs=1,
    module_steps=5,
    rates=(0.02,),
    seeds=1,
)
COMMON = ["--dataset=tfrecord", "--batch_size=128", "--lr=0.1", "--dropout=0", "--progress=false", "--sample_seed=0"]


def teacher_command(p: Protocol, root: str, data_dir: str) -> list[str]:
    return [
        "train.py", *COMMON, f"--data_dir={data_dir}", f"--arch={p.teacher_arch}", f"--rate={p.teacher_rate}",
        f"--epochs={p.teacher_epochs}", "--lr_schedule=cosine", "--export=false", f"--run_dir={root}/teacher",
    ]  # fmt: skip


def control_epochs(p: Protocol) -> int:
    """Epochs of `none_long`: the main phase plus FitNet's / AB's pre-phase share, rounded up (never fewer passes)."""
    return math.ceil(p.student_epochs * (1.0 + PRE_PHASE["fitnet"][1]))


def student_command(p: Protocol, root: str, data_dir: str, method: str, rate: float, seed: int) -> list[str]:
    epochs, distill = (control_epochs(p), "none") if method == "none_long" else (p.student_epochs, method)
    command = [
        "train.py", *COMMON, f"--data_dir={data_dir}", f"--arch={p.student_arch}", f"--rate={rate}",
        f"--epochs={epochs}", f"--seed={seed}", f"--distill={distill}", "--export=false",
        f"--run_dir={student_dir(root, method, rate, seed)}",
    ]  # fmt: skip
    if distill != "none":
        command.append(f"--teacher={root}/teacher")
    if method.startswith("iep"):
        # The summed clip its records were trained with (IEP's default until per-term led every pair; methods.md).
        command += [f"--iep_module_steps={p.module_steps}", "--distill_args=clip_terms=sum"]
    if method == "static_kd":  # the teacher's semantic vectors, never the teacher network
        command[command.index(f"--teacher={root}/teacher")] = f"--static_knowledge={static_knowledge_path(root)}"
    if method == "mhgd":  # the other pre-phases default to their reference share (iep.methods.PRE_PHASE)
        command.append(f"--distill_args=pre_phase_steps={p.module_steps}")
    return command


def static_knowledge_path(root: str) -> str:
    return os.path.join(root, "teacher", "static_knowledge.npz")


def static_knowledge_command(root: str) -> list[str]:
    """Semantic vectors of the cached teacher, learned post hoc (d = 16, two passes over its training data)."""
    return ["-m", "iep.static.learn", f"--teacher={root}/teacher", "--dim=16", "--epochs=2", "--seed=0"]


def ensure_static_knowledge(root: str, wall_times_path: str) -> None:
    """Learns the teacher's static knowledge once (after the teacher, before any static_kd student)."""
    path = static_knowledge_path(root)
    if os.path.exists(path):
        return
    command = static_knowledge_command(root)
    print("\n$ python " + " ".join(command), flush=True)
    start = time.monotonic()
    subprocess.run([sys.executable, *command], check=True)
    with _WALL_TIMES_LOCK:
        times = read_json(wall_times_path) if os.path.exists(wall_times_path) else {}
        times[os.path.abspath(path)] = times.get(os.path.abspath(path), 0.0) + time.monotonic() - start
        write_json_atomic(wall_times_path, times)


def student_dir(root: str, method: str, rate: float, seed: int) -> str:
    return os.path.join(root, f"r{rate:g}", f"{method}_s{seed}")


_WALL_TIMES_LOCK = threading.Lock()
_RUNNING: set[subprocess.Popen] = set()


def thread_env(parallel: int) -> dict[str, str] | None:
    """Several runs at once each get their share of the cores instead of all oversubscribing every core."""
    if parallel <= 1:
        return None
    threads = str(max(1, (os.cpu_count() or 1) // parallel))
    return {
        **os.environ,
        "TF_NUM_INTRAOP_THREADS": threads,
        "TF_NUM_INTEROP_THREADS": threads,
        "OMP_NUM_THREADS": threads,
    }


def exit_on_sigterm() -> None:
    """`kill` (SIGTERM) of a study unwinds like Ctrl-C: the runs in progress stop with it (left running, they
    would train on beside a restarted study) and their wall time is still recorded."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run_job(
    command: list[str],
    run_dir: str,
    wall_times_path: str,
    env: dict[str, str] | None = None,
    log_path: str | None = None,
) -> None:
    """Runs (or resumes) one train.py command; accumulates its wall time across interruptions. A run that another
    study process is training (on the same root: a second process on an idle core) is left to it."""
    if finished(run_dir):
        return
    with _claimed(run_dir) as mine:
        if not mine:
            print(f"another process is training {run_dir}: left to it", flush=True)
        elif not finished(run_dir):  # it may have finished between the check and the claim
            _run_claimed(command, run_dir, wall_times_path, env, log_path)


@contextlib.contextmanager
def _claimed(run_dir: str) -> Iterator[bool]:
    """Whether this process holds the run: an exclusive lock on `<run_dir>.lock`, so that two study processes on
    one root never train the same run at once (two writers would corrupt its checkpoints). The system drops the
    lock with its process, a killed one too, so a stale file blocks nothing."""
    if fcntl is None:  # no POSIX locks (Windows): one study process per root
        yield True
        return
    os.makedirs(os.path.dirname(os.path.abspath(run_dir)), exist_ok=True)
    with open(os.path.normpath(run_dir) + ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_claimed(
    command: list[str], run_dir: str, wall_times_path: str, env: dict[str, str] | None, log_path: str | None
) -> None:
    print("\n$ python " + " ".join(command) + (f"\n  (output: {log_path})" if log_path else ""), flush=True)
    start = time.monotonic()
    log = None
    if log_path:  # beside the run dir, whose parent train.py has not made yet on a fresh root
        os.makedirs(os.path.dirname(log_path) or ".", exist_ok=True)
        log = open(log_path, "a")
    try:
        stderr = subprocess.STDOUT if log else None
        process = subprocess.Popen([sys.executable, *command], env=env, stdout=log, stderr=stderr)
        _RUNNING.add(process)
        try:
            code = process.wait()
        except BaseException:  # Ctrl-C or SIGTERM of this script stops the run too (it resumes later)
            process.terminate()
            process.wait()
            raise
        finally:
            _RUNNING.discard(process)
        if code:
            raise subprocess.CalledProcessError(code, process.args)
    finally:
        if log:
            log.close()
        with _WALL_TIMES_LOCK:
            times = read_json(wall_times_path) if os.path.exists(wall_times_path) else {}
            key = os.path.abspath(run_dir)
            times[key] = times.get(key, 0.0) + time.monotonic() - start
            write_json_atomic(wall_times_path, times)


def run_all(job_list: list[tuple[list[str], str]], wall_times_path: str, parallel: int = 1) -> None:
    """The first job (the teacher) alone, then the students `parallel` at a time, in list order."""
    (teacher, teacher_dir), *students = job_list
    run_job(teacher, teacher_dir, wall_times_path)
    run_students(students, wall_times_path, parallel)


def run_students(students: list[tuple[list[str], str]], wall_times_path: str, parallel: int = 1) -> None:
    """Student jobs `parallel` at a time, in list order (their teacher has finished)."""
    if parallel <= 1:
        for command, run_dir in students:
            run_job(command, run_dir, wall_times_path)
        return
    env = thread_env(parallel)
    pool = ThreadPoolExecutor(parallel)
    try:
        futures = [
            pool.submit(run_job, command, run_dir, wall_times_path, env, os.path.normpath(run_dir) + ".log")
            for command, run_dir in students
        ]
        for future in as_completed(futures):
            future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in list(_RUNNING):
            process.terminate()
        pool.shutdown(wait=True)


def jobs(
    p: Protocol,
    root: str,
    data_dir: str,
    methods: list[str],
    seeds_other_rates: int,
    recorded: Recorded | None = None,
) -> list[tuple[list[str], str]]:
    """Teacher first; then vanilla, IEP+BB and IEP for every (seed, rate); then the baselines likewise; less
    the runs `recorded` keeps that have no finished run directory here.

    The order is what an interrupted run should have finished first: the
    paper's claim needs the first group at every rate and seed.
    """
    recorded = recorded or Recorded()
    out = [(teacher_command(p, root, data_dir), f"{root}/teacher")]
    smallest = min(p.rates)
    first = [m for m in ("none", "iep_bb", "iep") if m in methods]
    for group in (first, [m for m in methods if m not in first]):
        for seed in range(p.seeds):
            for rate in p.rates:
                if rate != smallest and seed >= seeds_other_rates:
                    continue
                for m in group:
                    run_dir = student_dir(root, m, rate, seed)
                    if not recorded.stands_in(run_dir, rate, m, seed):
                        out.append((student_command(p, root, data_dir, m, rate, seed), run_dir))
    return out


def wall_seconds(run_dir: str, metrics: dict, wall_times: dict) -> float:
    """The script's own clock for the job, but never less than the run's summed epoch times (a job killed
    before the script recorded its time would otherwise count only its resumed part)."""
    epochs = sum(h["seconds"] for h in metrics["history"])
    return max(wall_times.get(os.path.abspath(run_dir), 0.0), epochs)


def run_record(run_dir: str, metrics: dict, seed: int, wall_times: dict) -> dict:
    """One finished student as the results file keeps it (enough to stand in for its run directory)."""
    return {
        "seed": seed,
        "last": metrics["last_accuracy"],
        "best": metrics["best_accuracy"],
        "wall_seconds": wall_seconds(run_dir, metrics, wall_times),
        "curve": [h.get("eval_accuracy") for h in metrics["history"]],
    }


def teacher_record(p: Protocol, run_dir: str, metrics: dict, wall_times: dict) -> dict:
    return {
        "arch": p.teacher_arch,
        "last_accuracy": metrics["last_accuracy"],
        "best_accuracy": metrics["best_accuracy"],
        "final_loss": metrics["history"][-1].get("train_loss"),  # tells a retrained teacher from this one
        "wall_seconds": wall_seconds(run_dir, metrics, wall_times),
    }


def summarize(
    p: Protocol,
    root: str,
    methods: list[str],
    wall_times: dict,
    data_dir: str = DEFAULT_DATA_DIR,
    recorded: Recorded | None = None,
) -> tuple[dict, list[dict]]:
    """One row per (rate, method) with finished runs; a run finished here wins, else a `recorded` one stands in."""
    recorded = recorded or Recorded()
    teacher_metrics = finished_metrics(f"{root}/teacher")
    recorded_teachers = [{**t, "recorded": True} for t in recorded.teachers.get("teacher", [])]
    if teacher_metrics:
        teacher = teacher_record(p, f"{root}/teacher", teacher_metrics, wall_times)
        # recorded students kept within --teacher_tolerance learnt from these
        others = [t for t in recorded_teachers if teacher_differences(t, teacher)]
    else:
        teacher, others = (recorded_teachers or [None])[0], recorded_teachers[1:]
    rows = []
    for rate in p.rates:
        for method in methods:
            runs = []
            for seed in range(p.seeds):
                run_dir = student_dir(root, method, rate, seed)
                if metrics := finished_metrics(run_dir):
                    runs.append(run_record(run_dir, metrics, seed, wall_times))
                elif old := recorded.run(rate, method, seed):
                    runs.append(old)
            if not runs:
                continue
            last, best = [r["last"] for r in runs], [r["best"] for r in runs]
            rows.append(
                {
                    "rate": rate,
                    "method": method,
                    "seeds": len(runs),
                    "last_mean": statistics.mean(last),
                    "last_std": statistics.stdev(last) if len(last) > 1 else 0.0,
                    "best_mean": statistics.mean(best),
                    "best_std": statistics.stdev(best) if len(best) > 1 else 0.0,
                    "last_per_seed": last,
                    "wall_seconds_mean": statistics.mean(r["wall_seconds"] for r in runs),
                    "runs": runs,
                }
            )
    vanilla = {r["rate"]: r["last_mean"] for r in rows if r["method"] == "none"}
    for row in rows:
        row["gain_over_vanilla"] = row["last_mean"] - vanilla[row["rate"]] if row["rate"] in vanilla else None
    student_seconds = sum(r["wall_seconds"] for row in rows for r in row["runs"])
    header = {
        "protocol": dataclasses.asdict(p),
        # What the whole protocol cost (finished and recorded runs).
        "wall_seconds_total": (teacher["wall_seconds"] if teacher else 0.0) + student_seconds,
        "teacher": teacher,
        **({"other_teachers": others} if others else {}),
        "commands": {
            "teacher": "python " + " ".join(teacher_command(p, root, data_dir)),
            "student_example": "python " + " ".join(student_command(p, root, data_dir, "iep_bb", min(p.rates), 0)),
        },
    }
    return header, rows


def check_teacher_matches_record(p: Protocol, root: str, recorded: Recorded, tolerance: float = 0.0) -> None:
    """Recorded students learnt from the recorded teacher (see benchmarks/recorded.py)."""
    if metrics := finished_metrics(f"{root}/teacher"):
        retrained = teacher_record(p, f"{root}/teacher", metrics, {})
        recorded.check_teacher("teacher", retrained, f"{root}/teacher", tolerance)


def write_report(
    p: Protocol, root: str, methods: list[str], name: str, data_dir: str, recorded: Recorded | None = None
) -> None:
    from benchmarks.learning_curves import plot_learning_curves
    from benchmarks.results_io import write_results

    wall_path = os.path.join(root, "wall_times.json")
    wall_times = read_json(wall_path) if os.path.exists(wall_path) else {}
    header, rows = summarize(p, root, methods, wall_times, data_dir, recorded)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    write_results(os.path.join(RESULTS_DIR, f"{name}.json"), header, rows)
    with open(os.path.join(RESULTS_DIR, f"{name}.csv"), "w", newline="") as f:
        per_run = ("last_per_seed", "runs")
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k not in per_run] if rows else ["rate"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: v for k, v in row.items() if k not in per_run})
    for rate in p.rates:
        curves = {}
        for row in rows:
            seed0 = [r for r in row["runs"] if r["seed"] == 0]
            if row["rate"] == rate and seed0 and None not in seed0[0]["curve"]:
                curves[row["method"]] = seed0[0]["curve"]
        if curves:
            out = os.path.join(root, f"curves_r{rate:g}.png")
            plot_learning_curves(curves, f"WRN-16-1 on {rate:g} of CIFAR-10 (seed 0)", out, controls=CONTROLS)
            print(f"wrote {out}")
    table = markdown_table(header, rows)
    with open(os.path.join(RESULTS_DIR, f"{name}.md"), "w") as f:
        f.write(table)
    print(table)


def markdown_table(header: dict, rows: list[dict]) -> str:
    """The README's table: top-1 (%) last and best, mean ± std over seeds, gain over vanilla, minutes per run."""
    teacher = header["teacher"]
    lines = []
    if teacher:
        lines.append(f"Teacher {teacher['arch']}: {100 * teacher['last_accuracy']:.2f} % (last epoch).\n")
    for other in header.get("other_teachers", []):  # recorded students kept within --teacher_tolerance
        lines.append(f"Recorded students also learnt from a teacher at {100 * other['last_accuracy']:.2f} % "
                     f"({other.get('cpu') or 'another CPU'}).\n")  # fmt: skip
    lines += [
        "| rate | method | seeds | top-1 last | top-1 best | last − vanilla | minutes / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = (
            "—" if r["gain_over_vanilla"] is None or r["method"] == "none" else f"{100 * r['gain_over_vanilla']:+.2f}"
        )
        minutes = "—" if r["wall_seconds_mean"] is None else f"{r['wall_seconds_mean'] / 60:.1f}"
        method = f"{r['method']} (control)" if r["method"] in CONTROLS else r["method"]
        lines.append(
            f"| {r['rate']:g} | {method} | {r['seeds']} | {100 * r['last_mean']:.2f} ± {100 * r['last_std']:.2f} "
            f"| {100 * r['best_mean']:.2f} ± {100 * r['best_std']:.2f} | {gain} | {minutes} |"
        )
    total = header.get("wall_seconds_total")
    if total:
        teacher_minutes = f" (teacher {teacher['wall_seconds'] / 60:.0f} min)" if teacher else ""
        lines.append(f"\nWall time of all finished runs: {total / 3600:.1f} h{teacher_minutes}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    exit_on_sigterm()
    base = QUICK if FLAGS.quick else FULL
    protocol = dataclasses.replace(
        base,
        rates=tuple(float(r) for r in FLAGS.rates) if FLAGS.rates else base.rates,
        seeds=FLAGS.seeds or base.seeds,
    )
    if FLAGS.parallel < 1:
        raise app.UsageError(f"--parallel must be at least 1 (runs at a time), got {FLAGS.parallel}")
    unknown = sorted(set(FLAGS.methods) - set(METHODS) - set(CONTROLS))
    if unknown:
        raise app.UsageError(f"--methods: unknown {unknown}; known: {list(METHODS)}, controls {sorted(CONTROLS)}")
    if not os.path.isdir(FLAGS.data_dir):
        raise app.UsageError(f"--data_dir {FLAGS.data_dir!r} is not a directory of CIFAR-10 TFRecords")
    default_name = "reproduce_small_quick" if FLAGS.quick else "reproduce_small"
    name = FLAGS.results_name or default_name
    root = FLAGS.root or os.path.join("runs", default_name)  # runs are shared whatever the results file is named
    os.makedirs(root, exist_ok=True)
    results = os.path.join(RESULTS_DIR, f"{name}.json")
    recorded = Recorded() if FLAGS.rerun_recorded else Recorded.read(results, ("rate", "method"))
    if not FLAGS.report_only:
        wall_times = os.path.join(root, "wall_times.json")
        job_list = jobs(protocol, root, FLAGS.data_dir, FLAGS.methods, FLAGS.seeds_other_rates, recorded)
        run_job(*job_list[0], wall_times)  # the teacher first: the recorded students need it to match
        check_teacher_matches_record(protocol, root, recorded, FLAGS.teacher_tolerance)
        if "static_kd" in FLAGS.methods:
            ensure_static_knowledge(root, wall_times)
        run_all(job_list, wall_times, FLAGS.parallel)
    # The report covers every finished run, not only this invocation's --methods (a subset must not erase
    # the other methods' rows from the results files).
    write_report(protocol, root, [*METHODS, *CONTROLS], name, FLAGS.data_dir, recorded)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
