"""See how networks embed a data split: SPCA views, affinity/MPNN graphs, per-layer t-SNE and cluster metrics.

  python visualize.py --teacher=runs/teacher --students=runs/student,runs/student_iep --iep_run=runs/student_iep

For the teacher and every student (run directories of ours), on --split:
  spca/<net>_point<i>.png     top-3 SPCA compressed PCs, coloured by class and by mean image colour
  projector/                  vectors + metadata + sprite for TensorBoard's Embedding Projector
                              (tensorboard --logdir <out>/projector)
  graphs/point<i>.png         for --graph_images fixed images: affinity matrices (and, with --iep_run,
                              the MPNN readouts and messages) as heatmaps, and as graphs of the images
  embeddings/point<i>.png     each point's pooled features in 2-D: t-SNE and IVIS (rows) per network (columns);
                              IVIS is fitted on --ivis_fit_split and embeds --split with its learned mapping
  static/<net>_point<i>_{map,neurons}.png
                              with --static_knowledge: the semantic vectors in 2-D (each neuron drawn as its
                              top image) and 16 neurons' top-5 images, titled with the alignment score
  cluster_metrics.json, cluster_metrics_<space>.png
                              k-NN accuracy, silhouette, intra/inter distance ratio per point and network,
                              on the features and on each embedding
Deterministic for a fixed --seed.
"""

from __future__ import annotations

from iep.engine.startup import import_tensorflow_quietly, parse_flags_or_exit  # noqa: E402

import_tensorflow_quietly()

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("teacher", None, "The teacher's run directory.", required=True)
flags.DEFINE_list("students", [], "Students' run directories.")
flags.DEFINE_string("iep_run", None, "An IEP/IEP+BB run: its trained IPCA state and MPNN draw the teacher's graphs.")
flags.DEFINE_string("dataset", None, "Data set; default: the teacher run's.")
flags.DEFINE_string("data_dir", None, "Data folder; default: the teacher run's.")
flags.DEFINE_string("split", "test", "Split to embed.")
flags.DEFINE_integer("limit", None, "Use the first N images of the split (default: all).")
flags.DEFINE_integer(
    "tsne_limit", 2000, "Images embedded by t-SNE and scored by the cluster metrics (at least 50).", lower_bound=50
)
flags.DEFINE_list("embedding", ["tsne", "ivis"], "2-D embeddings of each point's pooled features: tsne, ivis.")
flags.DEFINE_string("ivis_fit_split", "train", "Split whose images IVIS learns its mapping on (then embeds --split).")
flags.DEFINE_integer(
    "ivis_fit_limit", 5000, "Images of --ivis_fit_split IVIS is fitted on (seeded subset).", lower_bound=3
)
flags.DEFINE_integer(
    "graph_images", 8, "Images drawn as graph nodes (one per class first, fixed by --seed).", lower_bound=0
)
flags.DEFINE_string(
    "static_knowledge", None, "A static-knowledge file of --teacher: draw its neurons' semantic vectors."
)
flags.DEFINE_list("points", None, "Sensing-point indices to use (default: all).")
flags.DEFINE_boolean("projector", True, "Write the TensorBoard Embedding Projector files.")
flags.DEFINE_integer("seed", 0, "Seed of t-SNE and of the graph images.", lower_bound=0)
flags.DEFINE_integer("batch_size", 500, "Inference batch size.", lower_bound=1)
flags.DEFINE_string("out", "runs/visualize", "Output folder.")
# absl answers a mistyped --out_dir with "Did you mean: log_dir?", its own flag for log files, which then leaves
# the views in the default folder without a word
flags.DEFINE_alias("out_dir", "out")
flags.DEFINE_string("cache_dir", None, "Cache for data statistics.")


def _visualize() -> dict:
    from iep.engine.cli import number_list
    from iep.interpret.report import visualize

    return visualize(
        FLAGS.teacher,
        FLAGS.students,
        iep_run=FLAGS.iep_run,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        split=FLAGS.split,
        limit=FLAGS.limit,
        tsne_limit=FLAGS.tsne_limit,
        embeddings=FLAGS.embedding,
        ivis_fit_split=FLAGS.ivis_fit_split,
        ivis_fit_limit=FLAGS.ivis_fit_limit,
        graph_images=FLAGS.graph_images,
        static_knowledge=FLAGS.static_knowledge,
        points=number_list("points", FLAGS.points, int) or None,
        projector=FLAGS.projector,
        seed=FLAGS.seed,
        batch_size=FLAGS.batch_size,
        out=FLAGS.out,
        cache_dir=FLAGS.cache_dir,
    )


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from iep.apps.vocabulary import in_flags
    from iep.engine.cli import run_or_exit

    logging.set_verbosity(logging.WARNING)
    run_or_exit(_visualize, lambda message: in_flags(message, set(FLAGS)))


def run() -> None:
    import iep

    iep.leave_source_root_off_sys_path()
    app.run(main, flags_parser=parse_flags_or_exit)


if __name__ == "__main__":
    run()
