"""The reproduction's headline numbers in the docs, generated from the results files.

  python benchmarks/plot_results.py        # rewrites the marked blocks in README.md and docs/reproduction.md

Two blocks (Mermaid charts and Markdown tables: text that GitHub renders; no image file is committed):

* `results-chart` (README and docs/reproduction.md): the comparison at the paper's budget, 100 epochs
  (`benchmarks/results/paper_schedule.json`, written by `benchmarks/protocol_study.py --factors=paper_schedule
  --methods=all`): per method the mean top-1 over seeds on the held-out validation split (bars, the ranking) and
  on the test split (line), then a table with both and their spread, the gain over the vanilla student, and the
  rank agreement with the short budget (Kendall's τ).
* `short-chart` (docs/reproduction.md): the short budget, 15 epochs (`reproduce_small_fidelity2.json`: mean
  top-1 on the test split after the last epoch).

`tests/test_docs.py` fails when a block differs from what this script would write now.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # benchmarks.*, when run as a script

from benchmarks import docs_blocks  # noqa: E402
from benchmarks.recorded import teachers_sentence  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")
PAPER = os.path.join(RESULTS_DIR, "paper_schedule.json")
SHORT = os.path.join(RESULTS_DIR, "reproduce_small_fidelity2.json")
README, REPRODUCTION = os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "reproduction.md")
BLOCKS = {  # marker → the files that hold it
    "results-chart": (README, REPRODUCTION),
    "short-chart": (REPRODUCTION,),
}
RATE = 0.1
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


def mean_spread(mean: float, std: float, seeds: int) -> str:
    """Mean ± spread over seeds in %; one seed has no spread, so none is printed (not "± 0.00"). Also the
    protocol study's tables."""
    return f"{100 * mean:.2f}" if seeds < 2 else f"{100 * mean:.2f} ± {100 * std:.2f}"


def results_chart(paper: dict, short: dict, rate: float = RATE) -> str:
    """The paper-budget chart and table, with the short budget's rank agreement."""
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
    vanilla = next((r for r in rows if r["method"] == "none"), None)
    table = [
        "| rank | method | seeds | validation % | test % | test − vanilla |",
        "|---|---|---|---|---|---|",
    ]
    for rank, r in enumerate(reversed(rows), start=1):
        gain = "—" if vanilla is None or r is vanilla else f"{100 * (r['test'] - vanilla['test']):+.2f}"
        validation = mean_spread(r["validation"], r["validation_std"], r["seeds"])
        test = mean_spread(r["test"], r["test_std"], r["seeds"])
        table.append(f"| {rank} | {r['method']} | {r['seeds']} | {validation} | {test} | {gain} |")
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
    if teachers := teachers_sentence(rows, paper.get("teachers", [])):
        note += f" {teachers} (docs/reproduction.md says why)."
    begin, end = markers("results-chart")
    return "\n".join([begin, *chart, "", *table, "", note, agreement, end])


def blocks() -> dict[str, str]:
    paper, short = json.load(open(PAPER)), json.load(open(SHORT))
    return {"results-chart": results_chart(paper, short), "short-chart": short_chart(short)}


def main() -> None:
    for name, block in blocks().items():
        for path in BLOCKS[name]:
            text = open(path).read()
            with open(path, "w") as f:
                f.write(docs_blocks.rewrite(text, name, block))
            print(f"wrote {name} into {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
