"""Segmentation metrics from a streamed confusion matrix (pure torch, no files, no models).

Rows of the matrix are ground-truth classes, columns predicted classes. It is accumulated
one batch (or one strip of rows) at a time, so memory does not depend on how many images
are evaluated. It holds float64 so the same matrix can also collect *expected* counts
(per-pixel class probabilities from aim_cli.theory), which calibration uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# Ground-truth value that marks pixels to leave out (Cityscapes / HF semantic_loss_ignore_index).
IGNORE_INDEX = 255


class ConfusionMatrix:
    """A (classes x classes) matrix of pixel counts, truth in rows and prediction in columns."""

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX) -> None:
        if num_classes < 1:
            raise ValueError("a confusion matrix needs at least one class")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.float64)

    def _valid_truth(self, truth: torch.Tensor) -> torch.Tensor:
        """Flattened mask of counted pixels; truth values outside the classes are an error."""
        truth = truth.reshape(-1).long()
        valid = (
            truth != self.ignore_index if self.ignore_index is not None else torch.ones_like(truth, dtype=torch.bool)
        )
        bad = valid & ((truth < 0) | (truth >= self.num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"ground-truth value {int(truth[bad][0])} is not a class id 0..{self.num_classes - 1}"
                + (f" or the ignore value {self.ignore_index}" if self.ignore_index is not None else "")
            )
        return valid

    def update(self, prediction: torch.Tensor, truth: torch.Tensor) -> None:
        """Add hard predictions for pixels of any shape (prediction and truth shapes must match)."""
        if prediction.shape != truth.shape:
            raise ValueError(f"prediction shape {tuple(prediction.shape)} != truth shape {tuple(truth.shape)}")
        truth = truth.to(prediction.device)
        valid = self._valid_truth(truth)
        pred = prediction.reshape(-1).long()[valid]
        true = truth.reshape(-1).long()[valid]
        c = self.num_classes
        # One bincount over (truth, prediction) pairs: O(pixels), no per-class loop.
        counts = torch.bincount(true * c + pred, minlength=c * c)
        self.matrix += counts.reshape(c, c).to(device="cpu", dtype=torch.float64)

    def update_expected(self, probabilities: torch.Tensor, truth: torch.Tensor) -> None:
        """Add expected counts: row i of `probabilities` (N, C) is P(prediction = k) for pixel i."""
        truth = truth.to(probabilities.device)
        valid = self._valid_truth(truth)
        probs = probabilities.reshape(-1, self.num_classes)[valid].to(torch.float64)
        true = truth.reshape(-1).long()[valid]
        expected = torch.zeros(self.num_classes, self.num_classes, dtype=torch.float64, device=probs.device)
        expected.index_add_(0, true, probs)
        self.matrix += expected.cpu()

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix over the same classes (e.g. from another worker or shard)."""
        if other.num_classes != self.num_classes:
            raise ValueError("cannot merge confusion matrices over different class counts")
        self.matrix += other.matrix

    @property
    def total(self) -> float:
        """Number of counted pixels."""
        return float(self.matrix.sum())

    def to_list(self) -> list[list[float]] | list[list[int]]:
        """The matrix as nested lists: integers when it holds hard counts."""
        if bool((self.matrix == self.matrix.round()).all()):
            return self.matrix.round().long().tolist()
        return self.matrix.tolist()


def pixel_accuracy(matrix: torch.Tensor) -> float:
    """Fraction of counted pixels predicted correctly (NaN when nothing was counted)."""
    total = float(matrix.sum())
    return float(matrix.diagonal().sum()) / total if total > 0 else math.nan


def iou(matrix: torch.Tensor) -> torch.Tensor:
    """Per-class intersection over union; NaN for classes absent from truth and prediction."""
    intersection = matrix.diagonal()
    union = matrix.sum(dim=0) + matrix.sum(dim=1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1e-300), torch.full_like(union, math.nan))


def recall(matrix: torch.Tensor) -> torch.Tensor:
    """Per-class recall (true positives / ground-truth pixels); NaN for classes absent from truth."""
    support = matrix.sum(dim=1)
    return torch.where(support > 0, matrix.diagonal() / support.clamp(min=1e-300), torch.full_like(support, math.nan))


def precision(matrix: torch.Tensor) -> torch.Tensor:
    """Per-class precision (true positives / predicted pixels); NaN for classes never predicted."""
    predicted = matrix.sum(dim=0)
    return torch.where(
        predicted > 0, matrix.diagonal() / predicted.clamp(min=1e-300), torch.full_like(predicted, math.nan)
    )


def mean_iou(matrix: torch.Tensor) -> float:
    """Mean IoU over the classes present in truth or prediction (the usual convention)."""
    values = iou(matrix)
    present = ~torch.isnan(values)
    return float(values[present].mean()) if bool(present.any()) else math.nan


def _finite(value: float) -> float | None:
    """JSON has no NaN: absent metrics become null."""
    return None if math.isnan(value) else round(float(value), 6)


def summarize(matrix: torch.Tensor, labels: Sequence[str]) -> dict[str, object]:
    """Pixel accuracy, mIoU and per-class IoU / recall / pixel counts as a JSON-ready dict."""
    ious, recalls = iou(matrix).tolist(), recall(matrix).tolist()
    support, predicted = matrix.sum(dim=1).tolist(), matrix.sum(dim=0).tolist()
    classes = {
        str(label): {
            "iou": _finite(ious[k]),
            "recall": _finite(recalls[k]),
            "truth_pixels": round(support[k]),
            "predicted_pixels": round(predicted[k]),
        }
        for k, label in enumerate(labels)
        if support[k] > 0 or predicted[k] > 0
    }
    return {
        "pixel_accuracy": _finite(pixel_accuracy(matrix)),
        "miou": _finite(mean_iou(matrix)),
        "classes": classes,
    }
