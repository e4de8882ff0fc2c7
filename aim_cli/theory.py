"""Exact win probabilities under utility and focus noise, curves and root finding.

With utility noise eps ~ N(0, sigma^2) on every logit, conditioning on eps_c gives

    P(argmax(y + eps) = c) = E_Z[ prod_{j != c} Phi((y_c - y_j) / sigma + Z) ],

which a Gauss-Hermite rule evaluates for a whole batch at once. So the expected metric at any
sigma follows from one clean forward pass. This module holds the one implementation of that
formula (rule_win_probability): the public API, every calibration (classify, segment, text,
lm-eval) and the references of the tests all reach it through the functions below.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch

QUADRATURE_NODES = 64
# Bound on the (rows x classes x nodes) block evaluated at once, to keep memory flat.
_BLOCK_ELEMENTS = 1 << 23
# Gauss-Hermite nodes by number of contending classes: the product of many Phi terms is a
# sharper function of the shared draw, so more classes need more nodes. Up to 16 classes 32
# nodes stay within ~4e-7 of the 64-node rule (measured on random logits with ties); beyond
# that the full 64-node rule is used, so results equal utility_win_probability's.
_NODES = ((16, 32),)
# Nodes whose weights sum to less than this are dropped: the integrand lies in [0, 1], so the
# result moves by at most this (64 nodes -> 36 evaluated, 32 -> 24).
NODE_TAIL = 1e-12
# A row whose win probability is provably within this of 0 or 1 is not integrated, and a class
# that overtakes the label with less than this probability is left out of its row.
SETTLED = 1e-9
# Phi(-CUTOFF / sqrt 2) < SETTLED: a class more than CUTOFF sigma below the label cannot matter.
CUTOFF = 8.5


@lru_cache(maxsize=8)
def hermite_rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to a N(0,1) expectation."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return x, w / math.sqrt(2.0 * math.pi)


@lru_cache(maxsize=8)
def trimmed_hermite_rule(nodes: int, tail: float = NODE_TAIL) -> tuple[torch.Tensor, torch.Tensor]:
    """hermite_rule without the outermost nodes whose weights sum below `tail`."""
    z, w = hermite_rule(nodes)
    order = np.argsort(w)  # smallest weights (outermost nodes) first
    dropped = np.searchsorted(np.cumsum(w[order]), tail)  # how many can go with total weight < tail
    keep = np.sort(order[dropped:])
    return torch.as_tensor(z[keep]), torch.as_tensor(w[keep])


def quadrature_nodes(contenders: int) -> int:
    """Gauss-Hermite nodes for rows with this many contending classes."""
    return next((nodes for limit, nodes in _NODES if contenders <= limit), QUADRATURE_NODES)


@lru_cache(maxsize=8)
def _half_normal_rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights for E[f(|H|)], H ~ N(0,1): Gauss-Legendre on the quantile scale."""
    u, w = np.polynomial.legendre.leggauss(nodes)
    quantile = (1.0 + (u + 1.0) / 2.0) / 2.0  # map [-1, 1] to a half-normal quantile in (0.5, 1)
    x = math.sqrt(2.0) * _erfinv(2.0 * quantile - 1.0)
    return x, w / 2.0


def _erfinv(values: np.ndarray) -> np.ndarray:
    """Inverse error function via torch (numpy has none)."""
    return np.asarray(torch.special.erfinv(torch.from_numpy(values)).numpy())


def rows_per_block(num_classes: int, nodes: int) -> int:
    """Rows per block so a (rows, classes, nodes) float64 block stays bounded."""
    return max(1, _BLOCK_ELEMENTS // max(1, num_classes * nodes))


def rule_win_probability(logits: torch.Tensor, classes: torch.Tensor, sigma: float, nodes: int) -> torch.Tensor:
    """P(argmax(logits + N(0, sigma^2)) == classes) per row (sigma > 0): THE formula, on the trimmed `nodes` rule.

    Every win probability aim computes is this function (directly, or over pruned columns).
    """
    z, w = trimmed_hermite_rule(nodes)
    z, w = z.to(logits.device), w.to(logits.device)
    logits = logits.to(torch.float64)
    classes = classes.to(logits.device).long()
    out = torch.empty(logits.shape[0], dtype=torch.float64, device=logits.device)
    step = rows_per_block(logits.shape[1], len(z))
    for start in range(0, logits.shape[0], step):
        block = logits[start : start + step]
        cls = classes[start : start + step, None]
        gaps = (block.gather(1, cls) - block) / sigma
        gaps.scatter_(1, cls, math.inf)  # Phi(inf) = 1 drops the j == c term
        # A plain product of Phi terms, not a sum of log Phi: ndtr costs a fraction of log_ndtr,
        # every factor is <= 1 (so no partial product underflows before the result does) and
        # n factors add only ~n ulps of rounding.
        out[start : start + step] = torch.special.ndtr(gaps[:, :, None] + z).prod(dim=1) @ w
    return out


def utility_win_probability(
    logits: torch.Tensor, classes: torch.Tensor, sigma: float, nodes: int = QUADRATURE_NODES
) -> torch.Tensor:
    """P(argmax(logits + N(0, sigma^2)) == classes) for each row of an (N, C) tensor, every class integrated."""
    logits = logits.detach().to(torch.float64)
    classes = classes.to(logits.device).long()
    if sigma <= 0:
        return (logits.argmax(dim=1) == classes).to(torch.float64)
    return rule_win_probability(logits, classes, sigma, nodes)


def expected_correct(logits: torch.Tensor, labels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-row P(argmax == label) under utility noise, skipping rows whose answer is settled.

    utility_win_probability within ~1e-6 and much faster. A row whose label leads by margin
    m > 0 stays right unless some class overtakes it, so P >= 1 - (C-1) * Phi(-m / (sigma * sqrt 2));
    a row whose label trails the top by -m stays wrong with P <= Phi(m / (sigma * sqrt 2)). Rows
    with either bound within SETTLED are set to 1 or 0 and skip the quadrature (most rows at
    small sigma).
    """
    labels = labels.to(logits.device).long()
    if sigma <= 0:
        return (logits.argmax(dim=1) == labels).double()
    own = logits.gather(1, labels[:, None]).squeeze(1).double()
    others = logits.double().scatter(1, labels[:, None], -math.inf)
    margin = own - others.max(dim=1).values
    scaled = margin / (sigma * math.sqrt(2.0))
    settled_right = (logits.shape[1] - 1) * torch.special.ndtr(-scaled) < SETTLED
    settled_wrong = torch.special.ndtr(scaled) < SETTLED
    out: torch.Tensor = settled_right.double()
    active = ~(settled_right | settled_wrong)
    if bool(active.any()):
        out[active] = _contender_win_probability(logits[active], labels[active], sigma)
    return out


def _contender_win_probability(logits: torch.Tensor, labels: torch.Tensor, sigma: float) -> torch.Tensor:
    """rule_win_probability over each row's contenders only.

    A class trailing the label by more than CUTOFF * sigma beats it with probability below
    SETTLED, so it is dropped (with many classes most are). Rows are grouped by contender
    count rounded up to a power of two; padding columns sit 1e4 sigma below the label, where
    their factor Phi(gap / sigma + z) is exactly 1.
    """
    # The formula depends on gaps only: shifting each row to a maximum of 0 (in float64) keeps gaps
    # exact for logits so large (1e30) that `own - CUTOFF * sigma` would round back to `own`.
    values = logits.double()
    values = values - values.amax(dim=1, keepdim=True)
    own = values.gather(1, labels[:, None])
    keep = values > own - CUTOFF * sigma
    keep.scatter_(1, labels[:, None], True)  # the label itself, whatever rounding did
    counts = keep.sum(dim=1)
    width = torch.pow(2, torch.ceil(torch.log2(counts.double())).long()).clamp(max=logits.shape[1])
    out = torch.empty(logits.shape[0], dtype=torch.float64, device=logits.device)
    for size in torch.unique(width).tolist():
        rows = width == size
        padded = torch.where(keep[rows], values[rows], own[rows] - 1e4 * sigma)
        top, order = padded.topk(int(size), dim=1)
        position = (order == labels[rows][:, None]).long().argmax(dim=1)
        out[rows] = rule_win_probability(top, position, sigma, quadrature_nodes(int(size)))
    return out


def class_probabilities(logits: torch.Tensor, sigma: float, nodes: int = QUADRATURE_NODES) -> torch.Tensor:
    """P(argmax == k) for every row and every class k of an (N, C) tensor (the win probability of each k)."""
    logits = logits.detach().to(torch.float64)
    n, c = logits.shape
    if sigma <= 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=1), c).to(torch.float64)
    out = torch.empty(n, c, dtype=torch.float64, device=logits.device)
    classes = torch.arange(c, device=logits.device)
    step = max(1, _BLOCK_ELEMENTS // (c * c))  # rows whose C copies are held at once
    for start in range(0, n, step):
        block = logits[start : start + step]
        copies = block.repeat_interleave(c, dim=0)  # row r, once per class k
        ks = classes.repeat(block.shape[0])
        out[start : start + step] = rule_win_probability(copies, ks, sigma, nodes).view(-1, c)
    return out


def focus_win_probability(logits: torch.Tensor, target: int, focus_sigma: float, direction: int = 1) -> torch.Tensor:
    """P(target wins) per row under focus noise alone on one target class.

    Boost: the target wins when |eps| exceeds the gap g to the best other class,
    so P = 2 * Phi(-g / sigma_f) for g > 0 and 1 otherwise. Suppress: it keeps winning
    only when |eps| stays below its margin m, P = 2 * Phi(m / sigma_f) - 1.
    """
    logits = logits.detach().to(torch.float64)
    others = torch.cat([logits[:, :target], logits[:, target + 1 :]], dim=1)
    gap = others.max(dim=1).values - logits[:, target]
    if focus_sigma <= 0:
        return (gap < 0).to(torch.float64)
    if direction > 0:
        return torch.where(gap <= 0, torch.ones_like(gap), 2.0 * torch.special.ndtr(-gap / focus_sigma))
    margin = -gap
    return torch.where(margin <= 0, torch.zeros_like(gap), 2.0 * torch.special.ndtr(margin / focus_sigma) - 1.0)


def focus_class_probabilities(
    logits: torch.Tensor, target: int, focus_sigma: float, direction: int = 1
) -> torch.Tensor:
    """P(argmax == k) for every row and class under focus noise alone on one target.

    Only the target's logit moves, so the prediction is either the target or the
    clean best among the other classes.
    """
    logits = logits.detach().to(torch.float64)
    n, c = logits.shape
    p_target = focus_win_probability(logits, target, focus_sigma, direction)
    masked = logits.clone()
    masked[:, target] = -math.inf
    runner_up = masked.argmax(dim=1)
    out = torch.zeros(n, c, dtype=torch.float64, device=logits.device)
    out[:, target] = p_target
    out.scatter_add_(1, runner_up[:, None], (1.0 - p_target)[:, None])
    return out


def win_probability_with_focus(
    logits: torch.Tensor,
    classes: torch.Tensor,
    sigma: float,
    target: int,
    focus_sigma: float,
    direction: int = 1,
    nodes: int = 32,
) -> torch.Tensor:
    """P(argmax == classes) with utility noise on all classes and focus on one target.

    One more quadrature: average the utility-only formula over the half-normal focus draw.
    """
    if focus_sigma <= 0:
        return utility_win_probability(logits, classes, sigma)
    x, w = _half_normal_rule(nodes)
    total = torch.zeros(logits.shape[0], dtype=torch.float64, device=logits.device)
    base = logits.detach().to(torch.float64)
    for shift, weight in zip(x, w):
        shifted = base.clone()
        shifted[:, target] += direction * focus_sigma * float(shift)
        total += float(weight) * utility_win_probability(shifted, classes, sigma)
    return total


def target_win_probability(
    rows: torch.Tensor, target: int, focus_sigma: float, direction: int = 1, utility_sigma: float = 0.0
) -> torch.Tensor:
    """Per row, P(the focus target wins) under focus noise on it and utility noise on every class.

    The term of every expected recall (classification rows, segmentation pixels of the target class).
    """
    if utility_sigma > 0:
        classes = torch.full((rows.shape[0],), target, device=rows.device)
        return win_probability_with_focus(rows, classes, utility_sigma, target, focus_sigma, direction)
    if focus_sigma <= 0:
        return (rows.argmax(dim=1) == target).double()
    return focus_win_probability(rows, target, focus_sigma, direction)


def reference_accuracy(logits: torch.Tensor, labels: torch.Tensor, sigma: float) -> float:
    """Expected top-1 accuracy of an (N, C) logits set under utility noise sigma (full 64-node rule).

    The reference; calibration and aim.expected_accuracy use the faster expected_correct
    (contending classes only, within 1e-6 of this).
    """
    return float(utility_win_probability(logits, labels, sigma).mean())


def reference_accuracy_curve(logits: torch.Tensor, labels: torch.Tensor, sigmas: Sequence[float]) -> list[float]:
    """Expected accuracy at each sigma, all from the same cached clean logits."""
    return [reference_accuracy(logits, labels, s) for s in sigmas]


def solve_increasing_parameter(
    metric: Callable[[float], float],
    target: float,
    low: float,
    high: float,
    tolerance: float = 1e-4,
    max_iterations: int = 80,
    known: tuple[float, float] | None = None,
) -> float:
    """Find x in [low, high] with metric(x) == target for a metric that falls as x grows.

    Illinois regula falsi on log(x) (x spans orders of magnitude; the curve is smooth there, so
    this takes a handful of evaluations where bisection takes ~20); the bracket must straddle
    the target. `known` passes metric(low), metric(high) when the caller has them already.
    """
    f_low, f_high = (metric(low), metric(high)) if known is None else known
    f_low, f_high = f_low - target, f_high - target
    if f_low * f_high > 0:
        raise ValueError("target is not bracketed")
    if f_low == 0:
        return low
    if f_high == 0:
        return high
    lo, hi = math.log(low), math.log(high)
    best, best_error = 0.5 * (lo + hi), math.inf
    side = 0
    for _ in range(max_iterations):
        mid = (lo * f_high - hi * f_low) / (f_high - f_low)
        if not lo < mid < hi:
            mid = 0.5 * (lo + hi)
        f_mid = metric(math.exp(mid)) - target
        if abs(f_mid) < best_error:
            best, best_error = mid, abs(f_mid)
        if abs(f_mid) < tolerance / 10:
            break
        if (f_mid > 0) == (f_low > 0):
            lo, f_low = mid, f_mid
            if side == -1:
                f_high /= 2  # Illinois step: keep the stale end from stalling convergence
            side = -1
        else:
            hi, f_high = mid, f_mid
            if side == 1:
                f_low /= 2
            side = 1
        if hi - lo < 1e-6:
            break
    return math.exp(best)


def sigma_grid(low: float = 0.01, high: float = 100.0, points: int = 41) -> list[float]:
    """A log-spaced grid of sigmas with 0 prepended (the clean model)."""
    return [0.0] + [float(v) for v in np.geomspace(low, high, points)]
