"""Starting over never leaves a state a later resume could pick up; checkpoints without a config are refused."""

import json
import os

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


def test_damaged_statistics_cache_is_recomputed_with_a_warning(tmp_path, capsys):
    from datasets import DataConfig, build_pipeline

    config = DataConfig("digits", cache_dir=str(tmp_path))
    first = build_pipeline(config)
    (cache,) = list((tmp_path / "stats").iterdir())
    cache.write_text('{"mean": [1, 2')
    second = build_pipeline(config)
    assert second.mean == pytest.approx(first.mean) and second.std == pytest.approx(first.std)
    assert f"warning: statistics cache {cache} is damaged" in capsys.readouterr().err
    assert json.loads(cache.read_text())["mean"] == pytest.approx(first.mean)  # rewritten
