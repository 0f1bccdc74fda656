"""Each export format of a trained network against its SavedModel: test accuracy, file size, one-image latency.

  python benchmarks/export_formats.py --run_dir=runs/protocol_study/teacher
      # → benchmarks/results/export_formats.json and its table in docs/benchmarks.md (a few minutes on 2 cores)

The run's newest checkpoint is exported in every format (int8 calibrated on 256 training images of the
run's own data settings), then each is scored on the run's data set's test split: the SavedModel and
.keras (loaded, called inside a tf.function) by batches, both TFLite files one image at a time through the
TFLite interpreter, as on a phone. Latency: the median CPU and wall time of `--latency_runs` single-image calls
after 20 warm-up calls, one thread.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # noqa: E402 (benchmarks.*)

from absl import app, flags  # noqa: E402

from benchmarks.timing import MachineWatch, per_call, spread, timed  # noqa: E402

flags.DEFINE_string("run_dir", None, "A finished run of ours (its newest checkpoint is exported).", required=True)
flags.DEFINE_string("out", "runs/export_formats", "Where the exported files go.")
flags.DEFINE_integer("latency_runs", 200, "Single-image calls timed per format.")
flags.DEFINE_integer("limit", None, "Score only the first N test images (all by default).")
flags.DEFINE_string("results", None, "Result JSON; default benchmarks/results/export_formats.json.")
flags.DEFINE_boolean("docs", True, "Rewrite the table in docs/benchmarks.md from the results (the default file only).")
FLAGS = flags.FLAGS


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _latency_ms(predict, image, runs: int) -> dict:
    """{"cpu": spread, "wall": spread} of one call, in milliseconds, over `runs` calls after 20 warm-up calls."""
    timings = per_call(predict, image, warmup=20, calls=runs, sync=lambda _: None)  # predict returns numpy
    return {clock: spread([1000.0 * getattr(t, clock) for t in timings]) for clock in ("cpu", "wall")}


def main(argv: list[str]) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks import docs_blocks
    from benchmarks.docs_blocks import RESULTS_DIR
    from benchmarks.results_io import write_results
    from iep.datasets import build_pipeline
    from iep.engine.checkpointing import restore_model_weights
    from iep.engine.mobile_export import EXPORT_FORMATS, TFLiteClassifier, export_student, representative_images
    from iep.engine.runs import load_run_config, run_data_config
    from iep.nets import build_network

    tf.config.threading.set_intra_op_parallelism_threads(1)  # one-image latency as one core sees it
    watch = MachineWatch()
    config = load_run_config(FLAGS.run_dir)
    data = build_pipeline(run_data_config(config))
    network = build_network(config["arch"], data.num_classes, data.input_shape, data.mean, data.std)
    restore_model_weights(network.model, FLAGS.run_dir)
    calibration = representative_images(data.train_dataset(0, 128, 0))
    paths = export_student(network.classifier, FLAGS.out, EXPORT_FORMATS, data.class_names, calibration)

    images, labels = [], []
    for x, y in data.eval_dataset("test", 500):
        images.append(x.numpy())
        labels.append(y.numpy())
    images, labels = np.concatenate(images)[: FLAGS.limit], np.concatenate(labels)[: FLAGS.limit]
    loaded = tf.saved_model.load(paths["savedmodel"])
    from_keras = keras.saving.load_model(paths["keras"])
    keras_call = tf.function(lambda x: from_keras(x, training=False), reduce_retracing=True)  # as served, not eager
    batched = {
        "savedmodel": lambda x: loaded.serve(tf.constant(x))["logits"].numpy(),
        "keras": lambda x: keras_call(tf.constant(x)).numpy(),
    }
    predictors = {**batched, **{f: TFLiteClassifier(paths[f]) for f in ("tflite", "tflite_int8")}}
    reference = np.concatenate([batched["savedmodel"](images[i : i + 500]) for i in range(0, len(images), 500)])
    rows = []
    for fmt, predict in predictors.items():
        with timed() as scoring:
            if fmt in batched:
                logits = np.concatenate([predict(images[i : i + 500]) for i in range(0, len(images), 500)])
            else:
                logits = predict(images)
        latency = _latency_ms(predict, images[:1], FLAGS.latency_runs)
        rows.append(
            {
                "format": fmt,
                "path": os.path.relpath(paths[fmt]),
                "bytes": _size(paths[fmt]),
                "top1": float(np.mean(logits.argmax(1) == labels)),
                "agreement_with_savedmodel": float(np.mean(logits.argmax(1) == reference.argmax(1))),
                "max_abs_logit_difference": float(np.abs(logits - reference).max()),
                "cpu_ms_one_image": latency["cpu"],
                "wall_ms_one_image": latency["wall"],
                "scoring_wall_seconds": scoring.wall,
                "scoring_cpu_seconds": scoring.cpu,
            }
        )
        print(rows[-1], flush=True)
    settings = {
        "run_dir": FLAGS.run_dir,
        "arch": config["arch"],
        "dataset": config["dataset"],
        "test_images": int(len(labels)),
        "calibration_images": len(calibration),
        "threads": 1,
    }
    default = os.path.join(RESULTS_DIR, "export_formats.json")
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.results or default)), exist_ok=True)
    write_results(FLAGS.results or default, settings, rows, watch.finish())
    if FLAGS.docs:
        docs_blocks.update_for(FLAGS.results or default)


if __name__ == "__main__":
    app.run(main)
