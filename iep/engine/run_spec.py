"""One training run as data, and the library calls that carry it out.

`train.py` turns its flags into a `RunSpec` and calls `train_run`; a Python user can build the same `RunSpec` and
get the same run. The spec checks itself as it is built (the command says its errors in flags). `train_run` is only
the calls a Python user makes — `build_pipeline`, `build_network`, `load_teacher`, `build_distiller`, `Trainer` —
in the order that lets every cheap check fail before the data is decoded and every variable be created under the
distribution strategy.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from iep.core.fields import check_bools, check_numbers
from iep.datasets import DataConfig
from iep.engine.train_config import TrainConfig

# RunSpec's numeric fields → (in range, what is expected); dropout None is the architecture's default, and
# knowledge_epochs None is no transfer protocol.
RUN_RANGES = {
    "dropout": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "knowledge_epochs": (lambda v: math.isfinite(v) and v >= 1 and v == int(v), "an int >= 1"),
    "semantic_vectors": (lambda v: math.isfinite(v) and v >= 0 and v == int(v), "an int >= 0 (0 = off)"),
    "connect_timeout": (lambda v: 0 < v < math.inf, "a finite number of seconds > 0"),
}
TRANSFER = "the transfer protocol (RunSpec.knowledge_epochs)"  # the commands say --protocol=transfer


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    """Where the teacher comes from (a run of ours, a .keras file, a SavedModel, keras:<name>, kerashub:<preset>)
    and how it is read: its architecture for a bare checkpoint, the layers to tap, its pixel scaling."""

    path: str
    arch: str | None = None
    taps: Sequence[str] | None = None
    preprocess: str = "auto"

    def __post_init__(self) -> None:
        from iep.nets import parse_arch

        if not isinstance(self.path, str | os.PathLike) or not str(self.path):
            raise TypeError(f"TeacherSpec.path must be a path or keras:<name>, got {self.path!r}")
        if self.arch is not None:
            try:
                parse_arch(self.arch)
            except (TypeError, ValueError) as error:
                raise type(error)(f"TeacherSpec.arch={self.arch}: {error}") from None
        from iep.engine.outside_teacher import PREPROCESS

        taps = (self.taps,) if isinstance(self.taps, str) else self.taps  # one name alone is one tap, as tap_model's
        if taps is not None and (
            not isinstance(taps, Sequence) or not all(isinstance(name, str) and name for name in taps)
        ):
            raise TypeError(
                f"TeacherSpec.taps must be layer names, e.g. ['block3_out'], or None for the teacher's stage "
                f"outputs; got {self.taps!r}"
            )
        object.__setattr__(self, "taps", tuple(taps) if taps else None)  # frozen; [] (an empty --teacher_taps) is None
        if self.preprocess not in PREPROCESS:
            raise ValueError(f"TeacherSpec.preprocess must be one of {PREPROCESS}, got {self.preprocess!r}")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything one run needs. `distill_options` are `build_distiller`'s keywords (the method's own options);
    `knowledge_epochs` set means the transfer protocol (a knowledge stage of that many epochs, then fine-tuning);
    `recorded` holds the settings config.json keeps, which a resumed run must match."""

    data: DataConfig
    train: TrainConfig
    arch: str
    run_dir: str
    distill: str = "none"
    distill_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    teacher: TeacherSpec | None = None
    dropout: float | None = None
    knowledge_epochs: int | None = None
    semantic_vectors: int = 0
    static_knowledge: Any = None
    resume: bool = True
    distribute: str = "none"
    connect_timeout: float = 120.0
    recorded: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refused where it is written, before any data is read: each check names the field at fault."""
        from iep.nets import parse_arch

        for name, kind, example in (
            ("data", DataConfig, "iep.datasets.DataConfig('cifar10')"),
            ("train", TrainConfig, "iep.TrainConfig(epochs=100)"),
            ("teacher", TeacherSpec, "iep.TeacherSpec('runs/teacher')"),
        ):
            value = getattr(self, name)
            if not isinstance(value, kind) and (value is not None or name != "teacher"):
                raise TypeError(f"RunSpec.{name} must be a {kind.__name__}, e.g. {example}; got {type(value).__name__}")
        try:
            parse_arch(self.arch)
        except (TypeError, ValueError) as error:
            raise type(error)(f"RunSpec.arch={self.arch}: {error}") from None
        if not isinstance(self.run_dir, str | os.PathLike) or not str(self.run_dir):
            raise TypeError(f"RunSpec.run_dir must be a folder path (checkpoints, logs, exports), got {self.run_dir!r}")
        if not isinstance(self.distill_options, Mapping):
            raise TypeError(f"RunSpec.distill_options must be a mapping of option names, got {self.distill_options!r}")
        check_numbers("RunSpec", self, RUN_RANGES, optional=("dropout", "knowledge_epochs"))
        check_bools("RunSpec", self, ("resume",))
        from iep.engine.distribute import DISTRIBUTIONS

        if self.distribute not in DISTRIBUTIONS:  # where it is written, as every field (train_run's check is later)
            raise ValueError(f"RunSpec.distribute must be one of {DISTRIBUTIONS}, got {self.distribute!r}")
        _check_method(self)


def _check_method(spec: RunSpec) -> None:
    """The method against what the spec gives it: a teacher when it reads one, none when it would be ignored,
    static knowledge for a static method, labels for a transfer's knowledge stage."""
    from iep.core.registry import STATIC_METHODS, methods, needs_teacher, own_options, typed_options

    method = spec.distill
    if method not in methods():
        raise ValueError(f"RunSpec.distill must be one of {list(methods())}, got {method!r}")
    try:
        typed_options(method, own_options(spec.distill_options))
    except ValueError as error:
        raise ValueError(f"RunSpec.distill_options: {error}") from None
    if needs_teacher(method) and spec.teacher is None:
        raise ValueError(
            f"RunSpec.distill={method} needs RunSpec.teacher (a run of ours, a .keras file, a SavedModel, keras:<name>)"
        )
    if spec.teacher is not None and not needs_teacher(method):  # it would be loaded and ignored
        if method in STATIC_METHODS:
            raise ValueError(
                f"RunSpec.distill={method} never loads a teacher (static knowledge only); drop RunSpec.teacher"
            )
        # a forgotten method would train a plain student for hours
        raise ValueError(
            f"RunSpec.teacher {spec.teacher.path!r} is given but RunSpec.distill=none uses no teacher: name a method"
        )
    if method in STATIC_METHODS and spec.static_knowledge is None:
        raise ValueError(f"RunSpec.distill={method} needs RunSpec.static_knowledge (python -m iep.static.learn)")
    if spec.semantic_vectors and method != "none":
        raise ValueError(
            f"RunSpec.semantic_vectors learns a teacher's vectors during plain training; drop RunSpec.distill={method}"
        )
    if spec.knowledge_epochs is not None and method in ("none", "dml", *STATIC_METHODS):
        reason = {"none": "there is no knowledge to transfer", "dml": "its peer learns from labels"}
        raise ValueError(
            f"{TRANSFER} trains a knowledge stage without labels; RunSpec.distill={method} has none "
            f"({reason.get(method, 'it has no teacher')})"
        )


def settings_record(spec: RunSpec) -> dict[str, Any]:
    """The settings config.json keeps for a spec built in Python (train.py records its flags' own values over
    these): a resumed run must match them, and eval.py and teachers rebuild the network from them."""
    data, train, teacher = spec.data, spec.train, spec.teacher
    return {
        "arch": spec.arch,
        "dataset": data.dataset,
        "data_dir": data.data_dir,
        "crop_to_bbox": data.crop_to_bbox,
        "validation_fraction": data.validation_fraction,
        "rate": data.rate,
        "sample_seed": data.sample_seed,
        "image_size": data.image_size,
        "epochs": train.epochs,
        "batch_size": train.batch_size,
        "lr": train.lr,
        "lr_schedule": train.lr_schedule,
        "lr_decay_factor": train.lr_decay_factor,
        "weight_decay": train.weight_decay,
        "momentum": train.momentum,
        "seed": train.seed,
        "dropout": spec.dropout,
        "distill": spec.distill,
        "teacher": teacher.path if teacher else None,
        "teacher_arch": teacher.arch if teacher else None,
        "teacher_taps": list(teacher.taps) if teacher and teacher.taps else None,
        "teacher_preprocess": teacher.preprocess if teacher else "auto",
        "protocol": "transfer" if spec.knowledge_epochs is not None else "distill",
        "knowledge_epochs": spec.knowledge_epochs,
        "precision": train.precision,
        "semantic_vectors": spec.semantic_vectors,
    }


def sensing_points(network) -> list[list]:
    """[[layer name, [H, W, C]], ...]: a network's sensing points as config.json records them."""
    return [[t.name, list(t.shape)] for t in network.tap_specs]


def teacher_accuracy(teacher, data, run_dir: str, path: str, split: str, limit: int | None) -> float:
    """The teacher's accuracy on `split` (its first `limit` images), measured once per run directory: a resumed
    or repeated run reads it from teacher_eval.json instead of scoring the split again."""
    from iep.core.files import read_json, write_json_atomic
    from iep.core.tracing import traced
    from iep.engine.evaluation import collect_logits, first_images, top1_accuracy

    record = os.path.join(run_dir, "teacher_eval.json")
    key = {"teacher": os.path.abspath(path), "split": split, "limit": limit}
    if os.path.exists(record) and {k: v for k, v in read_json(record).items() if k in key} == key:
        return read_json(record)["top1"]
    predict = traced(lambda images: teacher.classifier(images, training=False))
    accuracy = top1_accuracy(*collect_logits(predict, first_images(data.eval_dataset(split, 500), limit)))
    write_json_atomic(record, {**key, "top1": accuracy})
    return accuracy


def train_run(spec: RunSpec, strategy=None) -> dict:
    """Trains the run `spec` describes (resuming its run directory unless `spec.resume` is False) and returns
    the trainer's summary. `strategy`: one already built (multi-worker start-up must precede any other op)."""
    if not isinstance(spec, RunSpec):
        raise TypeError(f"spec must be an iep.RunSpec (train.py's flags as one object); got {type(spec).__name__}")
    import keras

    from iep.core.files import check_writable
    from iep.core.registry import build_distiller
    from iep.datasets import build_pipeline
    from iep.engine.distribute import build_strategy, is_chief
    from iep.engine.precision import precision_policy
    from iep.engine.runs import save_or_check_run_config
    from iep.engine.teacher import load_teacher
    from iep.engine.trainer import Trainer
    from iep.nets import build_network, default_dropout

    config = spec.train
    strategy = strategy or build_strategy(spec.distribute, spec.connect_timeout)
    if is_chief(strategy):  # the only writer; other workers keep private copies (and may race the probe)
        check_writable(spec.run_dir, "run_dir=")  # a read-only or missing location fails before the data is read
    data = build_pipeline(spec.data)
    data.split(config.eval_split)  # fail now, not after the first epoch
    dropout = spec.dropout if spec.dropout is not None else default_dropout(spec.arch, data.image_size)
    keras.utils.set_random_seed(config.seed)
    steps_per_epoch = data.steps_per_epoch(config.batch_size)
    with strategy.scope():  # every variable (networks, modules, optimizer) is created under the strategy
        with precision_policy(config.precision):  # networks only: the distiller's modules are built in float32
            student = build_network(
                spec.arch, data.num_classes, data.input_shape, data.mean, data.std, dropout=dropout, name="student"
            )
            teacher = None
            if spec.teacher is not None:
                teacher = load_teacher(
                    spec.teacher.path,
                    spec.teacher.arch,
                    data.num_classes,
                    data.input_shape,
                    class_names=data.class_names,
                    taps=spec.teacher.taps,
                    preprocess=spec.teacher.preprocess,
                    arch_flag="teacher_arch=",
                )
        distiller = build_distiller(
            spec.distill,
            teacher,
            student,
            seed=config.seed,
            main_steps=config.epochs * steps_per_epoch,
            epochs=config.epochs,
            static_knowledge=spec.static_knowledge,
            data=data,
            **spec.distill_options,
        )
        if spec.knowledge_epochs is not None:
            from iep.transfer import transfer_protocol

            distiller = transfer_protocol(
                distiller,
                student,
                knowledge_steps=spec.knowledge_epochs * steps_per_epoch,
                lr=config.lr,
                lr_decay_points=config.lr_decay_points,
                lr_decay_factor=config.lr_decay_factor,
                lr_schedule=config.lr_schedule,
                weight_decay=config.weight_decay,
                epochs=config.epochs,
            )
        if spec.semantic_vectors:
            from iep.static.distillers import SemanticVectorLearner

            distiller = SemanticVectorLearner(student, spec.semantic_vectors, config.seed)
        distiller.check_batch_size(config.batch_size // strategy.num_replicas_in_sync)
        os.makedirs(spec.run_dir, exist_ok=True)
        if is_chief(strategy):  # one writer per run directory
            save_or_check_run_config(
                spec.run_dir,
                {
                    **settings_record(spec),
                    **spec.recorded,
                    "lr_decay_points": list(config.lr_decay_points),
                    "dropout_rate": dropout,
                    "num_classes": data.num_classes,
                    "class_names": list(data.class_names),
                    "input_shape": list(data.input_shape),
                    "mean": data.mean,
                    "std": data.std,
                    "train_images": data.num_train,
                    # The layers the method reads, as resolved (the teacher's default taps included).
                    "student_points": sensing_points(student),
                    # How a clipped method (IEP, MHGD) clips, as resolved: a default that changes between
                    # releases must not change a run half-way through (docs/methods.md, how the terms are clipped).
                    **({"clip_terms": distiller.clip_terms} if hasattr(distiller, "clip_terms") else {}),
                    "teacher_points": sensing_points(teacher) if teacher is not None else None,
                },
                resume=spec.resume,
            )
        print(
            f"{spec.arch}: {student.model.count_params():,} weights; {data.num_train} training images "
            f"({data.num_classes} classes, {data.image_size}px); run dir {spec.run_dir}"
        )
        trainer = Trainer(student, data, config, spec.run_dir, distiller, strategy)
    if strategy.num_replicas_in_sync > 1:
        print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas, global batch {config.batch_size}")
    if teacher is not None:
        if teacher.num_classes == data.num_classes:
            accuracy = teacher_accuracy(
                teacher, data, spec.run_dir, spec.teacher.path, config.eval_split, config.eval_limit
            )
            print(f"teacher {spec.teacher.path}: {config.eval_split} accuracy {accuracy:.4f}")
        else:
            print(f"teacher {spec.teacher.path}: {teacher.num_classes} classes (the data has {data.num_classes})")
        for who, network in (("teacher", teacher), ("student", student)):
            print(f"{who} points: " + ", ".join(f"{name} {tuple(shape)}" for name, shape in sensing_points(network)))
    summary = trainer.fit(resume=spec.resume)
    if spec.semantic_vectors and is_chief(strategy):
        from iep.static.distillers import export_static_knowledge
        from iep.static.knowledge_file import DEFAULT_NAME

        path = os.path.join(spec.run_dir, DEFAULT_NAME)
        export_static_knowledge(student, distiller.vectors, data, config.eval_split, path, "joint", spec.run_dir)
    print(
        f"done: last {summary['eval_split']} accuracy {summary['last_accuracy']:.4f}, "
        f"best {summary['best_accuracy']:.4f} (epoch {summary['best_epoch']}); metrics in "
        f"{spec.run_dir}/metrics.json"
    )
    return summary
