"""Test accuracy per epoch, one line per method, from the runs' metrics.json files.

python benchmarks/learning_curves.py --out=curves.png runs/a runs/b ...
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plot_learning_curves(curves: Mapping[str, Sequence[float]], title: str, path: str) -> None:
    """One PNG; matplotlib's Agg backend so it works without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, accuracy in curves.items():
        axes.plot(range(1, len(accuracy) + 1), accuracy, marker="o", markersize=3, label=name)
    axes.set(xlabel="epoch", ylabel="test top-1 accuracy", title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str]) -> None:
    from iep.engine.files import read_json

    if len(argv) < 2 or not argv[0].startswith("--out="):
        raise SystemExit("usage: python benchmarks/learning_curves.py --out=FILE.png RUN_DIR [RUN_DIR ...]")
    curves = {}
    for run_dir in argv[1:]:
        history = read_json(os.path.join(run_dir, "metrics.json"))["history"]
        curves[os.path.basename(os.path.normpath(run_dir))] = [h["eval_accuracy"] for h in history]
    plot_learning_curves(curves, "test accuracy per epoch", argv[0].split("=", 1)[1])


if __name__ == "__main__":
    main(sys.argv[1:])
