"""Evaluate a trained classifier on a data split: top-1/top-5, per-class accuracy, confusion matrix.

  python eval.py --run_dir=runs/digits_wrn-16-1_none_r1_s0           # newest checkpoint of a run
  python eval.py --saved_model=runs/.../export --dataset=digits       # an exported SavedModel
  python eval.py --checkpoint=runs/digits_wrn-16-1_none_r1_s0/checkpoints/epoch-7  # the run's network, data
  python eval.py --checkpoint=path/to/epoch-7 --arch=wrn-16-1 --dataset=digits   # outside a run

Prints a summary and writes the full report as JSON (--output).
"""

from __future__ import annotations

from iep.engine.startup import import_tensorflow_quietly, parse_flags_or_exit  # noqa: E402

import_tensorflow_quietly()

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("run_dir", None, "A run directory of ours: its config and newest checkpoint are used.")
flags.DEFINE_string(
    "checkpoint",
    None,
    "A checkpoint prefix (or folder) of ours; default: --run_dir's newest. Inside a run directory, the run's "
    "network and data are used.",
)
flags.DEFINE_string("saved_model", None, "An exported SavedModel folder (instead of a checkpoint).")
flags.DEFINE_string("arch", None, "Architecture, when --checkpoint is not inside a run directory.")
flags.DEFINE_string("dataset", None, "Data set; default: the run's.")
flags.DEFINE_string("data_dir", None, "Data folder; default: the run's.")
flags.DEFINE_boolean("download", False, "Let tfds download the data set.")
flags.DEFINE_string("split", "test", "Split to evaluate.")
flags.DEFINE_integer("batch_size", 500, "Evaluation batch size.", lower_bound=1)
flags.DEFINE_string(
    "output",
    None,
    "Report JSON; default beside the model: <run_dir>/eval_<split>.json, <checkpoint prefix>.eval_<split>.json, "
    "<checkpoint folder>/eval_<split>.json, or eval_<split>_<folder>.json beside --saved_model.",
)
flags.DEFINE_string("cache_dir", None, "Cache for data statistics.")


def _evaluate() -> dict:
    from iep.core.files import write_json_atomic
    from iep.engine.evaluation import evaluate

    report = evaluate(
        run_dir=FLAGS.run_dir,
        checkpoint=FLAGS.checkpoint,
        saved_model=FLAGS.saved_model,
        arch=FLAGS.arch,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        download=FLAGS.download,
        split=FLAGS.split,
        batch_size=FLAGS.batch_size,
        cache_dir=FLAGS.cache_dir,
    )
    from iep.engine.evaluation import default_output

    output = FLAGS.output or default_output(FLAGS.run_dir, FLAGS.checkpoint, FLAGS.saved_model, FLAGS.split)
    write_json_atomic(output, report)
    top5 = f"  top-5 {report['top5']:.4f}" if "top5" in report else ""
    print(
        f"{report['model']} on {report['dataset']}/{FLAGS.split} ({report['examples']} images): "
        f"top-1 {report['top1']:.4f}{top5}"
    )
    worst = sorted(report["per_class_accuracy"].items(), key=lambda kv: kv[1])[:3]
    print("lowest per-class accuracy: " + ", ".join(f"{name} {acc:.3f}" for name, acc in worst))
    print(f"report: {output}")
    return report


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from iep.apps.vocabulary import in_flags
    from iep.engine.cli import run_or_exit

    logging.set_verbosity(logging.WARNING)
    run_or_exit(_evaluate, lambda message: in_flags(message, set(FLAGS)))


def run() -> None:
    import iep

    iep.leave_source_root_off_sys_path()
    app.run(main, flags_parser=parse_flags_or_exit)


if __name__ == "__main__":
    run()
