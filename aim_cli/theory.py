"""Exact win probabilities under utility and focus noise, curves and root finding.

With utility noise eps ~ N(0, sigma^2) on every logit, conditioning on eps_c gives

    P(argmax(y + eps) = c) = E_Z[ prod_{j != c} Phi((y_c - y_j) / sigma + Z) ],

which a Gauss-Hermite rule evaluates for a whole batch at once, in log space. So the
expected metric at any sigma follows from one clean forward pass.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch

QUADRATURE_NODES = 64
# Bound on the (rows x classes x nodes) block evaluated at once, to keep memory flat.
_BLOCK_ELEMENTS = 1 << 23


@lru_cache(maxsize=8)
def hermite_rule(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilists' Gauss-Hermite nodes and weights normalised to a N(0,1) expectation."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return x, w / math.sqrt(2.0 * math.pi)


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


def utility_win_probability(
    logits: torch.Tensor, classes: torch.Tensor, sigma: float, nodes: int = QUADRATURE_NODES
) -> torch.Tensor:
    """P(argmax(logits + N(0, sigma^2)) == classes) for each row of an (N, C) tensor."""
    logits = logits.detach().to(torch.float64)
    classes = classes.to(logits.device).long()
    if sigma <= 0:
        return (logits.argmax(dim=1) == classes).to(torch.float64)
    z, w = hermite_rule(nodes)
    z_t = torch.as_tensor(z, device=logits.device)
    w_t = torch.as_tensor(w, device=logits.device)
    out = torch.empty(logits.shape[0], dtype=torch.float64, device=logits.device)
    step = rows_per_block(logits.shape[1], nodes)
    for start in range(0, logits.shape[0], step):
        block = logits[start : start + step]
        cls = classes[start : start + step]
        own = block.gather(1, cls[:, None])
        gaps = (own - block) / sigma
        gaps.scatter_(1, cls[:, None], math.inf)  # log Phi(inf) = 0 drops the j == c term
        log_terms = torch.special.log_ndtr(gaps[:, :, None] + z_t[None, None, :]).sum(dim=1)
        out[start : start + step] = log_terms.exp() @ w_t
    return out


def class_probabilities(logits: torch.Tensor, sigma: float, nodes: int = QUADRATURE_NODES) -> torch.Tensor:
    """P(argmax == k) for every row and every class k of an (N, C) tensor."""
    logits = logits.detach().to(torch.float64)
    n, c = logits.shape
    if sigma <= 0:
        return torch.nn.functional.one_hot(logits.argmax(dim=1), c).to(torch.float64)
    z, w = hermite_rule(nodes)
    z_t = torch.as_tensor(z, device=logits.device)
    w_t = torch.as_tensor(w, device=logits.device)
    out = torch.empty(n, c, dtype=torch.float64, device=logits.device)
    eye_inf = torch.diag(torch.full((c,), math.inf, dtype=torch.float64, device=logits.device))
    step = max(1, rows_per_block(c * c, nodes))
    for start in range(0, n, step):
        block = logits[start : start + step]
        gaps = (block[:, :, None] - block[:, None, :]) / sigma + eye_inf  # [row, k, j]
        log_terms = torch.special.log_ndtr(gaps[..., None] + z_t).sum(dim=2)
        out[start : start + step] = log_terms.exp() @ w_t
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


def reference_accuracy(logits: torch.Tensor, labels: torch.Tensor, sigma: float) -> float:
    """Expected top-1 accuracy of an (N, C) logits set under utility noise sigma (full 64-node rule).

    The reference formula; calibration and aim.expected_accuracy use the faster
    calibration.classify.expected_correct (contending classes only, within 1e-6 of this).
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
