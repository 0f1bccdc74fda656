"""The library speaks Python (the argument the caller passed), the commands speak flags: one set of checks, two
vocabularies (iep/apps/vocabulary.py translates)."""

import pytest

from iep.apps.vocabulary import in_flags


def test_python_callers_read_the_names_they_passed():
    from iep.datasets import DataConfig, DataError, build_pipeline
    from iep.engine.trainer import TrainConfig
    from iep.methods import build_distiller
    from iep.nets import build_network

    with pytest.raises(ValueError, match=r"^TrainConfig.lr must be a finite number > 0, got -1"):
        TrainConfig(lr=-1).validate()
    student = build_network("resnet8", 10)
    with pytest.raises(ValueError, match=r"^kd needs a teacher \(teacher=\)$"):
        build_distiller("kd", None, student)
    with pytest.raises(ValueError, match=r"^build_distiller: method must be one of .*, got 'kdd'"):
        build_distiller("kdd", None, student)
    data = build_pipeline(DataConfig("digits", rate=0.05))
    with pytest.raises(DataError, match=r"^TrainConfig.batch_size 5000 exceeds the \d+ training images at "
                                        r"DataConfig.rate 0.05"):  # fmt: skip
        data.steps_per_epoch(5000)


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
