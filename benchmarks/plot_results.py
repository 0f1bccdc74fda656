"""The reproduction's headline numbers as a chart in the docs, generated from the results file.

  python benchmarks/plot_results.py        # rewrites the marked blocks in README.md and docs/reproduction.md

A Mermaid bar chart (text that GitHub renders; no image file is committed) of the CPU-scale reproduction's
10 % row with the code of both fidelity passes (`benchmarks/results/reproduce_small_fidelity2.json`: mean
top-1 of the last epoch over the seeds run).
`tests/test_docs.py` fails when a block differs from what this script would write now.
"""

from __future__ import annotations

import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "reproduce_small_fidelity2.json")
TARGETS = (os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "reproduction.md"))
BEGIN, END = "<!-- results-chart:begin (benchmarks/plot_results.py) -->", "<!-- results-chart:end -->"
RATE = 0.1


def chart(results: dict, rate: float = RATE) -> str:
    rows = [r for r in results["results"] if r["rate"] == rate and r["method"] != "none_long"]
    rows.sort(key=lambda r: r["last_mean"])
    names = ", ".join(r["method"] for r in rows)
    values = ", ".join(f"{100 * r['last_mean']:.1f}" for r in rows)
    seeds = sorted({r["seeds"] for r in rows})
    low = int(min(100 * r["last_mean"] for r in rows) // 10 * 10)
    protocol = results["protocol"]
    title = (
        f"CIFAR-10 at {rate:.0%}: top-1 % ({'/'.join(map(str, seeds))} seeds), {protocol['teacher_arch']} to "
        f"{protocol['student_arch']}, {protocol['student_epochs']} epochs"
    )
    return "\n".join(
        [
            BEGIN,
            "```mermaid",
            "xychart-beta",
            f'    title "{title}"',
            f"    x-axis [{names}]",
            f'    y-axis "top-1 %" {low} --> {int(max(100 * r["last_mean"] for r in rows) // 10 * 10 + 10)}',
            f"    bar [{values}]",
            "```",
            END,
        ]
    )


def rewrite(text: str, block: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {BEGIN} ... {END} block to rewrite")
    return pattern.sub(lambda _: block, text)


def main() -> None:
    block = chart(json.load(open(RESULTS)))
    for path in TARGETS:
        text = open(path).read()
        with open(path, "w") as f:
            f.write(rewrite(text, block))
        print(f"wrote the chart into {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
