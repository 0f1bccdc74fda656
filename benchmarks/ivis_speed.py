"""IVIS speed on this machine: fit (kNN graph + training) and transform of N points × D dims.

  python benchmarks/ivis_speed.py            # 10,000 × 64, 10 Gaussian blobs; writes results/ivis_speed.json

The budget (issue: under a minute for 10,000 × 64 on 2 cores) covers the whole fit: exact kNN with k = 150,
at most 100 epochs (early stop after 10 without improvement), then the transform of held-out points.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402

from benchmarks import docs_blocks  # noqa: E402
from benchmarks.results_io import write_results  # noqa: E402
from benchmarks.timing import MachineWatch, timed  # noqa: E402
from iep.interpret.ivis import Ivis, IvisConfig, neighbour_lists  # noqa: E402
from iep.interpret.metrics import knn_accuracy  # noqa: E402

flags.DEFINE_integer("points", 10_000, "Points to fit on.")
flags.DEFINE_integer("dims", 64, "Feature dimensions.")
flags.DEFINE_integer("held_out", 2_000, "Points transformed after the fit.")
flags.DEFINE_integer("repeats", 2, "Timed fits (seeds 0..repeats-1).")
flags.DEFINE_string("out", os.path.join(docs_blocks.RESULTS_DIR, "ivis_speed.json"), "Results file.")
flags.DEFINE_boolean("docs", True, "Rewrite the sentence in docs/interpretability.md from the results.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    x, y = make_blobs(FLAGS.points + FLAGS.held_out, n_features=FLAGS.dims, centers=10, cluster_std=4.0, random_state=0)
    train, held = x[: FLAGS.points], x[FLAGS.points :]
    watch = MachineWatch()
    with timed() as knn:
        neighbour_lists(train, IvisConfig().k)
    results = []
    for seed in range(FLAGS.repeats):
        with timed() as fit:
            ivis = Ivis(IvisConfig(seed=seed)).fit(train)
        with timed() as transform:
            embedded = ivis.transform(held)
        row = {
            "seed": seed,
            "fit_wall_seconds": round(fit.wall, 2),
            "fit_cpu_seconds": round(fit.cpu, 2),
            "epochs": len(ivis.loss_history),
            "transform_wall_seconds": round(transform.wall, 3),
            "transform_cpu_seconds": round(transform.cpu, 3),
            "held_out_knn_accuracy": round(knn_accuracy(embedded, y[FLAGS.points :]), 4),
        }
        print(row, flush=True)
        results.append(row)
    settings = {"points": FLAGS.points, "dims": FLAGS.dims, "held_out": FLAGS.held_out,
                "knn_wall_seconds": knn.wall, "knn_cpu_seconds": knn.cpu}  # fmt: skip
    write_results(FLAGS.out, settings, results, watch.finish())
    if FLAGS.docs:
        docs_blocks.update_for(FLAGS.out)


if __name__ == "__main__":
    app.run(main)
