"""Train an image classifier, optionally by knowledge distillation from a teacher.

  python train.py --epochs=20                         # built-in digits demo
  python train.py --dataset=tfrecord --data_dir=../shared/data/cifar10 --arch=wrn-16-4
  python train.py --dataset=cifar100 --download --arch=wrn-40-4
  python train.py --dataset=folder --data_dir=mit67 --arch=resnet18-imagenet --teacher=keras:ResNet50 \
      --distill=iep --protocol=transfer          # the paper's transfer experiment (configs/paper/table2)

Outputs go to --run_dir: config.json, metrics.json, checkpoints/, tensorboard/,
export/ (SavedModel of the classifier). Re-running the same command resumes.
"""

from __future__ import annotations

import os

from iep.engine.startup import import_tensorflow_quietly, parse_flags_or_exit  # noqa: E402

import_tensorflow_quietly()

from absl import app, flags, logging  # noqa: E402

from iep.core.registry import CLOCK_RULE, METHODS  # noqa: E402
from iep.engine.distribute import DISTRIBUTIONS  # noqa: E402
from iep.engine.outside_teacher import PREPROCESS  # noqa: E402
from iep.engine.precision import PRECISIONS  # noqa: E402
from iep.transfer import PROTOCOLS  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "config",
    None,
    "A shipped flag file by name, e.g. paper/table1/r0.1/iep.cfg (from any directory; flags after it override it).",
)
flags.DEFINE_string("arch", "wrn-16-1", "Student architecture: wrn-D-K, resnetN, mobilenetv2[-alpha], vggN.")
flags.DEFINE_string("dataset", "digits", "digits (built-in, offline), tfrecord, folder, or a tfds name (cifar100, …).")
flags.DEFINE_string("data_dir", None, "Folder of the data: TFRecords, <split>/<class>/<image>, or tfds data_dir.")
flags.DEFINE_boolean("download", False, "Let tfds download and prepare the data set (needs internet).")
flags.DEFINE_boolean(
    "crop_to_bbox", False, "Crop every image to its 'bbox' feature first (tfds caltech_birds2011: the CUB protocol)."
)
flags.DEFINE_float("rate", 1.0, "Fraction of the training split to keep, stratified per class, in (0, 1].")
flags.DEFINE_float(
    "validation_fraction",
    0.0,
    "Hold out this stratified fraction of the training split (fixed seed, before --rate) as the split "
    "'validation', e.g. to select settings with --eval_split=validation without touching the test split.",
)
flags.DEFINE_integer("sample_seed", 0, "Seed of the --rate subset; keep it fixed to compare methods.")
flags.DEFINE_integer("image_size", None, "Square input size; default: the data's own (≤64 px) or 224.")
flags.DEFINE_integer("epochs", 100, "Training epochs.")
flags.DEFINE_integer("batch_size", 128, "Training batch size.")
flags.DEFINE_float("lr", 0.1, "Base learning rate (SGD, Nesterov momentum).")
flags.DEFINE_enum("lr_schedule", "step", ["step", "cosine", "constant"], "Learning-rate schedule.")
flags.DEFINE_list("lr_decay_points", ["0.3", "0.6", "0.8"], "Fractions of the run where the step schedule decays.")
flags.DEFINE_float("lr_decay_factor", 0.2, "Step-schedule multiplier at each decay point.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float(
    "weight_decay",
    5e-4,
    "L2 weight decay (gradient wd·W): on conv and dense kernels for plain training, IEP and IEP+BB (IEPKT); on "
    "every trained variable (BN γ/β, biases, the method's own modules) for the baselines, as their code does.",
)
flags.DEFINE_float("dropout", None, "Dropout inside blocks; default 0.3 for WRN on ≤64 px inputs, else 0.")
flags.DEFINE_integer("seed", 0, "Seed of initialization, data order, augmentation and dropout.")
flags.DEFINE_string("run_dir", None, "Run directory; default runs/<data>_<arch>_<distill>_r<rate>_s<seed>.")
flags.DEFINE_boolean("resume", True, "Continue from the newest checkpoint in --run_dir.")
flags.DEFINE_string(
    "distill", "none", f"Knowledge-distillation method: {', '.join(METHODS)}, or one a --plugins file registers."
)
flags.DEFINE_list(
    "plugins",
    [],
    "Python files or module names imported first, e.g. ones that register methods with @iep.methods.register.",
)
flags.DEFINE_string(
    "teacher",
    None,
    "Teacher: a run directory or checkpoint prefix of ours, a Keras model file (.keras), a SavedModel folder, "
    "keras:<Keras Applications name> (e.g. keras:ResNet50, ImageNet weights) or kerashub:<preset or folder>.",
)
flags.DEFINE_string("teacher_arch", None, "Teacher architecture (needed for a bare checkpoint of ours).")
flags.DEFINE_list(
    "teacher_taps",
    None,
    "Teacher layers to read as sensing points (SavedModel: its output names); default: the network's own "
    "points (ours), its stage outputs (outside models), the feature pyramid (KerasHub).",
)
flags.DEFINE_enum(
    "teacher_preprocess",
    "auto",
    list(PREPROCESS),
    "Outside teacher's pixel scaling from raw [0, 255] RGB: auto = the pretrained model's own (Keras "
    "Applications, KerasHub), else raw; unit [0,1], symmetric [-1,1], caffe (BGR - mean), torch (ImageNet mean/std).",
)
flags.DEFINE_enum(
    "protocol",
    "distill",
    list(PROTOCOLS),
    "distill: the method as published (CIFAR protocol); transfer: the student learns the teacher's knowledge "
    "alone for --knowledge_epochs, then is fine-tuned with labels for --epochs (the paper's Table 2).",
)
flags.DEFINE_integer("knowledge_epochs", None, "--protocol=transfer: epochs of the knowledge stage; default --epochs.")
flags.DEFINE_enum("iep_second_pca", "ipca", ["ipca", "pca"], "IEP second PCA: incremental or per-batch.")
flags.DEFINE_integer("iep_iterations", 2, "IEP MPNN message-passing iterations.")
flags.DEFINE_list("iep_knowledge", None, "IEP terms to transfer: alteration,interim[,black_box]; default per method.")
flags.DEFINE_integer(
    "iep_module_steps", None, "IEP phase-1 (module training) steps; default --iep_module_epochs' 20 epochs."
)
flags.DEFINE_integer(
    "iep_module_epochs",
    None,
    "IEP phase 1 as passes over the training data (default 20: the reference code trains the modules for 20 "
    "epochs); excludes --iep_module_steps.",
)
flags.DEFINE_float("iep_module_lr", 0.1, "IEP phase-1 learning rate (fixed, SGD Nesterov 0.9).")
flags.DEFINE_boolean(
    "iep_clip",
    True,
    "IEP phase 2 caps each variable's distillation gradient at ‖∇CE‖·σ(e − e₀), as the reference code does; "
    "--noiep_clip adds it uncapped (an ablation).",
)
flags.DEFINE_list(
    "distill_args",
    None,
    "The method's options, key=value,... (e.g. beta=500 for at; clip_terms=sum for iep, whose --iep_* flags "
    "are aliases of its options second_pca, iterations, knowledge, module_steps, module_epochs, module_lr, clip); "
    f"every method's options and defaults: docs/methods.md. {CLOCK_RULE}",
)
flags.DEFINE_string("eval_split", "test", "Split evaluated after every --eval_every epochs.")
flags.DEFINE_integer("eval_every", 1, "Evaluate after every this many epochs (and always after the last).")
flags.DEFINE_integer(
    "eval_limit", None, "Evaluate on the first this many images of --eval_split (quick runs; default all of it)."
)
flags.DEFINE_integer("log_every", 50, "TensorBoard scalars every this many steps.")
flags.DEFINE_enum(
    "jit_compile",
    "auto",
    ["auto", "true", "false"],
    "Compile the steps with XLA: auto = on with a GPU (one replica), off on a CPU, where XLA is slower (as Keras).",
)
flags.DEFINE_enum(
    "precision",
    "float32",
    list(PRECISIONS),
    "Networks' compute dtype (KD math and modules stay float32; float16 adds loss scaling).",
)
flags.DEFINE_enum(
    "distribute",
    "none",
    list(DISTRIBUTIONS),
    "tf.distribute: mirrored = all local GPUs (or --logical_cpus), multi_worker = hosts from TF_CONFIG.",
)
flags.DEFINE_integer(
    "semantic_vectors",
    0,
    "With --distill=none: learn d-dimensional semantic vectors of every sensing point's neurons alongside "
    "training and write <run_dir>/static_knowledge.npz (0 = off).",
)
flags.DEFINE_string(
    "static_knowledge", None, "--distill=static_kd: a static-knowledge file (.npz) or a run dir holding one."
)
flags.DEFINE_float(
    "connect_timeout", 120.0, "multi_worker: seconds to wait for every peer in TF_CONFIG before failing (naming it)."
)
flags.DEFINE_integer("logical_cpus", 1, "Split the CPU into this many devices (try --distribute=mirrored on a CPU).")
flags.DEFINE_boolean("export", True, "Export the trained classifier as a SavedModel to <run_dir>/export.")
flags.DEFINE_list(
    "export_formats",
    ["savedmodel"],
    "With --export: savedmodel (<run_dir>/export), keras (student.keras), tflite (student.tflite) and "
    "tflite_int8 (student_int8.tflite, calibrated on training images); float32 pixels in, logits out.",
)
flags.DEFINE_boolean("progress", True, "Show a progress bar.")
flags.DEFINE_string("cache_dir", None, "Cache for data statistics; default $IEP_CACHE_DIR or ~/.cache/iep.")


def _load_plugins(plugins: list[str]) -> None:
    """Imports each --plugins entry (a .py path or a module name), so what it registers is known."""
    import importlib
    import importlib.util

    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                if not os.path.isfile(plugin):
                    raise ValueError(f"--plugins {plugin!r}: no such file")
                name = "iep_plugin_" + os.path.splitext(os.path.basename(plugin))[0]
                spec = importlib.util.spec_from_file_location(name, plugin)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except SyntaxError as error:  # the file and line are the whole story; a traceback through importlib is not
            raise ValueError(f"--plugins {plugin!r}: {error.msg} ({error.filename}, line {error.lineno})") from None
        except ImportError as error:  # the plugin, or a module it imports, is not installed
            raise ValueError(f"--plugins {plugin!r}: {error}") from None
        except SystemExit as error:  # an exit while importing would end the run with nothing trained
            raise ValueError(f"--plugins {plugin!r} exited while it was imported (sys.exit({error.code!r}))") from None
        except Exception as error:  # its own error, said in one line with where it was raised
            where = error.__traceback__
            while where.tb_next is not None:
                where = where.tb_next
            line = f"{where.tb_frame.f_code.co_filename}, line {where.tb_lineno}"
            raise ValueError(f"--plugins {plugin!r} raised {type(error).__name__}: {error} ({line})") from None


def _check_flags() -> None:
    """The flags no library setting holds (the library checks its own: TrainConfig, DataConfig, RunSpec), in
    range (NaN fails every check), before any compute."""
    import math

    if FLAGS.config:  # only a caller that parses flags itself, past iep.engine.configs.expand_configs, gets here
        raise ValueError(f"--config={FLAGS.config}: expand it first (iep.engine.configs.expand_configs)")
    _load_plugins(FLAGS.plugins)

    checks = [
        ("iep_iterations", FLAGS.iep_iterations >= 1, ">= 1"),
        ("iep_module_steps", FLAGS.iep_module_steps is None or FLAGS.iep_module_steps >= 0, ">= 0"),
        ("iep_module_epochs", FLAGS.iep_module_epochs is None or FLAGS.iep_module_epochs >= 1, ">= 1"),
        ("iep_module_lr", math.isfinite(FLAGS.iep_module_lr) and FLAGS.iep_module_lr > 0, "a finite number > 0"),
    ]
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"--{name} must be {expected}, got {FLAGS[name].value}")
    if FLAGS.iep_module_epochs is not None and FLAGS.iep_module_steps is not None:
        raise ValueError("--iep_module_epochs and --iep_module_steps both size IEP's phase 1: give one")
    _check_iep_aliases()
    if not FLAGS.iep_clip and FLAGS.distill not in ("iep", "iep_bb"):
        raise ValueError(f"--noiep_clip is an ablation of --distill=iep/iep_bb, not of --distill={FLAGS.distill}")
    if FLAGS.knowledge_epochs is not None and FLAGS.protocol != "transfer":
        raise ValueError("--knowledge_epochs is the first stage of --protocol=transfer; add it or drop the flag")


IEP_FLAG_ALIASES = {
    "iep_second_pca": "second_pca",
    "iep_iterations": "iterations",
    "iep_knowledge": "knowledge",
    "iep_module_steps": "module_steps",
    "iep_module_epochs": "module_epochs",
    "iep_module_lr": "module_lr",
    "iep_clip": "clip",
}


def _check_iep_aliases() -> None:
    """An --iep_* flag and the same option in --distill_args would be two values for one setting: refuse."""
    from iep.core.registry import parse_distill_args

    given = parse_distill_args(FLAGS.distill_args)
    for flag, option in IEP_FLAG_ALIASES.items():
        if FLAGS[flag].present and option in given:
            raise ValueError(f"--{flag} and --distill_args {option}=... set the same IEP option: give one")
    # the module phase's two sizes, one from each system
    sizes = [f"--{f}" for f in ("iep_module_steps", "iep_module_epochs") if FLAGS[f].value is not None]
    sizes += [f"--distill_args {k}" for k in ("module_steps", "module_epochs") if k in given]
    if len(sizes) > 1:
        raise ValueError(f"{' and '.join(sizes)} both size IEP's module phase: give one")


def _static_flags():
    """--static_knowledge read before any data is decoded. A static method without it, or with a --teacher, is
    refused by RunSpec."""
    from iep.core.registry import STATIC_METHODS

    if FLAGS.distill in STATIC_METHODS and FLAGS.static_knowledge:
        from iep.static.knowledge_file import load_static_knowledge

        return load_static_knowledge(FLAGS.static_knowledge)
    if FLAGS.static_knowledge and FLAGS.distill not in STATIC_METHODS:
        raise ValueError(f"--static_knowledge is for --distill=static_kd, not --distill={FLAGS.distill}")
    return None


def _run_spec():
    """The flags as one run specification: checked here in the flags' words, then run by the library."""
    from iep.core.registry import parse_distill_args
    from iep.datasets import DataConfig
    from iep.engine.checkpointing import checkpoint_exists
    from iep.engine.cli import default_run_dir, number_list
    from iep.engine.outside_teacher import is_outside_teacher
    from iep.engine.run_spec import RunSpec, TeacherSpec
    from iep.engine.runs import RESOLVED_KEYS, RESUME_KEYS
    from iep.engine.trainer import TrainConfig
    from iep.nets import parse_arch

    # Cheap checks first: a typo must not cost a data-set decode.
    for flag in ("arch", "teacher_arch"):
        if value := getattr(FLAGS, flag):
            try:
                parse_arch(value)
            except ValueError as error:
                raise ValueError(f"--{flag}={value}: {error}") from None
    if FLAGS.teacher and not is_outside_teacher(FLAGS.teacher) and not checkpoint_exists(FLAGS.teacher):
        from iep.engine.configs import config_training

        trains_it = config_training(FLAGS.teacher)
        hint = f": train it first with `iep-train --config={trains_it}`" if trains_it else ""
        raise ValueError(f"--teacher {FLAGS.teacher!r} does not exist{hint}")
    distill_args = parse_distill_args(FLAGS.distill_args)
    static_knowledge = _static_flags()
    train_config = TrainConfig(
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        lr=FLAGS.lr,
        lr_schedule=FLAGS.lr_schedule,
        lr_decay_points=tuple(number_list("lr_decay_points", FLAGS.lr_decay_points)),
        lr_decay_factor=FLAGS.lr_decay_factor,
        momentum=FLAGS.momentum,
        weight_decay=FLAGS.weight_decay,
        seed=FLAGS.seed,
        eval_split=FLAGS.eval_split,
        eval_every=FLAGS.eval_every,
        eval_limit=FLAGS.eval_limit,
        log_every=FLAGS.log_every,
        jit_compile={"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile],
        progress=FLAGS.progress,
        export=FLAGS.export,
        export_formats=tuple(FLAGS.export_formats),
        precision=FLAGS.precision,
    )  # checked as it is built (TrainConfig.validate)
    if FLAGS.iep_module_epochs is not None and FLAGS.distill in ("iep", "iep_bb"):
        distill_args["module_epochs"] = FLAGS.iep_module_epochs  # the alias: one rule sizes it (methods.py)
    teacher = None
    if FLAGS.teacher:
        teacher = TeacherSpec(FLAGS.teacher, FLAGS.teacher_arch, FLAGS.teacher_taps, FLAGS.teacher_preprocess)
    transfer = FLAGS.protocol == "transfer"
    knowledge_epochs = FLAGS.epochs if FLAGS.knowledge_epochs is None else FLAGS.knowledge_epochs  # 0 is refused
    return RunSpec(
        data=DataConfig(
            FLAGS.dataset,
            FLAGS.data_dir,
            FLAGS.download,
            FLAGS.rate,
            FLAGS.sample_seed,
            FLAGS.image_size,
            FLAGS.cache_dir,
            FLAGS.crop_to_bbox,
            FLAGS.validation_fraction,
        ),
        train=train_config,
        arch=FLAGS.arch,
        run_dir=FLAGS.run_dir
        or default_run_dir(FLAGS.dataset, FLAGS.data_dir, FLAGS.arch, FLAGS.distill, FLAGS.rate, FLAGS.seed),
        distill=FLAGS.distill,
        distill_options={
            "second_pca": FLAGS.iep_second_pca,
            "iterations": FLAGS.iep_iterations,
            "knowledge": FLAGS.iep_knowledge,
            "module_steps": FLAGS.iep_module_steps,
            "module_lr": FLAGS.iep_module_lr,
            "clip": FLAGS.iep_clip,
            "overrides": distill_args,
        },
        teacher=teacher,
        dropout=FLAGS.dropout,
        knowledge_epochs=knowledge_epochs if transfer else None,
        semantic_vectors=FLAGS.semantic_vectors,
        static_knowledge=static_knowledge,
        resume=FLAGS.resume,
        distribute=FLAGS.distribute,
        connect_timeout=FLAGS.connect_timeout,
        recorded={name: FLAGS[name].value for name in RESUME_KEYS if name not in ("lr_decay_points", *RESOLVED_KEYS)},
    )


def _train() -> dict:
    """Flags → one checked run specification → the library's run (iep.engine.run_spec.train_run)."""
    from iep.engine.distribute import build_strategy, split_cpu
    from iep.engine.run_spec import train_run

    _check_flags()
    split_cpu(FLAGS.logical_cpus)  # before any TensorFlow op initializes the devices
    strategy = build_strategy(FLAGS.distribute, FLAGS.connect_timeout)  # multi-worker: also before any other op
    return train_run(_run_spec(), strategy)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from iep.apps.vocabulary import in_flags
    from iep.engine.cli import run_or_exit

    logging.set_verbosity(logging.WARNING)

    run_or_exit(_train, lambda message: in_flags(message, set(FLAGS)))


def run() -> None:
    import iep

    iep.leave_source_root_off_sys_path()
    app.run(main, flags_parser=parse_flags_or_exit)


if __name__ == "__main__":
    run()
