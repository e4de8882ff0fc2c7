"""Segmentation metrics from streamed confusion matrices, checked against hand counts."""

from __future__ import annotations

import math

import pytest
import torch

from aim_cli.metrics import (
    IGNORE_INDEX,
    ConfusionMatrix,
    iou,
    mean_iou,
    pixel_accuracy,
    precision,
    recall,
    summarize,
)


def test_counts_iou_recall_accuracy_by_hand():
    truth = torch.tensor([[0, 0, 1], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    cm = ConfusionMatrix(3)
    cm.update(pred, truth)
    assert cm.to_list() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert pixel_accuracy(cm.matrix) == pytest.approx(4 / 6)
    # class 0: tp 1, fn 1, fp 1 -> IoU 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    assert iou(cm.matrix).tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert recall(cm.matrix).tolist() == pytest.approx([1 / 2, 1, 1 / 2])
    assert precision(cm.matrix).tolist() == pytest.approx([1 / 2, 2 / 3, 1])
    assert mean_iou(cm.matrix) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_streaming_equals_one_shot_and_merge():
    generator = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 5, (6, 20, 30), generator=generator)
    pred = torch.randint(0, 5, (6, 20, 30), generator=generator)
    whole, streamed, other = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(pred, truth)
    for i in range(3):
        streamed.update(pred[i], truth[i])
    for i in range(3, 6):
        other.update(pred[i], truth[i])
    streamed.merge(other)
    assert torch.equal(whole.matrix, streamed.matrix)
    assert whole.total == 6 * 20 * 30


def test_ignored_pixels_and_absent_classes():
    truth = torch.tensor([0, 0, IGNORE_INDEX, 1])
    pred = torch.tensor([0, 1, 2, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred, truth)
    assert cm.total == 3  # the ignored pixel is not counted, whatever was predicted there
    values = iou(cm.matrix)
    assert math.isnan(values[2]) and math.isnan(values[3])  # never in truth nor prediction
    assert mean_iou(cm.matrix) == pytest.approx((1 / 2 + 1 / 2) / 2)
    summary = summarize(cm.matrix, ["a", "b", "c", "d"])
    assert set(summary["classes"]) == {"a", "b"}
    assert summary["classes"]["a"] == {"iou": 0.5, "recall": 0.5, "truth_pixels": 2, "predicted_pixels": 1}


def test_truth_outside_the_classes_is_an_error():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="not a class id"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0, 1, 2]))


def test_expected_counts_match_the_mean_of_hard_counts():
    """Soft probabilities add fractional counts to the truth row (what calibration accumulates)."""
    truth = torch.tensor([0, 1, 1, 2])
    probabilities = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    cm = ConfusionMatrix(3)
    cm.update_expected(probabilities, truth)
    expected = torch.tensor([[0.5, 0.5, 0.0], [0.2, 1.3, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(cm.matrix, expected, atol=1e-7)
    assert pixel_accuracy(cm.matrix) == pytest.approx((0.5 + 1.3 + 1.0) / 4)
    assert isinstance(cm.to_list()[0][0], float)


def test_empty_matrix_gives_undefined_metrics():
    cm = ConfusionMatrix(2)
    assert math.isnan(pixel_accuracy(cm.matrix)) and math.isnan(mean_iou(cm.matrix))
    assert summarize(cm.matrix, ["a", "b"]) == {"pixel_accuracy": None, "miou": None, "classes": {}}
