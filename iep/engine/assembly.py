"""How a run's pieces meet: the distiller a `Trainer` is given (or names) built for the run, and the checks that a
student, a data set and an evaluation split fit together, made before any step is traced."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from iep.core.distiller import Distiller
from iep.core.registry import build_distiller, check_built_for, check_method
from iep.nets import image_shape_problem


def distiller_for_run(distiller, teacher, options, student, data, config, strategy=None) -> Distiller | None:
    """`Trainer`'s distiller: one given, or a method's name built with its teacher and options, its phases
    sized from the run (`config.epochs` × the data's steps per epoch) and seeded by `config.seed`."""
    if not (distiller is None or isinstance(distiller, str | Distiller)):
        raise TypeError(
            f"distiller must be a method's name (iep.methods.methods(), e.g. 'iep'), a Distiller or None; got "
            f"{distiller!r}"
        )
    if options is not None and not isinstance(options, Mapping):
        raise TypeError(
            f"options must be a mapping of the method's options, e.g. {{'temperature': 4}}; got {options!r}"
        )
    if not isinstance(distiller, str):
        if teacher is not None or options:
            raise ValueError(
                "teacher= and options= go with a method's name (distiller='iep'); this distiller has its own"
            )
        check_built_for(distiller, student)
        return distiller
    check_method(distiller, "distiller")  # before the data's size is read: a typo is the first thing to say
    steps = data.steps_per_epoch(config.batch_size) * config.epochs
    with (strategy or tf.distribute.get_strategy()).scope():
        return build_distiller(
            distiller, teacher, student, seed=config.seed, main_steps=steps, epochs=config.epochs, overrides=options,
            data=data,
        )  # fmt: skip


def check_student_fits_data(student, data) -> None:
    """A student built for other images or another class count would fail deep in a traced step (the shape)
    or train in silence on outputs no label reaches (the classes): refused when the Trainer is made."""
    if problem := image_shape_problem(student, data.input_shape):
        raise ValueError(f"train data: {problem}")
    if student.num_classes != data.num_classes:
        raise ValueError(
            f"the student has {student.num_classes} outputs, but the data has {data.num_classes} classes "
            "(build_network's num_classes)"
        )


def check_eval_split(data, split: str) -> None:
    if hasattr(data, "splits") and split not in data.splits:
        raise ValueError(
            f"evaluation reads split {split!r} (TrainConfig.eval_split), but the data has only "
            f"{list(data.splits)}; pass eval_data={{{split!r}: ...}} or another eval_split"
        )
