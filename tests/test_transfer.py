"""The transfer protocol (knowledge stage without labels, then fine-tuning) and the 224-px ImageNet ResNets."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import frozen_teacher_and_student, train_in_process, write_image_folder


@pytest.mark.parametrize(("arch", "trainable"), [("resnet18-imagenet", 11_689_512), ("resnet34-imagenet", 21_797_672)])
def test_imagenet_resnets_match_the_standard_networks(arch, trainable):
    """Trainable weights at 1000 classes equal torchvision's resnet18/34 parameter counts (same layout)."""
    from iep.nets import build_network

    net = build_network(arch, 1000, (224, 224, 3))
    assert sum(int(np.prod(v.shape)) for v in net.model.trainable_weights) == trainable
    assert [t.shape for t in net.tap_specs] == [(56, 56, 64), (28, 28, 128), (14, 14, 256), (7, 7, 512)]
    assert all(bn is None for bn in net.preact_batch_norms)  # a stage output is ReLU(shortcut + BN(conv))


def _stages(method: str, digits_pipeline):
    from iep.methods import build_distiller
    from iep.nets import build_network
    from iep.transfer import transfer_protocol

    teacher, _ = frozen_teacher_and_student(digits_pipeline, "wrn-16-2", "wrn-16-1")
    data = digits_pipeline  # no dropout: two calls on the same batch see the same network
    student = build_network("wrn-16-1", 10, data.input_shape, data.mean, data.std, dropout=0.0, name="student")
    inner = build_distiller(method, teacher, student, main_steps=20, module_steps=3, epochs=2)
    wrapper = transfer_protocol(inner, student, 12, 0.01, (0.5, 0.75), 0.1, "step", 5e-4, epochs=2)
    return wrapper, student


def test_knowledge_stage_sees_no_labels(digits_pipeline):
    wrapper, student = _stages("at", digits_pipeline)
    (stage,) = wrapper.pre_phases()
    assert stage.name == "knowledge" and stage.steps == 12 and stage.loss_names == ("at", "weight_decay")
    assert (stage.lr, stage.lr_boundaries, stage.lr_decay, stage.optimizer) == (0.01, (0.5, 0.75), 0.1, "sgd")
    head = {id(v) for v in student.model.get_layer("logits").weights}
    assert not any(id(v) in head for v in stage.variables)  # a feature loss never reaches the classifier
    images, labels = next(iter(digits_pipeline.train_dataset(0, 16, 0)))
    first = stage.losses(images, labels)
    other = stage.losses(images, tf.fill(tf.shape(labels), 7))
    for name in stage.loss_names:
        np.testing.assert_allclose(first[name], other[name], rtol=1e-6)
    assert wrapper.losses(images, labels, student(images), tf.constant(0.0)) == {}  # fine-tuning: labels only


def test_logit_methods_train_the_head_and_hint_methods_resize_their_own_stage(digits_pipeline):
    kd, student = _stages("kd", digits_pipeline)
    head = {id(v) for v in student.model.get_layer("logits").trainable_weights}
    assert head <= {id(v) for v in kd.pre_phases()[-1].variables}
    fitnet, _ = _stages("fitnet", digits_pipeline)
    (stage,) = fitnet.pre_phases()  # FitNet *is* an initialization: its own stage, resized, is the knowledge stage
    assert stage.name == "pre_phase" and stage.steps == 12 and stage.lr == 0.01 and stage.lr_boundaries == (0.5, 0.75)
    iep, _ = _stages("iep", digits_pipeline)
    assert [s.name for s in iep.pre_phases()] == ["pre_phase", "knowledge"]  # modules first, as in the paper
    assert iep.pre_phases()[0].steps == 3


def _imagenet_style_teacher(path: str) -> str:
    """A small 224-px model with a stride-4 stem: its stage outputs are at ResNet-18's 56/28/14/7."""
    keras.utils.set_random_seed(5)
    x = keras.Input((224, 224, 3))
    y = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    for i, (width, stride) in enumerate(((8, 4), (12, 2), (16, 2), (20, 2))):
        y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"conv{i}")(y)
        y = keras.layers.ReLU(name=f"stage{i}")(keras.layers.BatchNormalization(name=f"bn{i}")(y))
    logits = keras.layers.Dense(1000, name="imagenet_head")(keras.layers.GlobalAveragePooling2D()(y))
    keras.Model(x, logits).save(path)
    return path


def test_two_stage_transfer_runs_end_to_end_at_224_px(tmp_path, capsys):
    data = write_image_folder(str(tmp_path / "scenes"), per_class={"train": 8, "test": 2}, size=48)  # --rate=0.5
    teacher = _imagenet_style_teacher(str(tmp_path / "imagenet_teacher.keras"))
    run_dir = tmp_path / "run"
    flags = (
        "--dataset=folder",
        f"--data_dir={data}",
        "--image_size=224",
        "--arch=resnet18-imagenet",
        "--batch_size=8",
        "--epochs=1",
        "--knowledge_epochs=1",
        "--lr=0.01",
        "--lr_decay_points=0.5,0.75",
        "--lr_decay_factor=0.1",
        "--distill=iep",
        "--iep_module_steps=2",
        f"--teacher={teacher}",
        "--protocol=transfer",
    )
    summary = train_in_process(run_dir, *flags)
    printed = capsys.readouterr().out
    assert "teacher " in printed and "1000 classes (the data has 3)" in printed
    module, knowledge = printed.index("pre_phase 2/2:"), printed.index("knowledge 1/1:")
    assert module < knowledge < printed.index("epoch 1:")  # modules, then knowledge, then fine-tuning
    assert "cross_entropy" not in printed[knowledge : printed.index("\n", knowledge)]
    assert summary["finished"] and summary["epochs_completed"] == 1 and summary["train_images"] == 12
    record = summary["history"][0]
    assert not any(k.startswith("loss/alter") for k in record)  # the fine-tuning epoch has no knowledge term
    config = json.load(open(run_dir / "config.json"))
    assert (config["protocol"], config["knowledge_epochs"], config["input_shape"]) == ("transfer", 1, [224, 224, 3])
    resumed = train_in_process(run_dir, *flags)  # a finished run resumes to the same summary
    assert resumed["history"] == summary["history"]


def test_transfer_flags_are_checked(tmp_path):
    with pytest.raises(ValueError, match="--distill=none has none"):
        train_in_process(tmp_path, "--protocol=transfer")
    with pytest.raises(ValueError, match="--knowledge_epochs is the first stage of --protocol=transfer"):
        train_in_process(tmp_path, "--knowledge_epochs=3")
    with pytest.raises(ValueError, match="--distill=dml has none .its peer learns from labels"):
        train_in_process(tmp_path, "--protocol=transfer", "--distill=dml", "--teacher=keras:ResNet50")
