"""benchmarks/reproduce_small.py: job order and the aggregation of finished runs (no training here)."""

import json
import os
import statistics
import subprocess
import sys

import pytest

from benchmarks import reproduce_small as rs
from tests.conftest import ROOT


def test_jobs_put_teacher_then_the_paper_claim_first():
    protocol = rs.Protocol(rates=(0.1, 0.25), seeds=2)
    runs = [d for _, d in rs.jobs(protocol, "root", "data", ["none", "kd", "iep", "iep_bb"], seeds_other_rates=1)]
    assert runs[0] == "root/teacher"
    first_group = [d.split("/", 1)[1] for d in runs[1:7]]
    assert first_group == [
        "r0.1/none_s0", "r0.1/iep_bb_s0", "r0.1/iep_s0", "r0.25/none_s0", "r0.25/iep_bb_s0", "r0.25/iep_s0"
    ]  # fmt: skip
    assert "root/r0.25/none_s1" not in runs and "root/r0.1/kd_s1" in runs  # 2 seeds only at the smallest rate
    assert len(runs) == len(set(runs))


def test_extra_passes_control_is_vanilla_with_the_pre_phase_epochs_added():
    protocol = rs.Protocol(student_epochs=15)
    command = rs.student_command(protocol, "root", "data", "none_long", 0.1, 1)
    assert "--epochs=20" in command  # 15 x 1.3 = 19.5, rounded up: never fewer passes than FitNet's
    assert "--distill=none" in command and not any(a.startswith("--teacher") for a in command)
    assert "--run_dir=root/r0.1/none_long_s1" in command
    assert "--epochs=15" in rs.student_command(protocol, "root", "data", "none", 0.1, 1)


def _finished_run(path, last, best, seconds):
    path.mkdir(parents=True)
    history = [
        {"epoch": 1, "eval_accuracy": best, "seconds": seconds},
        {"epoch": 2, "eval_accuracy": last, "seconds": 0},
    ]
    (path / "metrics.json").write_text(
        json.dumps({"finished": True, "last_accuracy": last, "best_accuracy": best, "history": history})
    )


def test_summary_means_stds_gains_and_table(tmp_path):
    root = str(tmp_path)
    protocol = rs.Protocol(rates=(0.1,), seeds=2)
    _finished_run(tmp_path / "teacher", 0.8, 0.82, 10.0)
    _finished_run(tmp_path / "r0.1" / "none_s0", 0.50, 0.52, 60.0)
    _finished_run(tmp_path / "r0.1" / "none_s1", 0.54, 0.55, 60.0)
    _finished_run(tmp_path / "r0.1" / "iep_s0", 0.60, 0.61, 120.0)
    _finished_run(tmp_path / "r0.1" / "none_long_s0", 0.53, 0.53, 80.0)
    (tmp_path / "r0.1" / "iep_s1").mkdir()  # unfinished: ignored
    clock = {str(tmp_path / "r0.1" / "iep_s0"): 300.0, str(tmp_path / "r0.1" / "none_s0"): 10.0}
    header, rows = rs.summarize(protocol, root, ["none", "iep", "kd", "none_long"], clock)
    assert [r["method"] for r in rows] == ["none", "iep", "none_long"]  # kd: no finished run, no row
    by_method = {r["method"]: r for r in rows}
    assert by_method["none"]["last_mean"] == pytest.approx(0.52)
    assert by_method["none"]["last_std"] == pytest.approx(statistics.stdev([0.50, 0.54]))
    assert by_method["iep"]["seeds"] == 1 and by_method["iep"]["gain_over_vanilla"] == pytest.approx(0.08)
    assert by_method["iep"]["wall_seconds_mean"] == 300.0  # the script's clock, when above the epoch sum
    assert by_method["none"]["wall_seconds_mean"] == 60.0  # a clock below the epoch sum (killed job) is not trusted
    table = rs.markdown_table(header, rows)
    assert "Teacher wrn-28-1: 80.00 %" in table
    assert "| 0.1 | iep | 1 | 60.00 ± 0.00 | 61.00 ± 0.00 | +8.00 | 5.0 |" in table
    assert "| 0.1 | none_long (control) | 1 | 53.00 ± 0.00 | 53.00 ± 0.00 | +1.00 | 1.3 |" in table
    teacher_and_finished_students = 10.0 + 60.0 + 60.0 + 300.0 + 80.0
    assert header["wall_seconds_total"] == pytest.approx(teacher_and_finished_students)
    assert "Wall time of all finished runs: 0.1 h (teacher 0 min)." in table


# A stand-in for train.py: records when it ran and its thread setting, then marks its run finished.
_FAKE_RUN = """
import json, os, sys, time
run_dir = sys.argv[1]
os.makedirs(run_dir)
start = time.time()
time.sleep(float(sys.argv[2]))
print("trained", run_dir)
record = {"finished": True, "start": start, "end": time.time(), "threads": os.environ.get("TF_NUM_INTRAOP_THREADS")}
json.dump(record, open(os.path.join(run_dir, "metrics.json"), "w"))
"""


def _fake_jobs(tmp_path, names, seconds):
    return [(["-c", _FAKE_RUN, str(tmp_path / n), str(seconds)], str(tmp_path / n)) for n in names]


def _read(tmp_path, name):
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_parallel_runs_students_together_after_the_teacher(tmp_path, monkeypatch):
    monkeypatch.setattr(rs.os, "cpu_count", lambda: 4)
    wall = str(tmp_path / "wall_times.json")
    students = ["r0.1/a", "r0.1/b"]  # logs go beside run dirs whose parent no run has made yet (a fresh root)
    rs.run_all(_fake_jobs(tmp_path, ["teacher", *students], 1.0), wall, parallel=2)
    teacher, a, b = (_read(tmp_path, n) for n in ("teacher", *students))
    assert teacher["end"] <= min(a["start"], b["start"])  # students wait for the teacher
    assert a["start"] < b["end"] and b["start"] < a["end"]  # and overlap each other
    assert teacher["threads"] is None and a["threads"] == b["threads"] == "2"  # 4 cores shared by 2 runs
    assert "trained" in (tmp_path / "r0.1" / "a.log").read_text()
    times = json.loads(open(wall).read())
    assert set(times) == {str(tmp_path / n) for n in ("teacher", *students)} and min(times.values()) >= 1.0


def test_finished_runs_are_skipped_and_a_failure_stops_the_rest(tmp_path):
    wall = str(tmp_path / "wall_times.json")
    rs.run_all(_fake_jobs(tmp_path, ["teacher", "a"], 0.0), wall)
    before = _read(tmp_path, "a")
    failing = (["-c", "raise SystemExit(3)"], str(tmp_path / "broken"))
    with pytest.raises(subprocess.CalledProcessError):
        rs.run_all([*_fake_jobs(tmp_path, ["teacher", "a"], 0.0), failing, *_fake_jobs(tmp_path, ["c"], 0.0)], wall)
    assert _read(tmp_path, "a") == before  # finished: not run again
    assert not (tmp_path / "c").exists()  # sequential: nothing after the failed run


def test_a_run_another_study_process_holds_is_left_to_it(tmp_path, capsys):
    """Two study processes on one root (a second on an idle core) never train the same run at once."""
    import fcntl

    wall = str(tmp_path / "wall_times.json")
    (job,) = _fake_jobs(tmp_path, ["a"], 0.0)
    with open(str(tmp_path / "a") + ".lock", "a") as held:  # another process's claim
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rs.run_job(*job, wall)
        assert "another process is training" in capsys.readouterr().out and not (tmp_path / "a").exists()
        fcntl.flock(held, fcntl.LOCK_UN)
    rs.run_job(*job, wall)  # released (or its process gone): trained here
    assert _read(tmp_path, "a")["start"] > 0


def test_a_killed_study_stops_its_runs_with_it(tmp_path):
    """SIGTERM to a study running students in parallel stops them too: orphaned, they would train on beside the
    restarted study, two writers on one run."""
    import signal
    import time

    waiting = (
        "import os, sys, time\nos.makedirs(sys.argv[1])\n"
        "open(sys.argv[1] + '/pid', 'w').write(str(os.getpid()))\ntime.sleep(60)"
    )
    jobs = [(["-c", waiting, str(tmp_path / n)], str(tmp_path / n)) for n in ("a", "b")]
    study = (
        "import sys; sys.path.insert(0, sys.argv[1])\nfrom benchmarks import reproduce_small as rs\n"
        f"rs.exit_on_sigterm()\nrs.run_students({jobs!r}, {str(tmp_path / 'wall.json')!r}, parallel=2)"
    )
    process = subprocess.Popen([sys.executable, "-c", study, ROOT])
    pid_files = [tmp_path / n / "pid" for n in ("a", "b")]
    deadline = time.time() + 60
    while not all(f.exists() and f.read_text() for f in pid_files) and time.time() < deadline:
        time.sleep(0.2)
    runs = [int(f.read_text()) for f in pid_files]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    for pid in runs:
        with pytest.raises(ProcessLookupError):  # gone, not orphaned
            os.kill(pid, 0)


def test_a_run_another_machine_recorded_stands_in_and_is_not_trained_again(tmp_path):
    from benchmarks.recorded import Recorded

    protocol = rs.Protocol(rates=(0.1,), seeds=2)
    old = tmp_path / "old"
    _finished_run(old / "teacher", 0.8348, 0.8348, 10.0)
    _finished_run(old / "r0.1" / "kd_s0", 0.64, 0.65, 60.0)
    header, rows = rs.summarize(protocol, str(old), ["kd"], {})
    results = tmp_path / "reproduce_small.json"
    results.write_text(json.dumps({**header, "results": rows}))  # as write_results lays it out
    recorded = Recorded.read(str(results), ("rate", "method"))
    assert set(recorded.runs) == {(0.1, "kd", 0)} and [t["last_accuracy"] for t in recorded.teachers["teacher"]] == [
        0.8348
    ]

    new = tmp_path / "new"  # another machine: no run directories
    runs = [d for _, d in rs.jobs(protocol, str(new), "data", ["none", "kd"], 1, recorded)]
    assert f"{new}/r0.1/kd_s0" not in runs and f"{new}/r0.1/kd_s1" in runs and f"{new}/r0.1/none_s0" in runs
    _finished_run(new / "r0.1" / "kd_s1", 0.66, 0.66, 60.0)
    header, rows = rs.summarize(protocol, str(new), ["kd"], {}, recorded=recorded)
    (kd,) = rows
    assert [(r["seed"], r.get("recorded", False)) for r in kd["runs"]] == [(0, True), (1, False)]
    assert kd["last_mean"] == pytest.approx(0.65) and kd["runs"][0]["curve"] == [0.65, 0.64]
    assert header["teacher"]["recorded"] and header["wall_seconds_total"] == pytest.approx(10.0 + 60.0 + 60.0)

    _finished_run(new / "teacher", 0.8348, 0.8348, 10.0)
    rs.check_teacher_matches_record(protocol, str(new), recorded)  # the same teacher: the records stand
    _finished_run(tmp_path / "other" / "teacher", 0.8351, 0.8351, 10.0)
    with pytest.raises(RuntimeError, match=r"differs from the one the results file records.*--rerun_recorded"):
        rs.check_teacher_matches_record(protocol, str(tmp_path / "other"), recorded)
    # kept within --teacher_tolerance, the report names the recorded teacher beside the one trained here
    rs.check_teacher_matches_record(protocol, str(tmp_path / "other"), recorded, tolerance=0.001)
    header, rows = rs.summarize(protocol, str(tmp_path / "other"), ["kd"], {}, recorded=recorded)
    assert header["teacher"]["last_accuracy"] == 0.8351 and "recorded" not in header["teacher"]
    assert [t["last_accuracy"] for t in header["other_teachers"]] == [0.8348]
    assert "Recorded students also learnt from a teacher at 83.48 % (another CPU)." in rs.markdown_table(header, rows)
