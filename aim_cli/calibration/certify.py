"""Certificates for calibrated tiers: the predicted metric at a profile's settings with a prediction interval.

The interval (shared/DESIGN.md, "What a certified interval can honestly mean"; docs/profiles.md)
is for the tier's metric on a FRESH sample of n units from the same distribution, each measured
once with fresh noise. Units are items (images) for classification and images for segmentation:

    predicted +- z * sqrt(V_estimate + V_unit / n)

V_estimate is the variance of the predicted value itself (it is estimated from n_cal units):
Var_i(a_i) / n_cal, with a_i each unit's exact expected contribution (its win probability w_i for
accuracy; the delta method's linearisation of pixel accuracy, mIoU or recall over its expected
confusion counts for segmentation). V_unit is the variance of one fresh unit's measured
contribution: p (1 - p) for accuracy (a Bernoulli with mean p), Var_i(a_i) plus the noise's own
variance within an image for segmentation. Everything is computed at the profile's own (rounded)
settings, not at the unrounded root.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import torch

from aim_cli.certificates import Certificate, Interval, normal_quantile, settings_hash
from aim_cli.directions import direction_name
from aim_cli.errors import ModelError
from aim_cli.modulation import FocusTarget, Modulation, SeededNoise, modulate
from aim_cli.profile import Profile

if TYPE_CHECKING:
    from aim_cli.calibration.core import Calibration
    from aim_cli.calibration.datasets import ImageDataset, SegmentationDataset
    from aim_cli.calibration.segment import SegmentationCalibrator

# Rows x classes up to which classification w_i are exact (calibration/classify.py's budget);
# beyond it they are means of seeded Monte Carlo draws.
MC_DRAWS = 32
# Segmentation: scored pixels x classes up to which per-pixel class probabilities are exact.
SEGMENT_EXACT_BUDGET = 400_000_000
# Seed offsets of the certificate's own noise draws (apart from the calibration check's seeds).
NOISE_SEED_OFFSET = 7_777


@dataclass(frozen=True)
class Estimate:
    """A predicted metric with the two variances of its interval (module docstring)."""

    predicted: float
    estimate_variance: float
    unit_variance: float
    units: int
    method: str  # exact | monte-carlo

    def interval(self, confidence: float, sample_size: int | None = None) -> tuple[float, float]:
        """The prediction interval at `confidence` for a fresh sample of `sample_size` units (default: n_cal)."""
        n = sample_size or self.units
        half = normal_quantile(confidence) * math.sqrt(self.estimate_variance + self.unit_variance / n)
        return max(0.0, self.predicted - half), min(1.0, self.predicted + half)


def bernoulli_estimate(wins: torch.Tensor, method: str) -> Estimate:
    """The estimate from per-unit win probabilities w_i (accuracy, or recall over the focus class's items)."""
    w = wins.double().cpu()
    n = int(w.numel())
    p = float(w.mean())
    spread = float(w.var(unbiased=True)) if n > 1 else p * (1 - p)
    return Estimate(p, spread / n, p * (1 - p), n, method)


def classification_wins(
    logits: torch.Tensor,
    labels: torch.Tensor,
    profile: Profile,
    target_id: int | None,
    direction: int,
    seed: int,
) -> tuple[torch.Tensor, str]:
    """Each unit's probability of being right under the profile: exact where affordable, else Monte Carlo means."""
    from aim_cli import theory
    from aim_cli.calibration.classify import exact_is_affordable, expected_correct

    if target_id is None:  # accuracy: every item is a unit
        if exact_is_affordable(logits):
            return expected_correct(logits, labels, profile.sigma), "exact"
        modulation = Modulation(sigma=profile.sigma)
        rows, classes = logits, labels
    else:  # recall: the focus class's items are the units
        rows = logits[labels == target_id]
        classes = torch.full((rows.shape[0],), target_id, device=rows.device)
        focus_sigma = profile.effective_focus_sigma
        if profile.sigma > 0:
            return theory.win_probability_with_focus(
                rows, classes, profile.sigma, target_id, focus_sigma, direction
            ), "exact"
        return theory.focus_win_probability(rows, target_id, focus_sigma, direction), "exact"
    noise = SeededNoise(seed + NOISE_SEED_OFFSET)
    total = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    for _ in range(MC_DRAWS):
        total += (modulate(rows, modulation, noise).argmax(dim=1) == classes).double()
    return total / MC_DRAWS, "monte-carlo"


def classification_estimate(
    logits: torch.Tensor, labels: torch.Tensor, profile: Profile, target_id: int | None, direction: int, seed: int = 0
) -> Estimate:
    """The certified estimate of a classification tier on cached clean logits."""
    wins, method = classification_wins(logits, labels, profile, target_id, direction, seed)
    return bernoulli_estimate(wins, method)


# Metrics as differentiable functions of a confusion matrix (rows: truth), for the delta method.
def _pixel_accuracy(matrix: torch.Tensor, present: torch.Tensor, target_id: int | None) -> torch.Tensor:
    return matrix.diagonal().sum() / matrix.sum()


def _present_miou(matrix: torch.Tensor, present: torch.Tensor, target_id: int | None) -> torch.Tensor:
    union = matrix.sum(dim=0) + matrix.sum(dim=1) - matrix.diagonal()
    return (matrix.diagonal()[present] / union[present]).mean()


def _recall(matrix: torch.Tensor, present: torch.Tensor, target_id: int | None) -> torch.Tensor:
    assert target_id is not None
    return matrix[target_id, target_id] / matrix[target_id].sum()


MATRIX_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor, int | None], torch.Tensor]] = {
    "pixel_accuracy": _pixel_accuracy,
    "miou": _present_miou,
    "recall": _recall,
}


def delta_estimate(
    expected: torch.Tensor, noisy: torch.Tensor, metric: str, target_id: int | None, method: str
) -> Estimate:
    """The certified estimate from per-image confusion counts, images as units (delta method).

    `expected` holds each image's expected C x C counts (n, C, C); `noisy` two independent noisy
    realisations of them (2, n, C, C), whose difference estimates the noise's variance within an
    image without bias: Var(g . (C1 - C2)) = 2 Var_noise(g . C).
    """
    function = MATRIX_METRICS[metric]
    expected = expected.double()
    n = expected.shape[0]
    mean = expected.mean(dim=0).clone().requires_grad_(True)
    present = expected.sum(dim=(0, 2)) > 0
    value = function(mean, present, target_id)
    (gradient,) = torch.autograd.grad(value, mean)
    contributions = (expected * gradient).sum(dim=(1, 2))
    spread = float(contributions.var(unbiased=True)) if n > 1 else 0.0
    difference = ((noisy[0].double() - noisy[1].double()) * gradient).sum(dim=(1, 2))
    within = float((difference**2).mean()) / 2.0
    return Estimate(float(value.detach()), spread / n, spread + within, n, method)


def segmentation_counts(
    calibrator: SegmentationCalibrator, profile: Profile, seed: int, draws: int = 2
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Per image: expected C x C confusion counts (n, C, C) and `draws` >= 2 noisy realisations (draws, n, C, C).

    One more pass over the calibrator's data (its bounded logits cache spares the model for the
    first images). Utility targets: exact per-pixel class probabilities where the pixel budget
    allows (else the mean of the noisy draws); recall targets: the closed-form win probability of
    the target's pixels.
    """
    from aim_cli.tasks.segment import upsample_at

    target_id = calibrator.target_id
    recall = calibrator.target.metric == "recall"
    c = calibrator.num_classes
    modulation = profile_modulation(profile, target_id if recall else None, calibrator.target.focus_direction)
    noise = SeededNoise(seed + NOISE_SEED_OFFSET)
    expected: list[torch.Tensor] = []
    noisy: list[list[torch.Tensor]] = [[] for _ in range(max(2, draws))]
    method = "exact"
    exact_budget = SEGMENT_EXACT_BUDGET
    for group in calibrator.certification_pass():
        for i in range(group.low.shape[0]):
            truth = group.truth[i].reshape(-1)
            scored = torch.eq(truth, int(target_id or 0)) if recall else torch.ne(truth, calibrator_ignore_index())
            index = torch.nonzero(scored).squeeze(1)
            pixels = upsample_at(group.low[i : i + 1], group.size, index)
            exact = exact_budget >= pixels.numel()
            exact_budget -= pixels.numel() if exact else 0
            counts, realisations, exactly = image_counts(
                pixels, truth[index], profile, modulation, noise, c, target_id if recall else None, len(noisy), exact
            )
            method = method if exactly else "monte-carlo"
            expected.append(counts)
            for k, realisation in enumerate(realisations):
                noisy[k].append(realisation)
    if not expected:
        raise ModelError("no image could be scored for the certificate")
    return torch.stack(expected), torch.stack([torch.stack(realisations) for realisations in noisy]), method


def profile_modulation(profile: Profile, target_id: int | None, direction: int) -> Modulation:
    """The modulation a profile applies: utility noise, plus the focus term for a recall target."""
    if target_id is None:
        return Modulation(sigma=profile.sigma)
    return Modulation(profile.sigma, profile.effective_focus_sigma, (FocusTarget(target_id, direction),))


def image_counts(
    pixels: torch.Tensor,
    labels: torch.Tensor,
    profile: Profile,
    modulation: Modulation,
    noise: SeededNoise,
    c: int,
    target_id: int | None,
    draws: int,
    exact: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor], bool]:
    """One image's expected C x C confusion counts, `draws` noisy realisations, and whether the first is exact.

    `pixels` (P, C) are the image's scored pixels (for a recall target, its target pixels only).
    """
    from aim_cli.calibration.segment import expected_class_probabilities

    realisations = [
        _confusion(labels, modulate(pixels, modulation, noise).argmax(dim=1), c, target_id) for _ in range(draws)
    ]
    if target_id is not None:
        wins = _recall_wins(pixels, profile, target_id, modulation.targets[0].direction if modulation.targets else 1)
        counts = torch.zeros(c, c, dtype=torch.float64)
        counts[target_id, target_id] = float(wins.sum())
        counts[target_id, (target_id + 1) % c] = float(labels.numel()) - float(wins.sum())
        return counts, realisations, True
    if profile.sigma <= 0:
        return _confusion(labels, pixels.argmax(dim=1), c, None), realisations, True
    if not exact:
        return torch.stack(realisations).mean(dim=0), realisations, False
    probabilities = expected_class_probabilities(pixels, profile.sigma).cpu()
    counts = torch.zeros(c, c, dtype=torch.float64).index_add_(0, labels.cpu(), probabilities)
    return counts, realisations, True


def calibrator_ignore_index() -> int:
    """The truth value of unscored pixels."""
    from aim_cli.metrics import IGNORE_INDEX

    return IGNORE_INDEX


def _recall_wins(pixels: torch.Tensor, profile: Profile, target_id: int, direction: int) -> torch.Tensor:
    """P(the target class wins) for the target's pixels under the profile (closed form)."""
    from aim_cli import theory

    focus_sigma = profile.effective_focus_sigma
    if pixels.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float64)
    if profile.sigma > 0:
        classes = torch.full((pixels.shape[0],), target_id, device=pixels.device)
        return theory.win_probability_with_focus(pixels, classes, profile.sigma, target_id, focus_sigma, direction)
    return theory.focus_win_probability(pixels, target_id, focus_sigma, direction)


def _confusion(truth: torch.Tensor, predicted: torch.Tensor, c: int, target_id: int | None) -> torch.Tensor:
    """A C x C confusion matrix (float64, CPU); for a recall target the target's row only matters."""
    index = truth.long() * c + predicted.long()
    counts = torch.bincount(index.cpu(), minlength=c * c).reshape(c, c).double()
    if target_id is not None:  # off-diagonal entries of the target's row all weigh the same in recall
        row = counts[target_id].clone()
        counts.zero_()
        counts[target_id, target_id] = row[target_id]
        counts[target_id, (target_id + 1) % c] = row.sum() - row[target_id]
    return counts


def segmentation_estimate(calibrator: SegmentationCalibrator, profile: Profile, seed: int = 0) -> Estimate:
    """The certified estimate of a segmentation tier (images as units)."""
    expected, noisy, method = segmentation_counts(calibrator, profile, seed)
    return delta_estimate(expected, noisy, calibrator.target.metric, calibrator.target_id, method)


def classification_data_fingerprint(dataset: ImageDataset) -> str:
    """Content hash of a labelled image set: each image's file bytes (or pixels, in memory) and its label."""
    digest = hashlib.sha256()
    for item in dataset.items:
        digest.update(f"{item.label}\n".encode())
        _update_image(digest, item.path, item.image)
    return "sha256:" + digest.hexdigest()


def segmentation_data_fingerprint(dataset: SegmentationDataset) -> str:
    """Content hash of a segmentation set: each image's and mask's file bytes (or arrays, in memory)."""
    digest = hashlib.sha256()
    for _, image, mask in dataset.scenes:
        _update_image(digest, None, image)
        digest.update(np.ascontiguousarray(mask).tobytes())
    for path in dataset.paths:
        _update_image(digest, path, None)
        mask_path = dataset.mask_path(path)
        digest.update(b"no mask\n" if mask_path is None else _file_bytes(mask_path))
    return "sha256:" + digest.hexdigest()


def _update_image(digest: hashlib._Hash, path: object, image: object) -> None:
    """Feed an image into a hash: its file's bytes, or its mode, size and pixels."""
    if image is not None:
        digest.update(f"{image.mode}|{image.size}|".encode())  # type: ignore[attr-defined]
        digest.update(image.tobytes())  # type: ignore[attr-defined]
    elif path is not None:
        digest.update(_file_bytes(path))


def _file_bytes(path: object) -> bytes:
    """A data file's bytes (an unreadable one hashes as its error: it was reported as a failure)."""
    try:
        with open(str(path), "rb") as handle:
            return handle.read()
    except OSError as exc:
        return f"unreadable: {exc.strerror}".encode()


def text_data_fingerprint(items: list[dict[str, object]]) -> str:
    """Content hash of a prompt set (each item's fields, canonical JSON)."""
    from aim_cli.certificates import canonical_json

    return "sha256:" + hashlib.sha256(canonical_json(items).encode()).hexdigest()


def interval_meaning(estimate: Estimate, units: str, confidence: float) -> str:
    """The sentence docs/profiles.md explains: what the interval is a prediction of."""
    return (
        f"with probability {confidence:g}, the tier's metric on a fresh sample of {estimate.units} {units} from the "
        "distribution of the calibration data, each measured once with fresh noise, lies in [low, high] (the "
        "calibration set's finite size and the noise are both accounted for)"
    )


def build_certificate(
    calibration: Calibration,
    profile: Profile,
    estimate: Estimate,
    model_spec: str,
    model_fingerprint: str,
    data_fingerprint: str,
    confidence: float,
) -> Certificate:
    """The certificate of `profile` (its settings hash included) from an estimate at its settings."""
    target = calibration.target
    units = "images" if calibration.task == "segment" else "items"
    low, high = estimate.interval(confidence)
    settings = {k: v for k, v in profile.to_dict().items() if k != "certificate"}
    return Certificate(
        aim_version=aim_version(),
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        task=calibration.task,
        model_spec=model_spec or "demo",
        model_fingerprint=model_fingerprint,
        data_spec=calibration.data or "demo",
        data_fingerprint=data_fingerprint,
        items=estimate.units,
        metric=target.metric,
        target=target.value,
        method=estimate.method,
        predicted=_round6(estimate.predicted),
        interval=Interval(
            _round6(min(low, estimate.predicted)),
            _round6(max(high, estimate.predicted)),
            confidence,
            estimate.units,
            interval_meaning(
                estimate,
                f"{units} of class '{target.focus_class}'" if target.metric == "recall" and units == "items" else units,
                confidence,
            ),
        ),
        settings_hash=settings_hash(settings),
        estimate_variance=estimate.estimate_variance,
        unit_variance=min(0.25, estimate.unit_variance),
        focus_class=target.focus_class if target.metric == "recall" else None,
        focus_direction=direction_name(target.focus_direction) if target.metric == "recall" else None,
        units=units,
    )


def aim_version() -> str:
    """The installed aim's version (the package metadata: aim_cli/__init__ would import the API)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aim-cli")
    except PackageNotFoundError:
        return "unknown"


def _round6(value: float) -> float:
    """Six decimals: a readable YAML value that moves a metric by at most 5e-7."""
    return round(float(value), 6)
