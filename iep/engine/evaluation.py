"""Classification metrics from logits: top-k, per-class accuracy, confusion matrix."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf


def collect_logits(predict, batches: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Runs `predict` (images -> logits) over (images, labels) batches; returns stacked logits, labels."""
    logits, labels = [], []
    for images, batch_labels in batches:
        logits.append(np.asarray(predict(images), np.float32))
        labels.append(np.asarray(batch_labels))
    return np.concatenate(logits), np.concatenate(labels)


def classification_report(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict:
    """Top-1 (and top-5 past 5 classes: with 5 or fewer every label is in the top 5), per-class accuracy and
    the confusion matrix (rows: true class), by scikit-learn's metrics."""
    from sklearn.metrics import confusion_matrix, top_k_accuracy_score

    num_classes = logits.shape[1]
    if len(class_names) != num_classes:
        raise ValueError(f"the model predicts {num_classes} classes but the data set has {len(class_names)}")
    classes = np.arange(num_classes)
    top1 = np.argmax(logits, axis=1)
    confusion = confusion_matrix(labels, top1, labels=classes)
    support = confusion.sum(axis=1)
    per_class = np.divide(np.diag(confusion), support, out=np.zeros(num_classes), where=support > 0)
    report = {
        "examples": int(labels.size),
        "top1": float(np.mean(top1 == labels)),
        "per_class_accuracy": {name: float(acc) for name, acc in zip(class_names, per_class, strict=True)},
        "confusion_matrix": confusion.astype(np.int64).tolist(),
        "class_names": list(class_names),
    }
    if num_classes > 5:
        report["top5"] = float(top_k_accuracy_score(labels, logits, k=5, labels=classes))
    return report


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels)) if labels.size else 0.0


def _saved_model_predictor(path: str):
    import tensorflow as tf

    from iep.engine.export import CLASS_NAMES_FILE
    from iep.engine.layout import CONFIG_FILE

    if not os.path.exists(path):
        raise ValueError(f"saved_model={path!r} does not exist")
    if os.path.exists(os.path.join(path, CONFIG_FILE)):
        raise ValueError(f"saved_model={path!r} is a run directory: give it as run_dir= (or its export/ folder)")
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:
        raise ValueError(f"saved_model={path!r} is not a readable SavedModel ({error.__class__.__name__})") from None
    serve = loaded.signatures.get("serving_default")
    inputs = serve.structured_input_signature[1] if serve is not None else {}
    if "images" not in inputs:  # what our exports serve; another SavedModel is a teacher (--teacher), not this
        raise ValueError(
            f"saved_model={path!r} has no serving_default signature taking `images` (one of our exports has; "
            f"its signatures: {list(loaded.signatures)})"
        )
    size = int(inputs["images"].shape[1])
    names_file = os.path.join(path, "assets", CLASS_NAMES_FILE)
    names = open(names_file).read().splitlines() if os.path.exists(names_file) else None
    return (lambda images: serve(images=images)["logits"]), size, names


def evaluate(
    *,
    run_dir: str | None = None,
    checkpoint: str | None = None,
    saved_model: str | None = None,
    arch: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    download: bool = False,
    split: str = "test",
    batch_size: int = 500,
    cache_dir: str | None = None,
) -> dict:
    """Evaluates a run's newest checkpoint, a checkpoint prefix, or an exported SavedModel."""
    from iep.core.tracing import traced
    from iep.datasets import DataConfig, build_pipeline
    from iep.datasets.sources import load_source
    from iep.engine.checkpointing import checkpoint_exists, restore_model_weights
    from iep.engine.runs import check_class_names, load_run_config, run_data_config, run_dir_holding
    from iep.nets import build_network, parse_arch

    if not (run_dir or checkpoint or saved_model):
        raise ValueError("give run_dir=, checkpoint= or saved_model=")
    run_flag = "run_dir="
    if checkpoint and not (run_dir or saved_model):
        run_dir, run_flag = run_dir_holding(checkpoint), "the run holding the checkpoint:"
    run_config = load_run_config(run_dir, run_flag) if run_dir and not saved_model else {}
    if not (saved_model or run_config or arch):
        raise ValueError("arch= is required with a checkpoint= outside a run directory")
    if arch and run_config and parse_arch(arch) != parse_arch(run_config["arch"]):
        raise ValueError(f"arch={arch}, but run {run_dir!r} trained a {run_config['arch']}: drop arch=")
    if checkpoint and not checkpoint_exists(checkpoint):  # before the data is read
        raise ValueError(
            f"checkpoint={checkpoint!r} does not exist: give a prefix (runs/x/checkpoints/epoch-10, beside its "
            ".index file) or a run directory"
        )
    dataset = dataset or run_config.get("dataset")
    if not dataset:
        where = "the run was trained from Python on data of its own" if run_config else "no run directory names it"
        raise ValueError(f"dataset= is required ({where}): tfrecord, folder, digits or a tfds name, with data_dir=")
    same_dataset = dataset == run_config.get("dataset")
    if data_dir is None and same_dataset:
        data_dir = run_config.get("data_dir")
    predict, image_size = None, (run_config.get("input_shape") or [None])[0]
    model_names = run_config.get("class_names")
    if saved_model:
        predict, image_size, model_names = _saved_model_predictor(saved_model)
    crop = bool(run_config.get("crop_to_bbox")) and same_dataset  # as the run saw its images
    source = load_source(dataset, data_dir, download, crop)  # class names first: a mismatch costs no decoding
    check_class_names(model_names, source.class_names, repr(saved_model or run_dir))
    # On the run's own data, the run's data settings (a validation split carved out of its training split is
    # scored on the same held-out images); on other data, only what the caller gave.
    same_data = same_dataset and data_dir == run_config.get("data_dir")
    settings = {"download": download, "image_size": image_size, "cache_dir": cache_dir, "crop_to_bbox": crop}
    config = run_data_config(run_config, **settings) if same_data else DataConfig(dataset, data_dir, **settings)
    data = build_pipeline(config, source)
    if predict is None:
        network = build_network(run_config.get("arch", arch), data.num_classes, data.input_shape, data.mean, data.std)
        try:
            read = restore_model_weights(network.model, checkpoint or run_dir)
        except ValueError as error:
            raise ValueError(f"{'checkpoint=' if checkpoint else 'run_dir='} {error}") from None
        predict = traced(lambda images: network.classifier(images, training=False))
    else:
        read = None
    logits, labels = collect_logits(predict, data.eval_dataset(split, batch_size))
    report = classification_report(logits, labels, data.class_names)
    report.update({"split": split, "dataset": dataset, "model": saved_model or checkpoint or run_dir})
    if read is not None:  # the checkpoint actually read (a damaged newest one is skipped for an older one)
        report["checkpoint"] = read
    return report


def first_images(batches: tf.data.Dataset, limit: int | None) -> tf.data.Dataset:
    """The batches' first `limit` images, batched as they were (--eval_limit); all of them for None."""
    if not limit:
        return batches
    size = batches.element_spec[0].shape[0]
    return batches.unbatch().take(limit).batch(size or 500)


def default_output(run_dir: str | None, checkpoint: str | None, saved_model: str | None, split: str) -> str:
    """The report beside what was evaluated (never in the working directory, where two models' reports would
    overwrite each other): <run_dir>/eval_<split>.json, <checkpoint prefix>.eval_<split>.json,
    <checkpoint folder>/eval_<split>.json, or eval_<split>_<folder>.json beside a SavedModel folder."""
    if saved_model:
        folder = os.path.normpath(saved_model)
        return os.path.join(os.path.dirname(folder), f"eval_{split}_{os.path.basename(folder)}.json")
    if checkpoint and not run_dir:
        path = os.path.normpath(checkpoint)
        return os.path.join(path, f"eval_{split}.json") if os.path.isdir(path) else f"{path}.eval_{split}.json"
    return os.path.join(run_dir or ".", f"eval_{split}.json")
