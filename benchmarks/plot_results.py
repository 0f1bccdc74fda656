"""The reproduction's headline numbers in the docs, generated from the results files.

  python benchmarks/plot_results.py        # rewrites the marked blocks in README.md and docs/reproduction.md

The blocks (Mermaid charts and Markdown tables: text that GitHub renders; no image file is committed):

* `results-chart` (docs/reproduction.md; the README's `results-top` is its chart and first ranks): the
  comparison at the paper's budget, 100 epochs
  (`benchmarks/results/paper_schedule.json`, written by `benchmarks/protocol_study.py --factors=paper_schedule
  --methods=all`): per method the mean top-1 over seeds on the held-out validation split (bars, the ranking) and
  on the test split (line), then a table with both and their spread, the gain over the vanilla student, and the
  rank agreement with the short budget (Kendall's τ).
* `scarce-chart` (README and docs/reproduction.md): the paper's Table 1 in images per class
  (`benchmarks/results/scarce_data.json`, written by `benchmarks/protocol_study.py --factors=rate_0.01,...
  --results_name=scarce_data`, and the 10 % table as its rightmost point): test top-1 against images per class,
  one line per method, then the gains over the vanilla student in the paper's layout beside the paper's own
  CIFAR-100 gains.
* `short-chart` (docs/history.md): the short budget, 15 epochs (`reproduce_small_fidelity2.json`: mean
  top-1 on the test split after the last epoch).
* `results-summary` (README): the paper-budget table in two sentences; `paper-findings` (docs/reproduction.md):
  all of them.
* `paper-runs`, `paper-analysis`, `scarce-analysis`, `short-since-2021` (docs/reproduction.md): every run per
  seed, and the measurements the analysis rests on (`benchmarks/run_analysis.py`): the two clips seed by seed,
  the loss terms of the methods below the vanilla student, at few images per class what each method leaves of
  the training cross-entropy and of IEP's distillation gradient; the short-budget table of the methods since 2021.
* `fidelity-pass-3` (docs/reproduction.md): each fix of the third fidelity pass beside the row it is read against.

`tests/test_docs.py` fails when a block differs from what this script would write now.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # benchmarks.*, when run as a script

from benchmarks import docs_blocks, run_analysis, study_report  # noqa: E402
from benchmarks.docs_blocks import mean_spread  # noqa: E402
from benchmarks.recorded import teachers_sentence  # noqa: E402
from benchmarks.run_analysis import last_cross_entropy  # noqa: E402
from benchmarks.study_design import FACTORS  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
PAPER = os.path.join(RESULTS_DIR, "paper_schedule.json")
SHORT = os.path.join(RESULTS_DIR, "reproduce_small_fidelity2.json")
SCARCE = os.path.join(RESULTS_DIR, "scarce_data.json")
SHORT_SINCE_2021 = os.path.join(RESULTS_DIR, "short_budget_since_2021.json")
README, REPRODUCTION = os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "reproduction.md")
HISTORY = os.path.join(ROOT, "docs", "history.md")
BLOCKS = {  # marker → the files that hold it
    "results-chart": (REPRODUCTION,),
    "results-top": (README,),
    "short-chart": (HISTORY,),
    "scarce-chart": (README, REPRODUCTION),
    "results-summary": (README,),
    "paper-findings": (REPRODUCTION,),
    "paper-runs": (REPRODUCTION,),
    "paper-analysis": (REPRODUCTION,),
    "scarce-analysis": (REPRODUCTION,),
    "short-since-2021": (REPRODUCTION,),
    "fidelity-pass-3": (REPRODUCTION,),
}
RATE = 0.1
README_TOP = 8  # ranks the README's table shows (with the vanilla students); docs/reproduction.md has them all
FACTOR = "paper_schedule"
# Methods whose code changed after the short table was measured (the reference clocks and the SVD gradient of
# 2026-12-04): their short-budget rows describe other code, so the rank agreement is also given without them.
CHANGED_SINCE_SHORT = ("ft", "srm", "mhgd", "kd_svd", "kd_eid")


def markers(name: str) -> tuple[str, str]:
    return docs_blocks.markers(name, "benchmarks/plot_results.py")


def _axis(values: list[float]) -> tuple[int, int]:
    return int(min(values) // 10 * 10), int(max(values) // 10 * 10 + 10)


def _mermaid(title: str, names: list[str], bars: list[float], line: list[float] | None = None) -> list[str]:
    low, high = _axis(bars + (line or []))
    out = [
        "```mermaid",
        "xychart-beta",
        f'    title "{title}"',
        f"    x-axis [{', '.join(names)}]",
        f'    y-axis "top-1 %" {low} --> {high}',
        f"    bar [{', '.join(f'{v:.1f}' for v in bars)}]",
    ]
    if line:
        out.append(f"    line [{', '.join(f'{v:.1f}' for v in line)}]")
    return [*out, "```"]


def short_chart(results: dict, rate: float = RATE) -> str:
    rows = [r for r in results["results"] if r["rate"] == rate and r["method"] != "none_long"]
    rows.sort(key=lambda r: r["last_mean"])
    seeds = sorted({r["seeds"] for r in rows})
    protocol = results["protocol"]
    title = (
        f"CIFAR-10 at {rate:.0%}: top-1 % ({_seeds(seeds)}), {protocol['teacher_arch']} to "
        f"{protocol['student_arch']}, {protocol['student_epochs']} epochs"
    )
    begin, end = markers("short-chart")
    chart = _mermaid(title, [r["method"] for r in rows], [100 * r["last_mean"] for r in rows])
    return "\n".join([begin, *chart, end])


def kendall_tau(first: dict[str, float], second: dict[str, float]) -> tuple[float, int]:
    """Kendall's τ-b between two method → score maps over the methods in both, and how many they share."""
    from scipy.stats import kendalltau

    common = sorted(set(first) & set(second))
    if len(common) < 3:
        return float("nan"), len(common)
    tau = kendalltau([first[m] for m in common], [second[m] for m in common]).statistic
    return float(tau), len(common)


def paper_rows(results: dict) -> list[dict]:
    rows = [r for r in results["results"] if r["factor"] == FACTOR]
    return sorted(rows, key=lambda r: r["validation"])


def _seeds(counts: list[int]) -> str:
    return f"{'/'.join(map(str, counts))} seed{'' if counts == [1] else 's'}"


def results_chart(paper: dict, short: dict, rate: float = RATE, top: int | None = None) -> str:
    """The paper-budget chart and table, with the short budget's rank agreement; with `top`, the README's
    `results-top`: the chart, the table's first `top` ranks and the vanilla students, and a short note."""
    rows = paper_rows(paper)
    seeds = sorted({r["seeds"] for r in rows})
    protocol = paper["protocol"]
    title = (
        f"CIFAR-10 at {rate:.0%}, the paper's 100 epochs: top-1 % ({_seeds(seeds)}), "
        f"{protocol['teacher_arch']} to {protocol['student_arch']}; bars validation, line test"
    )
    chart = _mermaid(
        title, [r["method"] for r in rows], [100 * r["validation"] for r in rows], [100 * r["test"] for r in rows]
    )
    by_method = {r["method"]: r for r in rows}
    table = [
        "| rank | method | seeds | validation % | test % | test − vanilla |",
        "|---|---|---|---|---|---|",
    ]
    vanillas = {r.get("vanilla") or "none" for r in rows}
    for rank, r in enumerate(reversed(rows), start=1):
        if top is not None and rank > top and r["method"] not in vanillas:
            continue
        # against the vanilla student with the method's own weight-decay rule (the row's "vanilla")
        vanilla = by_method.get(r.get("vanilla") or "none")
        gain = "—" if vanilla is None or r is vanilla else f"{100 * (r['test'] - vanilla['test']):+.2f}"
        if vanilla is not None and vanilla["method"] != "none" and r is not vanilla:
            gain += f" (vs {vanilla['method']})"
        validation = mean_spread(r["validation"], r["validation_std"], r["seeds"])
        test = mean_spread(r["test"], r["test_std"], r["seeds"])
        table.append(f"| {rank} | {r['method']} | {r['seeds']} | {validation} | {test} | {gain} |")
    if top is not None:
        return "\n".join([*markers("results-top")[:1], *chart, "", *table, "", _top_note(rows, paper, top),
                          markers("results-top")[1]])  # fmt: skip
    long_test = {r["method"]: r["test"] for r in rows}
    short_test = {r["method"]: r["last_mean"] for r in short["results"] if r["rate"] == rate}
    tau, shared = kendall_tau(long_test, short_test)
    agreement = (
        f"Rank agreement of the test accuracies at 15 and 100 epochs: Kendall's τ = {tau:.2f} over the {shared} "
        "methods in both"
    )
    changed = [m for m in CHANGED_SINCE_SHORT if m in long_test]
    if changed:
        unchanged = {m: v for m, v in long_test.items() if m not in changed}
        tau_unchanged, shared_unchanged = kendall_tau(unchanged, short_test)
        agreement += (
            f"; {tau_unchanged:.2f} over the {shared_unchanged} whose code did not change in between (without "
            f"{', '.join(changed)}, whose clocks or SVD gradient changed after their 15-epoch runs)"
        )
    agreement += "."
    total = sum(len(r["runs"]) for r in rows)
    note = (
        f"{len(rows)} methods, {total} runs; mean ± std over seeds (one seed: its value); validation = a stratified "
        "10 % held out of the training split (the ranking), test = the 10,000 test images, once per run after its "
        "last epoch."
    )
    decay_all = _decay_all_vanilla(rows)
    if decay_all in by_method:
        note += (
            " Test − vanilla is against the vanilla student with the method's own weight-decay rule: `none` decays "
            f"kernels only; `(vs {decay_all})` marks a method that decays every variable, as its reference does, "
            f"against the vanilla that does too; {decay_all}'s own figure, against `none`, is what that rule does "
            "alone."
        )
    if teachers := teachers_sentence(rows, paper.get("teachers", [])):
        note += f" {teachers} (docs/reproduction.md says why)."
    begin, end = markers("results-chart")
    return "\n".join([begin, *chart, "", *table, "", note, agreement, end])


def _decay_all_vanilla(rows: list[dict]) -> str | None:
    """The vanilla student that methods decaying every variable are measured against, if any is."""
    return next((r["vanilla"] for r in rows if r.get("vanilla", "none") not in ("none", None)), None)


def _top_note(rows: list[dict], paper: dict, top: int) -> str:
    """What the README's short table leaves out, and where the rest is."""
    decay_all = _decay_all_vanilla(rows)
    note = (
        f"The first {top} of {len(rows)} methods and the vanilla students; mean ± std over seeds. Validation (the "
        "ranking) is a stratified 10 % held out of the training split; test is the 10,000 test images, scored once "
        "per run."
    )
    if decay_all:
        note += f" `(vs {decay_all})`: against the vanilla student that decays every variable, as the method does."
    if teachers := teachers_sentence(rows, paper.get("teachers", [])):
        note += f" {teachers}."
    return (
        note + " Every method and seed: [docs/reproduction.md](docs/reproduction.md#every-method-at-the-papers-budget)."
    )


# The paper's Table 1 (CIFAR-100, WRN-40-4 → WRN-16-4, top-1 % at the last epoch; ../shared/docs/iep-method.md
# §9): the columns the scarce-data study runs, by the paper's data rate (its rate 1.0 is 500 images per class).
PAPER_TABLE1 = {
    1.0: {"none": 76.09, "at": 76.98, "ft": 77.14, "ab": 77.29, "rkd": 77.02, "mhgd": 77.45, "co": 78.21,
          "iep": 78.12, "iep_bb": 78.37},
    0.5: {"none": 69.77, "at": 71.13, "ft": 72.41, "ab": 72.28, "rkd": 69.57, "mhgd": 73.32, "co": 74.33,
          "iep": 74.22, "iep_bb": 74.53},
    0.25: {"none": 59.28, "at": 63.07, "ft": 63.70, "ab": 66.79, "rkd": 53.57, "mhgd": 67.27, "co": 67.90,
           "iep": 68.57, "iep_bb": 69.02},
    0.1: {"none": 40.65, "at": 47.66, "ft": 48.29, "ab": 57.38, "rkd": 23.27, "mhgd": 54.58, "co": 40.80,
          "iep": 55.89, "iep_bb": 59.04},
}  # fmt: skip
PAPER_IMAGES_PER_CLASS = 500
# Our study's order of columns: the paper's, then the methods it adds.
SCARCE_METHODS = ("none", "at", "ft", "ab", "rkd", "mhgd", "co", "iep", "iep_bb", "iep_termclip", "iep_bb_termclip",
                  "dkd", "fitnet")  # fmt: skip
# One named colour per line (Mermaid's xychart has no legend: the caption names each line by its colour).
LINE_COLOURS = (
    ("black", "#000000"), ("grey", "#999999"), ("brown", "#8c564b"), ("olive", "#bcbd22"), ("pink", "#e377c2"),
    ("cyan", "#17becf"), ("orange", "#ff7f0e"), ("blue", "#1f77b4"), ("red", "#d62728"), ("navy", "#000080"),
    ("purple", "#9467bd"), ("green", "#2ca02c"), ("gold", "#ffbf00"),
)  # fmt: skip
CIFAR10_TRAIN_PER_CLASS = 4500  # after the 10 % validation holdout (benchmarks/protocol_study.py)


def images_per_class(rate: float) -> int:
    return max(1, round(rate * CIFAR10_TRAIN_PER_CLASS))


def scarce_rows(scarce: dict, paper: dict) -> dict[int, dict[str, dict]]:
    """images per class → method → row: the scarce-data study's rates (not its step-matched controls) and the
    paper-budget table's 10 % as the rightmost point."""
    out: dict[int, dict[str, dict]] = {}
    for row in scarce["results"]:
        if row["factor"] == f"rate_{row['rate']:g}":
            out.setdefault(images_per_class(row["rate"]), {})[row["method"]] = row
    for row in paper_rows(paper):
        if row["method"] in SCARCE_METHODS:
            out.setdefault(images_per_class(RATE), {})[row["method"]] = row
    return dict(sorted(out.items()))


def _gain(rows: dict[str, dict], method: str, split: str = "test") -> float | None:
    if method not in rows or "none" not in rows or method == "none":
        return None
    return 100 * (rows[method][split] - rows["none"][split])


def scarce_chart(scarce: dict, paper: dict) -> str:
    """Test top-1 against images per class, one line per method with every point measured; then the gains over
    the vanilla student in the paper's layout, and the paper's CIFAR-100 gains for the same columns."""
    by_size = scarce_rows(scarce, paper)
    sizes = list(by_size)
    begin, end = markers("scarce-chart")
    if len(sizes) < 2:  # only the 10 % table: nothing of the study has finished yet
        return "\n".join([begin, "No run of the scarce-data study has finished yet (docs/reproduction.md).", end])
    # A column half-way through its runs would leave most lines undrawn: the chart keeps to the columns every
    # method has reached (while at least two are), the table below shows every column.
    complete = [n for n in sizes if all(m in by_size[n] for m in SCARCE_METHODS)]
    pending = [n for n in sizes if n not in complete] if len(complete) >= 2 else []
    if pending:
        sizes = complete
    drawn = [m for m in SCARCE_METHODS if all(m in by_size[n] for n in sizes)]
    colours = {m: LINE_COLOURS[SCARCE_METHODS.index(m)] for m in drawn}  # a method keeps its colour
    values = [100 * by_size[n][m]["test"] for m in drawn for n in sizes]
    low, high = _axis(values) if values else (0, 100)
    palette = ", ".join(hex_code for _, hex_code in colours.values())
    chart = [
        "```mermaid",
        f'%%{{init: {{"themeVariables": {{"xyChart": {{"plotColorPalette": "{palette}"}}}}}}}}%%',
        "xychart-beta",
        '    title "CIFAR-10, WRN-28-1 to WRN-16-1, the paper\'s 100 epochs: test top-1 % by images per class"',
        f"    x-axis [{', '.join(map(str, sizes))}]",
        f'    y-axis "top-1 %" {low} --> {high}',
        *("    line [" + ", ".join(f"{100 * by_size[n][m]['test']:.1f}" for n in sizes) + "]" for m in drawn),
        "```",
    ]
    legend = "Lines: " + ", ".join(f"{m} {colour}" for m, (colour, _) in colours.items()) + "."
    missing = [m for m in SCARCE_METHODS if m not in drawn]
    if missing:
        legend += f" Not drawn until every point has a run: {', '.join(missing)}."
    if pending:
        legend += (
            f" Not on the chart until every method has a run there: {', '.join(map(str, pending))} images per class"
            " (in the table)."
        )
    seeds = {n: sorted({r["seeds"] for r in rows.values()}) for n, rows in by_size.items()}  # every column
    header = "| images per class | seeds | " + " | ".join(SCARCE_METHODS[1:]) + " |"
    table = [header, "|" + "---|" * (len(SCARCE_METHODS) + 1)]
    for n, rows in by_size.items():
        vanilla = f"{100 * rows['none']['test']:.2f}" if "none" in rows else "—"
        gains = [_gain(rows, m) for m in SCARCE_METHODS[1:]]
        cells = " | ".join("—" if g is None else f"{g:+.2f}" for g in gains)
        table.append(f"| {n} (vanilla {vanilla}) | {'/'.join(map(str, seeds[n]))} | {cells} |")
    paper_methods = list(PAPER_TABLE1[1.0])[1:]
    paper_table = [
        "| images per class (CIFAR-100) | " + " | ".join(paper_methods) + " |",
        "|" + "---|" * (len(paper_methods) + 1),
    ]
    for rate, accuracies in sorted(PAPER_TABLE1.items()):
        cells = " | ".join(f"{accuracies[m] - accuracies['none']:+.2f}" for m in paper_methods)
        paper_table.append(f"| {round(rate * PAPER_IMAGES_PER_CLASS)} (vanilla {accuracies['none']:.2f}) | {cells} |")
    note = (
        "Test top-1 % minus the vanilla student's (mean over seeds; the vanilla's own accuracy in the first "
        f"column); CIFAR-10 has {CIFAR10_TRAIN_PER_CLASS:,} training images per class after the validation "
        f"holdout, so {images_per_class(RATE)} per class is the 10 % table. The paper's CIFAR-100 gains for its "
        "columns (its Table 1, WRN-40-4 to WRN-16-4):"
    )
    sentences = [agreement_sentence(by_size), departure_sentence(by_size, scarce)]
    return "\n".join([begin, *chart, "", legend, "", *table, "", note, "", *paper_table, "", *sentences, end])


def _seed_count(seeds: int) -> str:
    return f"{seeds} seed{'s' if seeds > 1 else ''}"


def agreement_sentence(by_size: dict[int, dict[str, dict]]) -> str:
    """What agrees with the paper: gains grow as the data shrinks (methods that gain more at the fewest images
    per class than at the most), and RKD below its vanilla student at the fewest."""
    fewest, most = min(by_size), max(by_size)
    both = [m for m in SCARCE_METHODS[1:] if None not in (_gain(by_size[fewest], m), _gain(by_size[most], m))]
    if not both:
        return f"No method has run at both {fewest} and {most} images per class yet."
    more = sum(_gain(by_size[fewest], m) > _gain(by_size[most], m) for m in both)
    sentence = (
        f"As in the paper, distillation pays most where data is scarcest: {more} of {len(both)} methods gain more "
        f"over the vanilla student at {fewest} images per class than at {most}"
    )
    rkd, paper = _gain(by_size[fewest], "rkd"), PAPER_TABLE1[min(PAPER_TABLE1)]
    if rkd is not None and rkd < 0:
        paper_rkd = paper["rkd"] - paper["none"]
        sentence += f", and RKD falls below it ({rkd:+.2f} test points; the paper's {paper_rkd:+.2f})"
    return sentence + "."


def departure_sentence(by_size: dict[int, dict[str, dict]], scarce: dict) -> str:
    """What does not agree, at the fewest images per class, and what the runs measure about it: the leader's and
    the vanilla student's fit to their labels, IEP's kept fraction under its clip, and IEP without the cap (the
    `_no_clip` diagnostic) against IEP with it."""
    fewest = min(by_size)
    rows = by_size[fewest]
    gains = {m: g for m in SCARCE_METHODS[1:] if (g := _gain(rows, m)) is not None}
    if not gains:
        return f"No method besides the vanilla student has a run at {fewest} images per class yet."
    paper = PAPER_TABLE1[min(PAPER_TABLE1)]
    paper_best = max((m for m in paper if m != "none"), key=paper.get)
    leader = max(gains, key=gains.get)
    ieps = [m for m in gains if m.startswith("iep")]
    fewest_paper = round(min(PAPER_TABLE1) * PAPER_IMAGES_PER_CLASS)
    sentence = (
        f"{'As in' if leader == paper_best else 'Unlike'} the paper, where {paper_best} leads at {fewest_paper} images "
        f"per class ({paper[paper_best] - paper['none']:+.2f}) and CO is level with its vanilla student "
        f"({paper['co'] - paper['none']:+.2f}), here {leader} leads "
        f"({gains[leader]:+.2f} ± {100 * rows[leader]['test_std']:.2f}, {_seed_count(rows[leader]['seeds'])})"
    )
    if ieps and leader not in ieps:
        best_iep = max(ieps, key=gains.get)
        sentence += f" and the best IEP, {best_iep}, gains {gains[best_iep]:+.2f}"
    sentence += "."
    leader_ce = run_analysis.mean_last_cross_entropy(rows[leader])
    vanilla_ce = run_analysis.mean_last_cross_entropy(rows["none"])
    kept = run_analysis.mean_kept_fraction(rows["iep"]) if "iep" in rows else None
    if leader_ce is None or vanilla_ce is None or kept is None:
        return sentence
    how = "adds its feature gradient uncapped" if leader in run_analysis.UNCAPPED_FEATURE_METHODS else "trains"
    sentence += (
        f" Measured: {leader} {how} and its students end less fitted to their few labels (last-epoch training "
        f"cross-entropy {leader_ce:.2f} against the vanilla student's {vanilla_ce:.2f}), while IEP's clip keeps "
        f"{100 * kept:.0f} % of its distillation gradient's norm"
    )
    diagnostic = f"rate_{rows['none']['rate']:g}_no_clip"
    uncapped = {r["method"]: r for r in scarce["results"] if r["factor"] == diagnostic}
    pairs = [(m, 100 * (uncapped[m]["test"] - rows["none"]["test"])) for m in ("iep", "iep_bb")
             if m in uncapped and m in gains]  # fmt: skip
    if pairs:
        held_back = any(g > gains[m] for m, g in pairs)
        listed = " and ".join(f"{m} {g:+.2f} (capped {gains[m]:+.2f})" for m, g in pairs)
        sentence += (
            f"; without the cap {listed}: the cap {'holds IEP back' if held_back else 'is not what keeps IEP below'}"
            f"{'' if held_back else ' ' + leader}"
        )
    return sentence + "."


def clip_pairs_sentence(by_size: dict[int, dict[str, dict]]) -> str:
    """Per images per class: in how many same-seed pairs the per-term clip is ahead of the summed clip on
    validation (IEP and IEP+BB together), with the mean difference in points."""
    parts = []
    for n, rows in by_size.items():
        if leads := run_analysis.per_term_leads(list(rows.values())):
            ahead = sum(d > 0 for d in leads)
            parts.append(f"{n} per class: {ahead} of {len(leads)} (mean {sum(leads) / len(leads):+.2f})")
    if not parts:
        return "No same-seed pair of the two clips yet."
    return (
        "The per-term clip against the summed clip (IEP and IEP+BB), same-seed pairs ahead on validation: "
        + "; ".join(parts)
        + "."
    )


def _label(r: dict) -> str:
    accuracy = mean_spread(r["validation"], r["validation_std"], r["seeds"])
    return f"{r['method']} ({accuracy} %, {_seed_count(r['seeds'])})"


def summary_sentences(paper: dict, short: dict, rate: float = RATE) -> list[str]:
    """Plain sentences on the paper-budget table, each computed from the results file: who leads
    and whether the lead exceeds a seed-to-seed spread, where IEP ranks under each clip and how the two clips
    compare seed by seed, who does not beat the vanilla student, and whether a 15-epoch pilot predicts it."""
    rows = list(reversed(paper_rows(paper)))  # best first, on validation
    rank = {r["method"]: i for i, r in enumerate(rows, start=1)}
    by_method = {r["method"]: r for r in rows}
    leader = rows[0]
    spread = max((r["validation_std"] for r in rows[:3] if r["seeds"] > 1), default=0.0)
    level = [r for r in rows[1:] if leader["validation"] - r["validation"] <= spread]
    sentences = [
        f"Best on validation: {_label(leader)}"
        + (
            f", level within one seed-to-seed spread ({100 * spread:.2f} points) with "
            + ", ".join(_label(r) for r in level)
            if level
            else f", ahead of {_label(rows[1])} by more than a seed-to-seed spread ({100 * spread:.2f} points)"
        )
        + "."
    ]
    if all(a in by_method and b in by_method for a, b in run_analysis.CLIP_PAIRS):
        leads = run_analysis.per_term_leads(rows)
        ahead = sum(d > 0 for d in leads)
        sentences.append(
            f"IEP and IEP+BB rank {rank['iep']} and {rank['iep_bb']} of {len(rows)} with the paper's clip of the "
            f"summed distillation gradient, {rank['iep_termclip']} and {rank['iep_bb_termclip']} with each term "
            f"clipped on its own (IEP's default), which is ahead on validation in {ahead} "
            f"of {len(leads)} same-seed pairs."
        )
    if "none" in by_method:
        below = []
        for r in rows:
            vanilla = by_method.get(r.get("vanilla") or "none")
            if r["method"] not in ("none", "none_decay_all") and vanilla and r["test"] <= vanilla["test"]:
                below.append(r["method"])
        sentences.append(
            "Every method beats its vanilla student on test except " + ", ".join(below) + "."
            if below
            else "Every method beats its vanilla student on test."
        )
    long_test = {r["method"]: r["test"] for r in rows}
    short_test = {r["method"]: r["last_mean"] for r in short["results"] if r["rate"] == rate}
    tau, shared = kendall_tau(long_test, short_test)
    sentences.append(
        f"A 15-epoch pilot does not predict this ranking (Kendall's τ = {tau:.2f} between the two budgets' test "
        f"ranks, {shared} methods): judge methods at the full budget."
        if tau < 0.5
        else f"A 15-epoch pilot ranks the methods much as the full budget does (Kendall's τ = {tau:.2f})."
    )
    return sentences


def results_summary(paper: dict, short: dict, name: str = "results-summary", count: int | None = 2) -> str:
    """The summary's first `count` sentences (the README's: who leads, and how IEP ranks under each clip), or all
    of them (None: docs/reproduction.md's, with who does not beat the vanilla student and the pilot's rank
    agreement)."""
    begin, end = markers(name)
    return "\n".join([begin, *(f"- {s}" for s in summary_sentences(paper, short)[:count]), end])


def _seed_cell(run: dict) -> str:
    return f"{100 * run['validation']:.2f} / {100 * run['test']:.2f}"


def paper_runs(paper: dict) -> str:
    """Every run of the paper-budget table, per seed: validation / test %, the teacher it learnt from, the last
    epoch's training cross-entropy (what was left to fit) and, for IEP, the kept fraction of its distillation
    gradient (the clip ratio), so the analysis reads its figures from here rather than typing them."""
    begin, end = markers("paper-runs")
    rows = sorted((r for r in paper["results"] if r["factor"] == "paper_schedule"), key=lambda r: -r["validation"])
    seeds = sorted({run["seed"] for r in rows for run in r["runs"]})
    head = " | ".join(f"seed {s}: val / test %" for s in seeds)
    lines = [
        begin,
        f"| method | {head} | teacher test % | last-epoch cross-entropy | clip ratio |",
        "|---|" + "---|" * (len(seeds) + 3),
    ]
    for row in rows:
        by_seed = {run["seed"]: run for run in row["runs"]}
        cells = [_seed_cell(by_seed[s]) if s in by_seed else "—" for s in seeds]
        runs = [by_seed[s] for s in seeds if s in by_seed]
        teachers = " / ".join(f"{100 * r['teacher_test']:.2f}" if r.get("teacher_test") else "—" for r in runs)
        entropy = " / ".join(f"{v:.3f}" if (v := last_cross_entropy(r)) is not None else "—" for r in runs)
        clip = " / ".join(f"{r['clip_ratio']:.3f}" for r in runs if r.get("clip_ratio") is not None) or "—"
        lines.append(f"| {row['method']} | " + " | ".join([*cells, teachers, entropy, clip]) + " |")
    lines += [
        "",
        "Per seed, in the order of the seeds' columns; `—`: not run yet, or not recorded by the runs of that time "
        "(the vanilla student has no teacher; only IEP clips). From `benchmarks/results/paper_schedule.json`.",
        end,
    ]
    return "\n".join(lines)


def paper_analysis(paper: dict) -> str:
    """The paper-budget table's analysis, run by run: the two clips seed by seed, and the loss terms of the
    methods below the vanilla student beside the vanilla run of the same seed."""
    rows = paper_rows(paper)
    begin, end = markers("paper-analysis")
    return "\n".join(
        [begin, "**The summed against the per-term clip.**", "", *run_analysis.clip_pairs_table(rows), "",
         "**Below the vanilla student on validation.**", "", *run_analysis.below_vanilla_table(rows), end]
    )  # fmt: skip


def scarce_analysis(scarce: dict, paper: dict) -> str:
    """Per rate of the scarce-data study: what each method leaves of the training cross-entropy and of IEP's
    distillation gradient, its pre-phase's steps and loss, and the two clips seed by seed; the uncapped-IEP
    diagnostic beside the rate it runs at."""
    begin, end = markers("scarce-analysis")
    lines = [begin, clip_pairs_sentence(scarce_rows(scarce, paper)), ""]
    for rate in sorted({r["rate"] for r in scarce["results"]}):
        rows = [r for r in scarce["results"] if r["factor"] == f"rate_{rate:g}"]
        diagnostic = [{**r, "method": f"{r['method']} (uncapped)"} for r in scarce["results"]
                      if r["factor"] == f"rate_{rate:g}_no_clip"]  # fmt: skip
        if not rows:
            continue
        lines += [f"**{images_per_class(rate)} images per class** (rate {rate:g}).", ""]
        lines += [*run_analysis.fit_and_clip_table(rows + diagnostic), ""]
        lines += [*run_analysis.clip_pairs_table(rows), ""]
    lines += [
        "Means over seeds; the last cross-entropy and kept fraction are epoch means at the last epoch. The kept "
        "fraction is Σ‖clipped‖ / Σ‖raw‖ of the distillation gradient (1: nothing clipped). `(uncapped)`: the "
        "`rate_0.01_no_clip` diagnostic, measured against the same vanilla student.",
        "",
        *control_sections(scarce),
        end,
    ]
    return "\n".join(lines)


# The scarce-data study's step-matched controls (benchmarks/study_design.py), each beside its rate's 100-epoch runs.
CONTROLS = {
    "rate_0.01_main_steps": "the main phase as many steps as at 10 % (more epochs over the same images)",
    "rate_0.01_pre_phase_steps": "every pre-phase as many steps as at 10 %, the main phase at 100 epochs",
}


def control_sections(scarce: dict) -> list[str]:
    """Each control beside the same seeds at 100 epochs, with the runs it still has to train."""
    lines = []
    for factor, what in CONTROLS.items():
        rows = [r for r in scarce["results"] if r["factor"] == factor]
        waiting = [w["method"] for w in scarce.get("still_to_train", []) if w["factor"] == factor]
        if not rows and not waiting:
            continue
        rate = FACTORS[factor].rate
        base = [r for r in scarce["results"] if r["factor"] == f"rate_{rate:g}"]
        lines += [f"**Control `{factor}`** ({images_per_class(rate)} images per class): {what}.", ""]
        lines += run_analysis.control_table(base, rows)
        if waiting:
            lines += ["", f"Still to train: {', '.join(waiting)}."]
        lines.append("")
    return lines


# Issue 52's fixes, each row of the paper-budget table beside the row of the code or setting it replaced.
FIDELITY_PASS_3 = (
    ("dist", "dist_imagenet", "DIST: the authors' CIFAR recipe against their ImageNet recipe"),
    ("vid", "vid_shared_init", "VID: each regressor conv draws its own initial weights against one draw for all"),
    ("kd_mdistiller", "kd", "KD: Hinton's, as mdistiller runs it, against the IEP author's benchmark setting"),
    ("reviewkd_authors", "reviewkd", "ReviewKD: the teacher's BN on batch statistics against inference mode"),
    ("none_decay_all", "none", "the vanilla student: weight decay on every variable against kernels only"),
)


def fidelity_pass_3(paper: dict) -> str:
    """Each fix of fidelity pass 3 beside the row it is read against (the earlier code or setting), so that what
    the fix changed is a measured difference."""
    by_method = {r["method"]: r for r in paper_rows(paper)}

    def cell(method: str) -> str:
        row = by_method.get(method)
        if row is None:
            return "not yet run"
        validation = mean_spread(row["validation"], row["validation_std"], row["seeds"])
        return f"{validation} / {mean_spread(row['test'], row['test_std'], row['seeds'])} ({_seed_count(row['seeds'])})"

    lines = [
        "| change | now: validation / test % | before: validation / test % | difference (validation / test) |",
        "|---|---|---|---|",
    ]
    for new, old, what in FIDELITY_PASS_3:
        difference = "—"
        if new in by_method and old in by_method:
            gains = (100 * (by_method[new][k] - by_method[old][k]) for k in ("validation", "test"))
            difference = " / ".join(f"{gain:+.2f}" for gain in gains)
        lines.append(f"| {what} (`{new}` against `{old}`) | {cell(new)} | {cell(old)} | {difference} |")
    note = (
        "Means over the seeds each row has so far (one seed: no spread); the runs still to train are listed at the "
        "end of `benchmarks/results/paper_schedule.md`."
    )
    begin, end = markers("fidelity-pass-3")
    return "\n".join([begin, *lines, "", note, end])


def short_since_2021(results: dict) -> str:
    """The short-budget table of the methods since 2021, as the study tool writes it."""
    begin, end = markers("short-since-2021")
    table = study_report.markdown(results["results"], [], results.get("teachers", [])).rstrip("\n")
    return "\n".join([begin, table, end])


def blocks() -> dict[str, str]:
    paper, short = json.load(open(PAPER)), json.load(open(SHORT))
    out = {
        "results-chart": results_chart(paper, short),
        "results-top": results_chart(paper, short, top=README_TOP),
        "results-summary": results_summary(paper, short),
        "paper-findings": results_summary(paper, short, "paper-findings", count=None),
        "short-chart": short_chart(short),
        "paper-runs": paper_runs(paper),
        "paper-analysis": paper_analysis(paper),
        "short-since-2021": short_since_2021(json.load(open(SHORT_SINCE_2021))),
        "fidelity-pass-3": fidelity_pass_3(paper),
    }
    scarce = json.load(open(SCARCE)) if os.path.exists(SCARCE) else {"results": []}
    out["scarce-chart"] = scarce_chart(scarce, paper)
    out["scarce-analysis"] = scarce_analysis(scarce, paper)
    return out


def main() -> None:
    for name, block in blocks().items():
        for path in BLOCKS[name]:
            text = docs_blocks.rewrite(open(path).read(), name, block)  # fails before the page is touched
            with open(path, "w") as f:
                f.write(text)
            print(f"wrote {name} into {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
