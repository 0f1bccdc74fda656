"""The measurements behind the studies' conclusions, per run, as tables generated from the results files.

`benchmarks/plot_results.py` writes them between markers in docs/reproduction.md (and the one sentence of the
README's scarce-data block that rests on them), so that an analysis reads its figures from the runs rather than
typing them: the summed against the per-term clip seed by seed, the loss terms of the methods below the vanilla
student, at few images per class what each method leaves of the training cross-entropy and of IEP's
distillation gradient, and each step-matched control beside the same seed at 100 epochs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from benchmarks.docs_blocks import mean_spread
from benchmarks.study_report import below_vanilla, vanilla_rows

# IEP and IEP+BB, each as the summed clip runs it and with every distillation term's gradient clipped on its own.
CLIP_PAIRS = (("iep", "iep_termclip"), ("iep_bb", "iep_bb_termclip"))
# The methods that add a teacher-feature gradient without a cap, against which IEP's clip is read.
UNCAPPED_FEATURE_METHODS = ("co", "fitnet")


def first_and_last(run: dict, key: str) -> tuple[float | None, float | None]:
    """A history key's epoch means at the first and the last epoch (`losses` holds [first, last] per key)."""
    return tuple((run.get("losses") or {}).get(key) or (None, None))


def last_value(run: dict, key: str) -> float | None:
    """A history key's epoch mean at the last epoch."""
    return first_and_last(run, key)[1]


def last_cross_entropy(run: dict) -> float | None:
    """The last epoch's training cross-entropy: recorded since the scarce-data study, else its loss trajectory's."""
    if run.get("final_cross_entropy") is not None:
        return run["final_cross_entropy"]
    return last_value(run, "loss/cross_entropy")


def distillation_terms(run: dict) -> dict[str, tuple[float, float]]:
    """term → (first, last) epoch mean of every loss term but the cross-entropy, the weight decay and the total."""
    skip = ("loss/cross_entropy", "loss/weight_decay", "loss/total")
    return {k.removeprefix("loss/"): tuple(v) for k, v in (run.get("losses") or {}).items()
            if k.startswith("loss/") and k not in skip}  # fmt: skip


def _mean_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.mean(known) if known else None


def mean_last_cross_entropy(row: dict) -> float | None:
    """The last epoch's training cross-entropy, mean over the row's runs that recorded it."""
    return _mean_known(last_cross_entropy(run) for run in row["runs"])


def mean_kept_fraction(row: dict) -> float | None:
    """The last epoch's kept fraction of the distillation gradient's norm, mean over the row's runs that clip it."""
    return _mean_known(last_value(run, "distill/clip_ratio") for run in row["runs"])


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _arrow(first: float | None, last: float | None, digits: int = 3) -> str:
    return f"{_f(first, digits)} → {_f(last, digits)}"


def same_seed_clip_pairs(rows: list[dict]) -> list[tuple[str, dict, dict]]:
    """(summed method, summed run, per-term run) for every seed both clips of a method have run."""
    by_method = {r["method"]: r for r in rows}
    pairs = []
    for summed, per_term in CLIP_PAIRS:
        if summed not in by_method or per_term not in by_method:
            continue
        per_term_runs = {run["seed"]: run for run in by_method[per_term]["runs"]}
        pairs += [(summed, run, per_term_runs[run["seed"]]) for run in by_method[summed]["runs"]
                  if run["seed"] in per_term_runs]  # fmt: skip
    return pairs


def clip_pairs_table(rows: list[dict]) -> list[str]:
    """Seed by seed, the summed clip → the per-term clip: accuracy, the kept fraction of the distillation gradient
    and the share of its (variable, term) gradients clipped at the last epoch, the training cross-entropy left and
    each distillation term at the last epoch."""
    pairs = same_seed_clip_pairs(rows)
    if not pairs:
        return ["No seed has run with both clips yet."]
    lines = [
        "| method | seed | val % | test % | kept fraction | clipped share | last cross-entropy | "
        "last distillation terms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, summed, per_term in pairs:
        terms = ", ".join(
            f"{name} {_arrow(value[1], last_value(per_term, f'loss/{name}'))}"
            for name, value in distillation_terms(summed).items()
        )
        cells = [
            method,
            str(summed["seed"]),
            _arrow(100 * summed["validation"], 100 * per_term["validation"], 2),
            _arrow(100 * summed["test"], 100 * per_term["test"], 2),
            _arrow(last_value(summed, "distill/clip_ratio"), last_value(per_term, "distill/clip_ratio")),
            _arrow(last_value(summed, "distill/clipped_fraction"), last_value(per_term, "distill/clipped_fraction"), 2),
            _arrow(last_cross_entropy(summed), last_cross_entropy(per_term)),
            terms or "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    differences = per_term_leads(rows)
    ahead = sum(d > 0 for d in differences)
    lines += [
        "",
        f"Summed clip → per-term clip, same seed, at the last epoch. The per-term clip is ahead on validation in "
        f"{ahead} of {len(pairs)} pairs (mean {statistics.mean(differences):+.2f} points).",
    ]
    return lines


def per_term_leads(rows: list[dict]) -> list[float]:
    """Validation points the per-term clip is ahead of the summed clip, per same-seed pair."""
    return [100 * (q["validation"] - p["validation"]) for _, p, q in same_seed_clip_pairs(rows)]


def below_vanilla_table(rows: list[dict]) -> list[str]:
    """Each method below its vanilla student on validation, run by run, beside the vanilla run of the same seed:
    the training cross-entropy and every distillation term at the first → the last epoch."""
    below = below_vanilla(rows, vanilla_rows(rows))
    if not below:
        return ["Every method is above its vanilla student on validation."]
    lines = [
        "| method | seed | val / test % | vanilla's same seed, val / test % | cross-entropy (vanilla's) | "
        "distillation terms |",
        "|---|---|---|---|---|---|",
    ]
    for row, base in sorted(below, key=lambda pair: -pair[0]["validation"]):
        base_runs = {run["seed"]: run for run in base["runs"]}
        for run in row["runs"]:
            twin = base_runs.get(run["seed"])
            ce = first_and_last(run, "loss/cross_entropy")
            twin_ce = first_and_last(twin or {}, "loss/cross_entropy")
            terms = ", ".join(f"{name} {_arrow(*value)}" for name, value in distillation_terms(run).items())
            lines.append(
                f"| {row['method']} | {run['seed']} | {100 * run['validation']:.2f} / {100 * run['test']:.2f} | "
                + ("—" if twin is None else f"{100 * twin['validation']:.2f} / {100 * twin['test']:.2f}")
                + f" | {_arrow(*ce)} ({_arrow(*twin_ce)}) | {terms or '—'} |"
            )
    lines += ["", "Epoch means of the training losses at the first → the last epoch of the main phase."]
    return lines


def _pre_phase_steps(row: dict) -> str:
    steps = sorted({sum(run["pre_phase_steps"].values()) for run in row["runs"] if run.get("pre_phase_steps")})
    return "/".join(map(str, steps)) or "—"


def fit_and_clip_table(rows: list[dict], vanilla_method: str = "none") -> list[str]:
    """Per method at one data size: test gain over the vanilla student, the training cross-entropy left at the
    last epoch (how tightly the student fits its few labels), for the clipped methods the kept fraction of the
    distillation gradient, and the pre-phase's steps and final loss (whether its module trained); means over
    seeds."""
    by_method = {r["method"]: r for r in rows}
    vanilla = by_method.get(vanilla_method)
    lines = [
        "| method | seeds | test % | − vanilla | last cross-entropy | kept fraction | pre-phase steps | phase-1 loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: -r["test"]):
        gain = "—" if vanilla is None or row is vanilla else f"{100 * (row['test'] - vanilla['test']):+.2f}"
        cells = [
            row["method"],
            str(row["seeds"]),
            mean_spread(row["test"], row["test_std"], row["seeds"]),
            gain,
            _f(mean_last_cross_entropy(row)),
            _f(mean_kept_fraction(row)),
            _pre_phase_steps(row),
            _f(row.get("phase1_loss"), 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _seed_run(row: dict | None, seed: int) -> dict | None:
    return next((run for run in row["runs"] if run["seed"] == seed), None) if row else None


def _moved(before: float | None, after: float | None, show) -> str:
    """`before → after`, or one dash where neither run has the figure."""
    if before is None and after is None:
        return "—"
    return " → ".join("—" if v is None else show(v) for v in (before, after))


def _steps(run: dict | None) -> int | None:
    return sum(run["pre_phase_steps"].values()) if run and run.get("pre_phase_steps") else None


def control_table(base_rows: list[dict], control_rows: list[dict], vanilla_method: str = "none") -> list[str]:
    """A control factor's runs beside the same seed's run at 100 epochs: how much of each method's accuracy, of its
    gain over the vanilla student (each against the vanilla of its own length; a control without a vanilla run
    uses the 100-epoch one), of its fit to the labels and of its pre-phase moved when the steps were restored."""
    if not control_rows:
        return ["No run of this control has finished yet."]
    base = {r["method"]: r for r in base_rows}
    control = {r["method"]: r for r in control_rows}
    lines = [
        "| method | seed | test %: 100 epochs → control | − vanilla | last cross-entropy | pre-phase steps "
        "| phase-1 loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, row in sorted(control.items(), key=lambda item: -item[1]["test"]):
        for run in sorted(row["runs"], key=lambda r: r["seed"]):
            seed = run["seed"]
            before = _seed_run(base.get(method), seed)
            vanillas = (_seed_run(base.get(vanilla_method), seed),
                        _seed_run(control.get(vanilla_method) or base.get(vanilla_method), seed))  # fmt: skip
            gains = [None if v is None or r is None or method == vanilla_method else 100 * (r["test"] - v["test"])
                     for r, v in zip((before, run), vanillas, strict=True)]  # fmt: skip
            cells = [
                method,
                str(seed),
                _arrow(before and 100 * before["test"], 100 * run["test"], 2),
                _moved(*gains, lambda g: f"{g:+.2f}"),
                _arrow(before and last_cross_entropy(before), last_cross_entropy(run)),
                _moved(_steps(before), _steps(run), str),
                _moved(before and before.get("phase1_loss"), run.get("phase1_loss"), lambda v: f"{v:.2f}"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines
