"""benchmarks/protocol_study.py: each factor's commands, selection, gaps and overhead (no training here)."""

import dataclasses
import json
import os
import statistics

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from benchmarks import protocol_study as ps
from benchmarks import reproduce_small as rs
from benchmarks import study_design as design
from benchmarks import study_report as report

STUDY = ps.Study(rs.FULL, "root", "data", seeds=2)


def _flags(command: list[str]) -> dict[str, str]:
    return dict(c[2:].split("=", 1) if "=" in c else (c[2:], "") for c in command if c.startswith("--"))


def test_each_factor_changes_only_its_own_flags():
    base = _flags(ps.student_run(STUDY, "baseline", ps.FACTORS["baseline"], "iep", 0)[0])
    assert base["teacher"] == "root/teacher" and base["iep_module_steps"] == "200" and base["epochs"] == "15"
    assert base["validation_fraction"] == "0.1" and base["eval_split"] == "validation" and base["eval_every"] == "5"
    assert base["dropout"] == "0" and "noiep_clip" not in base
    expected = {
        "module_20_epochs": ("iep", {"iep_module_epochs": "20"}, {"iep_module_steps"}),
        "dropout_0.3": ("iep", {"dropout": "0.3"}, set()),
        "wide_teacher": ("iep", {"teacher": "root/teacher_wrn-16-4"}, set()),
        "epochs_30": ("iep", {"epochs": "30"}, set()),
        "no_clip": ("iep", {"noiep_clip": ""}, set()),
        "paper_schedule": ("iep", {"epochs": "100", "iep_module_epochs": "20"}, {"iep_module_steps"}),
    }
    for name, (method, changed, dropped) in expected.items():
        command, run_dir = ps.student_run(STUDY, name, ps.FACTORS[name], method, 1)
        got = _flags(command)
        assert run_dir == f"root/{name}/r0.1/{method}_s1" == got["run_dir"]
        differs = {k for k in base.keys() | got.keys() if base.get(k) != got.get(k)} - {"run_dir", "seed"}
        assert differs == set(changed) | dropped, name
        assert all(got[k] == v for k, v in changed.items()), name
    vanilla = _flags(ps.student_run(STUDY, "baseline", ps.FACTORS["baseline"], "none", 0)[0])
    assert "teacher" not in vanilla and "iep_module_steps" not in vanilla


def test_teacher_holds_out_the_students_validation_split():
    command, run_dir = ps.teacher_run(STUDY, ps.FACTORS["wide_teacher"])
    got = _flags(command)
    assert run_dir == "root/teacher_wrn-16-4" == got["run_dir"] and got["arch"] == "wrn-16-4"
    assert got["validation_fraction"] == "0.1" and got["rate"] == "1.0"
    assert ps.teacher_run(STUDY, ps.FACTORS["dropout_0.3"])[1] == "root/teacher"  # students' dropout only


def test_every_command_parses_with_train_flags():
    """A misspelt flag would fail hours into the study: every command of every factor must parse."""
    from iep.apps import train  # noqa: F401 (defines train.py's flags)

    commands = [ps.teacher_run(STUDY, f)[0] for f in ps.FACTORS.values()]
    commands += [ps.student_run(STUDY, n, f, m, 0)[0] for n, f in ps.FACTORS.items() for m in ps.METHODS]
    paper = ps.FACTORS["paper_schedule"]
    commands += [ps.student_run(STUDY, "paper_schedule", paper, m, 0)[0] for m in ps.TABLE_METHODS]
    for command in commands:
        with flagsaver.flagsaver():
            flags.FLAGS(command)  # raises on an unknown flag or a bad value


def test_the_table_runs_every_method_with_a_teacher_network_and_its_reference_module_phase():
    from iep.methods import METHODS as BUILT_IN

    assert set(ps.TABLE_METHODS) == set(BUILT_IN) - {"static_kd"} | {
        "iep_termclip",
        "iep_bb_termclip",
        "lskd",
        "mlkd_authors_lr",
        "none_decay_all",
        "kd_mdistiller",
        "dist_imagenet",
        "reviewkd_authors",
    }
    paper = ps.FACTORS["paper_schedule"]
    mhgd_short = _flags(ps.student_run(STUDY, "baseline", ps.FACTORS["baseline"], "mhgd", 0)[0])
    mhgd_paper = _flags(ps.student_run(STUDY, "paper_schedule", paper, "mhgd", 0)[0])
    assert mhgd_short["distill_args"] == "pre_phase_steps=200"  # the short protocol's module steps
    assert "distill_args" not in mhgd_paper and "iep_module_epochs" not in mhgd_paper  # MHGD's own 40 epochs
    assert ps.run_source("module_20_epochs", ps.FACTORS["module_20_epochs"], "mhgd") == "module_20_epochs"
    command, run_dir = ps.student_run(STUDY, "paper_schedule", paper, "iep_bb_termclip", 1)
    got = _flags(command)
    assert run_dir == "root/paper_schedule/r0.1/iep_bb_termclip_s1" == got["run_dir"]
    assert got["distill"] == "iep_bb" and got["distill_args"] == "clip_terms=per_term"
    assert sum(c.startswith("--distill_args=") for c in command) == 1  # the variant's clip over the table's sum
    iep_bb = _flags(ps.student_run(STUDY, "paper_schedule", paper, "iep_bb", 1)[0])
    assert iep_bb["distill_args"] == "clip_terms=sum"  # the clip its rows were trained with, not today's default
    assert ps.variant_of("iep_bb_termclip") == ("iep_bb", ["--distill_args=clip_terms=per_term"])
    assert got["iep_module_epochs"] == "20" and "iep_module_steps" not in got and got["epochs"] == "100"
    assert [c for c in command if c.startswith("--run_dir=")] == [f"--run_dir={run_dir}"]  # one run dir only
    kd = _flags(ps.student_run(STUDY, "paper_schedule", paper, "kd", 0)[0])
    assert kd["distill"] == "kd" and "distill_args" not in kd and kd["teacher"] == "root/teacher"
    assert ps.variant_of("kd") == ("kd", [])
    lskd = _flags(ps.student_run(STUDY, "baseline", ps.FACTORS["baseline"], "lskd", 0)[0])
    assert lskd["distill"] == "kd" and lskd["distill_args"] == "setting=lskd" and lskd["epochs"] == "15"
    decay_all = _flags(ps.student_run(STUDY, "paper_schedule", paper, "none_decay_all", 0)[0])
    assert decay_all["distill"] == "none" and decay_all["distill_args"] == "decay=every_variable"
    assert "teacher" not in decay_all  # train.py refuses a teacher with --distill=none
    mlkd = _flags(ps.student_run(STUDY, "baseline", ps.FACTORS["baseline"], "mlkd_authors_lr", 0)[0])
    assert (mlkd["distill"], mlkd["lr"], mlkd["batch_size"]) == ("mlkd", "0.025", "64")  # the last flag wins


def test_students_run_in_parallel_after_the_teacher(tmp_path, monkeypatch):
    study = ps.Study(rs.FULL, str(tmp_path), seeds=1)
    calls = []

    def run_job(command, run_dir, wall_times, env=None, log_path=None):
        calls.append((os.path.relpath(run_dir, study.root), env is not None, log_path is not None))

    monkeypatch.setattr(rs, "run_job", run_job)
    ps.run_factors(study, ["paper_schedule"], ["kd", "dkd"], parallel=2)
    assert calls[0] == ("teacher", False, False)  # alone, first
    assert sorted(calls[1:]) == [("paper_schedule/r0.1/dkd_s0", True, True), ("paper_schedule/r0.1/kd_s0", True, True)]


def test_an_unknown_factor_or_method_names_its_flag_and_the_choices():
    assert ps.unknown_choice(["paper_schedule"], ["iep", "nst", "iep_termclip"], ["auto"]) is None
    error = ps.unknown_choice(["paper_schedule"], ["iep", "bogus"], ["auto"])
    assert error.startswith("unknown --methods ['bogus']; choose from ['none', ") and error.endswith("(or all)")
    assert "'mlkd_authors_lr'" in error  # the variants are choices too
    assert ps.unknown_choice(["bogus"], ["iep"], ["auto"]).startswith("unknown --factors ['bogus']; choose from ['")
    assert ps.unknown_choice(["baseline"], ["iep"], ["baseline"]).startswith("unknown --combine ['baseline']")


def test_a_factor_reuses_the_baseline_where_it_cannot_change_the_method():
    own = {(n, m): ps.run_source(n, f, m) != "baseline" for n, f in ps.FACTORS.items() for m in ps.METHODS}
    assert not any(own[("baseline", m)] for m in ps.METHODS)
    assert [m for m in ps.METHODS if own[("module_20_epochs", m)]] == ["iep", "iep_bb"]
    assert [m for m in ps.METHODS if own[("no_clip", m)]] == ["iep", "iep_bb"]
    assert [m for m in ps.METHODS if own[("wide_teacher", m)]] == ["iep", "iep_bb", "fitnet", "co"]
    assert all(own[("dropout_0.3", m)] and own[("epochs_30", m)] and own[("paper_schedule", m)] for m in ps.METHODS)
    fitnet = _flags(ps.student_run(STUDY, "paper_schedule", ps.FACTORS["paper_schedule"], "fitnet", 0)[0])
    assert fitnet["epochs"] == "100" and "iep_module_epochs" not in fitnet  # the module phase is IEP's alone


def test_a_variant_sees_a_factor_as_its_distill_method_does():
    """A variant is its `--distill` method with flags: IEP's variants have IEP's module phase and clip, KD's and
    MLKD's have neither, so a module or clip factor reuses their baseline run."""
    for name in ("module_20_epochs", "no_clip"):
        factor = ps.FACTORS[name]
        assert ps.run_source(name, factor, "iep_termclip") == name
        assert ps.run_source(name, factor, "lskd") == "baseline"
        assert ps.run_source(name, factor, "mlkd_authors_lr") == "baseline"
    lskd = _flags(ps.student_run(STUDY, "module_20_epochs", ps.FACTORS["module_20_epochs"], "lskd", 0)[0])
    assert lskd["distill_args"] == "setting=lskd" and "iep_module_epochs" not in lskd
    termclip = _flags(ps.student_run(STUDY, "no_clip", ps.FACTORS["no_clip"], "iep_termclip", 0)[0])
    assert "noiep_clip" in termclip and termclip["iep_module_steps"] == "200"


def test_a_combination_reuses_the_single_factors_runs_it_cannot_add_to():
    combined = ps.combined_factor(["module_20_epochs", "epochs_30"])
    sources = {m: ps.run_source("combined", combined, m) for m in ps.METHODS}
    # FitNet, CO and the vanilla student see only the 30 epochs; IEP sees both factors: a run of its own.
    assert sources == {"none": "epochs_30", "iep": "combined", "iep_bb": "combined", "fitnet": "epochs_30",
                       "co": "epochs_30"}  # fmt: skip
    assert ps.run_source("module_20_epochs", ps.FACTORS["module_20_epochs"], "co") == "baseline"
    assert all(ps.run_source(n, f, "iep") == n for n, f in ps.FACTORS.items())


def test_a_combination_trains_only_the_runs_no_single_factor_has(tmp_path, monkeypatch):
    study = ps.Study(rs.FULL, str(tmp_path), seeds=2)
    trained = []
    monkeypatch.setattr(
        rs, "run_job", lambda command, run_dir, wall: trained.append(os.path.relpath(run_dir, tmp_path))
    )
    ps.run_combined(study, ["module_20_epochs", "epochs_30"], list(ps.METHODS))
    assert trained == ["teacher", *(f"combined/r0.1/{m}_s{s}" for s in (0, 1) for m in ("iep", "iep_bb"))]
    assert json.loads((tmp_path / "combined.json").read_text()) == {"factors": ["module_20_epochs", "epochs_30"]}


def _row(factor, method, validation, test=None, gain=None):
    return {"factor": factor, "method": method, "validation": validation, "test": test or validation,
            "validation_gain": gain}  # fmt: skip


def test_combination_takes_protocol_factors_that_raised_both_iep_variants():
    rows = [
        _row("dropout_0.3", "iep", 0.7, gain=0.01),
        _row("dropout_0.3", "iep_bb", 0.7, gain=0.002),
        _row("epochs_30", "iep", 0.7, gain=0.03),
        _row("epochs_30", "iep_bb", 0.7, gain=-0.001),  # one variant fell: not combined
        _row("no_clip", "iep", 0.7, gain=0.05),  # a diagnostic: never combined
        _row("no_clip", "iep_bb", 0.7, gain=0.05),
        _row("module_20_epochs", "iep", 0.7, gain=0.02),
        _row("module_20_epochs", "iep_bb", 0.7, gain=0.02),
        _row("paper_schedule", "iep", 0.8, gain=0.1),  # the destination, not a suspect: never combined
        _row("paper_schedule", "iep_bb", 0.8, gain=0.1),
    ]
    chosen = ps.auto_combination(rows)
    assert chosen == ["module_20_epochs", "dropout_0.3"]
    assert ps.combined_factor(chosen) == ps.Factor(module_epochs=20, dropout=0.3)
    assert ps.combined_factor(["wide_teacher", "epochs_30"]) == ps.Factor(teacher_arch="wrn-16-4", epochs=30)


def test_gap_is_to_the_better_rival_and_unchanged_methods_inherit_the_baseline():
    rows = [
        _row("baseline", "none", 0.59),
        _row("baseline", "iep", 0.67),
        _row("baseline", "iep_bb", 0.68, test=0.66),
        _row("baseline", "fitnet", 0.73),
        _row("baseline", "co", 0.74, test=0.70),
        _row("module_20_epochs", "iep", 0.68),
        _row("module_20_epochs", "iep_bb", 0.69),
        _row("dropout_0.3", "iep", 0.70),  # FitNet and CO not run yet: no gap
    ]
    rows += [_row("epochs_30", m, v) for m, v in (("none", 0.65), ("fitnet", 0.77), ("co", 0.78))]
    rows += [_row("combined", "iep", 0.75), _row("combined", "iep_bb", 0.80)]
    factors = {n: ps.FACTORS[n] for n in ("baseline", "module_20_epochs", "dropout_0.3")}
    factors["combined"] = ps.combined_factor(["module_20_epochs", "epochs_30"])
    by_factor = {g["factor"]: g for g in ps.gaps(rows, factors)}
    assert by_factor["combined"]["validation"] == {"none": 0.65, "iep": 0.75, "iep_bb": 0.80, "fitnet": 0.77,
                                                   "co": 0.78}  # fmt: skip
    assert by_factor["combined"]["iep_bb_gap_validation"] == pytest.approx(0.80 - 0.78)
    assert by_factor["baseline"]["iep_bb_gap_validation"] == pytest.approx(0.68 - 0.74)
    assert by_factor["baseline"]["iep_bb_gap_test"] == pytest.approx(0.66 - 0.73)  # FitNet leads on test
    assert by_factor["module_20_epochs"]["validation"]["co"] == 0.74  # inherited
    assert by_factor["module_20_epochs"]["iep_gap_validation"] == pytest.approx(0.68 - 0.74)
    assert by_factor["dropout_0.3"]["iep_gap_validation"] is None
    assert "fitnet" not in by_factor["dropout_0.3"]["validation"]  # dropout changes FitNet: never inherited


def _finished_student(path, validation, test, epochs, evaluated, eval_seconds, clip=None, losses=None):
    """`losses`: term → per-epoch values, written as the trainer's `loss/<term>` epoch means."""
    path.mkdir(parents=True)
    history = []
    for epoch in range(1, epochs + 1):
        entry = {"epoch": epoch, "seconds": 10.0, "eval_accuracy": None, "eval_seconds": None}
        if epoch in evaluated:
            entry.update(eval_accuracy=validation, eval_seconds=eval_seconds)
        if clip is not None:
            entry["distill/clip_ratio"] = clip
        entry.update({f"loss/{term}": values[epoch - 1] for term, values in (losses or {}).items()})
        history.append(entry)
    metrics = {"finished": True, "last_accuracy": validation, "best_accuracy": validation, "history": history}
    (path / "metrics.json").write_text(json.dumps(metrics))
    (path / "study_test.json").write_text(json.dumps({"top1": test}))  # evaluated once already: not again


def test_summary_overhead_and_table_from_finished_runs(tmp_path):
    study = ps.Study(rs.FULL, str(tmp_path), seeds=2)
    base = tmp_path / "baseline" / "r0.1"
    _finished_student(base / "none_s0", 0.58, 0.57, 15, {5, 10, 15}, 2.0)
    _finished_student(base / "none_s1", 0.60, 0.61, 15, {5, 10, 15}, 2.0)
    _finished_student(base / "iep_s0", 0.67, 0.66, 15, {5, 10, 15}, 3.0, clip=0.04)
    (base / "iep_s1").mkdir()  # unfinished: ignored
    _finished_student(tmp_path / "dropout_0.3" / "r0.1" / "none_s1", 0.63, 0.62, 15, {5, 10, 15}, 2.0)
    wall = {str(base / "none_s0"): 200.0}
    dropout = ps.summarize(study, ["baseline", "dropout_0.3"], wall)[-1]
    assert dropout["factor"] == "dropout_0.3" and dropout["seeds"] == 1
    assert dropout["validation_gain"] == pytest.approx(0.63 - 0.59)  # against the baseline's mean
    assert dropout["validation_gain_per_seed"] == [pytest.approx(0.63 - 0.60)]  # against its own seed
    rows = ps.summarize(study, ["baseline"], wall)
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"none", "iep"}
    assert by_method["none"]["validation"] == pytest.approx(0.59)
    assert by_method["none"]["test_std"] == pytest.approx(statistics.stdev([0.57, 0.61]))
    assert by_method["iep"]["seeds"] == 1 and by_method["iep"]["clip_ratio"] == pytest.approx(0.04)
    assert by_method["iep"]["phase1_loss"] is None  # no TensorBoard events in this fake run
    runs = [r for row in rows for r in row["runs"]]
    cost = ps.overhead(rows, [])
    # wall: 200 s (the script's clock) + 150 + 150 (epoch sums); 12 skipped evaluations each at 2, 2 and 3 s
    assert cost["wall_seconds_measured"] == pytest.approx(500.0) and cost["evaluations"] == 9
    assert cost["wall_seconds_if_every_epoch_evaluated"] == pytest.approx(500.0 + 12 * (2 + 2 + 3))
    assert len(runs) == 3
    table = ps.markdown(rows, ps.gaps(rows, {"baseline": ps.FACTORS["baseline"]}))
    # vanilla: validation 0.59, test 0.59 (the means of its two seeds)
    # the baseline alone: no gain columns (all 0); IEP's clip ratio is there, no row has a phase-1 loss
    assert table.startswith("| factor | method | seeds | val ± std | test ± std | − vanilla (val / test) | clip ratio "
                            "| train s |\n|---|---|---|---|---|---|---|---|\n")  # fmt: skip
    assert "| baseline | iep | 1 | 67.00 | 66.00 | +8.00 / +7.00 | 0.040 | 150 |" in table  # one seed: no spread
    assert "| baseline | none | 2 | 59.00 ± " in table and "Gap to the better of FitNet and CO" in table
    without_iep = [r for r in rows if r["method"] == "none"]
    plain = ps.markdown(without_iep, ps.gaps(without_iep, {"baseline": ps.FACTORS["baseline"]}))
    assert "Gap to" not in plain and "clip ratio" not in plain
    with_factor = ps.markdown(ps.summarize(study, ["baseline", "dropout_0.3"], wall), [])
    assert "| gain (val) |" in with_factor and "| dropout_0.3 | none | 1 | 63.00 | +4.00 | 62.00 |" in with_factor


def _finished_teacher(path, test, loss):
    path.mkdir(parents=True)
    history = [{"epoch": 1, "seconds": 10.0, "train_loss": loss, "eval_accuracy": test, "eval_seconds": 1.0}]
    metrics = {"finished": True, "arch": "wrn-28-1", "last_accuracy": test, "history": history}
    (path / "metrics.json").write_text(json.dumps(metrics))


def _results_file(path, study, factor, runs, teacher):
    """A committed results file as report() writes it, made from finished runs that are then deleted."""
    rows = ps.summarize(study, [factor])
    teachers = ps.teacher_records(study, [factor], {})
    (path).write_text(json.dumps({"teachers": teachers, "results": rows}))
    for run in [*runs, teacher]:
        for f in run.iterdir():
            f.unlink()
        run.rmdir()


def test_a_study_resumed_elsewhere_keeps_recorded_runs_and_trains_only_the_rest(tmp_path, monkeypatch):
    study = ps.Study(rs.FULL, str(tmp_path / "old"), seeds=2)
    base = tmp_path / "old" / "paper_schedule" / "r0.1"
    old_runs = [base / "iep_s0", base / "none_s0"]
    _finished_student(old_runs[0], 0.80, 0.79, 100, {100}, 2.0, clip=0.05)
    _finished_student(old_runs[1], 0.74, 0.72, 100, {100}, 2.0)
    _finished_teacher(tmp_path / "old" / "teacher", 0.8348, 0.7090)
    results = tmp_path / "paper_schedule.json"
    _results_file(results, study, "paper_schedule", old_runs, tmp_path / "old" / "teacher")
    recorded = ps.Recorded.read(str(results), ("factor", "method"))
    assert set(recorded.runs) == {("paper_schedule", "iep", 0), ("paper_schedule", "none", 0)}
    assert [t["final_loss"] for t in recorded.teachers["teacher"]] == [0.7090]

    # Another machine: no run directories. Its retrained teacher matches, so only the missing cells train.
    study = ps.Study(rs.FULL, str(tmp_path / "new"), seeds=2)
    trained = []

    def run_job(command, run_dir, wall_times):
        trained.append(os.path.relpath(run_dir, study.root))
        if run_dir.endswith("teacher"):
            _finished_teacher(tmp_path / "new" / "teacher", 0.8348, 0.7090)

    monkeypatch.setattr(rs, "run_job", run_job)
    ps.run_factors(study, ["paper_schedule"], ["none", "iep"], recorded)
    assert trained == ["teacher", "paper_schedule/r0.1/none_s1", "paper_schedule/r0.1/iep_s1"]

    # The report takes a run finished here over a record, and a record where nothing finished here.
    _finished_student(tmp_path / "new" / "paper_schedule" / "r0.1" / "iep_s1", 0.82, 0.81, 100, {100}, 2.0)
    (row,) = [r for r in ps.summarize(study, ["paper_schedule"], {}, recorded) if r["method"] == "iep"]
    assert [(r["seed"], r.get("recorded", False)) for r in row["runs"]] == [(0, True), (1, False)]
    assert row["validation"] == pytest.approx((0.80 + 0.82) / 2)
    assert ps.teacher_records(study, ["paper_schedule"], {}, recorded)[0].get("recorded") is None  # retrained

    # A retrained teacher that differs would mix students of two teachers: refused, naming the way out.
    _finished_teacher(tmp_path / "other" / "teacher", 0.8348, 0.7102)
    with pytest.raises(RuntimeError, match="rerun_recorded"):
        ps.check_teacher_matches_record(ps.Study(rs.FULL, str(tmp_path / "other")), ps.FACTORS["baseline"], recorded)
    # Another CPU trains a slightly different teacher: --teacher_tolerance keeps the records within it, and only so.
    _finished_teacher(tmp_path / "drift" / "teacher", 0.8360, 0.6542)
    drift = ps.Study(rs.FULL, str(tmp_path / "drift"))
    ps.check_teacher_matches_record(drift, ps.FACTORS["baseline"], recorded, tolerance=0.002)
    with pytest.raises(RuntimeError, match="rerun_recorded"):
        ps.check_teacher_matches_record(drift, ps.FACTORS["baseline"], recorded, tolerance=0.001)


def test_students_kept_within_the_tolerance_list_both_teachers_and_a_third_machine_may_match_either(tmp_path):
    paper = ps.FACTORS["paper_schedule"]
    amd = ps.Study(rs.FULL, str(tmp_path / "amd"), seeds=2)
    _finished_student(tmp_path / "amd" / "paper_schedule" / "r0.1" / "iep_s0", 0.80, 0.79, 100, {100}, 2.0)
    _finished_teacher(tmp_path / "amd" / "teacher", 0.8360, 0.6542)
    results = tmp_path / "paper_schedule.json"
    _results_file(results, amd, "paper_schedule", [tmp_path / "amd" / "paper_schedule" / "r0.1" / "iep_s0"],
                  tmp_path / "amd" / "teacher")  # fmt: skip
    recorded = ps.Recorded.read(str(results), ("factor", "method"))

    # A second CPU retrains the teacher 0.12 points higher; kept within the tolerance, the report lists both.
    intel = ps.Study(rs.FULL, str(tmp_path / "intel"), seeds=2)
    _finished_teacher(tmp_path / "intel" / "teacher", 0.8372, 0.6560)
    ps.check_teacher_matches_record(intel, paper, recorded, tolerance=0.005)
    teachers = ps.teacher_records(intel, ["paper_schedule"], {}, recorded)
    assert [(t["test"], t.get("recorded", False)) for t in teachers] == [(0.8372, False), (0.8360, True)]
    _finished_student(tmp_path / "intel" / "paper_schedule" / "r0.1" / "iep_s1", 0.81, 0.80, 100, {100}, 2.0)
    rows = ps.summarize(intel, ["paper_schedule"], {}, recorded)
    results.write_text(json.dumps({"teachers": teachers, "results": rows}))
    assert "\nThe students learnt from 2 teachers, one command retrained on different CPUs: 83.72 % test" in (
        ps.markdown(rows, [], teachers)
    )
    both = ps.Recorded.read(str(results), ("factor", "method"))
    assert [t["test"] for t in both.teachers["teacher"]] == [0.8372, 0.8360]

    # A third machine whose teacher is identical to either one matches without a tolerance (its report lists the
    # other as recorded); one between them must be within the tolerance of both.
    for test, loss in ((0.8360, 0.6542), (0.8372, 0.6560)):
        third = ps.Study(rs.FULL, str(tmp_path / f"third_{test}"))
        _finished_teacher(tmp_path / f"third_{test}" / "teacher", test, loss)
        ps.check_teacher_matches_record(third, paper, both)
        listed = ps.teacher_records(third, ["paper_schedule"], {}, both)
        assert sorted((t["test"], t.get("recorded", False)) for t in listed) == sorted(
            [(test, False), (0.8360 + 0.8372 - test, True)]
        )
    _finished_teacher(tmp_path / "between" / "teacher", 0.8366, 0.6550)
    between = ps.Study(rs.FULL, str(tmp_path / "between"))
    with pytest.raises(RuntimeError, match="--teacher_tolerance"):
        ps.check_teacher_matches_record(between, paper, both)
    ps.check_teacher_matches_record(between, paper, both, tolerance=0.001)  # 0.06 points from each
    with pytest.raises(RuntimeError, match="--rerun_recorded"):
        ps.check_teacher_matches_record(between, paper, both, tolerance=0.0005)


def test_the_table_says_which_teacher_taught_how_many_runs_when_there_were_two():
    from benchmarks.recorded import teachers_sentence

    rows = [{"runs": [{"teacher_test": 0.836}, {"teacher_test": 0.8372}, {"teacher_test": 0.836}]},
            {"runs": [{"teacher_test": None}]}]  # fmt: skip  # the vanilla student has none
    one = [{"test": 0.836, "cpu": "AMD EPYC"}]
    assert teachers_sentence(rows, one) is None
    two = [*one, {"test": 0.8372, "cpu": "Intel(R) Xeon(R) Processor", "recorded": True}]
    assert teachers_sentence(rows, two) == (
        "The students learnt from 2 teachers, one command retrained on different CPUs: 83.60 % test (AMD EPYC; "
        "2 runs), 83.72 % test (Intel(R) Xeon(R) Processor; 1 run)"
    )
    same_accuracy = [one[0], {"test": 0.836, "cpu": "Intel"}]  # which taught which cannot be told: no counts
    assert teachers_sentence(rows, same_accuracy).endswith("83.60 % test (AMD EPYC), 83.60 % test (Intel)")


def test_a_report_covers_only_the_factors_asked_for(tmp_path):
    """Studies share a root: the 100-epoch table must not pick up the 15-epoch runs beside it."""
    study = ps.Study(rs.FULL, str(tmp_path), seeds=1)
    assert ps.report_factors(study, ["paper_schedule"]) == ["paper_schedule"]
    assert ps.report_factors(study, ["baseline", "no_clip", "combined"]) == ["baseline", "no_clip"]  # none chosen
    (tmp_path / "combined.json").write_text(json.dumps({"factors": ["epochs_30"]}))
    assert ps.report_factors(study, [*ps.FACTORS, "combined"]) == [*ps.FACTORS, "combined"]
    _finished_student(tmp_path / "baseline" / "r0.1" / "kd_s0", 0.61, 0.60, 15, {15}, 2.0)
    _finished_student(tmp_path / "paper_schedule" / "r0.1" / "kd_s0", 0.74, 0.73, 100, {100}, 2.0)
    rows = ps.summarize(study, ps.report_factors(study, ["paper_schedule"]))
    assert [(r["factor"], r["method"], r["validation"]) for r in rows] == [("paper_schedule", "kd", 0.74)]
    assert "gain" not in ps.markdown(rows, [])  # no baseline run of kd to compare with: no empty gain columns


def test_a_method_below_vanilla_reports_its_loss_terms_first_and_last(tmp_path):
    study = ps.Study(rs.FULL, str(tmp_path), seeds=2)
    base = tmp_path / "baseline" / "r0.1"
    _finished_student(base / "none_s0", 0.60, 0.59, 3, {3}, 1.0, losses={"cross_entropy": [2.0, 1.5, 1.0]})
    for seed, kd_last in ((0, 0.4), (1, 0.2)):  # two seeds: the report averages them
        curve = {"cross_entropy": [2.2, 1.9, 1.6], "kd": [0.9, 0.7, kd_last]}
        _finished_student(base / f"kd_s{seed}", 0.55, 0.54, 3, {3}, 1.0, losses=curve)
    _finished_student(base / "at_s0", 0.65, 0.64, 3, {3}, 1.0, losses={"cross_entropy": [2.0, 1.0, 0.5]})
    rows = ps.summarize(study, ["baseline"])
    kd = next(r for r in rows if r["method"] == "kd")
    assert report.loss_curve(kd) == {"cross_entropy": (pytest.approx(2.2), pytest.approx(1.6)),
                                 "kd": (pytest.approx(0.9), pytest.approx(0.3))}  # fmt: skip
    table = ps.markdown(rows, [])
    assert "- baseline / kd: cross_entropy 2.200 → 1.600, kd 0.900 → 0.300" in table
    assert "/ at:" not in table  # above vanilla: not listed
    assert "Below the vanilla" not in ps.markdown([r for r in rows if r["method"] != "kd"], [])


def test_the_teacher_tolerance_is_a_fraction_and_a_figure_in_points_is_refused():
    import functools
    import types

    from absl import flags

    from benchmarks.recorded import define_rerun_flag

    values = flags.FlagValues()  # the flags alone, as the two studies define them
    define = {f"DEFINE_{kind}": functools.partial(getattr(flags, f"DEFINE_{kind}"), flag_values=values)
              for kind in ("float", "boolean")}  # fmt: skip
    define_rerun_flag(types.SimpleNamespace(**define))
    values(["study", "--teacher_tolerance=0.005"])
    assert values.teacher_tolerance == 0.005
    for wrong in ("0.5", "-0.001"):
        with pytest.raises(flags.IllegalFlagValueError, match="teacher_tolerance"):
            values(["study", f"--teacher_tolerance={wrong}"])


def test_the_report_lists_the_runs_still_to_train_and_where_each_stands(tmp_path, monkeypatch):
    import keras

    from iep.engine.checkpointing import EpochCheckpoints

    study = ps.Study(rs.FULL, str(tmp_path), seeds=2)
    base = tmp_path / "paper_schedule" / "r0.1"
    _finished_student(base / "none_s0", 0.74, 0.72, 100, {100}, 2.0)
    elsewhere = tmp_path / "elsewhere" / "iep_s0"  # a run another machine finished: only its record is here
    _finished_student(elsewhere, 0.80, 0.79, 100, {100}, 2.0, clip=0.05)
    record = ps.run_record(str(elsewhere), json.loads((elsewhere / "metrics.json").read_text()), "iep", 0, {})
    recorded = ps.Recorded(runs={("paper_schedule", "iep", 0): record})

    def stopped_at(run_dir, number: int, epochs_logged: int | None) -> None:  # a run killed after a save
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        EpochCheckpoints(str(run_dir), model, keras.optimizers.SGD()).save(number)
        if epochs_logged is not None:
            metrics = {"finished": False, "epochs_completed": epochs_logged, "epochs": 100, "history": []}
            (run_dir / "metrics.json").write_text(json.dumps(metrics))

    stopped_at(base / "fitnet_s0", 42, 12)  # 30 pre-phase passes, then 12 epochs
    stopped_at(base / "iep_s1", 2, None)  # inside its module phase: no epoch logged yet
    left = ps.still_to_train(study, ["paper_schedule"], ["none", "iep", "fitnet"], recorded)
    assert [(r["method"], r["seed"], r["state"]) for r in left] == [
        ("fitnet", 0, "12 of 100 epochs logged, checkpoint epoch-42"),
        ("none", 1, "not started"),
        ("iep", 1, "no epoch logged, checkpoint epoch-2"),
        ("fitnet", 1, "not started"),
    ]  # seed by seed, in the --methods order: the order the study trains them
    # A factor that cannot change a method reuses another factor's run: nothing of it is left to this one.
    assert ps.still_to_train(study, ["module_20_epochs"], ["fitnet"]) == []  # FitNet has no module phase

    monkeypatch.setattr(rs, "RESULTS_DIR", str(tmp_path / "results"))
    ps.report(study, "paper_schedule", recorded, ["paper_schedule"], ["none", "iep", "fitnet"])
    table = (tmp_path / "results" / "paper_schedule.md").read_text()
    assert table.endswith(
        "Still to train (4 runs of the 3 methods asked for, in the order this --methods list trains them): fitnet "
        "seed 0 (12 of 100 epochs logged, checkpoint epoch-42); none seed 1 (not started); iep seed 1 (no epoch "
        "logged, checkpoint epoch-2); fitnet seed 1 (not started).\n"
    )
    saved = json.loads((tmp_path / "results" / "paper_schedule.json").read_text())
    assert [r["method"] for r in saved["still_to_train"]] == ["fitnet", "none", "iep", "fitnet"]
    one_seed = ps.Study(rs.FULL, str(tmp_path), seeds=1)
    ps.report(one_seed, "paper_schedule", recorded, ["paper_schedule"], ["none", "iep"])
    assert (
        (tmp_path / "results" / "paper_schedule.md")
        .read_text()
        .endswith("\nEvery run of the 2 methods asked for has finished.\n")
    )  # vanilla's seed 0 here, IEP's recorded
    ps.report(one_seed, "paper_schedule", recorded, ["paper_schedule"], ["fitnet"])
    assert (
        (tmp_path / "results" / "paper_schedule.md")
        .read_text()
        .endswith(
            "(1 run of the 1 method asked for, in the order this --methods list trains them): fitnet seed 0 (12 of 100 "
            "epochs logged, checkpoint epoch-42).\n"
        )
    )
    ps.report(one_seed, "paper_schedule", recorded, ["paper_schedule"])  # no --methods list: no paragraph
    assert "Every run" not in (tmp_path / "results" / "paper_schedule.md").read_text()


def test_the_scarce_data_factors_and_their_step_matched_controls():
    """Rates 0.01/0.025/0.05 at the paper's budget; the controls at 0.01 give the main phase, or each pre-phase,
    the 10 % run's steps (so data scarcity is told apart from step scarcity)."""
    from iep.datasets.sampling import stratified_indices
    from iep.methods import default_pre_phase_steps

    labels = np.repeat(np.arange(10), design.CIFAR10_TRAIN_PER_CLASS)  # the split after the validation holdout
    for rate in (0.01, 0.025, 0.05, 0.1):
        assert ps.steps_per_epoch(rate) == len(stratified_indices(labels, rate)) // design.BATCH_SIZE
    seeds = {name: ps.FACTORS[name].seeds for name in design.SCARCE_DATA_FACTORS}
    assert seeds == {"rate_0.01": 3, "rate_0.025": 3, "rate_0.05": 2, "rate_0.01_main_steps": 1,
                     "rate_0.01_pre_phase_steps": 1, "rate_0.01_no_clip": 2}  # fmt: skip
    for name, rate in (("rate_0.01", "0.01"), ("rate_0.025", "0.025"), ("rate_0.05", "0.05")):
        command, run_dir = ps.student_run(STUDY, name, ps.FACTORS[name], "iep_bb", 2)
        got = _flags(command)
        assert (got["rate"], got["epochs"], got["iep_module_epochs"]) == (rate, "100", "20")
        assert run_dir == f"root/{name}/r{rate}/iep_bb_s2" and got["eval_every"] == "5"
    main = _flags(ps.student_run(STUDY, "rate_0.01_main_steps", ps.FACTORS["rate_0.01_main_steps"], "co", 0)[0])
    epochs, per_epoch = int(main["epochs"]), ps.steps_per_epoch(0.01)
    assert 0 <= epochs * per_epoch - 100 * ps.steps_per_epoch(0.1) < per_epoch  # the 10 % run's 3,500 steps
    assert epochs / int(main["eval_every"]) <= 21  # about 20 evaluations, as the 100-epoch runs
    control = ps.FACTORS["rate_0.01_pre_phase_steps"]
    iep = _flags(ps.student_run(STUDY, "rate_0.01_pre_phase_steps", control, "iep_bb_termclip", 0)[0])
    assert iep["iep_module_steps"] == str(default_pre_phase_steps("iep", 100 * ps.steps_per_epoch(0.1), 100))
    assert "iep_module_epochs" not in iep and iep["distill_args"] == "clip_terms=per_term"
    fitnet = _flags(ps.student_run(STUDY, "rate_0.01_pre_phase_steps", control, "fitnet", 0)[0])
    assert fitnet["distill_args"] == f"pre_phase_steps={round(0.3 * 100 * ps.steps_per_epoch(0.1))}"
    # the pre-phase control trains only the methods with a pre-phase; the others are rate_0.01's runs
    assert ps.run_source("rate_0.01_pre_phase_steps", control, "co") == "rate_0.01"
    students = ps.factor_students(STUDY, "rate_0.01_pre_phase_steps", control, design.SCARCE_DATA_METHODS)
    trained = {m for m, *_ in students}
    assert trained == {"iep_bb", "iep", "ft", "ab", "mhgd", "fitnet", "iep_termclip", "iep_bb_termclip"}
    main_steps = ps.FACTORS["rate_0.01_main_steps"]
    trained = [m for m, *_ in ps.factor_students(STUDY, "rate_0.01_main_steps", main_steps, design.SCARCE_DATA_METHODS)]
    assert trained == ["none", "iep_bb", "co", "dkd", "iep_bb_termclip"]
    no_clip = ps.FACTORS["rate_0.01_no_clip"]
    trained = [m for m, *_ in ps.factor_students(STUDY, "rate_0.01_no_clip", no_clip, design.SCARCE_DATA_METHODS)]
    assert trained == ["iep_bb", "iep"] * 2  # two seeds; the diagnostic's vanilla is rate_0.01's own run
    assert ps.run_source("rate_0.01_no_clip", no_clip, "none") == "rate_0.01"
    uncapped = _flags(ps.student_run(STUDY, "rate_0.01_no_clip", no_clip, "iep", 0)[0])
    assert "noiep_clip" in uncapped and uncapped["rate"] == "0.01"
    assert set(design.SCARCE_DATA_FACTORS) <= set(design.NOT_COMBINED)  # destinations, never combined
    # rate 0.05: a third seed for the top two on validation (within a seed spread) and the vanilla student
    rate_05 = ps.FACTORS["rate_0.05"]
    students = ps.factor_students(STUDY, "rate_0.05", rate_05, design.SCARCE_DATA_METHODS)
    students = [(method, seed) for method, seed, *_ in students]
    assert [m for m, seed in students if seed == 2] == ["none", "co", "iep_bb_termclip"]
    assert len(students) == 2 * len(design.SCARCE_DATA_METHODS) + 3 and max(seed for _, seed in students) == 2
    two_seeds = dataclasses.replace(rate_05, more_seeds=())
    for method in ("co", "at"):  # the seeds a factor gives are no part of a run: the runs trained stay the same
        assert ps.student_run(STUDY, "rate_0.05", rate_05, method, 1) == ps.student_run(
            STUDY, "rate_0.05", two_seeds, method, 1
        )


def test_each_method_is_measured_against_the_vanilla_with_its_weight_decay_rule():
    rows = [
        {
            "factor": "paper_schedule",
            "method": m,
            "validation": v,
            "test": v,
            "vanilla_factor": "paper_schedule",
            "seeds": 1,
            "validation_std": 0.0,
            "test_std": 0.0,
            "validation_gain": None,
            "test_gain": None,
            "clip_ratio": None,
            "phase1_loss": None,
            "train_seconds": 1.0,
            "runs": [],
        }  # fmt: skip
        for m, v in (("none", 0.70), ("none_decay_all", 0.72), ("pkt", 0.78), ("iep", 0.80), ("dist_imagenet", 0.75))
    ]
    vanillas = ps.vanilla_rows(rows)
    measured_by = {r["method"]: ps.vanilla_of(r, vanillas)["method"] for r in rows}
    assert measured_by == {"none": "none", "none_decay_all": "none", "pkt": "none_decay_all", "iep": "none",
                           "dist_imagenet": "none"}  # fmt: skip
    alone = [r for r in rows if r["method"] != "none_decay_all"]  # no such vanilla yet: the plain one
    assert ps.vanilla_of(alone[1], ps.vanilla_rows(alone))["method"] == "none"
    table = ps.markdown(rows, [])
    assert "| paper_schedule | pkt | 1 | 78.00 | 78.00 | +6.00 / +6.00 |" in table


def test_the_decay_rule_list_is_what_each_methods_distiller_does():
    from iep.methods import build_distiller, parse_distill_args
    from iep.nets import build_network
    from tests.helpers import IndexedLabels

    teacher, student = build_network("wrn-10-1", 10, name="t"), build_network("wrn-10-1", 10, name="s")
    for method in ps.TABLE_METHODS:
        distill, extra = ps.variant_of(method)
        options = parse_distill_args([a.split("=", 1)[1] for a in extra if a.startswith("--distill_args=")])
        data = IndexedLabels(np.arange(100) % 10) if distill == "crd" else None
        distiller = build_distiller(distill, teacher if distill != "none" else None, student, main_steps=10,
                                    epochs=1, seed=0, data=data, overrides=options)  # fmt: skip
        assert distiller.decay_every_variable == (method not in ps.DECAY_KERNELS_ONLY), method


def test_a_retired_row_is_reported_from_its_record_and_never_trained(tmp_path):
    study = ps.Study(rs.FULL, str(tmp_path), seeds=2)
    record = {"seed": 0, "validation": 0.77, "test": 0.76, "clip_ratio": None, "phase1_loss": None,
              "train_seconds": 1.0, "epochs": 100, "evaluations": 20, "eval_seconds": 1.0,
              "wall_seconds": 2.0}  # fmt: skip
    recorded = ps.Recorded(runs={("paper_schedule", "vid_shared_init", 0): record})
    rows = ps.summarize(study, ["paper_schedule"], {}, recorded)
    assert [(r["method"], r["seeds"], r["runs"][0]["recorded"]) for r in rows] == [("vid_shared_init", 1, True)]
    trained = [m for m, *_ in ps.factor_students(study, "paper_schedule", ps.FACTORS["paper_schedule"],
                                                  list(ps.TABLE_METHODS))]  # fmt: skip
    assert "vid_shared_init" not in trained and "vid" in trained


def test_the_runs_left_of_several_factors_are_named_by_factor_in_training_order(tmp_path):
    study = ps.Study(rs.FULL, str(tmp_path), seeds=2)
    left = ps.still_to_train(study, ["rate_0.01", "rate_0.05"], ["none"])
    # 3 seeds at 0.01; at 0.05 the vanilla student has a third (design.RATE_0_05_THIRD_SEED)
    assert [(r["factor"], r["seed"]) for r in left] == [("rate_0.01", s) for s in range(3)] + [
        ("rate_0.05", s) for s in range(3)
    ]
    line = ps.to_train_lines(left, ["none"])[-1]
    assert "Still to train (6 runs" in line and line.index("rate_0.01 none seed 0") < line.index("rate_0.05 none")
