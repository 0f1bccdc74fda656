import numpy as np
import pytest

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


def test_class_count_mismatch():
    with pytest.raises(ValueError, match="predicts 3 classes but the data set has 2"):
        classification_report(np.zeros((1, 3)), np.zeros(1, int), ["a", "b"])
