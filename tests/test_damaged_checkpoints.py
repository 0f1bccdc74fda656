"""A damaged newest checkpoint falls back to the newest intact one with a warning; none intact is one error."""

import glob
import os

import keras
import numpy as np
import pytest

from iep.engine.checkpointing import EpochCheckpoints


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def _three_checkpoints(run_dir):
    run_dir = str(run_dir)
    model, optimizer = _model()
    checkpoints = EpochCheckpoints(run_dir, model, optimizer)
    saved = {}
    for epoch in (1, 2, 3):
        model.layers[0].kernel.assign(np.full((3, 2), float(epoch), np.float32))
        checkpoints.mark_epoch(epoch)
        checkpoints.save(epoch)
        saved[epoch] = model.layers[0].kernel.numpy().copy()
    return saved


def _flip_bytes(path):
    data = bytearray(open(path, "rb").read())
    for i in range(len(data) // 3, len(data) // 3 + 16):
        data[i] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_resume_from_a_relative_run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the state file's paths are relative to the folder, which is relative here
    saved = _three_checkpoints("run")
    model, optimizer = _model()
    assert EpochCheckpoints("run", model, optimizer).restore_latest() == 3
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), saved[3])


@pytest.mark.parametrize("damage", ["bit_flip", "truncate", "missing_data"])
def test_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path, capsys, damage):
    saved = _three_checkpoints(tmp_path)
    (data,) = glob.glob(str(tmp_path / "checkpoints" / "epoch-3.data-*"))
    if damage == "bit_flip":
        _flip_bytes(data)
    elif damage == "truncate":
        open(data, "r+b").truncate(os.path.getsize(data) // 2)
    else:
        os.remove(data)
    model, optimizer = _model()
    assert EpochCheckpoints(str(tmp_path), model, optimizer).restore_latest() == 2
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), saved[2])
    err = capsys.readouterr().err
    assert err.startswith("warning: skipped damaged checkpoint") and "epoch-3" in err and "epoch-2" in err


def test_no_intact_checkpoint_is_one_error_naming_the_files(tmp_path):
    _three_checkpoints(tmp_path)
    for data in glob.glob(str(tmp_path / "checkpoints" / "epoch-*.data-*")):
        _flip_bytes(data)
    open(tmp_path / "checkpoints" / "checkpoint", "w").write("not a { proto")  # the state file too
    model, optimizer = _model()
    with pytest.raises(
        ValueError, match=r"no intact checkpoint in .*epoch-3 .*epoch-2 .*epoch-1 .*Trainer.fit\(resume=False\)"
    ):
        EpochCheckpoints(str(tmp_path), model, optimizer).restore_latest()


@pytest.mark.parametrize("damage", ["bit_flip", "truncate"])
def test_reading_weights_skips_a_damaged_newest_checkpoint_as_resume_does(tmp_path, capsys, damage):
    """--teacher=DIR and eval.py --run_dir read the model part only (restore_model_weights): same rule."""
    from iep.engine.checkpointing import restore_model_weights

    saved = _three_checkpoints(tmp_path)
    (data,) = glob.glob(str(tmp_path / "checkpoints" / "epoch-3.data-*"))
    if damage == "bit_flip":
        _flip_bytes(data)
    else:
        open(data, "r+b").truncate(os.path.getsize(data) // 2)
    model, _ = _model()
    assert restore_model_weights(model, str(tmp_path)).endswith("epoch-2")
    np.testing.assert_array_equal(model.layers[0].kernel.numpy(), saved[2])
    err = capsys.readouterr().err
    assert err.startswith("warning: skipped damaged checkpoint") and "epoch-3" in err and "read" in err
    for data in glob.glob(str(tmp_path / "checkpoints" / "epoch-*.data-*")):
        open(data, "r+b").truncate(8)
    with pytest.raises(ValueError, match=r"no intact checkpoint \(.*epoch-3 .*epoch-2 .*epoch-1"):
        restore_model_weights(_model()[0], str(tmp_path))
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])  # another network: named, not "damaged"
    _three_checkpoints(tmp_path / "fresh")
    with pytest.raises(ValueError, match="does not match the"):
        restore_model_weights(other, str(tmp_path / "fresh"))


def test_a_teacher_run_and_eval_with_a_damaged_newest_checkpoint(tmp_path, capsys):
    """End to end: a finished run of ours whose newest checkpoint is truncated still teaches and evaluates
    (from the one before, with a warning); with every checkpoint damaged both refuse in one line naming it."""
    from iep.engine.evaluation import evaluate
    from iep.engine.teacher import load_teacher
    from tests.helpers import train_in_process

    run = tmp_path / "teacher"
    train_in_process(run, "--epochs=2", "--arch=wrn-10-1")
    (data,) = glob.glob(str(run / "checkpoints" / "epoch-2.data-*"))
    open(data, "r+b").truncate(os.path.getsize(data) // 2)
    capsys.readouterr()
    report = evaluate(run_dir=str(run), split="test")
    assert 0.0 <= report["top1"] <= 1.0
    assert report["checkpoint"].endswith("epoch-1")  # the report says which checkpoint it read
    teacher = load_teacher(str(run), None, 10, (32, 32, 3))
    assert teacher.num_classes == 10
    assert capsys.readouterr().err.count("warning: skipped damaged checkpoint") == 2
    for data in glob.glob(str(run / "checkpoints" / "epoch-*.data-*")):
        open(data, "r+b").truncate(8)
    with pytest.raises(ValueError, match=r"teacher='.*' with arch='wrn-10-1': .* no intact checkpoint"):
        load_teacher(str(run), None, 10, (32, 32, 3))
    with pytest.raises(ValueError, match="^run_dir= .* no intact checkpoint"):
        evaluate(run_dir=str(run), split="test")
    with pytest.raises(ValueError, match=r"^checkpoint='.*epoch-9' does not exist: give a prefix"):
        evaluate(checkpoint=str(run / "checkpoints" / "epoch-9"), arch="wrn-10-1", dataset="digits")
