"""Loading a trained classifier as a frozen teacher (ours, or from outside), with clear errors for a mismatch."""

from __future__ import annotations

import os
from collections.abc import Sequence

from iep.engine.checkpointing import checkpoint_exists, restore_model_weights
from iep.engine.outside_teacher import is_outside_teacher, load_outside_teacher
from iep.engine.runs import CONFIG_FILE, check_class_names, load_run_config
from iep.nets import TappedNetwork, build_network, checked_input_shape


def load_teacher(
    path: str,
    arch: str | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    flag: str = "teacher=",
    name: str = "teacher",
    class_names: Sequence[str] | None = None,
    taps: Sequence[str] | None = None,
    preprocess: str = "auto",
    arch_flag: str | None = "arch=",
) -> TappedNetwork:
    """A teacher from a run directory or checkpoint prefix of ours, or from outside (see outside_teacher.py:
    a `.keras` file, a SavedModel, `keras:<Application>`, `kerashub:<preset>`).

    A run directory carries its architecture and statistics in config.json;
    `arch` (--teacher_arch) must then agree. A bare checkpoint needs `arch`.
    `flag` names the path's argument in errors (`teacher=`; a command's vocabulary turns it into its flag; any
    trained network loads this way, frozen).
    `class_names` (the data's) must equal the run's own, in order: a teacher whose label i means another
    class would teach the wrong answers. `taps` (--teacher_taps) reads the teacher at other layers, by name;
    `preprocess` (--teacher_preprocess) is the outside teacher's pixel scaling (ours standardize inside).
    `arch_flag` names the caller's architecture argument in errors (`arch=`); None: it has none (run dirs only).
    For a run directory of ours, `num_classes` and `input_shape` default to the run's own.
    """
    arch_word = arch_flag or "arch="  # how errors name the architecture argument
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{flag.rstrip('=')} must be a path (a run directory, .keras file or SavedModel) or a "
                        f"keras:/kerashub: name; got {path!r}")  # fmt: skip
    path = os.fspath(path)
    if input_shape is not None:  # before any download or load
        input_shape = checked_input_shape(input_shape, "load_teacher")
    if is_outside_teacher(path):
        if input_shape is None or num_classes is None:
            raise ValueError(f"{flag}{path!r} is not a run of ours: give num_classes and input_shape (the data's)")
        if arch:
            raise ValueError(f"{arch_word} is for teachers of ours; {flag}{path!r} carries its own network")
        return load_outside_teacher(path, input_shape, taps, preprocess, flag, name)
    if preprocess != "auto":
        raise ValueError(f"preprocess= is for outside teachers; {flag}{path!r} standardizes inside")
    if not checkpoint_exists(path):
        raise ValueError(f"{flag}{path!r} does not exist")
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, CONFIG_FILE)):
        saved = load_run_config(path, flag)
        if arch and arch != saved["arch"]:
            raise ValueError(f"{arch_word}{arch!r}, but the run {flag}{path!r} trained {saved['arch']!r}")
        arch, mean, std = saved["arch"], saved["mean"], saved["std"]
        num_classes = saved["num_classes"] if num_classes is None else num_classes
        input_shape = tuple(saved["input_shape"]) if input_shape is None else tuple(input_shape)
        if list(input_shape) != list(saved["input_shape"]):  # allowed (it pools globally), but not what it learnt
            size = "×".join(map(str, saved["input_shape"][:2]))
            print(
                f"note: {flag}{path!r} trained on {size} images and reads these at "
                f"{'×'.join(map(str, input_shape[:2]))}; its recorded accuracy is at {size}"
            )
        if saved["num_classes"] != num_classes:
            raise ValueError(f"{flag}{path!r} has {saved['num_classes']} classes but the data set has {num_classes}")
        check_class_names(saved.get("class_names"), class_names, f"{flag}{path!r}")
    elif num_classes is None or input_shape is None:
        raise ValueError(f"{flag}{path!r} is not a run directory of ours: give num_classes and input_shape")
    elif not arch:
        if arch_flag is None:
            raise ValueError(
                f"{flag}{path!r} is not a run directory of ours (no {CONFIG_FILE}): give the folder train.py "
                "wrote (its run_dir)"
            )
        raise ValueError(f"{arch_flag} is required when {flag}{path!r} is not a run directory of ours")
    teacher = build_network(arch, num_classes, input_shape, mean, std, dropout=0.0, name=name)
    try:
        restore_model_weights(teacher.model, path)
    except ValueError as error:
        raise ValueError(f"{flag}{path!r} with {arch_word}{arch!r}: {error}") from None
    if taps:
        known = [layer.name for layer in teacher.model.layers]
        unknown = [t for t in taps if t not in known]
        if unknown:
            raise ValueError(f"taps={unknown} are not layers of {arch} (its points: {teacher.tap_names})")
        teacher = teacher.retapped(taps)
    teacher.model.trainable = False
    return teacher
