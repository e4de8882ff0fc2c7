"""Classification calibration hits its targets, on the demo and on an unrelated architecture.

Statistics. The Monte Carlo checks here run on the SAME cached logits as the analytic curve,
so only the noise varies: with N images and R draws the measured accuracy is a mean of N*R
Bernoulli(q_i) outcomes, whose standard error is sqrt(sum_i q_i(1-q_i)) / (N sqrt R)
<= sqrt(0.25 / (N R)).
  * Target check (N = 1000 images, R = 20 draws, as the CLI does): SE <= 0.0035, so the
    0.02 tolerance is >= 5.6 SE; the root finder's own error is < 1e-4.
  * Curve check (N = 1000, R = 100 at every grid point): SE <= 0.0016, so 0.01 is >= 6.3 SE
    (over ~40 grid points the chance of any false failure is < 1e-7).
Seeds are fixed, so the outcome is deterministic anyway; the margins say it is not luck.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aim_cli import theory
from aim_cli.calibration.classify import (
    accuracy_metric,
    calibrate_target,
    collect_logits,
    dataset_label_ids,
    monte_carlo_accuracy,
)
from aim_cli.calibration.core import Target
from aim_cli.calibration.datasets import demo_classification_set, read_classification_data
from aim_cli.demo import shapes
from aim_cli.models.registry import load_model
from tests.conftest import run_aim

EVAL_IMAGES = 1000
CURVE_DRAWS = 100
FAST = {"OMP_NUM_THREADS": "1"}  # tiny models on shared cores: one intra-op thread avoids spin contention


@pytest.fixture(scope="module")
def demo_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """Clean logits of the demo classifier on its own evaluation set (one forward pass)."""
    dataset = demo_classification_set(EVAL_IMAGES)
    classifier = load_model("classify", None, device=torch.device("cpu"))
    cached = collect_logits(classifier, dataset.items, dataset_label_ids(dataset, classifier.labels), 200)
    assert cached.logits.shape == (EVAL_IMAGES, 10)
    return cached.logits, cached.labels


@pytest.fixture(scope="module")
def other_model(tmp_path_factory) -> dict[str, Path]:
    """A Hugging Face ConvNeXt (not the demo's ResNet) trained ~10 s on freshly generated shapes.

    It reaches ~0.7 accuracy with logits ~3x the demo's spread: a real but imperfect
    classifier on another scale, so nothing in calibration can be tuned to the demo.
    """
    from transformers import ConvNextConfig, ConvNextForImageClassification, ViTImageProcessor

    root = tmp_path_factory.mktemp("convnext")
    train = shapes.make_dataset("train", 2000)
    # Same normalisation as the processor saved below: (x / 255 - 0.5) / 0.5.
    x = (
        torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im, _ in train])).permute(0, 3, 1, 2) / 127.5
        - 1
    )
    y = torch.tensor([label for _, label in train])
    names = dict(enumerate(shapes.LABELS))
    config = ConvNextConfig(
        num_channels=3,
        patch_size=4,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        num_stages=3,
        num_labels=10,
        image_size=32,
        id2label=names,
        label2id={v: k for k, v in names.items()},
    )
    torch.manual_seed(0)
    model = ConvNextForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=1000)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(1000):
        batch = torch.randint(0, len(y), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(pixel_values=x[batch]).logits, y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    model.save_pretrained(root / "model")
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        root / "model"
    )
    shapes.export_image_folder(root / "data", EVAL_IMAGES)
    return {"model": root / "model", "data": root / "data"}


@pytest.fixture(scope="module")
def other_logits(other_model) -> tuple[torch.Tensor, torch.Tensor]:
    """The trained ConvNeXt's logits on the exported ImageFolder, through the --model / --data path."""
    dataset = read_classification_data(other_model["data"])
    classifier = load_model("classify", str(other_model["model"]), device=torch.device("cpu"))
    cached = collect_logits(classifier, dataset.items, dataset_label_ids(dataset, classifier.labels), 200)
    return cached.logits, cached.labels


def _check_targets(logits: torch.Tensor, labels: torch.Tensor, targets: list[float]) -> list[tuple[float, float]]:
    """Calibrate each target; the measured accuracy must be within 0.02 of it."""
    results = []
    for k, target in enumerate(targets):
        calibration = calibrate_target(logits, labels, Target("accuracy", target), draws=20, seed=100 + k)
        assert calibration.predicted == pytest.approx(target, abs=1e-4)
        assert abs(calibration.check.mean - target) <= 0.02, (target, calibration.check.mean)
        assert calibration.check.low < calibration.check.high
        results.append((calibration.value, calibration.check.mean))
    sigmas = [s for s, _ in results]
    assert sigmas == sorted(sigmas), "lower targets need more noise"
    return results


def _check_curve(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The analytic curve is within 0.01 of Monte Carlo at every grid point; returns the max gap."""
    metric = accuracy_metric(logits, labels)
    worst = 0.0
    for k, sigma in enumerate(theory.sigma_grid()):
        measured = monte_carlo_accuracy(logits, labels, sigma, CURVE_DRAWS, seed=1000 + k).mean
        gap = abs(metric(sigma) - measured)
        assert gap <= 0.01, (sigma, metric(sigma), measured)
        worst = max(worst, gap)
    return worst


def test_demo_targets_are_hit(demo_logits):
    logits, labels = demo_logits
    assert float((logits.argmax(dim=1) == labels).double().mean()) > 0.9
    _check_targets(logits, labels, [0.9, 0.75, 0.6, 0.4])


def test_demo_analytic_curve_matches_monte_carlo(demo_logits):
    assert _check_curve(*demo_logits) < 0.01


def test_other_architecture_targets_are_hit(other_logits):
    logits, labels = other_logits
    clean = float((logits.argmax(dim=1) == labels).double().mean())
    assert 0.4 < clean < 0.98, clean  # a real classifier, well above chance (0.1)
    targets = [0.1 + f * (clean - 0.1) for f in (0.85, 0.6, 0.35, 0.15)]
    _check_targets(logits, labels, targets)


def test_other_architecture_analytic_curve_matches_monte_carlo(other_logits):
    assert _check_curve(*other_logits) < 0.01


def test_other_architecture_through_the_cli(other_model, other_logits, tmp_path):
    logits, labels = other_logits
    clean = float((logits.argmax(dim=1) == labels).double().mean())
    target = round(0.1 + 0.5 * (clean - 0.1), 2)
    report = tmp_path / "report.json"
    result = run_aim(
        "calibrate",
        "--target-acc",
        str(target),
        "--model",
        str(other_model["model"]),
        "--data",
        str(other_model["data"]),
        "--json",
        str(report),
        "-q",
        env=FAST,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["clean"] == pytest.approx(clean, abs=1e-9)
    assert abs(data["monte_carlo"]["mean"] - target) <= 0.02
    assert float(result.stdout) == pytest.approx(data["value"], rel=1e-5)


def test_target_equal_to_clean_needs_no_noise(demo_logits):
    logits, labels = demo_logits
    clean = float((logits.argmax(dim=1) == labels).double().mean())
    calibration = calibrate_target(logits, labels, Target("accuracy", clean), draws=4)
    assert calibration.value == 0.0


def test_tied_top_logits_make_the_gap_at_zero_noise_a_user_error():
    # Row 0's top two logits tie exactly (as float16/bfloat16 logits often do): argmax counts it right,
    # but any noise at all makes it a coin flip, so accuracy jumps from 1 to 0.75 at sigma 0+.
    from aim_cli.errors import AimError

    logits, labels = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]]), torch.tensor([0, 0])
    with pytest.raises(AimError, match=r"0\.75.*tie"):
        calibrate_target(logits, labels, Target("accuracy", 0.8), draws=4)
    below = calibrate_target(logits, labels, Target("accuracy", 0.6), draws=4)  # past the jump: reachable
    assert below.predicted == pytest.approx(0.6, abs=1e-4) and below.value > 0


def test_focus_recall_target_on_classifier(other_logits):
    # Boosting a class raises its recall; the closed form (theory.focus_win_probability) is exact.
    logits, labels = other_logits
    target_id = 4
    rows = labels == target_id
    clean = float((logits[rows].argmax(dim=1) == target_id).double().mean())
    goal = round(clean + 0.6 * (1 - clean), 3)
    calibration = calibrate_target(logits, labels, Target("recall", goal, "ring", 1), target_id, draws=40, seed=9)
    # Only ~100 images of the class: SE <= sqrt(0.25 / (100 * 40)) = 0.008, so allow 0.04 (5 SE).
    assert abs(calibration.check.mean - goal) <= 0.04
    assert calibration.predicted == pytest.approx(goal, abs=1e-4)
    assert math.isfinite(calibration.value) and calibration.value > 0


def test_common_random_numbers_curve_matches_the_exact_one():
    """Above EXACT_BUDGET the curve is a common-random-numbers estimate: unbiased, within its SE.

    3000 rows of 200 classes, peaked like a trained model's: per sigma the estimate is a mean
    of rows*draws Bernoulli outcomes, SE <= sqrt(0.25 / (3000 * draws)); 4 SE tolerance.
    """
    from aim_cli.calibration.classify import common_noise_accuracy_metric, common_noise_draws

    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 200, (3000,), generator=generator)
    logits = torch.randn(3000, 200, generator=generator)
    logits[torch.arange(3000), labels] += 3.0
    exact = accuracy_metric(logits, labels)
    draws = common_noise_draws(3000)
    estimate = common_noise_accuracy_metric(logits, labels, draws, seed=5)
    tolerance = 4 * math.sqrt(0.25 / (3000 * draws))
    for sigma in (0.0, 0.5, 1.0, 2.0, 4.0):
        assert estimate(sigma) == pytest.approx(exact(sigma), abs=tolerance), sigma
    assert estimate(1.0) == estimate(1.0)  # the same draws every time: a deterministic curve
    curve = [estimate(s) for s in np.linspace(0.2, 6, 12)]
    steps = [b - a for a, b in itertools.pairwise(curve)]
    assert all(step <= 1e-9 for step in steps) or max(steps) < tolerance


def test_large_problems_calibrate_with_common_random_numbers(monkeypatch):
    """The estimated curve still puts the Monte Carlo check within 0.01 of the target."""
    import aim_cli.calibration.classify as classify

    monkeypatch.setattr(classify, "EXACT_BUDGET", 1000)
    generator = torch.Generator().manual_seed(11)
    labels = torch.randint(0, 100, (4000,), generator=generator)
    logits = torch.randn(4000, 100, generator=generator)
    logits[torch.arange(4000), labels] += 4.0
    calibration = calibrate_target(logits, labels, Target("accuracy", 0.5), draws=20, seed=2, curve_checks=0)
    assert any("common random numbers" in note for note in calibration.notes)
    assert calibration.check.mean == pytest.approx(0.5, abs=0.01)


def _dense_common_noise_accuracy(logits, labels, draws, seed, sigma):
    """The common-random-numbers curve the direct way: add sigma * noise, argmax, per sigma."""
    from aim_cli.calibration.classify import COMMON_NOISE_CHUNK, common_noise_seed

    chunk = max(1, COMMON_NOISE_CHUNK // logits.shape[1])
    correct = 0
    for draw in range(draws):
        for index, start in enumerate(range(0, logits.shape[0], chunk)):
            block = logits[start : start + chunk]
            generator = torch.Generator().manual_seed(common_noise_seed(seed, draw, index))
            noisy = torch.randn(block.shape, generator=generator, dtype=block.dtype) * sigma + block
            correct += int((noisy.argmax(dim=1) == labels[start : start + chunk]).sum())
    return correct / (logits.shape[0] * draws)


@pytest.mark.parametrize("classes", [2, 40, 1000])
def test_common_noise_intervals_equal_the_dense_argmax(classes):
    """One pass to per-row winning intervals gives the same curve as adding noise per sigma.

    Exact ties, a wrong label tied with the top, all-equal rows and huge spreads included; at
    most a row-draw at an interval end may differ by float rounding (1 in rows * draws).
    """
    from aim_cli.calibration.classify import common_noise_accuracy_metric

    generator = torch.Generator().manual_seed(classes)
    rows, draws = 600, 3
    logits = torch.randn(rows, classes, generator=generator) * 2
    labels = torch.randint(0, classes, (rows,), generator=generator)
    logits[::5] = logits[::5].round()  # exact ties
    logits[1::7, 0] = logits[1::7].max(dim=1).values  # class 0 ties the top and is the label
    labels[1::7] = 0
    logits[2::11] *= 1e3  # extreme spreads
    logits[3::13] = 0.0  # every class tied
    metric = common_noise_accuracy_metric(logits, labels, draws, seed=9)
    for sigma in (0.0, 1e-3, 0.1, 0.7, 2.0, 9.0, 1e3):
        dense = (
            _dense_common_noise_accuracy(logits, labels, draws, 9, sigma)
            if sigma > 0
            else float((logits.argmax(dim=1) == labels).double().mean())
        )
        assert metric(sigma) == pytest.approx(dense, abs=1.5 / (rows * draws)), sigma


def test_curve_points_on_large_sets_use_only_the_draws_they_need():
    """The main check keeps its draws; the plot's extra points stop at standard error COMMON_NOISE_SE.

    4000 rows: common_noise_draws gives ceil(0.25 / (4000 * 0.002^2)) = 16 draws, not 20.
    """
    generator = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 20, (4000,), generator=generator)
    logits = torch.randn(4000, 20, generator=generator)
    logits[torch.arange(4000), labels] += 2.0
    calibration = calibrate_target(logits, labels, Target("accuracy", 0.4), draws=20, seed=1)
    assert calibration.check.draws == 20
    assert calibration.points and all(point.draws == 16 for point in calibration.points)
