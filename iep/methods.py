"""`--distill` names → Distiller objects. One place, so train.py and benchmarks build methods alike.

Every method's defaults are its constructor's keyword defaults (documented,
with their source, in its module). `--distill_args=key=value,...` overrides
any of them; the keys are checked against the constructor before any compute.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping, Sequence

from iep.engine.distiller import Distiller
from iep.nets import TappedNetwork

# name → (module, class); "none" is plain training.
REGISTRY = {
    "kd": ("iep.baselines.logit_kd", "KDDistiller"),
    "dkd": ("iep.baselines.logit_kd", "DKDDistiller"),
    "fitnet": ("iep.baselines.hints", "FitNetDistiller"),
    "at": ("iep.baselines.feature_kd", "ATDistiller"),
    "ft": ("iep.baselines.factor_transfer", "FTDistiller"),
    "ab": ("iep.baselines.hints", "ABDistiller"),
    "rkd": ("iep.baselines.feature_kd", "RKDDistiller"),
    "mhgd": ("iep.baselines.mhgd", "MHGDDistiller"),
    "co": ("iep.baselines.hints", "CODistiller"),
    "srm": ("iep.baselines.srm", "SRMDistiller"),
    # The other methods of the paper's Table 7 (the author's benchmark KD_methods_with_TF).
    "fsp": ("iep.baselines.hints", "FSPDistiller"),
    "dml": ("iep.baselines.mutual", "DMLDistiller"),
    "kd_svd": ("iep.baselines.svd_kd", "KDSVDDistiller"),
    "kd_eid": ("iep.baselines.svd_kd", "KDEIDDistiller"),
    # Static knowledge: semantic vectors of a teacher's neurons, no teacher network (iep/static).
    "static_kd": ("iep.static.distillers", "StaticKD"),
}
STATIC_METHODS = ("static_kd",)
METHODS = ("none", *REGISTRY, "iep", "iep_bb")
# Student-initialization pre-phases last 30 % of the main steps in the author's code (FT's paraphraser, AB's,
# FitNet's and FSP's initialization: 40 of 140 epochs in KD_methods_with_TF's train_w_distill.py, our
# rounding of the IEP code's 30 %). SRM sizes its two stages itself from `main_steps` (srm.py).
PRE_PHASE_FRACTION = 0.3
FRACTIONAL_PRE_PHASE = ("fitnet", "ft", "ab", "fsp")


def needs_teacher(method: str) -> bool:
    return method != "none" and method not in STATIC_METHODS


def parse_distill_args(items: Sequence[str] | None) -> dict[str, str]:
    """["beta=500", "temperature=2"] → {"beta": "500", ...}; a malformed item names the flag."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--distill_args items must be key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _convert(method: str, key: str, value: str, default: object) -> object:
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float) or default is None:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
    except ValueError:
        expected = "finite float" if isinstance(default, float) or default is None else type(default).__name__
        raise ValueError(f"--distill_args {key}={value!r} for {method}: expected a {expected}") from None
    return value


_POSITIVE = (lambda x: x > 0, "> 0")
_NON_NEGATIVE = (lambda x: x >= 0, ">= 0")
# Every numeric option of every method, by name: a value outside its range (a negative temperature or loss
# weight, a zero learning rate) would train a different experiment with exit status 0.
OPTION_RANGES = {
    "temperature": _POSITIVE,
    "lr": _POSITIVE,
    "pre_phase_lr": _POSITIVE,
    "codeword_multiplier": _POSITIVE,
    "sparsity_multiplier": _POSITIVE,
    "dictionary_fraction": _POSITIVE,
    "init_fraction": _POSITIVE,
    "warmup_fraction": (lambda x: 0 <= x <= 1, "in [0, 1]"),
    "heads": (lambda x: x >= 1, ">= 1"),
    "components": (lambda x: x >= 1, ">= 1"),
    **dict.fromkeys(
        ("alpha", "beta", "weight", "angle_weight", "distance_weight", "cross_entropy_weight", "margin"), _NON_NEGATIVE
    ),
    **dict.fromkeys(("weight_decay", "init_weight_decay", "pre_phase_steps"), _NON_NEGATIVE),
}


def _check_range(method: str, key: str, value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if key not in OPTION_RANGES:
        raise ValueError(f"{method}: option {key!r} has no declared range in iep.methods.OPTION_RANGES")
    ok, expected = OPTION_RANGES[key]
    if not ok(value):
        raise ValueError(f"--distill_args {key} for {method} must be {expected}, got {value:g}")
    return value


def method_class(method: str) -> type[Distiller]:
    module, name = REGISTRY[method]
    return getattr(importlib.import_module(module), name)


def _parameters(method: str) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(method_class(method).__init__).parameters


def method_options(method: str) -> dict[str, object]:
    """The overridable keyword arguments of `method` with their defaults."""
    skip = {"self", "teacher", "student", "seed", "main_steps", "epochs", "static_knowledge"}
    samples = {"int": 0, "float": 0.0, "bool": False, "str": ""}  # required ones: their annotation decides the type
    return {
        name: samples.get(str(p.annotation)) if p.default is inspect.Parameter.empty else p.default
        for name, p in _parameters(method).items()
        if name not in skip and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def _check_classes(distiller: Distiller, teacher: TappedNetwork | None, student: TappedNetwork) -> Distiller:
    """A logit method with a teacher over other classes (an ImageNet model for a 67-class student) would
    compare unrelated outputs: refuse, naming the feature methods that work."""
    if distiller.uses_teacher_logits and teacher is not None and teacher.num_classes != student.num_classes:
        raise ValueError(
            f"--distill={distiller.name} compares logits, but the teacher has {teacher.num_classes} classes and the "
            f"data {student.num_classes}; use a feature method (fitnet, at, ab, co, rkd, mhgd, iep, iep_bb, ...) "
            "or a teacher fine-tuned on these classes"
        )
    return distiller


def build_distiller(
    method: str,
    teacher: TappedNetwork | None,
    student: TappedNetwork,
    *,
    second_pca: str = "ipca",
    iterations: int = 2,
    knowledge: Sequence[str] | None = None,
    module_steps: int | None = None,
    module_lr: float = 0.1,
    clip: bool = True,
    seed: int | None = None,
    main_steps: int | None = None,
    epochs: int | None = None,
    overrides: Mapping[str, str] | None = None,
    static_knowledge: object | None = None,
) -> Distiller:
    if method not in METHODS:
        raise ValueError(f"--distill must be one of {METHODS}, got {method!r}")
    overrides = dict(overrides or {})
    if method in ("none", "iep", "iep_bb") and overrides:
        raise ValueError(f"--distill_args is for the baselines; --distill={method} takes its own flags")
    if method == "none":
        return Distiller(teacher)
    if method in STATIC_METHODS:
        if static_knowledge is None:
            raise ValueError(f"--distill={method} needs --static_knowledge=<file> (python -m iep.static.learn)")
    elif teacher is None:
        raise ValueError(f"--distill={method} needs a --teacher")
    if method in REGISTRY:
        options = method_options(method)
        unknown = sorted(set(overrides) - set(options))
        if unknown:
            raise ValueError(f"--distill_args {unknown} unknown for {method}; it accepts {sorted(options)}")
        kwargs = {k: _check_range(method, k, _convert(method, k, v, options[k])) for k, v in overrides.items()}
        if method in FRACTIONAL_PRE_PHASE and "pre_phase_steps" not in kwargs:
            if main_steps is None:
                raise ValueError(f"{method}: give pre_phase_steps (or main_steps for the 30 % default)")
            kwargs["pre_phase_steps"] = max(1, round(PRE_PHASE_FRACTION * main_steps))
        parameters = _parameters(method)
        if "student" in parameters:
            kwargs["student"] = student
        if "seed" in parameters:
            kwargs["seed"] = seed
        if "static_knowledge" in parameters:
            kwargs["static_knowledge"] = static_knowledge
        for name, value in (("main_steps", main_steps), ("epochs", epochs)):
            if name in parameters:
                if value is None:
                    raise ValueError(f"{method} sizes its schedule from the run: give {name}")
                kwargs[name] = value
        return _check_classes(method_class(method)(teacher, **kwargs), teacher, student)
    from iep.distiller import DEFAULT_MODULE_STEPS, IEPDistiller

    if knowledge is None:
        knowledge = ("alteration", "interim") + (("black_box",) if method == "iep_bb" else ())
    elif method == "iep_bb" and "black_box" not in knowledge:
        knowledge = (*knowledge, "black_box")
    return IEPDistiller(
        teacher,
        student,
        second_pca=second_pca,
        iterations=iterations,
        knowledge=knowledge,
        module_steps=DEFAULT_MODULE_STEPS if module_steps is None else module_steps,
        module_lr=module_lr,
        seed=seed,
        clip=clip,
    )
