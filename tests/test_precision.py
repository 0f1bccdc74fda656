"""Mixed precision: bfloat16 networks with float32 KD math train to finite losses on the CPU."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from iep.engine.precision import precision_policy
from iep.nets import build_network
from tests.helpers import train_with_flags


def _train(*argv):
    return train_with_flags("--dataset=digits", "--rate=0.5", "--progress=false", "--export=false", *argv)


def test_policy_applies_to_networks_only_and_outputs_are_float32():
    with precision_policy("mixed_bfloat16"):
        net = build_network("resnet8", 10)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for the modules built after
    assert net.model.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in net.model.weights)  # variables stay float32
    outputs = net(tf.random.uniform((2, 32, 32, 3), 0, 255))
    assert all(t.dtype == tf.float32 for t in tf.nest.flatten(outputs))
    with pytest.raises(ValueError, match="TrainConfig.precision must be one of"):
        with precision_policy("float8"):
            pass


@pytest.mark.parametrize("method", ["none", "iep_bb", "co"])
def test_bfloat16_training_has_finite_losses(tmp_path, method):
    teacher = tmp_path / "teacher"
    if method != "none":
        _train("--arch=wrn-10-1", "--epochs=1", "--batch_size=64", f"--run_dir={teacher}")
    extra = [f"--distill={method}", f"--teacher={teacher}"] if method != "none" else []
    if method == "iep_bb":
        extra.append("--iep_module_steps=4")
    summary = _train(
        "--arch=resnet8",
        "--epochs=1",
        "--batch_size=64",
        "--precision=mixed_bfloat16",
        f"--run_dir={tmp_path / 'student'}",
        *extra,
    )
    record = summary["history"][-1]
    losses = {k: v for k, v in record.items() if k.startswith("loss/")}
    assert losses and all(np.isfinite(v) for v in losses.values()), losses
    assert keras.mixed_precision.global_policy().name == "float32"
