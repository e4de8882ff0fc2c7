"""Demo classifier accuracy under utility noise: falls from >= 0.95 toward chance, reproducibly."""

from __future__ import annotations

import math

import pytest
import torch

from aim_cli import theory
from aim_cli.demo import shapes
from aim_cli.models.registry import load_model
from aim_cli.modulation import Modulation, SeededNoise, modulate

SIGMAS = [0, 0.5, 1, 2, 4, 8, 16]
N_IMAGES = 1000
DRAWS = 5  # noise draws per sigma; accuracy is averaged over N_IMAGES * DRAWS decisions


@pytest.fixture(scope="module")
def clean_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """One clean forward pass over the demo evaluation set."""
    classifier = load_model("classify", None, device=torch.device("cpu"))
    data = shapes.evaluation_set(N_IMAGES)
    logits = torch.cat([classifier.logits([img for img, _ in data[i : i + 250]]) for i in range(0, N_IMAGES, 250)])
    return logits, torch.tensor([label for _, label in data])


def measured_accuracy(logits: torch.Tensor, labels: torch.Tensor, sigma: float, seed: int) -> float:
    """Accuracy of modulated predictions averaged over DRAWS noise draws."""
    noise = SeededNoise(seed)
    hits = sum(
        (modulate(logits, Modulation(sigma=sigma), noise).argmax(1) == labels).sum().item() for _ in range(DRAWS)
    )
    return hits / (DRAWS * len(labels))


def standard_error(p: float) -> float:
    """SE of a mean of N_IMAGES * DRAWS Bernoulli(p) outcomes (draws are independent given the logits).

    Floored at p = 0.01 so a curve point at exactly 1.0 still gets a usable tolerance.
    """
    p = min(max(p, 0.01), 0.99)
    return math.sqrt(p * (1 - p) / (N_IMAGES * DRAWS))


def test_accuracy_falls_monotonically_toward_chance(clean_logits):
    logits, labels = clean_logits
    chance = 1 / logits.shape[1]
    curve = [measured_accuracy(logits, labels, s, seed=100 + i) for i, s in enumerate(SIGMAS)]
    expected = theory.reference_accuracy_curve(logits, labels, SIGMAS)
    assert curve[0] >= 0.95
    for i in range(len(SIGMAS) - 1):
        tolerance = 3 * math.hypot(standard_error(curve[i]), standard_error(curve[i + 1]))
        assert curve[i + 1] <= curve[i] + tolerance, (SIGMAS[i + 1], curve)
        if expected[i] - expected[i + 1] > 2 * tolerance:  # a real drop must show as a strict one
            assert curve[i + 1] < curve[i], (SIGMAS[i + 1], curve)
    # Strict falls across the grid as a whole, and at the top end close to chance.
    assert curve[0] - curve[-1] > 0.7
    assert curve[-1] < chance + 0.08
    assert curve[-1] > chance - 4 * standard_error(chance)
    # Far beyond the logit scale, the modulated model is at chance level.
    far = measured_accuracy(logits, labels, 1000.0, seed=7)
    assert abs(far - chance) < 4 * standard_error(chance)


def test_measured_curve_matches_the_analytic_one(clean_logits):
    logits, labels = clean_logits
    for i, sigma in enumerate(SIGMAS):
        measured = measured_accuracy(logits, labels, sigma, seed=200 + i)
        predicted = theory.reference_accuracy(logits, labels, sigma)
        assert abs(measured - predicted) < 4 * standard_error(predicted), (sigma, measured, predicted)


def test_seeded_runs_bit_identical_and_seeds_differ(clean_logits):
    logits, _ = clean_logits
    a = modulate(logits, Modulation(sigma=2.0), SeededNoise(11))
    b = modulate(logits, Modulation(sigma=2.0), SeededNoise(11))
    c = modulate(logits, Modulation(sigma=2.0), SeededNoise(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a.argmax(1), c.argmax(1))
