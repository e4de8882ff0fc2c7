"""aim_cli.theory against Monte Carlo through aim_cli.modulation, with tolerances derived from the draw counts.

Every Monte Carlo comparison here is on the SAME logits as the analytic value, so only the
noise varies: the mean of R draws over N rows of Bernoulli(q_i) outcomes has standard error
sqrt(sum q_i (1 - q_i)) / (N sqrt R) <= sqrt(0.25 / (N R)). Each test allows 5 of those (the
chance of a false failure is below 1e-6 per comparison), computed from the analytic q_i.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from aim_cli import theory
from aim_cli.calibration.classify import expected_correct
from aim_cli.calibration.segment import expected_class_probabilities
from aim_cli.modulation import FocusTarget, Modulation, SeededNoise, modulate

N, C = 2000, 10
DRAWS = 40


@pytest.fixture(scope="module")
def logits() -> torch.Tensor:
    """Random logits with a realistic spread (std 2.5) and a few near-ties."""
    generator = torch.Generator().manual_seed(123)
    values = torch.randn(N, C, generator=generator) * 2.5
    values[:50, 1] = values[:50, 0] + 1e-3  # near-ties: noise turns them into coin flips
    return values


@pytest.fixture(scope="module")
def labels(logits: torch.Tensor) -> torch.Tensor:
    """Mostly the argmax (a decent classifier), a quarter random."""
    generator = torch.Generator().manual_seed(7)
    out = logits.argmax(dim=1).clone()
    flip = torch.rand(N, generator=generator) < 0.25
    out[flip] = torch.randint(0, C, (int(flip.sum()),), generator=generator)
    return out


def _tolerance(q: torch.Tensor, draws: int) -> float:
    """Five standard errors of a Monte Carlo mean of Bernoulli(q_i) over rows and draws."""
    return 5.0 * math.sqrt(float((q * (1 - q)).sum())) / (q.numel() * math.sqrt(draws)) + 1e-9


def _mc_hits(
    logits: torch.Tensor, classes: torch.Tensor, modulation: Modulation, draws: int, seed: int
) -> torch.Tensor:
    """Per-row fraction of draws where the noisy argmax equals `classes`."""
    noise = SeededNoise(seed)
    hits = torch.zeros(logits.shape[0], dtype=torch.float64)
    for _ in range(draws):
        hits += (modulate(logits, modulation, noise).argmax(dim=1) == classes).double()
    return hits / draws


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0, 10.0])
def test_win_probability_matches_monte_carlo(logits, labels, sigma):
    q = theory.utility_win_probability(logits, labels, sigma)
    measured = _mc_hits(logits, labels, Modulation(sigma=sigma), DRAWS, seed=int(sigma * 10))
    assert abs(float(q.mean()) - float(measured.mean())) <= _tolerance(q, DRAWS)


def test_win_probability_per_row_for_a_few_rows(logits):
    rows = logits[:8]
    classes = torch.arange(8) % C
    q = theory.utility_win_probability(rows, classes, 2.0)
    draws = 4000  # per-row SE <= sqrt(0.25 / 4000) = 0.0079; allow 5 of them
    measured = _mc_hits(rows, classes, Modulation(sigma=2.0), draws, seed=5)
    assert torch.all((q - measured).abs() <= 5 * torch.sqrt(q * (1 - q) / draws) + 1e-9)


def test_zero_sigma_is_the_clean_argmax(logits, labels):
    expected = (logits.argmax(dim=1) == labels).double()
    assert torch.equal(theory.utility_win_probability(logits, labels, 0.0), expected)
    assert torch.equal(theory.class_probabilities(logits, 0.0).argmax(dim=1), logits.argmax(dim=1))


@pytest.mark.parametrize("sigma", [0.05, 1.0, 50.0])
def test_class_probabilities_rows_sum_to_one_and_match_win_probability(logits, sigma):
    probs = theory.class_probabilities(logits[:300], sigma)
    assert torch.allclose(probs.sum(dim=1), torch.ones(300, dtype=torch.float64), atol=1e-6)
    for k in (0, 3, 9):
        column = theory.utility_win_probability(logits[:300], torch.full((300,), k), sigma)
        assert torch.allclose(probs[:, k], column, atol=1e-9)


def test_large_sigma_tends_to_chance(logits, labels):
    assert abs(theory.reference_accuracy(logits, labels, 1e4) - 1 / C) < 1e-3


@pytest.mark.parametrize("direction", [1, -1])
@pytest.mark.parametrize("focus_sigma", [0.5, 2.0, 8.0])
def test_focus_win_probability_matches_monte_carlo(logits, direction, focus_sigma):
    target = 3
    q = theory.focus_win_probability(logits, target, focus_sigma, direction)
    modulation = Modulation(0.0, focus_sigma, (FocusTarget(target, direction),))
    measured = _mc_hits(logits, torch.full((N,), target), modulation, DRAWS, seed=11)
    assert abs(float(q.mean()) - float(measured.mean())) <= _tolerance(q, DRAWS)


def test_focus_class_probabilities_rows_sum_to_one(logits):
    probs = theory.focus_class_probabilities(logits, 2, 3.0, 1)
    assert torch.allclose(probs.sum(dim=1), torch.ones(N, dtype=torch.float64), atol=1e-12)


def test_focus_boost_closed_form():
    # Target trails by g = 2: it wins when |eps| > 2, i.e. with probability 2 * Phi(-2 / sigma_f).
    row = torch.tensor([[0.0, 2.0, -5.0]])
    p = float(theory.focus_win_probability(row, 0, 1.5, 1))
    assert p == pytest.approx(2 * 0.5 * math.erfc(2 / 1.5 / math.sqrt(2)), abs=1e-12)


def test_win_probability_with_focus_matches_monte_carlo(logits, labels):
    rows, classes = logits[:1000], labels[:1000]
    q = theory.win_probability_with_focus(rows, classes, 1.5, 4, 2.0, 1)
    modulation = Modulation(1.5, 2.0, (FocusTarget(4, 1),))
    measured = _mc_hits(rows, classes, modulation, DRAWS, seed=3)
    assert abs(float(q.mean()) - float(measured.mean())) <= _tolerance(q, DRAWS)


def test_solve_increasing_parameter_finds_the_root():
    root = theory.solve_increasing_parameter(lambda x: 1.0 / (1.0 + x), 0.25, 0.01, 100.0, tolerance=1e-6)
    assert root == pytest.approx(3.0, rel=1e-4)
    with pytest.raises(ValueError):
        theory.solve_increasing_parameter(lambda x: 1.0 / (1.0 + x), 0.001, 0.01, 100.0)


def test_solve_on_expected_accuracy(logits, labels):
    metric = lambda s: theory.reference_accuracy(logits, labels, s)  # noqa: E731
    sigma = theory.solve_increasing_parameter(metric, 0.5, 0.01, 100.0)
    assert metric(sigma) == pytest.approx(0.5, abs=1e-4)


def test_sigma_grid_starts_clean_and_is_log_spaced():
    grid = theory.sigma_grid()
    assert grid[0] == 0.0 and grid[1] == pytest.approx(0.01) and grid[-1] == pytest.approx(100.0)
    ratios = [b / a for a, b in itertools.pairwise(grid[1:])]
    assert max(ratios) == pytest.approx(min(ratios))


# --- the calibration module's fast paths must equal theory's reference formulas ----------


@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0, 40.0])
def test_settled_rows_shortcut_equals_win_probability(logits, labels, sigma):
    reference = theory.utility_win_probability(logits, labels, sigma, nodes=96)
    assert torch.allclose(expected_correct(logits, labels, sigma), reference, atol=2e-6)


@pytest.mark.parametrize("sigma", [0.05, 0.7, 3.0, 40.0])
def test_pruned_class_probabilities_equal_theory(logits, sigma):
    pixels = logits[:1500] * 1.7  # segmentation-like spread
    reference = theory.class_probabilities(pixels, sigma, nodes=96)
    fast = expected_class_probabilities(pixels, sigma)
    assert torch.allclose(fast, reference, atol=5e-6)
    assert torch.allclose(fast.sum(dim=1), torch.ones(1500, dtype=torch.float64), atol=5e-6)


@pytest.mark.parametrize("classes", [3, 25, 60])
def test_pruned_class_probabilities_with_many_classes(classes):
    # Dropping the classes that cannot overtake a pixel's top one may move no probability.
    pixels = torch.randn(200, classes, generator=torch.Generator().manual_seed(classes)) * 3
    for sigma in (1.0, 30.0):
        reference = theory.class_probabilities(pixels, sigma, nodes=96)
        assert torch.allclose(expected_class_probabilities(pixels, sigma), reference, atol=2e-5)


@pytest.mark.parametrize("sigma", [0.3, 2.0, 20.0])
def test_contender_pruning_with_many_classes(sigma):
    # 300 classes with an ImageNet-like spread: most are dropped per row, the result must not move.
    generator = torch.Generator().manual_seed(1)
    many = torch.randn(300, 300, generator=generator) * 4
    labels = many.argmax(dim=1)
    labels[::3] = torch.randint(0, 300, (100,), generator=generator)
    reference = theory.utility_win_probability(many, labels, sigma, nodes=96)
    # 64 nodes (trimmed) for hundreds of classes: per-row error vs 96 nodes up to ~5e-6.
    assert torch.allclose(expected_correct(many, labels, sigma), reference, atol=5e-5)
    assert abs(float(expected_correct(many, labels, sigma).mean() - reference.mean())) < 5e-6


def _hard_logits(classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet-like spread with exact ties, a label tied with the top, and extreme rows."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(240, classes, generator=generator) * 3
    labels = rows.argmax(dim=1)
    labels[::3] = torch.randint(0, classes, (80,), generator=generator)  # wrong or mid-ranked labels
    rows[::5] = rows[::5].round()  # many exact ties
    rows[1::7, 0] = rows[1::7].max(dim=1).values  # class 0 ties the top ...
    labels[1::7] = 0  # ... and is the label
    rows[2::11] *= 1e3  # extreme spreads: every row settled or a single contender
    rows[3::13] = 0.0  # all classes tied: probability 1 / classes
    return rows, labels


@pytest.mark.parametrize("classes", [10, 50, 300])
@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0, 20.0, 100.0])
def test_fast_win_probability_is_exact_to_the_dense_formula(classes, sigma):
    # The dense formula (every class, 64 nodes) is the reference; pruning, settled rows and the
    # trimmed node sets may move no row by more than 1e-6.
    rows, labels = _hard_logits(classes, classes)
    reference = theory.utility_win_probability(rows, labels, sigma, nodes=64)
    fast = expected_correct(rows, labels, sigma)
    assert float((fast - reference).abs().max()) < 1e-6


@pytest.mark.parametrize("nodes", [32, 64])
def test_trimmed_rule_drops_only_negligible_weight(nodes):
    from aim_cli.theory import NODE_TAIL, trimmed_hermite_rule

    _, full = theory.hermite_rule(nodes)
    z, w = trimmed_hermite_rule(nodes)
    assert 0 <= full.sum() - float(w.sum()) < NODE_TAIL
    assert len(z) < nodes and bool((z[1:] > z[:-1]).all())  # fewer nodes, still in order


def test_the_win_probability_equals_direct_integration():
    """The one quadrature against an independent one: scipy integrating phi(z) prod_j Phi(gap_j / sigma + z)."""
    from scipy import integrate, stats

    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(6, 7, generator=generator, dtype=torch.float64) * 3
    classes = torch.tensor([0, 1, 2, 3, 4, 5])
    for sigma in (0.4, 2.0, 15.0):
        fast = theory.utility_win_probability(rows, classes, sigma)
        for row, c, value in zip(rows.numpy(), classes.tolist(), fast.tolist()):
            gaps = [(row[c] - row[j]) / sigma for j in range(len(row)) if j != c]
            integrand = lambda z, g=gaps: stats.norm.pdf(z) * math.prod(stats.norm.cdf(x + z) for x in g)  # noqa: E731
            direct, _ = integrate.quad(integrand, -12, 12, epsabs=1e-12, epsrel=1e-10, limit=200)
            assert value == pytest.approx(direct, abs=1e-9)


def test_the_win_probability_has_one_implementation():
    """Gauss-Hermite rules and Phi products of the formula appear in theory.py only (issue 23: each formula once)."""
    from pathlib import Path

    import aim_cli

    package = Path(aim_cli.__file__).parent
    formula = ("hermegauss", "hermite_rule(", "ndtr(", "log_ndtr", "torch.erf(")
    elsewhere = {
        str(path.relative_to(package)): [word for word in formula if word in path.read_text(encoding="utf-8")]
        for path in package.rglob("*.py")
        if path.name != "theory.py"
    }
    assert {name: words for name, words in elsewhere.items() if words} == {}
