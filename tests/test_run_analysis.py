"""The analysis tables the docs generate from the results files: which runs they pair, compare and report."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import run_analysis  # noqa: E402


def _run(seed, validation, test, ce=(2.0, 0.2), kept=None, terms=None, **extra):
    losses = {"loss/cross_entropy": list(ce), "loss/total": [9.0, 1.0], "loss/weight_decay": [0.3, 0.3]}
    losses |= {f"loss/{k}": list(v) for k, v in (terms or {}).items()}
    if kept is not None:
        losses |= {"distill/clip_ratio": [kept / 2, kept], "distill/clipped_fraction": [1.0, 0.9]}
    return {"seed": seed, "validation": validation, "test": test, "losses": losses, **extra}


def _row(method, runs, factor="paper_schedule"):
    mean = lambda key: sum(r[key] for r in runs) / len(runs)  # noqa: E731
    return {"factor": factor, "method": method, "seeds": len(runs), "runs": runs, "validation": mean("validation"),
            "test": mean("test"), "validation_std": 0.0, "test_std": 0.0, "phase1_loss": None}  # fmt: skip


def test_the_clip_pairs_are_same_seed_and_counted_on_validation():
    rows = [
        _row("iep", [_run(0, 0.80, 0.79, kept=0.06, terms={"interim": (9, 0.6)}), _run(1, 0.81, 0.80, kept=0.06)]),
        _row("iep_termclip", [_run(1, 0.80, 0.81, kept=0.12),
                              _run(0, 0.82, 0.80, kept=0.12, terms={"interim": (9, 0.4)})]),
        _row("iep_bb", [_run(0, 0.79, 0.78)]),  # no per-term run of IEP+BB: no pair
    ]  # fmt: skip
    pairs = run_analysis.same_seed_clip_pairs(rows)
    assert [(m, p["seed"], q["seed"]) for m, p, q in pairs] == [("iep", 0, 0), ("iep", 1, 1)]
    table = "\n".join(run_analysis.clip_pairs_table(rows))
    assert "| iep | 0 | 80.00 → 82.00 | 79.00 → 80.00 | 0.060 → 0.120 | 0.90 → 0.90 | 0.200 → 0.200 |" in table
    assert "interim 0.600 → 0.400" in table
    # seed 0 +2.00, seed 1 −1.00: one of two ahead, mean +0.50
    assert "ahead on validation in 1 of 2 pairs (mean +0.50 points)" in table
    assert run_analysis.clip_pairs_table(rows[2:]) == ["No seed has run with both clips yet."]


def test_below_vanilla_rows_sit_beside_the_vanilla_run_of_their_seed():
    vanilla = _row("none", [_run(0, 0.73, 0.71, ce=(1.99, 0.09)), _run(1, 0.74, 0.72)])
    dml = _row("dml", [_run(1, 0.72, 0.72, ce=(2.1, 0.14), terms={"mutual": (0.3, 0.09)})])
    co = _row("co", [_run(0, 0.81, 0.80)])
    table = "\n".join(run_analysis.below_vanilla_table([vanilla, dml, co]))
    assert "| dml | 1 | 72.00 / 72.00 | 74.00 / 72.00 | 2.100 → 0.140 (2.000 → 0.200) | mutual 0.300 → 0.090 |" in table
    assert "| co |" not in table and "| none |" not in table
    everyone_above = run_analysis.below_vanilla_table([vanilla, co])
    assert everyone_above == ["Every method is above its vanilla student on validation."]


def test_the_fit_table_gives_each_gain_and_what_is_left_of_the_fit():
    rows = [
        _row("none", [_run(0, 0.40, 0.40, ce=(2.7, 0.12))]),
        _row("co", [_run(0, 0.62, 0.61, ce=(2.6, 0.30)), _run(1, 0.62, 0.63, ce=(2.6, 0.34))]),
        _row("iep", [_run(0, 0.50, 0.50, kept=0.05, pre_phase_steps={"pre_phase": 60})]),
    ]
    table = run_analysis.fit_and_clip_table(rows)
    assert table[2].startswith("| co | 2 | 62.00 ± 0.00 | +22.00 | 0.320 | — | — |")
    assert table[3].startswith("| iep | 1 | 50.00 | +10.00 | 0.200 | 0.050 | 60 |")
    assert table[4].startswith("| none | 1 | 40.00 | — | 0.120 |")


def test_a_control_sits_beside_the_same_seed_at_100_epochs_against_the_vanilla_of_its_length():
    base = [
        _row("none", [_run(0, 0.40, 0.40, ce=(2.7, 0.138)), _run(1, 0.41, 0.41)], "rate_0.01"),
        _row("co", [_run(1, 0.60, 0.60), _run(0, 0.62, 0.61, ce=(2.6, 0.31))], "rate_0.01"),
        _row("iep", [_run(0, 0.50, 0.50, pre_phase_steps={"pre_phase": 60}, phase1_loss=2.59)], "rate_0.01"),
    ]
    main_steps = [
        _row("co", [_run(0, 0.66, 0.66, ce=(2.6, 0.2))], "rate_0.01_main_steps"),
        _row("none", [_run(0, 0.42, 0.42, ce=(2.7, 0.001))], "rate_0.01_main_steps"),
    ]
    table = run_analysis.control_table(base, main_steps)
    assert table[2:] == [  # best first; co's gains against the vanilla of 100 epochs, then of 1,167
        "| co | 0 | 61.00 → 66.00 | +21.00 → +24.00 | 0.310 → 0.200 | — | — |",
        "| none | 0 | 40.00 → 42.00 | — | 0.138 → 0.001 | — | — |",
    ]
    pre_phase = [_row("iep", [_run(0, 0.55, 0.55, pre_phase_steps={"pre_phase": 700}, phase1_loss=1.5)])]
    # no vanilla run of its own: both gains against the 100-epoch vanilla of the same seed
    assert run_analysis.control_table(base, pre_phase)[2] == (
        "| iep | 0 | 50.00 → 55.00 | +10.00 → +15.00 | 0.200 → 0.200 | 60 → 700 | 2.59 → 1.50 |"
    )
    assert run_analysis.control_table(base, []) == ["No run of this control has finished yet."]
