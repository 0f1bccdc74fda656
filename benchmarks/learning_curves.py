"""Test accuracy per epoch, one line per method, from the runs' metrics.json files.

python benchmarks/learning_curves.py --out=curves.png runs/a runs/b ...
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plot_learning_curves(
    curves: Mapping[str, Sequence[float | None]],
    title: str,
    path: str,
    reference: str | None = "none",
    controls: Collection[str] = (),
) -> None:
    """One PNG; matplotlib's Agg backend so it works without a display.

    tab20 keeps up to 20 methods apart (tab10 repeats after ten); the
    `reference` curve (the vanilla student) is drawn black and dashed, and
    `controls` (variants of it, not methods) grey and dotted.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab20").colors
    figure, axes = plt.subplots(figsize=(8, 4.5))
    methods = [name for name in curves if name != reference and name not in controls]
    for name, accuracy in curves.items():
        if name == reference:
            style = dict(color="black", linestyle="--")
        elif name in controls:
            style = dict(color="grey", linestyle=":")
        else:
            style = dict(color=colors[methods.index(name) % len(colors)])
        epochs = [e for e, a in enumerate(accuracy, start=1) if a is not None]  # --eval_every leaves gaps
        axes.plot(epochs, [a for a in accuracy if a is not None], marker="o", markersize=3, label=name, **style)
    axes.set(xlabel="epoch", ylabel="test top-1 accuracy", title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str]) -> None:
    from iep.core.files import read_json

    if len(argv) < 2 or not argv[0].startswith("--out="):
        raise SystemExit("usage: python benchmarks/learning_curves.py --out=FILE.png RUN_DIR [RUN_DIR ...]")
    curves = {}
    for run_dir in argv[1:]:
        history = read_json(os.path.join(run_dir, "metrics.json"))["history"]
        curves[os.path.basename(os.path.normpath(run_dir))] = [h["eval_accuracy"] for h in history]
    plot_learning_curves(curves, "test accuracy per epoch", argv[0].split("=", 1)[1])


if __name__ == "__main__":
    main(sys.argv[1:])
