"""`--distill` names → Distiller objects. One place, so train.py and benchmarks build methods alike."""

from __future__ import annotations

from collections.abc import Sequence

from iep.engine.distiller import Distiller
from nets import TappedNetwork

METHODS = ("none", "kd", "dkd", "at", "rkd", "iep", "iep_bb")


def needs_teacher(method: str) -> bool:
    return method != "none"


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
    seed: int | None = None,
) -> Distiller:
    if method not in METHODS:
        raise ValueError(f"--distill must be one of {METHODS}, got {method!r}")
    if method == "none":
        return Distiller(teacher)
    if teacher is None:
        raise ValueError(f"--distill={method} needs a --teacher")
    if method in ("kd", "dkd", "at", "rkd"):
        from iep.baselines import feature_kd, logit_kd

        if method == "at":
            return feature_kd.ATDistiller(teacher, student)
        return {"kd": logit_kd.KDDistiller, "dkd": logit_kd.DKDDistiller, "rkd": feature_kd.RKDDistiller}[method](
            teacher
        )
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
    )
