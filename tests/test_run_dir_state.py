"""Starting over never leaves a state a later resume could pick up; checkpoints without a config are refused."""

import json
import os
import shutil

import pytest

from iep.engine.runs import save_or_check_run_config


def _old_run(run_dir, arch="wrn-16-1"):
    os.makedirs(run_dir / "checkpoints")
    (run_dir / "checkpoints" / "epoch-3.index").write_text("old")
    (run_dir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "epoch-3"')
    (run_dir / "metrics.json").write_text("{}")
    (run_dir / "config.json").write_text(json.dumps({"arch": arch}))


def test_noresume_moves_the_previous_run_aside_before_the_first_step(tmp_path, capsys):
    _old_run(tmp_path)
    new = {"arch": "resnet8", "precision": "float32"}
    save_or_check_run_config(str(tmp_path), new, resume=False)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.json").exists()
    assert json.loads((tmp_path / "config.json").read_text()) == new
    (moved,) = list((tmp_path / "replaced").iterdir())
    assert (moved / "checkpoints" / "epoch-3.index").read_text() == "old"  # kept, not deleted
    assert json.loads((moved / "config.json").read_text()) == {"arch": "wrn-16-1"}
    assert f"moved to {moved}" in capsys.readouterr().out
    # A run killed before its first checkpoint and started again resumes nothing of the old experiment.
    save_or_check_run_config(str(tmp_path), new, resume=True)
    assert not (tmp_path / "checkpoints").exists()
    # Starting over twice keeps both previous states.
    os.makedirs(tmp_path / "checkpoints")
    save_or_check_run_config(str(tmp_path), {"arch": "vgg8"}, resume=False)
    assert len(list((tmp_path / "replaced").iterdir())) == 2


def test_checkpoints_without_config_are_not_adopted(tmp_path):
    _old_run(tmp_path)
    os.remove(tmp_path / "config.json")
    with pytest.raises(ValueError, match="holds checkpoints but no config.json"):
        save_or_check_run_config(str(tmp_path), {"arch": "resnet8"}, resume=True)
    assert (tmp_path / "checkpoints" / "epoch-3.index").exists() and not (tmp_path / "config.json").exists()


def test_damaged_config_is_one_error_naming_the_file(tmp_path):
    _old_run(tmp_path)
    (tmp_path / "config.json").write_bytes(b'{"arch": "wrn-16-1", \xff')
    with pytest.raises(ValueError, match=r"config.json is damaged \(not valid JSON"):
        save_or_check_run_config(str(tmp_path), {"arch": "wrn-16-1"}, resume=True)


def test_a_config_without_the_network_keys_is_one_error_naming_the_file_and_the_keys(tmp_path):
    """Every reader rebuilds the network from config.json; a file lacking a key used to be a KeyError deep in
    the teacher loader, visualize.py or export_formats.py."""
    from iep.engine.runs import NETWORK_KEYS, load_run_config
    from iep.engine.teacher import load_teacher

    _old_run(tmp_path)  # config.json: {"arch": "wrn-16-1"}
    with pytest.raises(ValueError, match=r"of teacher='.*'\) lacks dataset, num_classes, input_shape, mean, std,"):
        load_teacher(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")  # valid JSON, not a run's
    with pytest.raises(ValueError, match="lacks arch, dataset, num_classes, input_shape, mean, std"):
        load_run_config(str(tmp_path), "--run_dir")
    complete = {key: None for key in NETWORK_KEYS}
    (tmp_path / "config.json").write_text(json.dumps(complete))
    assert load_run_config(str(tmp_path)) == complete  # a Python-trained run: dataset and statistics None


def test_damaged_statistics_cache_is_recomputed_with_a_warning(tmp_path, capsys):
    from iep.datasets import DataConfig, build_pipeline

    config = DataConfig("digits", cache_dir=str(tmp_path))
    first = build_pipeline(config)
    (cache,) = list((tmp_path / "stats").iterdir())
    cache.write_text('{"mean": [1, 2')
    second = build_pipeline(config)
    assert second.mean == pytest.approx(first.mean) and second.std == pytest.approx(first.std)
    assert f"warning: statistics cache {cache} is damaged" in capsys.readouterr().err
    assert json.loads(cache.read_text())["mean"] == pytest.approx(first.mean)  # rewritten
    # Wrong but valid JSON (a hand-edited mean) is caught by the checksum, not used silently.
    edited = json.loads(cache.read_text())
    edited["mean"][0] += 10.0
    cache.write_text(json.dumps(edited))
    third = build_pipeline(config)
    assert third.mean == pytest.approx(first.mean)
    assert "checksum does not match" in capsys.readouterr().err
    # A folder where the cache file belongs: recomputed, and the run goes on without caching.
    cache.unlink()
    cache.mkdir()
    fourth = build_pipeline(config)
    assert fourth.mean == pytest.approx(first.mean)
    err = capsys.readouterr().err
    assert "is a folder where a JSON file belongs" in err and "statistics not cached" in err


def test_unwritable_locations_are_one_error_naming_the_path(tmp_path):
    from iep.core.files import check_writable, write_json_atomic

    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a directory cannot be made under a file, whoever runs the test (root included)
    with pytest.raises(ValueError, match=rf"--run_dir '{blocker}/run' is not writable \(Not a directory\)"):
        check_writable(str(blocker / "run"), "--run_dir")
    with pytest.raises(ValueError, match=rf"--run_dir '{blocker}' is a file; expected a directory"):
        check_writable(str(blocker), "--run_dir")
    with pytest.raises(ValueError, match=rf"cannot write {blocker}/metrics.json \((File exists|Not a directory)\)"):
        write_json_atomic(str(blocker / "metrics.json"), {})


def test_a_failed_checkpoint_save_leaves_no_temp_files(tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    from iep.engine.checkpointing import EpochCheckpoints

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    checkpoints = EpochCheckpoints(str(tmp_path), model, optimizer)
    checkpoints.save(1)

    def disk_full(**kwargs):
        os.makedirs(tmp_path / "checkpoints" / "epoch-2_temp")  # what TensorFlow leaves when a save dies
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(checkpoints.manager, "save", disk_full)
    with pytest.raises(ValueError, match=r"cannot write checkpoint epoch-2 in .*No space left on device"):
        checkpoints.save(2)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [
        "checkpoint",
        "epoch-1.data-00000-of-00001",
        "epoch-1.index",
    ]


def test_unwritable_statistics_cache_warns_and_trains_on(tmp_path, capsys):
    from iep.datasets import DataConfig, build_pipeline

    blocker = tmp_path / "cache_is_a_file"
    blocker.write_text("")
    pipeline = build_pipeline(DataConfig("digits", cache_dir=str(blocker)))
    assert len(pipeline.mean) == 3
    assert f"warning: statistics not cached: cannot write {blocker}/stats/" in capsys.readouterr().err


def test_readers_of_a_run_see_its_own_training_images(tmp_path):
    """run_data_config: the run's holdout, --rate subset and seed, so static learning, evaluation and the
    interpret report read the images the run trained on (never its held-out validation images)."""
    import numpy as np

    from iep.datasets import DataConfig, build_pipeline
    from iep.engine.runs import run_data_config

    run = {"dataset": "digits", "data_dir": None, "rate": 0.5, "sample_seed": 3, "validation_fraction": 0.2,
           "input_shape": [32, 32, 3], "crop_to_bbox": False}  # fmt: skip
    trained = build_pipeline(DataConfig("digits", rate=0.5, sample_seed=3, validation_fraction=0.2))
    read = build_pipeline(run_data_config(run))
    np.testing.assert_array_equal(read.train_indices, trained.train_indices)
    held_out = build_pipeline(run_data_config(run)).split("validation").size
    assert held_out == trained.split("validation").size > 0
    naive = build_pipeline(DataConfig("digits", rate=0.5, sample_seed=3))  # what static learning used to build
    assert not np.array_equal(naive.train_indices, trained.train_indices)
    assert run_data_config(run, cache_dir=str(tmp_path)).cache_dir == str(tmp_path)
    old = {"dataset": "digits", "input_shape": [32, 32, 3]}  # a config.json from before these keys existed
    assert run_data_config(old) == DataConfig("digits", image_size=32)
    import pytest

    with pytest.raises(TypeError, match="no DataConfig fields"):
        run_data_config(run, sampling_rate=1.0)


def test_a_finished_run_whose_metrics_were_deleted_reruns_to_a_true_summary(tmp_path, capsys):
    """read_json's advice for a damaged metrics.json is to delete it: the rerun must then say the truth, not crash
    (it printed a TypeError and wrote `epochs_completed: 0`)."""
    from tests.helpers import train_in_process

    run = tmp_path / "run"
    first = train_in_process(run, "--epochs=1", "--arch=wrn-10-1")
    os.remove(run / "metrics.json")
    capsys.readouterr()
    again = train_in_process(run, "--epochs=1", "--arch=wrn-10-1")
    assert again["finished"] and again["epochs_completed"] == 1
    assert again["last_accuracy"] == pytest.approx(first["last_accuracy"])
    assert "metrics.json of " in (out := capsys.readouterr().out) and "rebuilt from its TensorBoard events" in out
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["history"][-1]["recovered"] and saved["last_accuracy"] == again["last_accuracy"]
    # without its TensorBoard events too, the checkpoint is scored again, said aloud
    os.remove(run / "metrics.json")
    shutil.rmtree(run / "tensorboard")
    capsys.readouterr()
    third = train_in_process(run, "--epochs=1", "--arch=wrn-10-1")
    assert third["last_accuracy"] == pytest.approx(first["last_accuracy"])
    assert "metrics.json of the finished run" in capsys.readouterr().out
