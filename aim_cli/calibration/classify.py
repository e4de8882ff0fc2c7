"""Classification calibration: one forward pass caches (N, C) logits; everything else is analytic."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from aim_cli import theory
from aim_cli.calibration.core import (
    Calibration,
    MonteCarloCheck,
    Target,
    check_reachable,
    display_rows,
    extend_to_bracket,
    monotonicity_warning,
    solve,
)
from aim_cli.calibration.datasets import ImageDataset, LabelledImage
from aim_cli.errors import FailedInput, InputError
from aim_cli.models.classifier import ImageClassifier
from aim_cli.modulation import FocusTarget, Modulation, SeededNoise, modulate
from aim_cli.tasks.batches import ProgressCallback, batched, check_model_logits

# The win probability lives in theory (one implementation); these names stay importable from here.
from aim_cli.theory import CUTOFF as CUTOFF
from aim_cli.theory import NODE_TAIL as NODE_TAIL
from aim_cli.theory import SETTLED as SETTLED
from aim_cli.theory import expected_correct as expected_correct
from aim_cli.theory import quadrature_nodes as quadrature_nodes
from aim_cli.theory import rule_win_probability as rule_win_probability
from aim_cli.theory import trimmed_hermite_rule as trimmed_hermite_rule

# A predicted curve that rises by less than this (e.g. near-tied wrong answers that noise turns
# into coin flips) is not worth a warning; a real non-monotone stretch is.
MONOTONE_TOLERANCE = 0.005
# Beyond this many rows x classes (e.g. 500 images of a 1000-class model) the exact curve
# (up to ~1 ms per row and sigma at 1000 classes, ~40 s per sigma for 50,000 rows, ~45 sigmas
# per calibration) is replaced by a common-random-numbers estimate, whose one pass over the
# noise costs ~1-3 s at a fixed standard error whatever the rows. It is estimated to a
# standard error of COMMON_NOISE_SE (well inside the 0.01 a calibration must hit; the Monte
# Carlo check at the chosen sigma confirms it). Below it the curve stays exact.
EXACT_BUDGET = 500_000
COMMON_NOISE_SE = 0.002
MAX_COMMON_DRAWS = 64
COMMON_NOISE_CHUNK = 4_000_000  # elements of noise held at once
# Extra Monte Carlo points measured along the curve (cheap on cached logits; drawn in --plot).
CURVE_CHECKS = 8


@dataclass
class LogitSet:
    """Clean logits of a labelled data set, cached after one forward pass."""

    logits: torch.Tensor  # (N, C) float32
    labels: torch.Tensor  # (N,) class ids
    failures: list[FailedInput] = field(default_factory=list)
    seconds: float = 0.0


def collect_logits(
    classifier: ImageClassifier,
    items: Sequence[LabelledImage],
    label_ids: Sequence[int],
    batch_size: int = 64,
    progress: ProgressCallback | None = None,
) -> LogitSet:
    """Run the model once over the data; unreadable images are recorded and skipped."""
    start = time.perf_counter()
    chunks: list[torch.Tensor] = []
    kept: list[int] = []
    failures: list[FailedInput] = []
    for batch in batched(zip(items, label_ids), batch_size):
        images = []
        names = []
        for item, label in batch:
            try:
                images.append(item.load().image)
                kept.append(label)
                names.append(item.path or item.name)
            except InputError as exc:
                failures.append(FailedInput(item.path or Path(item.name), exc.message))
        if images:
            chunks.append(classifier.logits(images))
            check_model_logits(chunks[-1], names)  # NaN/inf: damaged weights, no sigma can be found
        if progress:
            progress(len(batch))
    if not chunks:
        first = f" (first: {failures[0].reason})" if failures else ""
        raise InputError(f"none of the {len(failures)} images could be read{first}", "fix or remove them and run again")
    logits = torch.cat(chunks)
    labels = torch.tensor(kept, device=logits.device)
    return LogitSet(logits, labels, failures, time.perf_counter() - start)


def accuracy_metric(logits: torch.Tensor, labels: torch.Tensor) -> Callable[[float], float]:
    """Expected top-1 accuracy as a function of utility sigma (exact, from cached logits)."""
    return lambda sigma: float(expected_correct(logits, labels, sigma).mean())


def exact_is_affordable(logits: torch.Tensor) -> bool:
    """Whether the exact curve is cheap enough: rows x classes within EXACT_BUDGET."""
    return logits.shape[0] * logits.shape[1] <= EXACT_BUDGET


def common_noise_draws(rows: int) -> int:
    """Draws per row so that the estimated accuracy's standard error is at most COMMON_NOISE_SE."""
    return max(1, min(MAX_COMMON_DRAWS, math.ceil(0.25 / (rows * COMMON_NOISE_SE**2))))


def common_noise_seed(seed: int, draw: int, chunk_index: int) -> int:
    """Seed of one chunk of one draw of the common noise (the Monte Carlo reference uses it too)."""
    return seed + 1_000_003 * draw + chunk_index


def winning_interval(
    logits: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the sigmas [low, high] (sigma >= 0) where argmax(logits + sigma * noise) is the label.

    Each class's noisy logit y_j + sigma * e_j is a line in sigma, and a line is the maximum of a
    set of lines on one interval: the label beats class j where (y_c - y_j) + sigma (e_c - e_j)
    >= 0, a half-line starting or ending at -(y_c - y_j) / (e_c - e_j). Empty intervals come
    back with low > high.
    """
    own = logits.gather(1, labels[:, None])
    lead = own - logits  # y_c - y_j
    slope = noise.gather(1, labels[:, None]) - noise  # e_c - e_j
    crossing = -lead / slope
    low = torch.where(slope > 0, crossing, -math.inf).amax(dim=1).clamp(min=0.0)
    high = torch.where(slope < 0, crossing, math.inf).amin(dim=1)
    never = ((slope == 0) & (lead < 0)).any(dim=1)  # a class above the label with the same noise
    low[never] = math.inf
    return low, high


def common_noise_accuracy_metric(
    logits: torch.Tensor, labels: torch.Tensor, draws: int, seed: int = 0
) -> Callable[[float], float]:
    """Accuracy as a function of sigma from common random numbers: unbiased, one randn per row and class.

    Every sigma shares the same standard-normal draws, so at each sigma the value is distributed
    exactly like `draws` real noisy runs over the data (standard error sqrt(p(1-p) / (rows *
    draws))) and the curve is smooth. One pass over the noise (chunk by chunk from fixed seeds,
    so memory stays one chunk) reduces every row and draw to the sigma interval where its label
    wins (winning_interval); the curve at any sigma is then two binary searches, equal to adding
    sigma * noise and taking the argmax (up to float rounding at the interval ends). Used where
    the exact quadrature (36 Phi terms per row, class and sigma) would take too long.
    """
    chunk = max(1, COMMON_NOISE_CHUNK // max(1, logits.shape[1]))
    lows, highs = [], []
    for draw in range(draws):
        for index, start in enumerate(range(0, logits.shape[0], chunk)):
            block = logits[start : start + chunk]
            noise = SeededNoise(common_noise_seed(seed, draw, index)).standard_normal(block.shape, block)
            low, high = winning_interval(block, labels[start : start + chunk], noise)
            lows.append(low.double().cpu())
            highs.append(high.double().cpu())
    low, high = torch.cat(lows), torch.cat(highs)
    kept = low <= high
    low, high = low[kept].sort().values, high[kept].sort().values
    total = logits.shape[0] * draws
    clean = float((logits.argmax(dim=1) == labels).double().mean())

    def metric(sigma: float) -> float:
        if sigma <= 0:
            return clean
        at = torch.tensor([float(sigma)], dtype=torch.float64)
        # intervals with low <= sigma, less those that already ended (high < sigma)
        inside = torch.searchsorted(low, at, right=True) - torch.searchsorted(high, at, right=False)
        return int(inside) / total

    return metric


def recall_metric(
    logits: torch.Tensor, labels: torch.Tensor, target_id: int, direction: int, utility_sigma: float = 0.0
) -> Callable[[float], float]:
    """Expected recall of the focus class as a function of focus sigma (utility sigma held fixed)."""
    rows = logits[labels == target_id]
    return lambda focus_sigma: float(
        theory.target_win_probability(rows, target_id, focus_sigma, direction, utility_sigma).mean()
    )


def monte_carlo_accuracy(
    logits: torch.Tensor, labels: torch.Tensor, sigma: float, draws: int, seed: int
) -> MonteCarloCheck:
    """Measured accuracy over `draws` seeded noise draws on the cached logits."""
    noise = SeededNoise(seed)
    modulation = Modulation(sigma=sigma)
    values = [
        float((modulate(logits, modulation, noise).argmax(dim=1) == labels).double().mean()) for _ in range(draws)
    ]
    return MonteCarloCheck(sigma, values)


def monte_carlo_recall(
    logits: torch.Tensor,
    labels: torch.Tensor,
    target_id: int,
    direction: int,
    focus_sigma: float,
    draws: int,
    seed: int,
    utility_sigma: float = 0.0,
) -> MonteCarloCheck:
    """Measured recall of the focus class over seeded draws of utility and focus noise."""
    rows = logits[labels == target_id]
    noise = SeededNoise(seed)
    modulation = Modulation(utility_sigma, focus_sigma, (FocusTarget(target_id, direction),))
    values = [
        float((modulate(rows, modulation, noise).argmax(dim=1) == target_id).double().mean()) for _ in range(draws)
    ]
    return MonteCarloCheck(focus_sigma, values)


def calibrate_target(
    logits: torch.Tensor,
    labels: torch.Tensor,
    target: Target,
    target_id: int | None = None,
    draws: int = 20,
    seed: int = 0,
    utility_sigma: float = 0.0,
    grid: Sequence[float] | None = None,
    curve_checks: int = CURVE_CHECKS,
) -> Calibration:
    """Analytic curve over a sigma grid, bracketed root, then a seeded Monte Carlo check."""
    if logits.shape[0] == 0:
        raise InputError("the data set is empty", "calibration needs labelled examples")
    check_model_logits(logits, [f"item {i + 1}" for i in range(logits.shape[0])])
    start = time.perf_counter()
    num_classes = logits.shape[1]
    notes: list[str] = []
    if target.metric == "recall":
        assert target_id is not None
        if int((labels == target_id).sum()) == 0:
            raise InputError(
                f"the data has no examples of '{target.focus_class}', so its recall is undefined",
                "add labelled examples of that class",
            )
        metric = recall_metric(logits, labels, target_id, target.focus_direction, utility_sigma)
        limit = 1.0 if target.focus_direction > 0 else 0.0
        limit_label = f"always {target.focus_class}" if target.focus_direction > 0 else f"never {target.focus_class}"

        def measure(value: float, count: int, draw_seed: int) -> MonteCarloCheck:
            return monte_carlo_recall(
                logits, labels, target_id, target.focus_direction, value, count, draw_seed, utility_sigma
            )
    else:
        if exact_is_affordable(logits):
            metric = accuracy_metric(logits, labels)
        else:
            common = common_noise_draws(logits.shape[0])
            metric = common_noise_accuracy_metric(logits, labels, common, seed=seed + 7919)
            notes.append(
                f"curve estimated with common random numbers ({common} draw(s) of every row's "
                f"{num_classes} logits, standard error <= {COMMON_NOISE_SE}): the exact formula "
                f"would cost {logits.shape[0]:,} x {num_classes:,} quadratures per sigma"
            )
        limit = 1.0 / num_classes  # with noise far above the logit spread every class is equally likely
        limit_label = "chance"

        def measure(value: float, count: int, draw_seed: int) -> MonteCarloCheck:
            return monte_carlo_accuracy(logits, labels, value, count, draw_seed)

    grid = list(grid if grid is not None else theory.sigma_grid())
    values = [metric(s) for s in grid]
    clean = values[0]
    check_reachable(target, clean, limit, limit_label)
    extend_to_bracket(metric, grid, values, target.value)
    value = 0.0 if target.value == clean else solve(grid, values, target.value, exact=metric)
    predicted = metric(value)
    curve = sorted([*zip(grid, values), (value, predicted)])
    analytic_seconds = time.perf_counter() - start

    start = time.perf_counter()
    check = measure(value, draws, seed)
    rows = display_rows(curve, clean, limit)
    picks = [curve[rows[int(k * len(rows) / curve_checks)]][0] for k in range(min(curve_checks, len(rows)))]
    # The extra points only draw the measured curve beside the predicted one: enough draws for a
    # standard error of COMMON_NOISE_SE, not `draws` each (at 50,000 x 1000 a draw costs ~1 s).
    point_draws = max(2, min(draws, common_noise_draws(int(logits.shape[0]))))
    points = [measure(s, point_draws, seed + 1 + k) for k, s in enumerate(picks) if s > 0]
    mc_seconds = time.perf_counter() - start

    warnings = _warnings(target, grid, values, check, points, predicted)
    return Calibration(
        task="classify",
        target=target,
        value=value,
        predicted=predicted,
        clean=clean,
        limit=limit,
        limit_label=limit_label,
        curve=curve,
        check=check,
        points=points,
        items=int(logits.shape[0]),
        seed=seed,
        utility_sigma=utility_sigma,
        timing={"analytic_s": analytic_seconds, "monte_carlo_s": mc_seconds},
        warnings=warnings,
        notes=notes,
    )


def _warnings(
    target: Target,
    grid: Sequence[float],
    values: Sequence[float],
    check: MonteCarloCheck,
    points: Sequence[MonteCarloCheck],
    predicted: float,
) -> list[str]:
    """Plain warnings: a non-monotone curve, or a measurement that disagrees with the prediction."""
    falling = target.metric != "recall" or target.focus_direction < 0
    out = []
    analytic = monotonicity_warning(
        grid, values, falling, MONOTONE_TOLERANCE, f"predicted {target.label}", target.parameter
    )
    if analytic:
        out.append(analytic)
    ordered = sorted([*points, check], key=lambda p: p.parameter)
    for earlier, later in itertools.pairwise(ordered):
        rise = (later.mean - earlier.mean) if falling else (earlier.mean - later.mean)
        if rise > earlier.half_width + later.half_width + 1e-9 and rise > 0.005:
            out.append(
                f"the measured {target.label} is not monotone: {earlier.mean:.3f} at {target.parameter} "
                f"{earlier.parameter:.3g} but {later.mean:.3f} at {later.parameter:.3g}"
            )
            break
    if check.draws >= 2 and abs(check.mean - predicted) > 3 * check.half_width + 0.005:
        out.append(
            f"Monte Carlo {target.label} {check.mean:.3f} differs from the predicted {predicted:.3f} by more than "
            "its noise explains"
        )
    return out


def dataset_label_ids(dataset: ImageDataset, model_labels: Sequence[str]) -> list[int]:
    """Resolve the data set's label names against the model (all unknown labels at once)."""
    from aim_cli.calibration.datasets import resolve_labels

    labels = [item.label for item in dataset.items]
    return resolve_labels(labels, model_labels, dataset.source or "the data", dataset.layout)
