"""`--distill` names → Distiller objects. One place, so train.py and benchmarks build methods alike.

The registry names each method by its module path and imports it on first use, so that it imports no method:
methods build on `iep.core`, the loop on both (tests/test_structure.py). Users reach it as `iep.methods`.

Every method's defaults are its constructor's keyword defaults (documented,
with their source, in its module). `--distill_args=key=value,...` overrides
any of them; the keys are checked against the constructor before any compute.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import weakref
from collections.abc import Callable, Mapping, Sequence

from iep.core.clipped import IEP_CLIP_TERMS
from iep.core.distiller import Distiller
from iep.nets import TappedNetwork, check_tapped

__all__ = [
    "CLOCK_RULE", "IEP_OPTIONS", "METHODS", "NONE_OPTIONS", "NOT_IN_THE_PAPER", "OPTION_RANGES", "PRE_PHASE",
    "REGISTRY", "STATIC_METHODS", "build_distiller", "default_pre_phase_steps", "iep_options", "method_class",
    "method_options", "methods", "needs_teacher", "own_options", "parse_distill_args", "register", "typed_options",
]  # fmt: skip

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
    # Since 2021 and the classic relation methods researchers compare against (issue 35).
    "dist": ("iep.baselines.logit_kd", "DISTDistiller"),
    "pkt": ("iep.baselines.repdistiller", "PKTDistiller"),
    "sp": ("iep.baselines.repdistiller", "SPDistiller"),
    "nst": ("iep.baselines.repdistiller", "NSTDistiller"),
    "cc": ("iep.baselines.repdistiller", "CCDistiller"),
    "vid": ("iep.baselines.repdistiller", "VIDDistiller"),
    "crd": ("iep.baselines.crd", "CRDDistiller"),
    "reviewkd": ("iep.baselines.reviewkd", "ReviewKDDistiller"),
    "mlkd": ("iep.baselines.mlkd", "MLKDDistiller"),
    # Static knowledge: semantic vectors of a teacher's neurons, no teacher network (iep/static).
    "static_kd": ("iep.static.distillers", "StaticKD"),
}
# IEP and IEP+BB: one class, built by `build_distiller` from IEP's options (IEP_OPTIONS).
IEP_CLASS = ("iep.procedure.distiller", "IEPDistiller")
STATIC_METHODS = ("static_kd",)
# Not among the paper's baselines (its Table 7): added for comparisons researchers make today (issue 35).
NOT_IN_THE_PAPER = ("dist", "pkt", "sp", "nst", "cc", "vid", "crd", "reviewkd", "mlkd", *STATIC_METHODS)
METHODS = ("none", *REGISTRY, "iep", "iep_bb")  # the built-in methods; `methods()` adds registered ones
_REGISTERED: dict[str, type[Distiller]] = {}


def register(name: str) -> Callable[[type[Distiller]], type[Distiller]]:
    """Class decorator: a `Distiller` subclass becomes `--distill=<name>` and `build_distiller(name, ...)`.

    Its keyword arguments with defaults become its `--distill_args` options (each numeric one needs a range in
    `OPTION_RANGES`); `student`, `seed`, `main_steps` and `epochs` are passed when its constructor names them.
    From train.py, name the file or module with `--plugins` so it is imported before the flags are checked.
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a method name is letters, digits and '_', got {name!r}")

    def decorate(cls: type[Distiller]) -> type[Distiller]:
        if not (isinstance(cls, type) and issubclass(cls, Distiller)):
            raise TypeError(f"register({name!r}) decorates a Distiller subclass, got {cls!r}")
        known = _REGISTERED.get(name, cls)
        same = (known.__module__, known.__qualname__) == (cls.__module__, cls.__qualname__)  # a re-import
        if name in METHODS or not same:
            raise ValueError(f"method {name!r} exists already; choose another name")
        _REGISTERED[name] = cls
        return cls

    return decorate


def methods() -> tuple[str, ...]:
    """Every method `--distill` and `build_distiller` accept: the built-ins, then the registered ones."""
    return (*METHODS, *_REGISTERED)


# The one rule for reference clocks (pre-phases, module phases, warm-ups), shown by `--helpfull` (under
# --distill_args) and in docs/methods.md. Tested against every method's defaults (tests/test_registry.py).
CLOCK_RULE = (
    "Reference clocks: a phase that trains only the method's own module on the frozen teacher counts in passes "
    "over the training data, as many as its reference runs (IEP's module 20, MHGD's heads 40, FT's paraphraser 30, "
    "SRM's dictionary 100): the module needs that much training whatever the student's budget, and the student "
    "gets no steps from it (so it may be longer than a short run's main phase). A phase that trains the student "
    "(FitNet's and AB's initialization 30 % of the main steps, FSP's 40 %, SRM's student initialization 80 %) and "
    "a warm-up of a loss weight (DKD's, 20/240 of the run) count as shares of the run: they are part of the "
    "student's budget, and a share keeps the reference's split of it. Override with pre_phase_steps (SRM: "
    "dictionary_epochs, init_fraction; DKD: warmup_fraction)."
)

# How long each single pre-phase runs when `pre_phase_steps` is not given (CLOCK_RULE): ("epochs", n) passes
# over the training data or ("fraction", f) of the main steps, with the reference line each follows.
# * FitNet, AB: 30 % — the TF2 benchmark the modules follow trains the auxiliary stage for
#   `int(args.train_epoch*.3)` epochs (Knowledge_distillation_via_TF2.0 `distiller/FT.py`, `auxiliary_training`).
# * FT: 30 epochs — the same line; FT's stage trains only the paraphraser (teacher side), so it counts passes:
#   `int(100*.3)` at the benchmark's 100 epochs.
# * FSP: 40 % — KD_methods_with_TF `train_w_distill.py`: `init_epoch = 40` before `train_epoch = 100`.
# * MHGD: 40 epochs — the same line (MHGD is in its initialization set); its heads train on the teacher only.
# * IEP, IEP+BB: 20 epochs — IEPKT `train_w_distill.py` `init_epoch = 20` (its module trains on the teacher only).
# SRM sizes its two stages itself (srm.py), DKD its warm-up (logit_kd.py), by the same rule.
PRE_PHASE = {
    "iep": ("epochs", 20.0),  # IEPKT `train_w_distill.py`: init_epoch = 20 (DEFAULT_MODULE_EPOCHS)
    "iep_bb": ("epochs", 20.0),
    "fitnet": ("fraction", 0.3),
    "ab": ("fraction", 0.3),
    "ft": ("epochs", 30.0),
    "fsp": ("fraction", 0.4),
    "mhgd": ("epochs", 40.0),
}


def default_pre_phase_steps(method: str, main_steps: int | None, epochs: int | None) -> int:
    """`method`'s pre-phase length in steps as its reference counts it (see PRE_PHASE)."""
    unit, amount = PRE_PHASE[method]
    if main_steps is None or (unit == "epochs" and not epochs):
        needs = "main_steps" if unit == "fraction" else "main_steps and epochs"
        option = "module_steps" if method in ("iep", "iep_bb") else "pre_phase_steps"
        raise ValueError(
            f"{method}: give {option} (or {needs}, the run's size, for the reference's {amount:g} {unit}; "
            "iep.Trainer passes them)"
        )
    steps = amount * main_steps if unit == "fraction" else amount * main_steps / epochs
    return max(1, round(steps))


def needs_teacher(method: str) -> bool:
    return method != "none" and method not in STATIC_METHODS


def parse_distill_args(items: Sequence[str] | None) -> dict[str, str]:
    """["beta=500", "temperature=2"] → {"beta": "500", ...}; a malformed item names the flag."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"distill_args: items must be key=value, got {item!r}")
        if key.strip() in out:  # the last would win in silence
            raise ValueError(f"distill_args gives {key.strip()} twice ({out[key.strip()]!r} and {value.strip()!r})")
        out[key.strip()] = value.strip()
    return out


def _convert(method: str, key: str, value: object, default: object) -> object:
    if not isinstance(value, str):  # a typed value from Python (`overrides={"weight": 0.5}`): checked as its text
        value = str(value)
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
        raise ValueError(f"option {key}={value!r} for {method}: expected a {expected}") from None
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
    "dictionary_epochs": _POSITIVE,
    "init_fraction": _POSITIVE,
    "warmup_fraction": _NON_NEGATIVE,  # > 1: the weight never reaches 1 within the run (logit_kd.py)
    "heads": (lambda x: x >= 1, ">= 1"),
    "components": (lambda x: x >= 1, ">= 1"),
    "embedding": (lambda x: x >= 1, ">= 1"),
    "negatives": (lambda x: x >= 1, ">= 1"),
    "momentum": (lambda x: 0 <= x < 1, "in [0, 1)"),
    "max_memory_gb": _POSITIVE,
    "max_mid_channels": (lambda x: x >= 1, ">= 1"),
    "init_variance": _POSITIVE,
    "eps": _POSITIVE,
    "student_components": (lambda x: x >= 1, ">= 1"),
    **dict.fromkeys(
        ("alpha", "beta", "gamma", "weight", "angle_weight", "distance_weight", "cross_entropy_weight", "margin"),
        _NON_NEGATIVE,
    ),
    **dict.fromkeys(("weight_decay", "init_weight_decay", "pre_phase_steps"), _NON_NEGATIVE),
    # IEP's (IEP_OPTIONS)
    "iterations": (lambda x: x >= 1, ">= 1"),
    "module_steps": _NON_NEGATIVE,
    "module_epochs": _POSITIVE,
    "module_lr": _POSITIVE,
}

# IEP's options as --distill_args (train.py's --iep_* flags are aliases of the same names): name → a sample of
# its type. `knowledge` lists terms joined by '+' (alteration+interim+black_box); `module_epochs` sizes the module
# phase in passes (CLOCK_RULE), `module_steps` in steps; `clip_terms` is `per_term` (clip each term's gradient on
# its own, the default) or `sum` (clip the summed distillation gradient once; docs/methods.md).
IEP_OPTIONS = {
    "second_pca": "",
    "iterations": 0,
    "knowledge": "",
    "module_steps": 0,
    "module_epochs": 0.0,
    "module_lr": 0.0,
    "clip": False,
    "clip_terms": "",
}


def knowledge_terms(value: object) -> tuple[str, ...]:
    """IEP's `knowledge` as a tuple of terms: a sequence of names, or one text joined by '+' or ','."""
    terms = value if isinstance(value, (list, tuple)) else re.split(r"[+,]", str(value))
    return tuple(str(t).strip() for t in terms if str(t).strip())


def iep_options(overrides: Mapping[str, object], method: str = "iep") -> dict[str, object]:
    """--distill_args of --distill=iep/iep_bb, typed and range-checked (keyword names of `build_distiller`)."""
    unknown = sorted(set(overrides) - set(IEP_OPTIONS))
    if unknown:
        raise ValueError(f"options {unknown} unknown for {method}; it accepts {sorted(IEP_OPTIONS)}")
    out = {}
    for key, value in overrides.items():
        if key == "knowledge":
            out[key] = knowledge_terms(value)
        else:
            out[key] = _check_range(method, key, _convert(method, key, value, IEP_OPTIONS[key]))
    if "module_steps" in out and "module_epochs" in out:
        raise ValueError(f"options module_steps and module_epochs both size {method}'s module phase: give one")
    return out


def _check_range(method: str, key: str, value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    if key not in OPTION_RANGES:
        raise ValueError(f"{method}: option {key!r} has no declared range in iep.methods.OPTION_RANGES")
    ok, expected = OPTION_RANGES[key]
    if not ok(value):
        raise ValueError(f"option {key} for {method} must be {expected}, got {value:g}")
    return value


def method_class(method: str) -> type[Distiller]:
    if method in _REGISTERED:
        return _REGISTERED[method]
    module, name = REGISTRY[method]
    return getattr(importlib.import_module(module), name)


def _parameters(method: str) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(method_class(method).__init__).parameters


# Plain training's one option: which variables weight decay reaches. `kernels` (the default) is the IEP author's
# code (kernels only); `every_variable` is what the RepDistiller family, mdistiller and ReviewKD decay (torch SGD's
# weight_decay over every parameter), the vanilla student to compare those methods with.
NONE_OPTIONS = {"decay": "kernels"}
DECAY_CHOICES = ("kernels", "every_variable")


def method_options(method: str) -> dict[str, object]:
    """The overridable keyword arguments of `method` with their defaults (any method of `methods()`)."""
    if method not in methods():
        raise ValueError(f"unknown method {method!r}; choose from {methods()}")
    if method == "none":
        return dict(NONE_OPTIONS)
    if method in ("iep", "iep_bb"):  # build_distiller's own keyword defaults; the module phase in passes
        defaults = inspect.signature(build_distiller).parameters
        options = {k: defaults[k].default for k in IEP_OPTIONS if k in defaults}
        return {**options, "knowledge": options["knowledge"] or "", "module_epochs": PRE_PHASE[method][1]}
    skip = {"self", "teacher", "student", "seed", "main_steps", "epochs", "static_knowledge", "data"}
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
            f"{distiller.name} compares logits, but the teacher has {teacher.num_classes} classes and the "
            f"data {student.num_classes}; use a feature method (fitnet, at, ab, co, rkd, mhgd, iep, iep_bb, ...) "
            "or a teacher fine-tuned on these classes"
        )
    return distiller


def _check_same_images(teacher: TappedNetwork, student: TappedNetwork) -> None:
    """Teacher and student read the same batch: a teacher built for other images would fail deep in the first
    traced step. Refused here, with the way to build ours at the student's size."""
    taught, learning = tuple(teacher.model.input_shape[1:]), tuple(student.model.input_shape[1:])
    differ = len(taught) != len(learning) or any(
        t is not None and s is not None and t != s for t, s in zip(taught, learning, strict=True)
    )  # None: a size the network takes any value of
    if differ:
        raise ValueError(
            f"the teacher takes images {taught}, but the student {learning}: both read the same batch "
            "(iep.load_teacher(run_dir, input_shape=...) builds a teacher of ours for other images)"
        )


def _built_for(distiller: Distiller, student: TappedNetwork) -> Distiller:
    """Notes the student `distiller` was built for (its adapters are sized on that student's points), so that
    `DistillationModel` can refuse another student before a step fails on a shape deep in a traced graph."""
    distiller.built_for = weakref.ref(student)  # a weak reference: no cycle, and no checkpoint tracks it
    return distiller


def check_built_for(distiller: Distiller | None, student: TappedNetwork) -> None:
    """Refuses a distiller `build_distiller` made for another student than the one it is to train with (None, or
    one built by hand, passes)."""
    built_for = getattr(distiller, "built_for", None)
    if built_for is not None and built_for() is not student:
        raise ValueError(
            f"the distiller ({distiller.name}) was built for another student than {student.model.name!r}: "
            "build it for this one, iep.build_distiller(method, teacher, student), and pass both"
        )


def _plain(teacher: TappedNetwork | None, options: Mapping[str, object]) -> Distiller:
    """Plain training (`none`), its weight decay on kernels or on every variable (NONE_OPTIONS)."""
    distiller = Distiller(teacher)
    distiller.decay_every_variable = options.get("decay", NONE_OPTIONS["decay"]) == "every_variable"
    return distiller


def own_options(keywords: Mapping[str, object]) -> dict[str, object]:
    """The method's own options among `build_distiller`'s keywords (its **options, and `overrides` under them)."""
    named = inspect.signature(build_distiller).parameters
    return {**dict(keywords.get("overrides") or {}), **{k: v for k, v in keywords.items() if k not in named}}


def typed_options(method: str, overrides: Mapping[str, object]) -> dict[str, object]:
    """`method`'s own options (`build_distiller`'s **options and `overrides`), typed and range-checked, or a
    ValueError naming the option and what the method accepts. Needs no network: a RunSpec checks its options
    with it before any data is read."""
    if method == "none":
        if unknown := sorted(set(overrides) - set(NONE_OPTIONS)):
            raise ValueError(f"options {unknown} unknown for none (plain training); it accepts {sorted(NONE_OPTIONS)}")
        decay = str(overrides.get("decay", NONE_OPTIONS["decay"]))
        if decay not in DECAY_CHOICES:
            raise ValueError(f"option decay for none must be one of {DECAY_CHOICES}, got {decay!r}")
        return {"decay": decay}
    if method in REGISTRY or method in _REGISTERED:
        options = method_options(method)
        if unknown := sorted(set(overrides) - set(options)):
            raise ValueError(f"options {unknown} unknown for {method}; it accepts {sorted(options)}")
        return {k: _check_range(method, k, _convert(method, k, v, options[k])) for k, v in overrides.items()}
    return iep_options(overrides, method)


def check_method(method: object, what: str) -> None:
    """Refuses a name no registered method has, naming `what` was given and the names there are."""
    if method not in methods():
        raise ValueError(f"{what} must be one of {methods()}, got {method!r}")


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
    clip_terms: str = IEP_CLIP_TERMS,
    seed: int | None = None,
    main_steps: int | None = None,
    epochs: int | None = None,
    overrides: Mapping[str, object] | None = None,
    static_knowledge: object | None = None,
    data: object | None = None,
    **options: object,
) -> Distiller:
    """The method `method` (`methods()`) distilling `teacher` into `student`.

    Its options are keyword arguments (`build_distiller("kd", t, s, temperature=2)`), typed or as text, or a
    mapping `overrides` (train.py's --distill_args); unknown names and values out of range are refused, naming
    what the method accepts. `main_steps` and `epochs` (the run's size) size the phases a reference times
    (CLOCK_RULE); `iep.Trainer(..., "iep", teacher=...)` passes them for you.
    """
    check_method(method, "build_distiller: method")
    check_tapped(student, "student")
    if teacher is not None:
        check_tapped(teacher, "teacher")
        if not needs_teacher(method):  # it would be ignored: a forgotten method name would train a plain student
            raise ValueError(f"teacher= is given but {method} uses no teacher: name a method, or drop teacher=")
        _check_same_images(teacher, student)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise TypeError(
            f"overrides must be a mapping of {method}'s options, e.g. {{'temperature': 4}}; got {overrides!r}"
        )
    typed = typed_options(method, {**dict(overrides or {}), **options})
    if method == "none":
        return _built_for(_plain(teacher, typed), student)
    if method in STATIC_METHODS:
        if static_knowledge is None:
            raise ValueError(f"{method} needs static_knowledge= (a file of python -m iep.static.learn)")
    elif teacher is None:
        raise ValueError(f"{method} needs a teacher (teacher=)")
    if method in REGISTRY or method in _REGISTERED:
        kwargs = typed
        if method in PRE_PHASE and "pre_phase_steps" not in kwargs:
            kwargs["pre_phase_steps"] = default_pre_phase_steps(method, main_steps, epochs)
        parameters = _parameters(method)
        if "student" in parameters:
            kwargs["student"] = student
        if "seed" in parameters:
            kwargs["seed"] = seed
        if "static_knowledge" in parameters:
            kwargs["static_knowledge"] = static_knowledge
        if "data" in parameters:  # a state entry per training image (CRD's memory)
            if data is None:
                raise ValueError(f"{method} keeps one entry per training image: give data (the run's training data)")
            kwargs["data"] = data
        for name, value in (("main_steps", main_steps), ("epochs", epochs)):
            if name in parameters:
                if value is None:
                    raise ValueError(f"{method} sizes its schedule from the run: give {name}")
                kwargs[name] = value
        return _built_for(_check_classes(method_class(method)(teacher, **kwargs), teacher, student), student)
    iep_module = importlib.import_module(IEP_CLASS[0])  # on first use: the registry imports no method
    IEPDistiller = getattr(iep_module, IEP_CLASS[1])  # noqa: N806 (a class)

    options = typed
    second_pca = options.get("second_pca", second_pca)
    iterations = options.get("iterations", iterations)
    knowledge = options.get("knowledge", knowledge)
    module_steps = options.get("module_steps", None if "module_epochs" in options else module_steps)
    module_lr = options.get("module_lr", module_lr)
    clip, clip_terms = options.get("clip", clip), options.get("clip_terms", clip_terms)
    if "module_epochs" in options:  # passes, sized like every pre-phase (CLOCK_RULE, default_pre_phase_steps)
        if not (main_steps and epochs):
            raise ValueError(f"{method}: module_epochs needs the run's size (main_steps and epochs)")
        module_steps = max(1, round(options["module_epochs"] * main_steps / epochs))
    if module_steps is None:  # the reference's 20 passes, in this run's steps (refused, as for every pre-phase,
        # where the run's size is unknown: a silent 8,000-step phase under `fit` ran for minutes without a word)
        module_steps = default_pre_phase_steps(method, main_steps, epochs)

    if knowledge is not None:
        knowledge = knowledge_terms(knowledge)
    if knowledge is None:
        knowledge = ("alteration", "interim") + (("black_box",) if method == "iep_bb" else ())
    elif method == "iep_bb" and "black_box" not in knowledge:
        knowledge = (*knowledge, "black_box")
    distiller = IEPDistiller(
        teacher,
        student,
        second_pca=second_pca,
        iterations=iterations,
        knowledge=knowledge,
        module_steps=module_steps,
        module_lr=module_lr,
        seed=seed,
        clip=clip,
        clip_terms=clip_terms,
    )
    return _built_for(distiller, student)
