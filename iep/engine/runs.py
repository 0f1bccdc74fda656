"""The run directory's `config.json`: what a run was started with, so it can be resumed,
evaluated or used as a teacher without repeating its flags.
"""

from __future__ import annotations

import os
from typing import Any

from iep.engine.files import read_json, write_json_atomic

CONFIG_FILE = "config.json"
# Changing any of these mid-run would silently train a different experiment.
RESUME_KEYS = (
    "arch",
    "dataset",
    "data_dir",
    "rate",
    "sample_seed",
    "image_size",
    "epochs",
    "batch_size",
    "lr",
    "lr_schedule",
    "lr_decay_points",
    "lr_decay_factor",
    "weight_decay",
    "momentum",
    "seed",
    "dropout",
    "distill",
    "teacher",
    "teacher_arch",
    "iep_second_pca",
    "iep_iterations",
    "iep_knowledge",
    "iep_module_steps",
    "iep_module_lr",
    "distill_args",
    "precision",
)
# Keys added after runs existed: a config.json without them was made with these values.
RESUME_DEFAULTS = {"distill_args": None, "precision": "float32"}
# Paths name the same thing whether given relative or absolute.
PATH_KEYS = ("data_dir", "teacher")


def _comparable(key: str, value: Any) -> Any:
    if key in PATH_KEYS and isinstance(value, str):
        return os.path.realpath(value)
    return value


def load_run_config(run_dir: str) -> dict[str, Any]:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{run_dir!r} is not a run directory of ours (no {CONFIG_FILE})")
    return read_json(path)


def save_or_check_run_config(run_dir: str, config: dict[str, Any], resume: bool) -> None:
    """Writes config.json for a new run; for a resumed run, refuses a changed experiment."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if resume and os.path.exists(path):
        saved = read_json(path)
        changed = [
            k
            for k in RESUME_KEYS
            if _comparable(k, saved.get(k, RESUME_DEFAULTS.get(k))) != _comparable(k, config.get(k))
        ]
        if changed:
            details = ", ".join(f"--{k}: was {saved.get(k)!r}, now {config.get(k)!r}" for k in changed)
            raise ValueError(
                f"--run_dir {run_dir!r} holds a run started with other settings ({details}); "
                "use a new --run_dir, or --noresume to start over"
            )
        return
    write_json_atomic(path, config)
