"""The protocol study's tables and sentences, from its rows (benchmarks/protocol_study.py collects them from
the runs): accuracy per factor, IEP's gap to its rivals, the gain over the vanilla student with the same weight
decay rule, loss terms of the methods below it, and the runs still to train."""

from __future__ import annotations

import statistics

from benchmarks.docs_blocks import mean_spread
from benchmarks.recorded import teachers_sentence
from benchmarks.study_design import (
    DECAY_KERNELS_ONLY,
    FACTORS,
    METHODS,
    NOT_COMBINED,
    RIVALS,
    TABLE_METHODS,
    VANILLA,
    VANILLA_DECAY_ALL,
    Factor,
    run_source,
)


def known_mean(values: list) -> float | None:
    """The mean of the values that were measured (None: none was)."""
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def accuracy_table(rows: list[dict], factors: dict[str, Factor], split: str) -> dict[str, dict[str, float]]:
    """factor → method → mean accuracy on `split`; a method's run under a factor that cannot change it
    is the baseline's (in a combination, the one single factor's that can)."""
    by_key = {(r["factor"], r["method"]): r[split] for r in rows}
    table = {}
    for name, factor in factors.items():
        table[name] = {}
        for method in TABLE_METHODS:
            key = (run_source(name, factor, method), method)
            if key in by_key:
                table[name][method] = by_key[key]
    return table


def gaps(rows: list[dict], factors: dict[str, Factor]) -> list[dict]:
    """Per factor: IEP and IEP+BB minus the better of FitNet and CO, on validation and test (the study's question)."""
    out = []
    tables = {split: accuracy_table(rows, factors, split) for split in ("validation", "test")}
    for name in factors:
        row = {"factor": name}
        for split, table in tables.items():
            accuracy = table[name]
            rivals = [accuracy[m] for m in RIVALS if m in accuracy]
            row[split] = accuracy
            for method in ("iep", "iep_bb"):
                ready = method in accuracy and len(rivals) == len(RIVALS)
                row[f"{method}_gap_{split}"] = accuracy[method] - max(rivals) if ready else None
        out.append(row)
    return out


def auto_combination(rows: list[dict]) -> list[str]:
    """The single protocol factors whose validation gain was positive for both IEP and IEP+BB."""
    gains = {(r["factor"], r["method"]): r["validation_gain"] for r in rows}
    candidates = [f for f in FACTORS if f != "baseline" and f not in NOT_COMBINED]
    return [f for f in candidates if all((gains.get((f, m)) or 0) > 0 for m in ("iep", "iep_bb"))]


def overhead(rows: list[dict], teachers: list[dict]) -> dict:
    """The study's measured wall time, and the same runs had every epoch been evaluated.

    The second figure is derived, not run: each run's measured wall time plus its skipped evaluations at that
    run's own measured mean seconds per evaluation.
    """
    runs = [r for row in rows for r in row["runs"]] + teachers
    skipped = sum((r["epochs"] - r["evaluations"]) * r["eval_seconds"] / max(r["evaluations"], 1) for r in runs)
    measured = sum(r["wall_seconds"] for r in runs)
    return {
        "runs": len(runs),
        "wall_seconds_measured": measured,
        "train_seconds": sum(r["train_seconds"] for r in runs),
        "eval_seconds": sum(r["eval_seconds"] for r in runs),
        "evaluations": sum(r["evaluations"] for r in runs),
        "wall_seconds_if_every_epoch_evaluated": measured + skipped,
    }


def _pct(x: float | None, signed: bool = False) -> str:
    return "—" if x is None else (f"{100 * x:+.2f}" if signed else f"{100 * x:.2f}")


def vanilla_rows(rows: list[dict]) -> dict[tuple[str, str], dict]:
    """(factor, vanilla method) → row, for both vanilla students (decay on kernels, decay on every variable)."""
    return {(r["factor"], r["method"]): r for r in rows if r["method"] in (VANILLA, VANILLA_DECAY_ALL)}


def vanilla_of(row: dict, vanillas: dict[tuple[str, str], dict]) -> dict | None:
    """The vanilla row a row compares with: its factor's, or that of the factor whose vanilla run it reuses (the
    baseline's for a factor that cannot change the vanilla student); for a method that decays every variable,
    the vanilla student that does too where there is one, so that a gain is not a change of weight decay."""
    decays_all = row["method"] not in DECAY_KERNELS_ONLY and row["method"] != VANILLA_DECAY_ALL
    kinds = (VANILLA_DECAY_ALL, VANILLA) if decays_all else (VANILLA,)
    factors = (row["factor"], row.get("vanilla_factor", "baseline"))
    return next((vanillas[(f, k)] for k in kinds for f in factors if (f, k) in vanillas), None)


def loss_curve(row: dict) -> dict[str, tuple[float, float]]:
    """term → its epoch mean at the first and the last epoch, averaged over the row's runs that recorded it."""
    runs = [r["losses"] for r in row["runs"] if r.get("losses")]
    terms = [k for k in (runs[0] if runs else {}) if k.startswith("loss/") and all(k in r for r in runs)]
    return {
        k.removeprefix("loss/"): (known_mean([r[k][0] for r in runs]), known_mean([r[k][1] for r in runs]))
        for k in terms
    }


def below_vanilla(rows: list[dict], vanillas: dict[tuple[str, str], dict]) -> list[tuple[dict, dict]]:
    """(row, its vanilla row) for each method below its vanilla student on validation."""
    return [
        (r, base)
        for r in rows
        if r["method"] != VANILLA and (base := vanilla_of(r, vanillas)) and r["validation"] < base["validation"]
    ]


def below_vanilla_losses(rows: list[dict], vanillas: dict[tuple[str, str], dict]) -> list[str]:
    """For each method below its factor's vanilla student on validation, its loss terms at the first and the last
    epoch: the measurements a "why is it below" sentence rests on (which term dominates, which one never fell)."""
    below = [r for r, _ in below_vanilla(rows, vanillas)]
    if not below:
        return []
    lines = ["", "Below the vanilla student on validation; loss terms, epoch means at the first → last epoch:", ""]
    for r in below:
        curve = loss_curve(r)
        terms = ", ".join(f"{k} {first:.3f} → {last:.3f}" for k, (first, last) in curve.items()) or "not recorded"
        lines.append(f"- {r['factor']} / {r['method']}: {terms}")
    return lines


def markdown(rows: list[dict], gap_rows: list[dict], teachers: list[dict] | None = None) -> str:
    """The rows, each against the baseline's run of its method (gain) and its factor's vanilla student (a factor
    that cannot change the vanilla student reuses the baseline's); the IEP gap table when IEP ran.

    Columns that carry nothing are left out: the gains when the baseline factor is all there is (they are 0) or
    no row has a baseline run to compare with, the clip ratio and phase-1 loss when no row has them."""
    vanillas = vanilla_rows(rows)

    def versus_vanilla(r: dict) -> str:
        base = vanilla_of(r, vanillas)
        if base is None or r["method"] == VANILLA:
            return "—"
        return f"{_pct(r['validation'] - base['validation'], True)} / {_pct(r['test'] - base['test'], True)}"

    columns = [
        ("factor", lambda r: r["factor"]),
        ("method", lambda r: r["method"]),
        ("seeds", lambda r: str(r["seeds"])),
        ("val ± std", lambda r: mean_spread(r["validation"], r["validation_std"], r["seeds"])),
        ("gain (val)", lambda r: _pct(r["validation_gain"], True)),
        ("test ± std", lambda r: mean_spread(r["test"], r["test_std"], r["seeds"])),
        ("gain (test)", lambda r: _pct(r["test_gain"], True)),
        ("− vanilla (val / test)", versus_vanilla),
        ("clip ratio", lambda r: "—" if r["clip_ratio"] is None else f"{r['clip_ratio']:.3f}"),
        ("phase-1 loss", lambda r: "—" if r["phase1_loss"] is None else f"{r['phase1_loss']:.2f}"),
        ("train s", lambda r: f"{r['train_seconds']:.0f}"),
    ]
    left_out = set()
    if {r["factor"] for r in rows} <= {"baseline"} or all(r["validation_gain"] is None for r in rows):
        left_out |= {"gain (val)", "gain (test)"}
    for header, key in (("clip ratio", "clip_ratio"), ("phase-1 loss", "phase1_loss")):
        if all(r[key] is None for r in rows):
            left_out.add(header)
    columns = [(header, cell) for header, cell in columns if header not in left_out]
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r) for _, cell in columns) + " |" for r in rows]
    lines += below_vanilla_losses(rows, vanillas)
    if note := teachers_sentence(rows, teachers or []):
        lines += ["", note + "."]
    gap_rows = [g for g in gap_rows if any(m in g["validation"] for m in ("iep", "iep_bb"))]
    if not gap_rows:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "Gap to the better of FitNet and CO (points; negative: IEP behind):",
        "",
        "| factor | val: none / IEP / IEP+BB / FitNet / CO | IEP gap (val) | IEP+BB gap (val) | IEP gap (test) "
        "| IEP+BB gap (test) |",
        "|---|---|---|---|---|---|",
    ]
    for g in gap_rows:
        accuracies = " / ".join(_pct(g["validation"].get(m)) for m in METHODS)
        lines.append(
            f"| {g['factor']} | {accuracies} | {_pct(g['iep_gap_validation'], True)} "
            f"| {_pct(g['iep_bb_gap_validation'], True)} | {_pct(g['iep_gap_test'], True)} "
            f"| {_pct(g['iep_bb_gap_test'], True)} |"
        )
    return "\n".join(lines) + "\n"


def to_train_lines(left: list[dict], methods: list[str]) -> list[str]:
    """The report's closing paragraph on what is left of `methods` (the runs a resumed study trains, in order)."""
    asked = f"the {len(methods)} method{'' if len(methods) == 1 else 's'} asked for"
    if not left:
        return ["", f"Every run of {asked} has finished."]
    several = len({r["factor"] for r in left}) > 1
    runs = "; ".join(
        f"{r['factor'] + ' ' if several else ''}{r['method']} seed {r['seed']} ({r['state']})" for r in left
    )
    count = f"{len(left)} run{'' if len(left) == 1 else 's'}"
    return ["", f"Still to train ({count} of {asked}, in the order this --methods list trains them): {runs}."]
