"""The library speaks Python (the argument the caller passed), the commands speak flags: one set of checks, two
vocabularies (iep/apps/vocabulary.py translates)."""

import re

import pytest

from iep.apps.vocabulary import in_flags


def test_python_callers_read_the_names_they_passed(tmp_path):
    from iep.datasets import DataConfig, DataError, build_pipeline
    from iep.engine.trainer import TrainConfig, Trainer
    from iep.methods import build_distiller
    from iep.nets import build_network

    with pytest.raises(ValueError, match=r"^TrainConfig.lr must be a finite number > 0, got -1"):
        TrainConfig(lr=-1)
    student = build_network("resnet8", 10)
    with pytest.raises(ValueError, match=r"^kd needs a teacher \(teacher=\)$"):
        build_distiller("kd", None, student)
    # a bare keras.Model where a tapped network belongs, or a dict for the config: the argument, and what to pass
    tapped = r"must be a TappedNetwork: iep.build_network\(...\) or iep.tap_model\(your_keras_model\); got Functional$"
    with pytest.raises(TypeError, match="^teacher " + tapped):
        build_distiller("kd", student.model, student)
    with pytest.raises(TypeError, match="^student " + tapped):
        build_distiller("kd", student, student.model)
    with pytest.raises(TypeError, match="^student " + tapped):
        Trainer(student.model, None, TrainConfig(), "unused")
    with pytest.raises(TypeError, match=r"^config must be an iep.TrainConfig, e.g. iep.TrainConfig\(epochs=100\); got"):
        Trainer(student, None, {"epochs": 1}, "unused")
    with pytest.raises(
        TypeError, match=r"^run_dir must be a folder path \(checkpoints, logs and exports go there\), got None"
    ):
        Trainer(student, None, TrainConfig(), None)
    with pytest.raises(ValueError, match=r"^build_distiller: method must be one of .*, got 'kdd'"):
        build_distiller("kdd", None, student)
    # were Python's or TF's own words (a dict update, an attribute error) or a traceback in the first traced step
    with pytest.raises(TypeError, match=r"^overrides must be a mapping of kd's options, e.g. \{'temperature': 4\}"):
        build_distiller("kd", student, student, overrides=["temperature=4"])
    other_images = r"^the teacher takes images \(16, 16, 3\), but the student \(32, 32, 3\): both read the same batch"
    with pytest.raises(ValueError, match=other_images + r" \(iep.load_teacher\(run_dir, input_shape=\.\.\.\) builds"):
        build_distiller("kd", build_network("resnet8", 10, (16, 16, 3)), student)
    import keras

    from iep.engine.outside_teacher import tap_model
    from iep.engine.teacher import load_teacher

    with pytest.raises(TypeError, match=r"^teacher must be a path \(a run directory, .keras file or SavedModel\)"):
        load_teacher(3)
    two_d = r"input_shape must be \(height, width, channels\) of positive ints, got \(32, 32\)$"
    with pytest.raises(ValueError, match="^load_teacher: " + two_d):  # before the weights' download is tried
        load_teacher("keras:MobileNetV2", num_classes=10, input_shape=(32, 32))
    with pytest.raises(ValueError, match="^tap_model: " + two_d):  # was "no 4-D feature maps found to tap"
        tap_model(keras.Sequential([keras.layers.Input((32, 32, 3)), keras.layers.Flatten()]), input_shape=(32, 32))
    with pytest.raises(ValueError, match=r"^teacher= is given but none uses no teacher: name a method, or drop"):
        build_distiller("none", student, student)  # as RunSpec refuses it: a plain student trained for hours
    data = build_pipeline(DataConfig("digits", rate=0.05))
    digits_student = build_network("resnet8", data.num_classes, data.input_shape)
    with pytest.raises(TypeError, match=r"^distiller must be a method's name \(iep.methods.methods\(\), e.g. 'iep'\), "
                                        r"a Distiller or None; got 42$"):  # fmt: skip
        Trainer(digits_student, data, TrainConfig(), str(tmp_path / "run"), 42)
    with pytest.raises(TypeError, match=r"^options must be a mapping of the method's options, e.g. "):
        Trainer(
            digits_student, data, TrainConfig(), str(tmp_path / "run"), "kd", teacher=digits_student, options=["T=4"]
        )
    with pytest.raises(ValueError, match=r"^distiller must be one of .*, got 'kdd'$"):  # said first, not the size
        Trainer(digits_student, data, TrainConfig(batch_size=5000), str(tmp_path / "run"), "kdd")
    with pytest.raises(TypeError, match=r"^strategy must be a tf.distribute.Strategy, e.g. "):
        Trainer(digits_student, data, TrainConfig(), str(tmp_path / "run"), None, "mirrored")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match=r"^run_dir '.*a_file' is a file; expected a directory$"):
        Trainer(digits_student, data, TrainConfig(), str(tmp_path / "a_file"))
    assert not (tmp_path / "run").exists()  # the checks made no folder
    trainer = Trainer(digits_student, data, TrainConfig(epochs=1, batch_size=8, export=False), str(tmp_path / "run"))
    with pytest.raises(TypeError, match=r"^Trainer.fit: resume must be True or False, got 'no'$"):  # was resumed
        trainer.fit(resume="no")
    with pytest.raises(DataError, match=r"^TrainConfig.batch_size 5000 exceeds the \d+ training images at "
                                        r"DataConfig.rate 0.05"):  # fmt: skip
        data.steps_per_epoch(5000)


def test_a_run_spec_is_refused_where_it_is_written():
    """RunSpec, DataConfig and TeacherSpec check themselves at construction, naming the field, before any data is
    read; train.py builds the same objects, so its flags are checked by the same code."""
    import iep
    from iep.datasets import DataConfig, DataError
    from iep.engine.run_spec import TRANSFER

    data, train = DataConfig("digits"), iep.TrainConfig(epochs=1)

    def spec(**kwargs):
        return iep.RunSpec(**{"data": data, "train": train, "arch": "resnet8", "run_dir": "unused", **kwargs})

    with pytest.raises(ValueError, match=r"^RunSpec.distill must be one of \[.*\], got 'kdd'$"):
        spec(distill="kdd")
    with pytest.raises(ValueError, match=r"^RunSpec.distill=kd needs RunSpec.teacher \(a run of ours, "):
        spec(distill="kd")
    with pytest.raises(ValueError, match=r"^RunSpec.teacher 't' is given but RunSpec.distill=none uses no teacher"):
        spec(teacher=iep.TeacherSpec("t"))
    with pytest.raises(
        TypeError, match=r"^RunSpec.run_dir must be a folder path \(checkpoints, logs, exports\), got None"
    ):
        spec(run_dir=None)
    with pytest.raises(ValueError, match=r"^TeacherSpec.preprocess must be one of \('auto', 'raw', .*got 'imagenet'$"):
        iep.TeacherSpec("keras:ResNet50", preprocess="imagenet")  # was taken, and refused only when loaded
    with pytest.raises(TypeError, match=r"^spec must be an iep.RunSpec \(train.py's flags as one object\); got dict$"):
        iep.train_run({"arch": "resnet8"})
    with pytest.raises(ValueError, match=r"^RunSpec.distill=static_kd needs RunSpec.static_knowledge"):
        spec(distill="static_kd")
    with pytest.raises(ValueError, match="^" + re.escape(TRANSFER) + r" trains a knowledge stage without labels; "
                                         r"RunSpec.distill=dml has none \(its peer learns from labels\)$"):  # fmt: skip
        spec(distill="dml", teacher=iep.TeacherSpec("t"), knowledge_epochs=5)
    with pytest.raises(ValueError, match=r"^RunSpec.semantic_vectors learns a teacher's vectors during plain "):
        spec(distill="kd", teacher=iep.TeacherSpec("t"), semantic_vectors=8)
    with pytest.raises(ValueError, match=r"^RunSpec.distill_options: option iterations for iep must be >= 1, got 0$"):
        spec(distill="iep", teacher=iep.TeacherSpec("t"), distill_options={"overrides": {"iterations": "0"}})
    with pytest.raises(ValueError, match=r"^RunSpec.distill_options: options \['temprature'\] unknown for kd"):
        spec(distill="kd", teacher=iep.TeacherSpec("t"), distill_options={"temprature": 4})
    spec(distill="kd", teacher=iep.TeacherSpec("t"), distill_options={"temperature": 4, "iterations": 2})  # named
    with pytest.raises(ValueError, match=r"^RunSpec.arch=resnet9: CIFAR ResNet depth must be 6n\+2"):
        spec(arch="resnet9")
    with pytest.raises(ValueError, match=r"^RunSpec.dropout must be in \[0, 1\), got 1.5$"):
        spec(dropout=1.5)
    with pytest.raises(ValueError, match=r"^RunSpec.knowledge_epochs must be an int >= 1, got 2.5$"):
        spec(distill="kd", teacher=iep.TeacherSpec("t"), knowledge_epochs=2.5)
    with pytest.raises(ValueError, match=r"^RunSpec.semantic_vectors must be an int >= 0 \(0 = off\), got inf$"):
        spec(semantic_vectors=float("inf"))  # was an OverflowError from int(inf)
    with pytest.raises(TypeError, match=r"^RunSpec.data must be a DataConfig, e.g. iep.datasets.DataConfig\('cifar10'\)"
                                        r"; got dict$"):  # fmt: skip
        spec(data={"dataset": "digits"})
    with pytest.raises(TypeError, match=r"^RunSpec.teacher must be a TeacherSpec, e.g. .*; got str$"):
        spec(distill="kd", teacher="runs/teacher")
    with pytest.raises(ValueError, match=r"^TeacherSpec.arch=vgg7: VGG depth must be one of"):
        iep.TeacherSpec("t", arch="vgg7")
    # were taken: an unknown strategy and a zero timeout were refused only by train_run
    with pytest.raises(ValueError, match=r"^RunSpec.distribute must be one of \('none', 'mirrored', 'multi_worker'\), "
                                         r"got 'tpu'$"):  # fmt: skip
        spec(distribute="tpu")
    with pytest.raises(ValueError, match=r"^RunSpec.connect_timeout must be a finite number of seconds > 0, got 0$"):
        spec(connect_timeout=0)
    # taps: one name alone is one tap (as tap_model reads it), not its letters; other values were taken
    assert iep.TeacherSpec("t", taps="block3_out").taps == ("block3_out",)
    assert iep.TeacherSpec("t", taps=[]).taps is None  # an empty --teacher_taps: the stage outputs
    for taps in ([1, 2], 3, ["a", ""]):
        with pytest.raises(TypeError, match=r"^TeacherSpec.taps must be layer names, e.g. \['block3_out'\], or None"):
            iep.TeacherSpec("t", taps=taps)
    with pytest.raises(DataError, match=r"^DataConfig.rate must be in \(0, 1\], got 2$"):
        DataConfig("digits", rate=2)
    # a string is truthy: these were taken, and "no" switched the setting on
    with pytest.raises(TypeError, match=r"^DataConfig.download must be True or False, got 'no'$"):
        DataConfig("digits", download="no")
    with pytest.raises(TypeError, match=r"^TrainConfig.progress must be True or False, got 'false'$"):
        iep.TrainConfig(progress="false")
    with pytest.raises(TypeError, match=r"^RunSpec.resume must be True or False, got 0$"):
        spec(resume=0)
    with pytest.raises(TypeError, match=r"^DataConfig.rate must be a number, got '0.1'$"):
        DataConfig("digits", rate="0.1")
    with pytest.raises(DataError, match=r"^DataConfig.sample_seed must be an int >= 0, got 1.5$"):
        DataConfig("digits", sample_seed=1.5)
    with pytest.raises(DataError, match=r"^DataConfig.image_size must be between 8 and 1024 pixels, got inf$"):
        DataConfig("digits", image_size=float("inf"))
    with pytest.raises(DataError, match=r"^DataConfig.dataset must be a name such as 'cifar10'"):
        DataConfig("")
    # and the commands' words for the library's
    flags = {"distill", "teacher", "teacher_arch", "knowledge_epochs", "protocol"}
    assert in_flags(f"{TRANSFER} trains a knowledge stage; RunSpec.distill=dml has none", flags) == (
        "--protocol=transfer trains a knowledge stage; --distill=dml has none"
    )
    assert in_flags("TeacherSpec.arch=vgg7: VGG depth", flags) == "--teacher_arch=vgg7: VGG depth"
    assert in_flags("RunSpec.distill=kd needs RunSpec.teacher (a run)", flags) == "--distill=kd needs --teacher (a run)"


def test_the_commands_say_the_flags():
    flags = {"lr", "rate", "batch_size", "teacher"}
    assert in_flags("TrainConfig.lr must be > 0, got -1", flags) == "--lr must be > 0, got -1"
    assert in_flags("TrainConfig.batch_size 9 exceeds 8 images at DataConfig.rate 0.1", flags) == (
        "--batch_size 9 exceeds 8 images at --rate 0.1"
    )
    assert in_flags("TrainConfig.keep_checkpoints must be >= 1", flags) == "TrainConfig.keep_checkpoints must be >= 1"
    assert in_flags("kd needs a teacher (teacher=)") == "kd needs a teacher (--teacher)"
    assert (
        in_flags("nothing to redo (Trainer.fit(resume=False) starts over)")
        == "nothing to redo (--noresume starts over)"
    )


def _raised_texts(path):
    """(line, text) of every string literal inside a `raise` of `path`, code spans in backticks left out."""
    import ast
    import re

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            literals = [n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            yield node.lineno, re.sub(r"`[^`]*`", "", "".join(literals))


def test_no_library_error_names_a_command_line_flag():
    """The library raises in Python's words everywhere; only the commands (iep/apps, the process start-up) say
    flags, by translating (in_flags). A `--flag` inside backticks is a command a message suggests running."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    flag = re.compile(r"(?<![\w-])--[a-z][a-z_]+")
    said = [
        f"{path.relative_to(root)}:{line}: {flag.findall(text)}"
        for base in ("iep", "datasets", "nets", "op_utils")
        for path in (root / base).rglob("*.py")
        if "apps" not in path.parts and path.name not in ("cli.py", "startup.py")
        for line, text in _raised_texts(path)
        if flag.search(text)
    ]
    assert not said, said


def test_the_data_layer_and_the_loaders_say_the_flags_on_the_command_line():
    flags = {"data_dir", "dataset", "download", "teacher", "teacher_taps", "teacher_arch", "arch", "run_dir"}
    assert in_flags("DataConfig.data_dir is required for DataConfig.dataset='tfrecord'", flags) == (
        "--data_dir is required for --dataset='tfrecord'"
    )
    assert in_flags("not prepared here: set DataConfig.download to fetch it", flags) == (
        "not prepared here: add --download to fetch it"
    )
    assert in_flags("taps=['x'] are not layers of teacher='m.keras'", flags) == (
        "--teacher_taps=['x'] are not layers of --teacher='m.keras'"
    )
    assert in_flags("teacher_arch= is required when teacher='/t' is not a run directory", flags) == (
        "--teacher_arch is required when --teacher='/t' is not a run directory"
    )
    assert in_flags("give run_dir=, checkpoint= or saved_model=", {"run_dir"}) == (
        "give --run_dir, checkpoint= or saved_model="  # a keyword that is no flag of the command stays
    )
    assert in_flags("distill_args items must be key=value", flags) == "distill_args items must be key=value"
