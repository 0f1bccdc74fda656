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
    with pytest.raises(ValueError, match=r"no intact checkpoint in .*epoch-3 .*epoch-2 .*epoch-1 .*--noresume"):
        EpochCheckpoints(str(tmp_path), model, optimizer).restore_latest()
