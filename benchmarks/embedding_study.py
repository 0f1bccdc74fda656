"""Layer-wise embedding study (after "Visualizing the embedding space to explain the effect of knowledge
distillation", arXiv 2021): does distillation make the student's representation compact and separated
already at *earlier* layers than the vanilla student's?

  python benchmarks/reproduce_small.py --rates=0.1 --seeds=1 --methods=none,iep_bb,fitnet,co   # the runs
  python benchmarks/embedding_study.py                  # teacher + every finished student of that rate/seed

For the CPU-scale reproduction's teacher and students (`<root>/teacher`, `<root>/r<rate>/<method>_s<seed>`)
it runs `visualize.py`'s report on a seeded subset of the test split: t-SNE and IVIS (fitted on train images,
then embedding the test images) of every sensing point's pooled features, and k-NN accuracy, silhouette and
intra/inter distance ratio on the features and on both maps. Figures go to --out (not committed); the table
to benchmarks/results/embedding_study.{json,csv,md}, with each student's difference from the vanilla
student per point: the paper's claim predicts higher k-NN accuracy and silhouette and a lower ratio at the
early points for distilled students.
"""

from __future__ import annotations

import csv
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from benchmarks.recorded import finished  # noqa: E402
from benchmarks.reproduce_small import student_dir  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from iep.core.files import read_json  # noqa: E402
from iep.interpret.report import visualize  # noqa: E402

flags.DEFINE_string("root", "runs/reproduce_small", "The reproduction's run root (teacher/ and r<rate>/).")
flags.DEFINE_float("rate", 0.1, "Student data rate of the runs to study.")
flags.DEFINE_integer("seed", 0, "Student seed of the runs to study (and the seed of the subsets, t-SNE, IVIS).")
flags.DEFINE_list("methods", None, "Students to include (default: every finished one; 'none' = vanilla).")
flags.DEFINE_integer("limit", 2000, "Test images embedded and scored (seeded subset).")
flags.DEFINE_integer("ivis_fit_limit", 5000, "Training images IVIS learns its mapping on.")
flags.DEFINE_string("out", "runs/embedding_study", "Figures.")
flags.DEFINE_string("results", "benchmarks/results/embedding_study", "Results base name (.json/.csv/.md).")
FLAGS = flags.FLAGS

METRICS = ("knn_accuracy", "silhouette", "intra_inter_ratio")
SPACES = ("features", "tsne", "ivis")
VANILLA = "none"


def _finished_students(root: str, rate: float, seed: int, methods: list[str] | None) -> dict[str, str]:
    """{method: run dir} of the finished students of this rate and seed (the reproduction's own test)."""
    folder = os.path.join(root, f"r{rate:g}")
    names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    candidates = {
        m: student_dir(root, m, rate, seed) for m, _, s in (n.rpartition("_s") for n in names) if s == str(seed)
    }
    found = {m: d for m, d in candidates.items() if (methods is None or m in methods) and finished(d)}
    if VANILLA not in found:
        raise ValueError(f"no finished vanilla student ({VANILLA}_s{seed}) under {folder}; train it first")
    return found


def _rows(metrics: dict, accuracies: dict) -> list[dict]:
    rows = []
    for network, per_point in metrics.items():
        for point, per_space in per_point.items():
            for space, values in per_space.items():
                for metric, value in values.items():
                    vanilla = metrics.get(VANILLA, {}).get(point, {}).get(space, {}).get(metric)
                    delta = None if network in ("teacher", VANILLA) or vanilla is None else value - vanilla
                    rows.append(
                        {
                            "network": network,
                            "test_accuracy": accuracies[network],
                            "point": point,
                            "space": space,
                            "metric": metric,
                            "value": round(value, 4),
                            "minus_vanilla": None if delta is None else round(delta, 4),
                        }
                    )
    return rows


def _better(metric: str, delta: float) -> bool:
    return delta < 0 if metric == "intra_inter_ratio" else delta > 0


def _markdown(rows: list[dict], networks: list[str], points: list[str]) -> str:
    lines = []
    for space in SPACES:
        header = " | ".join(f"{m} {p}" for m in METRICS for p in points)
        lines += [
            f"### {space}",
            "",
            f"| network (test acc.) | {header} |",
            "|---|" + "---|" * (len(METRICS) * len(points)),
        ]
        for network in networks:
            cells = []
            for metric in METRICS:
                for point in points:
                    key = (network, space, metric, point)
                    row = next((r for r in rows if (r["network"], r["space"], r["metric"], r["point"]) == key), None)
                    if row is None:
                        cells.append("")
                        continue
                    delta = row["minus_vanilla"]
                    cells.append(f"{row['value']:.3f}" + ("" if delta is None else f" ({delta:+.3f})"))
            accuracy = next(r["test_accuracy"] for r in rows if r["network"] == network)
            lines.append(f"| {network} ({accuracy * 100:.2f} %) | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Where distilled students beat the vanilla student (count of the three metrics)", ""]
    lines += ["| network | space | " + " | ".join(points) + " |", "|---|---|" + "---|" * len(points)]
    for network in networks:
        if network in ("teacher", VANILLA):
            continue
        for space in SPACES:
            counts = []
            for point in points:
                better = [
                    _better(r["metric"], r["minus_vanilla"])
                    for r in rows
                    if (r["network"], r["space"], r["point"]) == (network, space, point)
                    and r["minus_vanilla"] is not None
                ]
                counts.append(f"{sum(better)}/{len(better)}" if better else "")
            lines.append(f"| {network} | {space} | " + " | ".join(counts) + " |")
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    students = _finished_students(FLAGS.root, FLAGS.rate, FLAGS.seed, FLAGS.methods)
    teacher = os.path.join(FLAGS.root, "teacher")
    runs = {"teacher": teacher, **students}
    accuracies = {name: read_json(os.path.join(path, "metrics.json"))["last_accuracy"] for name, path in runs.items()}
    start = time.perf_counter()
    metrics = visualize(
        teacher,
        list(students.values()),
        split="test",
        limit=FLAGS.limit,
        tsne_limit=FLAGS.limit,
        embeddings=("tsne", "ivis"),
        ivis_fit_limit=FLAGS.ivis_fit_limit,
        graph_images=4,
        projector=False,
        seed=FLAGS.seed,
        out=FLAGS.out,
    )
    seconds = time.perf_counter() - start
    # visualize names networks by their run folder: back to method names
    by_folder = {os.path.basename(os.path.normpath(path)): name for name, path in runs.items()}
    metrics = {by_folder[folder]: values for folder, values in metrics.items()}
    rows = _rows(metrics, accuracies)
    networks = ["teacher", VANILLA, *[m for m in students if m != VANILLA]]
    points = list(next(iter(metrics.values())))
    settings = {
        "runs": runs,
        "test_images": FLAGS.limit,
        "ivis_fit_images": FLAGS.ivis_fit_limit,
        "seed": FLAGS.seed,
        "seconds": round(seconds, 1),
    }
    write_results(FLAGS.results + ".json", settings, rows)
    with open(FLAGS.results + ".csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(FLAGS.results + ".md", "w") as f:
        f.write(
            f"Embedding study: {len(runs)} networks, {FLAGS.limit} test images, IVIS fitted on "
            f"{FLAGS.ivis_fit_limit} training images, {seconds:.0f} s. Values (student − vanilla).\n\n"
        )
        f.write(_markdown(rows, networks, points))
    print(f"wrote {FLAGS.results}.{{json,csv,md}} and figures under {FLAGS.out}/ in {seconds:.0f} s")


if __name__ == "__main__":
    app.run(main)
