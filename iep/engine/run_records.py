"""What a run leaves in its directory besides checkpoints: metrics.json (the history and its summary) and, for a
run started from Python, the config.json that names its network."""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from iep.core.files import read_json, write_json_atomic
from iep.engine.layout import CONFIG_FILE, METRICS_FILE, TENSORBOARD_SUBDIR
from iep.engine.tensorboard import scalars
from iep.engine.train_config import TrainConfig


def load_history(run_dir: str, epochs_completed: int) -> list[dict]:
    """The recorded epochs up to the restored checkpoint's (later ones were never checkpointed). A resumed run
    whose metrics.json is gone gets back what TensorBoard kept of each epoch (its accuracies), said aloud, so
    that its best accuracy still covers the epochs before the resume."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.exists(path):
        return recovered_history(run_dir, epochs_completed) if epochs_completed else []
    return [h for h in read_json(path).get("history", []) if h["epoch"] <= epochs_completed]


def recovered_history(run_dir: str, epochs_completed: int) -> list[dict]:
    """Epochs 1..`epochs_completed` from TensorBoard's `epoch/*` scalars (accuracies; losses and times are lost)."""
    found = scalars(os.path.join(run_dir, TENSORBOARD_SUBDIR), "epoch/")
    evaluated, trained = found.get("epoch/eval_accuracy", {}), found.get("epoch/train_accuracy", {})
    history = [
        {"epoch": epoch, "eval_accuracy": evaluated.get(epoch), "train_accuracy": trained.get(epoch),
         "train_loss": None, "seconds": 0.0, "eval_seconds": None, "recovered": "tensorboard"}
        for epoch in range(1, epochs_completed + 1)
        if epoch in trained
    ]  # fmt: skip
    if not history:  # no events either: the caller scores the checkpoint again (a finished run) or goes on
        return []
    lost = "every epoch's losses and times" if len(history) == epochs_completed else "the epochs it lacks entirely"
    print(
        f"warning: {METRICS_FILE} of {run_dir} is missing: epochs 1 to {epochs_completed} were rebuilt from its "
        f"TensorBoard events ({len(history)} of {epochs_completed} found; their accuracies kept, {lost} lost)"
    )
    return history


def metrics_summary(
    history: list[dict],
    finished: bool,
    config: TrainConfig,
    arch: str,
    distill: str,
    num_train: int,
    pre_phase_steps: dict[str, int] | None = None,
) -> dict:
    """metrics.json: the history with its last and best evaluated accuracy (--eval_every skips some epochs), and
    each pre-phase's length in steps (counted in passes or in main steps, it changes with the data size)."""
    evaluated = [h for h in history if h.get("eval_accuracy") is not None]
    accuracies = [h["eval_accuracy"] for h in evaluated]
    best = int(np.argmax(accuracies)) if accuracies else None
    return {
        "arch": arch,
        "distill": distill,
        "epochs_completed": history[-1]["epoch"] if history else 0,
        "epochs": config.epochs,
        "finished": finished,
        "eval_split": config.eval_split,
        "eval_limit": config.eval_limit,  # None: the whole split
        "last_accuracy": accuracies[-1] if accuracies else None,
        "best_accuracy": accuracies[best] if best is not None else None,
        "best_epoch": evaluated[best]["epoch"] if best is not None else None,
        "train_images": num_train,
        "pre_phase_steps": pre_phase_steps or {},
        "history": history,
    }


def describe_run(run_dir: str, student, data, distiller, config) -> None:
    """A run started from Python (train.py writes its own) gets a config.json that names its network, so that
    eval.py and `load_teacher` can rebuild it; the data it trained on is the caller's, so eval.py then asks
    for --dataset."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.exists(path):
        return
    standardize = next((layer for layer in student.model.layers if layer.name == "standardize"), None)
    mean, std = [v.numpy().tolist() for v in (standardize.mean, standardize.std)] if standardize else (None, None)
    write_json_atomic(
        path,
        {
            "written_by": "iep.Trainer",
            "arch": student.arch,
            "dataset": None,
            "num_classes": int(data.num_classes),
            "class_names": list(data.class_names),
            "input_shape": list(data.input_shape),
            "mean": mean,
            "std": std,
            "distill": distiller.name,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "seed": config.seed,
        },
    )


def recovered_record(epochs: int, accuracy: float, eval_seconds: float) -> dict:
    """The last epoch's record of a finished run whose metrics.json was lost (deleted, as the message for a
    damaged one advises): its weights were scored again; the earlier epochs' history is gone."""
    return {"epoch": epochs, "eval_accuracy": accuracy, "seconds": 0.0, "eval_seconds": eval_seconds, "recovered": True}


def rescored_record(evaluate, run_dir: str, config) -> dict:
    """`recovered_record` of a finished run whose metrics.json is gone: its checkpoint scored again, said aloud."""
    started = time.perf_counter()
    accuracy = evaluate()
    print(
        f"warning: {METRICS_FILE} of the finished run {run_dir} was missing; scored its checkpoint again "
        f"({config.eval_split} accuracy {accuracy:.4f}); the history of the earlier epochs is lost"
    )
    return recovered_record(config.epochs, accuracy, time.perf_counter() - started)


CHANCE_EPOCHS = 5  # epochs in a row at chance before a run is said to learn nothing (a slow start is allowed)


def chance_warning(history: list[dict], num_classes: int) -> str | None:
    """A warning when the last CHANCE_EPOCHS epochs' training accuracy is all at chance: a run can diverge without
    a NaN (MLKD at LR 0.1, batch 128 sat at 10 % on CIFAR-10 for all its 100 epochs, its loss finite). The run
    goes on: on a hard task a slow start is possible, and the user decides."""
    recent = history[-CHANCE_EPOCHS:]
    chance = 1.0 / num_classes
    ceiling = min(1.5 * chance, chance + 0.05)  # half again chance, at most 5 points above it
    accuracies = [r.get("train_accuracy") for r in recent]  # None: an epoch recovered without it
    if len(recent) < CHANCE_EPOCHS or any(a is None or a > ceiling for a in accuracies):
        return None
    return (
        f"warning: training accuracy has stayed at chance for {CHANCE_EPOCHS} epochs (at most "
        f"{max(accuracies):.4f} by epoch {recent[-1]['epoch']}; chance is {chance:.4f} with "
        f"{num_classes} classes), so the student is most likely learning nothing: the loss may have diverged without "
        "a NaN. Training goes on; a learning rate too high for this method is the usual cause (lower --lr / "
        "TrainConfig.lr)."
    )


def epoch_line(record: dict, eval_split: str) -> str:
    accuracy = record["eval_accuracy"]
    return (
        f"epoch {record['epoch']}: loss {record['train_loss']:.4f}  train acc {record['train_accuracy']:.4f}  "
        f"{eval_split} acc {'-' if accuracy is None else f'{accuracy:.4f}'}  ({record['images_per_second']:.0f} img/s)"
    )


def pass_line(label: str, local: int, passes: int, means: dict) -> str:
    return f"{label} {local + 1}/{passes}: " + "  ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in means.items())


def epoch_record(epoch, means, eval_accuracy, learning_rate, seconds, eval_seconds, config, steps) -> dict:
    """One epoch's line of metrics.json: its means, the evaluation (None when --eval_every skips it), speed."""
    return {
        "epoch": epoch + 1,
        "train_loss": means["loss/total"],
        "train_accuracy": means["accuracy/train"],
        "eval_accuracy": eval_accuracy,
        "learning_rate": learning_rate,
        "seconds": seconds,
        "eval_seconds": eval_seconds,
        "images_per_second": steps * config.batch_size / max(seconds, 1e-9),
        **{k: v for k, v in means.items() if k.startswith(("loss/", "distill/"))},
    }


def write_epoch_summary(writer, record: dict) -> None:
    """The epoch's TensorBoard scalars (`epoch/*`, stepped by epoch)."""
    with writer.as_default(step=record["epoch"]):
        if record["eval_accuracy"] is not None:
            tf.summary.scalar("epoch/eval_accuracy", record["eval_accuracy"])
        tf.summary.scalar("epoch/train_accuracy", record["train_accuracy"])
        tf.summary.scalar("epoch/images_per_second", record["images_per_second"])
    writer.flush()
