import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from iep.core.distiller import Distiller
from iep.datasets import DataConfig, build_pipeline
from iep.engine.runs import RESUME_KEYS, save_or_check_run_config
from iep.engine.trainer import TrainConfig, Trainer, TrainingDiverged
from iep.nets import build_network
from iep.op_utils import build_schedule, decayed_variables, l2_penalty
from tests.conftest import ROOT
from tests.helpers import checkpoint_values, kill_and_resume, subprocess_env, train_command, train_in_process

QUICK = dict(batch_size=64, log_every=5, progress=False, export=False, lr_schedule="constant", lr=0.05)


def _digits_subset():
    return build_pipeline(DataConfig("digits", rate=0.5))


def _train(run_dir, arch="resnet8", epochs=2, data=None, distiller=None, **overrides):
    data = data or _digits_subset()
    tf.keras.utils.set_random_seed(0)
    net = build_network(arch, data.num_classes, data.input_shape, data.mean, data.std)
    trainer = Trainer(net, data, TrainConfig(epochs=epochs, **{**QUICK, **overrides}), str(run_dir), distiller)
    return trainer, trainer.fit()


def test_short_training_lowers_the_loss(tmp_path):
    _, summary = _train(tmp_path / "run", epochs=3)
    losses = [h["train_loss"] for h in summary["history"]]
    assert losses[-1] < 0.8 * losses[0], losses
    assert summary["history"][-1]["train_accuracy"] > 0.5
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))
    assert metrics["finished"] and metrics["epochs_completed"] == 3
    assert metrics["best_accuracy"] == max(h["eval_accuracy"] for h in metrics["history"])
    assert os.path.exists(tmp_path / "run" / "checkpoints" / "epoch-3.index")
    assert os.listdir(tmp_path / "run" / "tensorboard")


def test_step_schedule_and_weight_decay_values():
    schedule = build_schedule("step", 0.1, 100, (0.3, 0.6, 0.8), 0.2)
    values = [float(schedule(s)) for s in (0, 29, 31, 61, 81, 99)]
    np.testing.assert_allclose(values, [0.1, 0.1, 0.02, 0.004, 0.0008, 0.0008], rtol=1e-6)
    net = build_network("resnet8", 10)
    kernels = decayed_variables(net.model.trainable_variables)
    expected = 5e-4 * sum(0.5 * np.sum(np.square(v.numpy())) for v in kernels)
    with tf.GradientTape() as tape:
        penalty = l2_penalty(kernels, 5e-4)
    np.testing.assert_allclose(float(penalty), expected, rtol=1e-5)
    grad = tape.gradient(penalty, kernels[0])
    np.testing.assert_allclose(grad.numpy(), 5e-4 * kernels[0].numpy(), rtol=1e-5, atol=1e-12)


class _ExplodingDistiller(Distiller):
    name, loss_names = "explode", ("explode",)

    def losses(self, images, labels, outputs, epoch):
        return {"explode": tf.math.log(tf.reduce_min(outputs["logits"]) * 0.0 - 1.0)}  # log(-1) = NaN


def test_nan_loss_stops_training_with_a_message(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 1: a loss became NaN/Inf"):
        _train(tmp_path / "nan", epochs=1, distiller=_ExplodingDistiller())


def test_chance_warning_needs_every_recent_epoch_at_chance():
    from iep.engine.run_records import CHANCE_EPOCHS, chance_warning

    def history(*accuracies):
        return [{"epoch": i + 1, "train_accuracy": a} for i, a in enumerate(accuracies)]

    at_chance = history(*[0.1] * CHANCE_EPOCHS)
    assert "stayed at chance for 5 epochs (at most 0.1000 by epoch 5; chance is 0.1000 with 10 classes)" in (
        chance_warning(at_chance, 10)
    )
    assert chance_warning(at_chance[1:], 10) is None  # too few epochs yet: a slow start
    assert chance_warning(history(*[0.1] * (CHANCE_EPOCHS - 1), 0.16), 10) is None  # above 1.5 x chance
    assert chance_warning(history(*[0.56] * CHANCE_EPOCHS), 2) is None  # above chance + 5 points
    assert chance_warning(history(*[0.54] * CHANCE_EPOCHS), 2) is not None
    assert chance_warning([*at_chance[:-1], {"epoch": 5, "train_accuracy": None}], 10) is None  # recovered, unknown


def test_a_run_that_learns_nothing_is_said_once_and_goes_on(tmp_path, monkeypatch, capsys):
    """Random labels keep training accuracy at chance with a finite loss, as a silently diverged run does."""
    import iep.engine.run_records as run_records
    from iep.datasets.user_data import UserData

    monkeypatch.setattr(run_records, "CHANCE_EPOCHS", 2)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 255, size=(512, 16, 16, 3)).astype(np.uint8)
    data = UserData((images, rng.integers(0, 10, 512)), splits={"test": (images[:64], np.arange(64) % 10)})
    _, summary = _train(tmp_path / "chance", epochs=3, data=data, lr=0.01)
    assert len(summary["history"]) == 3 and max(h["train_accuracy"] for h in summary["history"]) <= 0.15
    printed = capsys.readouterr().err
    assert printed.count("warning: training accuracy has stayed at chance for 2 epochs") == 1, printed


def test_kill_and_resume_reproduces_the_uninterrupted_run(tmp_path, capsys):
    flags_ = ("--epochs=3", "--lr_schedule=step")
    straight, killed, resumed = kill_and_resume(tmp_path, flags_, 2, capsys)
    assert "Resuming" in resumed and "after epoch 2" in resumed
    assert "clip_terms" not in json.load(open(killed / "config.json"))  # vanilla has no clip to record

    prefix_a, a = checkpoint_values(straight)
    prefix_b, b = checkpoint_values(killed)
    assert prefix_a.endswith("epoch-3") and prefix_b.endswith("epoch-3")
    assert a.keys() == b.keys() and any(k.startswith("rng/") for k in a)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    history_a = json.load(open(straight / "metrics.json"))["history"]
    history_b = json.load(open(killed / "metrics.json"))["history"]
    assert [h["epoch"] for h in history_b] == [1, 2, 3]
    np.testing.assert_allclose([h["train_loss"] for h in history_a], [h["train_loss"] for h in history_b], rtol=1e-4)


_SERVE_WITHOUT_PROJECT = """
import sys, numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = model.signatures["serving_default"](images=tf.constant(images))
np.save(sys.argv[3], out["logits"].numpy())
for wrong in ([1, 16, 16, 3], [1, 32, 32, 1]):  # the declared shape is enforced, not silently broadcast
    try:
        model.signatures["serving_default"](images=tf.zeros(wrong))
    except tf.errors.InvalidArgumentError as error:
        assert "is not compatible with expected shape" in str(error), error
    else:
        raise AssertionError(f"shape {wrong} was accepted")
ours = [m for m in sys.modules if m.split(".")[0] in ("iep", "nets", "datasets", "op_utils")]
assert not ours, ours
"""


def test_saved_model_serves_the_same_logits_without_the_project(tmp_path):
    trainer, _ = _train(tmp_path / "run", epochs=1, export=True)
    images = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "serve.py"
    script.write_text(_SERVE_WITHOUT_PROJECT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "run" / "export"),
            str(tmp_path / "images.npy"),
            str(tmp_path / "logits.npy"),
        ],
        check=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    expected = trainer.student.classifier(images, training=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, rtol=1e-4, atol=1e-4)
    names = (tmp_path / "run" / "export" / "assets" / "class_names.txt").read_text().split()
    assert names == [str(d) for d in range(10)]


# --- train.py / eval.py on bad input: one clear message, before any training ------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from iep.apps import train

    run_dir = tmp_path_factory.mktemp("teacher_run")
    with flagsaver.flagsaver():
        flags.FLAGS(
            [
                "train.py",
                "--arch=resnet8",
                "--rate=0.3",
                "--epochs=1",
                "--batch_size=64",
                "--progress=false",
                f"--run_dir={run_dir}",
            ]
        )
        summary = train._train()
    return str(run_dir), summary


def _run_train(*argv):
    from tests.helpers import train_with_flags

    return train_with_flags("--epochs=1", "--progress=false", "--export=false", *argv)


BAD_INPUTS = [
    (["--arch=wrn-15-3"], r"--arch=wrn-15-3: WRN depth must be 6n\+4"),
    (["--arch=wrn-16-0"], r"--arch=wrn-16-0: WRN width must be >= 1"),
    (["--teacher_arch=vgg7"], r"--teacher_arch=vgg7: VGG depth must be one of"),
    (["--arch=transformer"], r"unknown architecture 'transformer'; expected wrn-<depth>-<width>"),
    (["--dataset=not_a_dataset_xyz"], r"--dataset='not_a_dataset_xyz' is not a known data set"),
    (["--dataset=tfrecord"], r"--data_dir is required for --dataset='tfrecord'"),
    (["--dataset=folder", "--data_dir=/nonexistent/images"], r"--data_dir '/nonexistent/images' does not exist"),
    (["--rate=0"], r"--rate must be in \(0, 1\]"),
    (["--rate=1.5"], r"--rate must be in \(0, 1\]"),
    (["--epochs=0"], r"--epochs must be >= 1"),
    (["--batch_size=5000"], r"--batch_size 5000 exceeds the 1437 training images"),
    (["--teacher=/nonexistent/teacher"], r"--teacher '/nonexistent/teacher' does not exist"),
    (["--eval_split=validation"], r"has no split 'validation'"),
    (["--distill=iep"], r"--distill=iep needs --teacher"),
    # a forgotten --distill: the teacher was loaded and ignored, and a plain student trained
    (["--teacher=keras:ResNet50"], r"--teacher 'keras:ResNet50' is given but --distill=none uses no teacher"),
    # Numeric flags out of range, NaN included, are refused before anything is built or written.
    (["--lr_decay_factor=-0.2"], r"--lr_decay_factor must be in \(0, 1\], got -0.2"),
    (["--lr=nan"], r"--lr must be a finite number > 0, got nan"),
    (["--lr=-0.1"], r"--lr must be a finite number > 0"),
    (["--log_every=0"], r"--log_every must be >= 1"),
    (["--image_size=100000"], r"--image_size must be between 8 and 1024 pixels, got 100000"),
    (["--seed=-1"], r"--seed must be >= 0, got -1"),
    (["--sample_seed=-3"], r"--sample_seed must be an int >= 0, got -3"),
    (["--iep_module_lr=-0.1"], r"--iep_module_lr must be a finite number > 0"),
    (["--iep_module_epochs=0"], r"--iep_module_epochs must be >= 1, got 0"),
    (["--iep_module_epochs=2", "--iep_module_steps=9"], r"--iep_module_epochs and --iep_module_steps both size"),
    (["--noiep_clip"], r"--noiep_clip is an ablation of --distill=iep/iep_bb, not of --distill=none"),
    (["--lr_decay_points=0.6,0.3"], r"--lr_decay_points must be increasing fractions in \(0, 1\)"),
    (["--lr_decay_points=abc"], r"--lr_decay_points takes comma-separated numbers, got 'abc'"),
    (["--weight_decay=inf"], r"--weight_decay must be >= 0, got inf"),
    (["--dropout=1.5"], r"--dropout must be in \[0, 1\)"),
    # checked by the library (RunSpec, build_strategy, split_cpu), said in flags
    (["--distill=kdd"], r"--distill must be one of \[.*\], got 'kdd'"),
    (["--protocol=transfer"], r"^--protocol=transfer trains a knowledge stage without labels; --distill=none has none"),
    (
        ["--protocol=transfer", "--knowledge_epochs=0", "--distill=kd", "--teacher=keras:ResNet50"],
        r"^--knowledge_epochs must be an int >= 1, got 0$",
    ),  # fmt: skip
    (["--semantic_vectors=-2"], r"^--semantic_vectors must be an int >= 0 \(0 = off\), got -2$"),
    (["--connect_timeout=-1"], r"^--connect_timeout=-1.0: must be a finite number of seconds > 0$"),
    (["--logical_cpus=0"], r"^--logical_cpus=0: must be >= 1$"),
    # a method's options, checked before the data is decoded or the teacher loaded
    (["--distill_args=decay=all"], r"^--distill_args: option decay for none must be one of \('kernels', "),
    (
        ["--distill=kd", "--teacher=keras:ResNet50", "--distill_args=temprature=4"],
        r"^--distill_args: options \['temprature'\] unknown for kd; it accepts \[.*'temperature'",
    ),  # fmt: skip
]


@pytest.mark.parametrize("argv,message", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_train_rejects_bad_input(tmp_path, argv, message):
    """In the command's words: the library's (TrainConfig.lr) as train.py prints them (--lr)."""
    with pytest.raises(ValueError) as raised:
        _run_train(f"--run_dir={tmp_path}", *argv)
    assert re.search(message, str(raised.value)), str(raised.value)
    assert not os.path.exists(tmp_path / "checkpoints")


def test_empty_data_dir_and_class_mismatch(tmp_path):
    from tests.helpers import write_tfrecords

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds no train-\*.tfrecord files"):
        _run_train(f"--run_dir={tmp_path / 'r1'}", "--dataset=tfrecord", f"--data_dir={tmp_path / 'empty'}")
    bad = write_tfrecords(str(tmp_path / "bad"), {"train": [0, 3], "test": [0]}, classes=["a", "b"])
    with pytest.raises(ValueError, match=r"classes.txt.*|labels span \[0, 3\] but there are 2 classes"):
        _run_train(f"--run_dir={tmp_path / 'r2'}", "--dataset=tfrecord", f"--data_dir={bad}")


def test_teacher_of_the_wrong_architecture(tmp_path, trained_run):
    run_dir, _ = trained_run
    with pytest.raises(ValueError, match=r"--teacher_arch='wrn-16-1', but the run --teacher='.*' trained 'resnet8'"):
        _run_train(f"--run_dir={tmp_path / 'a'}", "--distill=kd", f"--teacher={run_dir}", "--teacher_arch=wrn-16-1")
    prefix = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
    with pytest.raises(ValueError, match=r"does not match the 'teacher' network"):
        _run_train(f"--run_dir={tmp_path / 'b'}", "--distill=kd", f"--teacher={prefix}", "--teacher_arch=resnet14")


def test_bad_iep_flags_fail_before_the_run_dir_is_written(tmp_path, trained_run):
    run_dir, _ = trained_run
    student_dir = tmp_path / "student"
    with pytest.raises(ValueError, match=r"--iep_knowledge=\['bogus'\]: must be a non-empty subset"):
        _run_train(
            f"--run_dir={student_dir}",
            "--distill=iep",
            f"--teacher={run_dir}",
            "--arch=resnet8",
            "--rate=0.3",
            "--iep_knowledge=bogus",
        )
    assert not student_dir.exists()


def test_unreadable_teacher_checkpoint(tmp_path):
    (tmp_path / "junk.index").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"is not a readable checkpoint"):
        _run_train(
            f"--run_dir={tmp_path / 'r'}", "--distill=kd", f"--teacher={tmp_path / 'junk'}", "--teacher_arch=resnet8"
        )


def test_teacher_loads_and_resume_refuses_changed_settings(tmp_path, trained_run):
    run_dir, summary = trained_run
    student = (f"--run_dir={tmp_path / 'student'}", "--distill=kd", f"--teacher={run_dir}", "--rate=0.3")
    _run_train(*student, "--arch=resnet8")
    with pytest.raises(ValueError, match=r"--arch: was 'resnet8', now 'resnet14'"):
        _run_train(*student, "--arch=resnet14")


def test_teacher_of_other_class_names_is_refused_with_the_difference(trained_run):
    from iep.engine.teacher import load_teacher

    run_dir, _ = trained_run
    digits = [str(d) for d in range(10)]
    with pytest.raises(ValueError, match=r"other classes than the data's \(only the model's: \['9'\], only the data's"):
        load_teacher(str(run_dir), None, 10, (32, 32, 3), class_names=[*digits[:9], "nine"])
    with pytest.raises(ValueError, match=r"same names in another order"):
        load_teacher(str(run_dir), None, 10, (32, 32, 3), class_names=digits[::-1])
    load_teacher(str(run_dir), None, 10, (32, 32, 3), class_names=digits)


def test_a_teacher_read_at_another_image_size_says_so(trained_run, capsys):
    from iep.engine.teacher import load_teacher

    run_dir, _ = trained_run
    teacher = load_teacher(str(run_dir), None, 10, (32, 32, 3))
    assert "reads these at" not in capsys.readouterr().out
    teacher = load_teacher(str(run_dir), None, 10, (64, 64, 3))
    assert teacher.model.input_shape == (None, 64, 64, 3)
    assert f"note: teacher={run_dir!r} trained on 32×32 images and reads these at 64×64" in capsys.readouterr().out


def test_resume_treats_relative_and_absolute_paths_as_the_same(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "teacher").mkdir()
    config = {**dict.fromkeys(RESUME_KEYS, "x"), "teacher": str(tmp_path / "teacher"), "data_dir": str(tmp_path)}
    save_or_check_run_config(str(tmp_path), config, resume=False)
    save_or_check_run_config(str(tmp_path), {**config, "teacher": "teacher", "data_dir": "."}, resume=True)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch-1.index").write_text("a checkpoint of the first settings")
    with pytest.raises(ValueError, match=r"--teacher: was '.*teacher', now 'other'"):
        save_or_check_run_config(str(tmp_path), {**config, "teacher": "other"}, resume=True)


def test_a_clipped_run_resumes_only_with_the_clip_it_started_with(tmp_path):
    """config.json records the clip a clipped method resolved (a default may change between releases); a
    config.json from before that record clipped the summed gradient, the only clip there was."""
    before = {k: "x" for k in RESUME_KEYS if k != "clip_terms"}
    save_or_check_run_config(str(tmp_path), before, resume=False)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch-1.index").write_text("a checkpoint of the first settings")
    save_or_check_run_config(str(tmp_path), {**before, "clip_terms": "sum"}, resume=True)
    with pytest.raises(ValueError, match=r"--distill_args clip_terms: was 'sum', now 'per_term'"):
        save_or_check_run_config(str(tmp_path), {**before, "clip_terms": "per_term"}, resume=True)


def test_a_clip_given_in_distill_args_is_compared_as_resolved(tmp_path):
    """A run from before the record that was given clip_terms=per_term clipped per term; `clip_terms=sum`
    given is the same run as the default sum, whichever way the default goes."""
    given = {k: "x" for k in RESUME_KEYS if k != "clip_terms"}
    per_term = {**given, "distill_args": ["clip_terms=per_term", "beta=2"]}
    save_or_check_run_config(str(tmp_path / "a"), per_term, resume=False)
    (tmp_path / "a" / "checkpoints").mkdir()
    (tmp_path / "a" / "checkpoints" / "epoch-1.index").write_text("a checkpoint")
    save_or_check_run_config(str(tmp_path / "a"), {**per_term, "clip_terms": "per_term"}, resume=True)
    with pytest.raises(ValueError, match=r"--distill_args clip_terms: was 'per_term', now 'sum'"):
        save_or_check_run_config(str(tmp_path / "a"), {**per_term, "clip_terms": "sum"}, resume=True)
    with pytest.raises(ValueError, match=r"--distill_args: was \['clip_terms=per_term', 'beta=2'\], now \['beta=3'\]"):
        save_or_check_run_config(
            str(tmp_path / "a"), {**given, "distill_args": ["beta=3"], "clip_terms": "per_term"}, resume=True
        )

    save_or_check_run_config(str(tmp_path / "b"), {**given, "distill_args": None, "clip_terms": "sum"}, resume=False)
    (tmp_path / "b" / "checkpoints").mkdir()
    (tmp_path / "b" / "checkpoints" / "epoch-1.index").write_text("a checkpoint")
    save_or_check_run_config(
        str(tmp_path / "b"), {**given, "distill_args": ["clip_terms=sum"], "clip_terms": "sum"}, resume=True
    )


def test_new_settings_in_a_run_directory_without_a_checkpoint_start_anew(tmp_path, capsys):
    """A run that diverged before its first checkpoint ("lower --lr") is retried with another --lr in place:
    nothing of it can be resumed, so its files move aside instead of asking for --noresume."""
    config = dict.fromkeys(RESUME_KEYS, "x")
    save_or_check_run_config(str(tmp_path), {**config, "lr": 0.4}, resume=False)
    (tmp_path / "metrics.json").write_text("{}")
    save_or_check_run_config(str(tmp_path), {**config, "lr": 0.1}, resume=True)
    assert json.load(open(tmp_path / "config.json"))["lr"] == 0.1 and not (tmp_path / "metrics.json").exists()
    assert "held no checkpoint of its earlier settings" in capsys.readouterr().out


CLI_ERRORS = [
    (["--rate=2"], "error: --rate must be in (0, 1], got 2.0"),
    (["--epochs=abc"], "error: flag --epochs=abc: invalid literal for int() with base 10: 'abc'"),  # absl parsing
    (
        ["--dataset=cifar1000"],
        "error: --dataset='cifar1000' is not a known data set (DatasetNotFoundError): use digits (built in), "
        "tfrecord or folder (with --data_dir), or a TensorFlow Datasets name; closest TensorFlow Datasets names: "
        "cifar100, cifar10, cifar100_n, cifar10_n, cifar10_h",
    ),
]


@pytest.mark.parametrize("argv,line", CLI_ERRORS, ids=[a[0] for a, _ in CLI_ERRORS])
def test_cli_prints_one_line_and_exits_2(tmp_path, argv, line):
    """The whole of stderr is our one line: no traceback and none of TensorFlow's start-up notices."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "IEP_VERBOSE")}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "train.py"), *argv, f"--run_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [line]


def test_eval_report_matches_training_metrics(trained_run):
    from iep.engine.evaluation import evaluate

    run_dir, summary = trained_run
    report = evaluate(run_dir=run_dir)
    assert report["top1"] == pytest.approx(summary["last_accuracy"])
    confusion = np.array(report["confusion_matrix"])
    assert confusion.sum() == report["examples"] == 360
    assert np.trace(confusion) / confusion.sum() == pytest.approx(report["top1"])
    exported = evaluate(saved_model=os.path.join(run_dir, "export"), dataset="digits")
    assert exported["top1"] == pytest.approx(report["top1"])
    assert exported["confusion_matrix"] == report["confusion_matrix"]


def test_eval_scores_the_validation_split_the_run_held_out(tmp_path):
    """`--split=validation` on a run trained with --validation_fraction: the same held-out images."""
    from iep.datasets import DataConfig, build_pipeline
    from iep.engine.evaluation import evaluate

    run_dir = str(tmp_path / "run")
    summary = _run_train(
        "--arch=resnet8", "--rate=0.3", "--batch_size=64", "--validation_fraction=0.2", "--eval_split=validation",
        f"--run_dir={run_dir}",
    )  # fmt: skip
    report = evaluate(run_dir=run_dir, split="validation")
    held_out = build_pipeline(DataConfig("digits", validation_fraction=0.2)).split("validation").size
    assert report["examples"] == held_out and 0 < held_out < 1437
    assert report["top1"] == pytest.approx(summary["last_accuracy"])


def test_eval_refuses_data_with_other_class_names(trained_run, cifar10_dir):
    """A digits model scored on CIFAR-10 (also 10 classes) printed ~10 % with exit 0; now the names differ."""
    from iep.engine.evaluation import evaluate

    run_dir, _ = trained_run
    for source in ({"run_dir": run_dir}, {"saved_model": os.path.join(run_dir, "export")}):
        with pytest.raises(ValueError, match=r"other classes than the data's \(only the model's: \['0', '1'"):
            evaluate(**source, dataset="tfrecord", data_dir=cifar10_dir)


def test_eval_cli_writes_the_report(tmp_path, trained_run):
    run_dir, summary = trained_run
    output = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "eval.py"), f"--run_dir={run_dir}", f"--output={output}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.load(open(output))["top1"] == pytest.approx(summary["last_accuracy"])
    assert "top-1" in result.stdout and "top-5" in result.stdout


def test_eval_rejects_a_checkpoint_without_arch(tmp_path):
    from iep.engine.evaluation import evaluate

    with pytest.raises(ValueError, match="arch= is required with a checkpoint= outside a run directory"):
        evaluate(checkpoint=str(tmp_path / "x"), dataset="digits")
    with pytest.raises(ValueError, match="is not a readable SavedModel"):
        evaluate(saved_model=str(tmp_path), dataset="digits")
    with pytest.raises(ValueError, match=r"saved_model='.*gone' does not exist"):
        evaluate(saved_model=str(tmp_path / "gone"), dataset="digits")


def test_eval_reads_network_and_data_from_the_run_holding_a_checkpoint(trained_run, tmp_path):
    """An epoch of a run (or the run itself given as --checkpoint) evaluates without --arch and --dataset, as
    --run_dir does, and scores the same; an --arch the run did not train is refused, naming both."""
    from iep.engine.evaluation import default_output, evaluate
    from iep.engine.runs import run_dir_holding

    run_dir, _ = trained_run
    prefix = os.path.join(run_dir, "checkpoints", "epoch-1")
    for given in (prefix, os.path.join(run_dir, "checkpoints"), run_dir):
        assert run_dir_holding(given) == os.path.normpath(run_dir)
    assert run_dir_holding(str(tmp_path / "checkpoints" / "epoch-1")) is None
    expected = evaluate(run_dir=run_dir, split="test")["top1"]
    assert evaluate(checkpoint=prefix, split="test")["top1"] == expected
    assert evaluate(checkpoint=run_dir, arch="ResNet8", split="test")["top1"] == expected
    with pytest.raises(ValueError, match=r"^arch=resnet20, but run .* trained a resnet8: drop arch=$"):
        evaluate(checkpoint=prefix, arch="resnet20")
    assert default_output(None, run_dir, None, "test") == os.path.join(run_dir, "eval_test.json")


def test_eval_names_a_run_dir_or_a_foreign_saved_model_given_as_saved_model(tmp_path, trained_run):
    from iep.engine.evaluation import evaluate

    run_dir, _ = trained_run
    with pytest.raises(ValueError, match=r"is a run directory: give it as run_dir= \(or its export/ folder\)"):
        evaluate(saved_model=run_dir, dataset="digits")

    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4])])
        def double(self, x):
            return {"y": 2 * x}

    module = Doubler()
    tf.saved_model.save(module, str(tmp_path / "foreign"), signatures={"serving_default": module.double})
    with pytest.raises(ValueError, match=r"has no serving_default signature taking `images`"):
        evaluate(saved_model=str(tmp_path / "foreign"), dataset="digits")


def test_sigterm_stops_at_a_step_boundary_names_the_checkpoint_and_resumes(tmp_path):
    import signal
    import time

    run_dir = tmp_path / "run"
    command = train_command(run_dir, "--epochs=30", "--arch=resnet8")
    env = {k: v for k, v in subprocess_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state, deadline = run_dir / "checkpoints" / "checkpoint", time.time() + 300
    while not (state.exists() and "epoch-1" in state.read_text()):
        assert process.poll() is None and time.time() < deadline, "run ended before it could be stopped"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM
    (line,) = stderr.splitlines()  # one line, no traceback, no TensorFlow notices
    assert line.startswith("error: stopped by SIGTERM at epoch ") and "Re-run the same command to resume" in line
    latest = state.read_text().split('"')[1]
    assert f"The last checkpoint is {run_dir / 'checkpoints' / latest}." in line
    # Resuming from it is what test_kill_and_resume_reproduces_the_uninterrupted_run checks bit for bit.


def test_divergence_is_one_line_naming_the_checkpoint_on_disk(tmp_path, capsys):
    from iep.engine.cli import DIVERGED_EXIT, run_or_exit

    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(lambda: _train(tmp_path / "nan", epochs=1, distiller=_ExplodingDistiller()))
    assert exit_info.value.code == DIVERGED_EXIT
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: training diverged at epoch 1, step 1: a loss became NaN/Inf")
    assert f"No checkpoint was written yet in {tmp_path / 'nan'}." in line  # never an epoch without a checkpoint


def test_resume_purges_tensorboard_events_past_the_checkpoint(tmp_path):
    import collections
    import glob

    run = tmp_path / "run"
    _train(run, epochs=2)
    for path in glob.glob(str(run / "checkpoints" / "epoch-2.*")):
        os.remove(path)  # as if killed after logging epoch 2 but before its checkpoint
    _train(run, epochs=2)  # resumes after epoch 1 and trains epoch 2 again
    seen = collections.Counter()
    for path in glob.glob(str(run / "tensorboard" / "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            seen.update((value.tag, event.step) for value in event.summary.value)
    assert seen and max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:5]
    assert {step for tag, step in seen if tag == "epoch/eval_accuracy"} == {1, 2}


def test_eval_every_skips_epochs_but_never_the_last(tmp_path):
    import glob

    _, summary = _train(tmp_path / "run", epochs=5, eval_every=2)
    evaluated = [h["epoch"] for h in summary["history"] if h["eval_accuracy"] is not None]
    assert evaluated == [2, 4, 5]
    assert summary["last_accuracy"] == summary["history"][-1]["eval_accuracy"]
    best = max((h for h in summary["history"] if h["eval_accuracy"] is not None), key=lambda h: h["eval_accuracy"])
    assert (summary["best_accuracy"], summary["best_epoch"]) == (best["eval_accuracy"], best["epoch"])
    assert all(h["eval_seconds"] < 1e-3 for h in summary["history"] if h["eval_accuracy"] is None)
    tags = set()
    for path in glob.glob(str(tmp_path / "run" / "tensorboard" / "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            event = tf.compat.v1.Event.FromString(record)
            tags.update(event.step for value in event.summary.value if value.tag == "epoch/eval_accuracy")
    assert tags == {2, 4, 5}


def test_a_train_config_is_refused_where_it_is_written():
    """Before any Trainer reads it: each field's type and range, named as the caller wrote it."""
    with pytest.raises(ValueError, match="TrainConfig.eval_every must be >= 1"):
        TrainConfig(eval_every=0)  # refused where it is written, before any Trainer reads it
    with pytest.raises(ValueError, match="TrainConfig.epochs must be >= 1, got 0"):
        dataclasses.replace(TrainConfig(), epochs=0)
    for field, value, expected in (
        ("lr", "0.1", "a number"),  # from Python, untyped
        ("epochs", True, "an int"),
        ("eval_limit", "all", "an int"),
        ("epochs", 2.5, "an int"),  # a count: was taken, and reached the step count as a float
        ("batch_size", 128.0, "an int"),
    ):
        with pytest.raises(TypeError, match=f"^TrainConfig.{field} must be {expected}, got {value!r}$"):
            TrainConfig(**{field: value})
    TrainConfig(epochs=np.int64(3), lr=np.float32(0.1), eval_limit=None).validate()  # NumPy numbers are numbers
    # refused where written, not when a Trainer first builds the schedule; a string is not a list of formats
    for kwargs, error, message in (
        ({"lr_schedule": "cos"}, ValueError, r"^TrainConfig.lr_schedule must be one of \('step', 'cosine', "),
        ({"lr_decay_points": ("0.3",)}, TypeError, r"^TrainConfig.lr_decay_points must be a sequence of numbers"),
        ({"lr_decay_points": (0.6, 0.3)}, ValueError, r"^TrainConfig.lr_decay_points must be increasing fractions"),
        ({"export_formats": "tflite"}, TypeError, r"^TrainConfig.export_formats must be a sequence of format names"),
        ({"eval_split": None}, TypeError, r"^TrainConfig.eval_split must be a split's name, e.g. 'test'; got None$"),
    ):
        with pytest.raises(error, match=message):
            TrainConfig(**kwargs)


def test_a_tilde_in_any_path_flag_is_the_home_folder(monkeypatch):
    """`--data_dir=~/x` reaches the program unexpanded (the shell expands `~` only at a word's start)."""
    from absl import flags as absl_flags
    from absl.testing import flagsaver

    from iep.apps import train  # noqa: F401 (its flags)
    from iep.engine.startup import parse_flags_or_exit

    monkeypatch.setenv("HOME", "/home/someone")
    with flagsaver.flagsaver():
        parse_flags_or_exit(["train.py", "--data_dir=~/data", "--run_dir=~/runs/a", "--plugins=~/p.py,m"])
        assert absl_flags.FLAGS.data_dir == "/home/someone/data"
        assert absl_flags.FLAGS.run_dir == "/home/someone/runs/a"
        assert absl_flags.FLAGS.plugins == ["/home/someone/p.py", "m"]


def test_quick_runs_evaluate_a_subset_and_a_rerun_redoes_nothing(tmp_path, capsys):
    """--eval_limit scores the split's first N images; the teacher is scored once per run dir; re-running a
    finished command neither retrains nor re-exports."""
    teacher = tmp_path / "teacher"
    summary = train_in_process(teacher, "--epochs=1", "--arch=resnet8", "--export=true", "--eval_limit=7")
    assert summary["eval_limit"] == 7 and round(summary["last_accuracy"] * 7, 6) == round(summary["last_accuracy"] * 7)
    exported = os.path.getmtime(teacher / "export" / "saved_model.pb")
    capsys.readouterr()
    again = train_in_process(teacher, "--epochs=1", "--arch=resnet8", "--export=true", "--eval_limit=7")
    assert again["last_accuracy"] == summary["last_accuracy"]
    assert "had finished and exported: nothing to redo" in capsys.readouterr().out
    assert os.path.getmtime(teacher / "export" / "saved_model.pb") == exported
    student = tmp_path / "student"
    flags_ = ("--epochs=1", "--arch=resnet8", "--distill=kd", f"--teacher={teacher}", "--eval_limit=9")
    train_in_process(student, *flags_)
    cached = json.loads((student / "teacher_eval.json").read_text())
    assert cached["limit"] == 9 and round(cached["top1"] * 9, 6) == round(cached["top1"] * 9)
    stamp = os.path.getmtime(student / "teacher_eval.json")
    train_in_process(student, *flags_)
    assert os.path.getmtime(student / "teacher_eval.json") == stamp  # read, not measured again


def test_xla_is_auto_as_in_keras_off_on_a_cpu():
    import tensorflow as tf

    from iep.engine.train_config import TrainConfig as Config

    assert Config().jit_compile == "auto"
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    assert Config().uses_xla() == has_gpu and not Config().uses_xla(replicas=2)
    assert Config(jit_compile=True).uses_xla() and not Config(jit_compile=False).uses_xla()
    with pytest.raises(ValueError, match="TrainConfig.jit_compile must be auto, true or false"):
        Config(jit_compile="yes").validate()


def test_resuming_without_metrics_json_rebuilds_the_earlier_epochs_from_tensorboard(tmp_path, capsys):
    """Deleting metrics.json used to drop the earlier epochs' history in silence (the best accuracy then covered
    the resumed epochs only); TensorBoard's epoch scalars give their accuracies back, and the loss is said."""
    _, first = _train(tmp_path / "run", epochs=2)
    os.remove(tmp_path / "run" / "metrics.json")
    _, summary = _train(tmp_path / "run", epochs=3)
    history = summary["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert [h.get("recovered") for h in history] == ["tensorboard", "tensorboard", None]
    np.testing.assert_allclose([h["eval_accuracy"] for h in history[:2]],
                               [h["eval_accuracy"] for h in first["history"]], rtol=1e-6)  # fmt: skip
    assert summary["best_accuracy"] == max(h["eval_accuracy"] for h in history)
    assert "epochs 1 to 2 were rebuilt from its TensorBoard events (2 of 2 found" in capsys.readouterr().out


def test_the_command_is_a_shell_over_a_run_spec_a_python_user_can_build(tmp_path):
    """train.py's flags become one RunSpec; the same spec built in Python trains the same run."""
    import iep
    from iep.datasets import DataConfig

    flags_run = _run_train(
        f"--run_dir={tmp_path / 'cli'}", "--dataset=digits", "--rate=0.2", "--arch=resnet8", "--batch_size=32"
    )
    spec = iep.RunSpec(
        data=DataConfig("digits", rate=0.2),
        train=iep.TrainConfig(epochs=1, batch_size=32, progress=False, export=False),
        arch="resnet8",
        run_dir=str(tmp_path / "python"),
    )
    python_run = iep.train_run(spec)
    assert python_run["last_accuracy"] == pytest.approx(flags_run["last_accuracy"], abs=1e-6)
    history = [json.load(open(tmp_path / d / "metrics.json"))["history"][0]["train_loss"] for d in ("cli", "python")]
    assert history[0] == pytest.approx(history[1], rel=1e-6)
