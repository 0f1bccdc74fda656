"""The run directory's `config.json`: what a run was started with, so it can be resumed,
evaluated or used as a teacher without repeating its flags.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from iep.core.files import read_json, write_json_atomic
from iep.engine.checkpointing import CHECKPOINT_SUBDIR, checkpoint_candidates
from iep.engine.export import EXPORT_SUBDIR
from iep.engine.layout import CONFIG_FILE, METRICS_FILE, TENSORBOARD_SUBDIR

if TYPE_CHECKING:
    from iep.datasets import DataConfig

# Changing any of these mid-run would silently train a different experiment.
RESUME_KEYS = (
    "arch",
    "dataset",
    "data_dir",
    "crop_to_bbox",
    "validation_fraction",
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
    "teacher_taps",
    "teacher_preprocess",
    "protocol",
    "knowledge_epochs",
    "iep_second_pca",
    "iep_iterations",
    "iep_knowledge",
    "iep_module_steps",
    "iep_module_epochs",
    "iep_module_lr",
    "iep_clip",
    "distill_args",
    "precision",
    "semantic_vectors",
    "static_knowledge",
    "clip_terms",
)
# Resume keys that are no flag: the library records them as it resolved them (train.py records the rest as given).
RESOLVED_KEYS = {"clip_terms": "--distill_args clip_terms"}
# Keys added after runs existed: a config.json without them was made with these values.
RESUME_DEFAULTS = {
    "distill_args": None,
    "crop_to_bbox": False,
    "validation_fraction": 0.0,
    "precision": "float32",
    "semantic_vectors": 0,
    "static_knowledge": None,
    "teacher_taps": None,
    "teacher_preprocess": "auto",
    "protocol": "distill",
    "knowledge_epochs": None,
    "iep_clip": True,
    "iep_module_epochs": None,
    "clip_terms": "sum",  # the only clip before clip_terms existed; methods without a clip record none
}
# What both writers of config.json (train.py, iep.Trainer) record, and every reader needs to rebuild the network.
NETWORK_KEYS = ("arch", "dataset", "num_classes", "input_shape", "mean", "std")
# What a run leaves in its directory; `--noresume` moves all of it aside before the new run's first step.
RUN_STATE = (CHECKPOINT_SUBDIR, METRICS_FILE, TENSORBOARD_SUBDIR, EXPORT_SUBDIR, CONFIG_FILE)
REPLACED_SUBDIR = "replaced"
# Paths name the same thing whether given relative or absolute.
PATH_KEYS = ("data_dir", "teacher", "static_knowledge")


def _option(item: Any) -> tuple[str, str]:
    """One --distill_args item as config.json records it ("clip_terms=per_term") as (key, value)."""
    key, _, value = str(item).partition("=")
    return key.strip(), value.strip()


def _given_options(distill_args: Any) -> dict[str, str]:
    """--distill_args as config.json records it (a list of items, or None), as a dict."""
    return dict(map(_option, distill_args)) if isinstance(distill_args, (list, tuple)) else {}


def _setting(config: dict[str, Any], key: str) -> Any:
    """A resume key's value in `config`, or the value a config.json written before the key existed implies: for a
    resolved key, what its --distill_args gave, else the only value there was."""
    if key in config:
        return config[key]
    given = _given_options(config.get("distill_args")) if key in RESOLVED_KEYS else {}
    return given.get(key, RESUME_DEFAULTS.get(key))


def _comparable(key: str, value: Any) -> Any:
    if key in PATH_KEYS and isinstance(value, str):
        return os.path.realpath(value)
    if key == "distill_args" and isinstance(value, (list, tuple)):
        # A resolved key is compared as resolved: `clip_terms=sum` given is the same run as the default `sum`.
        kept = [item for item in value if _option(item)[0] not in RESOLVED_KEYS]
        return kept or None
    return value


def check_class_names(model_names, data_names, what: str) -> None:
    """A model whose label i means another class than the data's would score (or teach) garbage with exit 0:
    refuse, listing the names only one side has, or both orders when the sets agree."""
    if model_names is None or data_names is None or list(model_names) == list(data_names):
        return
    only_model = [c for c in model_names if c not in data_names]
    only_data = [c for c in data_names if c not in model_names]
    detail = (
        f"only the model's: {only_model[:10]}, only the data's: {only_data[:10]}"
        if only_model or only_data
        else f"same names in another order: model {list(model_names)[:10]}, data {list(data_names)[:10]}"
    )
    raise ValueError(f"{what} was trained on other classes than the data's ({detail})")


def run_data_config(run_config: dict[str, Any], **overrides: Any) -> DataConfig:
    """The `DataConfig` a run trained on, from its config.json: data set, folder, bbox crop, the held-out
    validation fraction, the --rate subset and its seed, the image size. Each caller overrides only what it
    means to change (another folder, the cache), so the training images a reader sees are the run's own —
    and never its held-out ones (the holdout is carved before the --rate subset is drawn)."""
    from iep.datasets import DataConfig

    fields = {
        "dataset": run_config["dataset"],
        "data_dir": run_config.get("data_dir"),
        "crop_to_bbox": bool(run_config.get("crop_to_bbox", RESUME_DEFAULTS["crop_to_bbox"])),
        "validation_fraction": run_config.get("validation_fraction") or 0.0,
        "rate": run_config.get("rate", 1.0),
        "sample_seed": run_config.get("sample_seed", 0),
        "image_size": (run_config.get("input_shape") or [None])[0],
    }
    unknown = sorted(set(overrides) - set(DataConfig.__dataclass_fields__))
    if unknown:
        raise TypeError(f"run_data_config: {unknown} are no DataConfig fields")
    return DataConfig(**{**fields, **overrides})


def load_run_config(run_dir: str, flag: str | None = None) -> dict[str, Any]:
    """A run directory's config.json; `flag` (e.g. "students=") names the argument that gave `run_dir` in errors.
    Every reader rebuilds the run's network (and eval its data) from NETWORK_KEYS, so a file without one is
    refused here, naming it, rather than as a KeyError deep in a reader."""
    path = os.path.join(run_dir, CONFIG_FILE)
    given = (f"{flag}{run_dir!r}" if flag.endswith("=") else f"{flag} {run_dir!r}") if flag else repr(run_dir)
    if not os.path.exists(path):
        raise ValueError(f"{given} is not a run directory of ours (no {CONFIG_FILE}): give the folder train.py wrote")
    config = read_json(path)
    missing = [key for key in NETWORK_KEYS if key not in config] if isinstance(config, dict) else list(NETWORK_KEYS)
    if missing:
        raise ValueError(
            f"{path} (of {given}) lacks {', '.join(missing)}, which train.py and iep.Trainer always write: "
            "the file is damaged or not a run's; restore it, or train the run again"
        )
    return config


def run_dir_holding(checkpoint: str) -> str | None:
    """The run directory that holds `checkpoint` (the run directory itself, its checkpoints/ folder, or a
    prefix inside that folder), or None. Why: its config.json names the network and the data, so an earlier
    epoch of a run evaluates without repeating --arch and --dataset."""
    path = os.path.normpath(checkpoint)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    candidates = [folder, os.path.dirname(folder)] if os.path.basename(folder) == CHECKPOINT_SUBDIR else [folder]
    return next((c for c in candidates if os.path.isfile(os.path.join(c, CONFIG_FILE))), None)


def move_previous_run_aside(run_dir: str) -> str | None:
    """Moves a previous run's state into <run_dir>/replaced/<UTC time>/ (kept, not deleted); returns that
    folder, or None if there was nothing. Why: starting over must leave nothing a later resume could pick up."""
    present = [name for name in RUN_STATE if os.path.exists(os.path.join(run_dir, name))]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    target, n = os.path.join(run_dir, REPLACED_SUBDIR, stamp), 1
    while os.path.exists(target):
        n += 1
        target = os.path.join(run_dir, REPLACED_SUBDIR, f"{stamp}-{n}")
    os.makedirs(target)
    for name in present:
        os.rename(os.path.join(run_dir, name), os.path.join(target, name))
    return target


def _has_checkpoint(run_dir: str) -> bool:
    return bool(checkpoint_candidates(os.path.join(run_dir, CHECKPOINT_SUBDIR)))


def save_or_check_run_config(run_dir: str, config: dict[str, Any], resume: bool) -> None:
    """Writes config.json for a new run; for a resumed run, refuses a changed experiment; with
    `resume=False`, first moves any previous run's state aside."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not resume:
        moved = move_previous_run_aside(run_dir)
        if moved:
            print(f"--noresume: the previous run in {run_dir} was moved to {moved}")
    elif not os.path.exists(path) and os.path.exists(os.path.join(run_dir, CHECKPOINT_SUBDIR)):
        raise ValueError(
            f"run_dir={run_dir!r} holds checkpoints but no {CONFIG_FILE}, so which experiment they belong to "
            "is unknown; use a new run_dir=, or Trainer.fit(resume=False) to move them aside and start over"
        )
    if resume and os.path.exists(path):
        saved = read_json(path)
        changed = [k for k in RESUME_KEYS if _comparable(k, _setting(saved, k)) != _comparable(k, _setting(config, k))]
        if changed and not _has_checkpoint(run_dir):  # nothing to resume (a run that diverged before saving)
            moved = move_previous_run_aside(run_dir)
            print(f"{run_dir} held no checkpoint of its earlier settings: they were moved to {moved}; starting anew")
            write_json_atomic(path, config)
            return
        if changed:
            details = ", ".join(
                f"{RESOLVED_KEYS.get(k, '--' + k)}: was {_setting(saved, k)!r}, now {_setting(config, k)!r}"
                for k in changed
            )
            raise ValueError(
                f"run_dir={run_dir!r} holds a run started with other settings ({details}); "
                "use a new run_dir=, or Trainer.fit(resume=False) to start over"
            )
        return
    write_json_atomic(path, config)
