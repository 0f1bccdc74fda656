import numpy as np
import pytest
import tensorflow as tf

from iep.engine.evaluation import classification_report, top1_accuracy


def test_report_against_hand_computed_values():
    logits = np.array(
        [
            [5, 1, 0, 0, 0, 0],  # true 0 -> 0
            [0, 5, 4, 0, 0, 0],  # true 2 -> 1 (2 is second)
            [0, 0, 5, 0, 0, 0],  # true 2 -> 2
            [1, 2, 3, 4, 5, 6],  # true 0 -> 5 (0 is last: not in top-5)
        ],
        np.float32,
    )
    labels = np.array([0, 2, 2, 0])
    report = classification_report(logits, labels, list("abcdef"))
    assert report["top1"] == 0.5 and report["top5"] == 0.75
    assert report["per_class_accuracy"]["a"] == 0.5 and report["per_class_accuracy"]["c"] == 0.5
    assert report["per_class_accuracy"]["b"] == 0.0  # no examples: reported as 0
    confusion = np.array(report["confusion_matrix"])
    assert confusion[0, 0] == 1 and confusion[0, 5] == 1 and confusion[2, 1] == 1 and confusion[2, 2] == 1
    assert top1_accuracy(logits, labels) == 0.5


def test_no_top5_where_every_label_is_in_the_top_5():
    """With 5 classes top-5 is 1 whatever the model does (scikit-learn warns as much): it is left out."""
    logits = np.eye(5, dtype=np.float32)[[1, 2, 3, 4, 0]]  # every prediction wrong
    report = classification_report(logits, np.arange(5), list("abcde"))
    assert report["top1"] == 0.0 and "top5" not in report


def test_class_count_mismatch():
    with pytest.raises(ValueError, match="predicts 3 classes but the data set has 2"):
        classification_report(np.zeros((1, 3)), np.zeros(1, int), ["a", "b"])


def test_a_run_trained_from_python_is_read_by_eval_and_as_a_teacher(tmp_path):
    """Trainer writes a config.json naming the network when train.py did not: eval.py and load_teacher read
    the run (eval then asks for the data, which was the caller's)."""
    import iep
    from iep.engine.evaluation import evaluate

    data = iep.UserData(
        (np.random.default_rng(0).integers(0, 255, (64, 32, 32, 3)).astype(np.uint8), np.arange(64) % 10),
        splits={"test": (np.zeros((8, 32, 32, 3), np.uint8), np.arange(8))},
    )
    student = iep.build_network("resnet8", 10, (32, 32, 3), data.mean, data.std)
    run = tmp_path / "python_run"
    iep.Trainer(student, data, iep.TrainConfig(epochs=1, batch_size=32, progress=False, export=False), str(run)).fit()
    with pytest.raises(ValueError, match="dataset= is required .*trained from Python"):
        evaluate(run_dir=str(run))
    report = evaluate(run_dir=str(run), dataset="digits", split="test")
    assert 0.0 <= report["top1"] <= 1.0
    teacher = iep.load_teacher(str(run))
    images = tf.random.uniform((2, 32, 32, 3), 0, 255)
    np.testing.assert_allclose(teacher(images)["logits"], student(images)["logits"], rtol=1e-5, atol=1e-5)


def test_eval_reports_go_beside_the_model():
    from iep.engine.evaluation import default_output

    assert default_output("runs/a", None, None, "test") == "runs/a/eval_test.json"
    assert (
        default_output(None, "runs/a/checkpoints/epoch-3", None, "test") == "runs/a/checkpoints/epoch-3.eval_test.json"
    )
    assert default_output(None, None, "runs/a/export/", "validation") == "runs/a/eval_validation_export.json"
