"""Segmentation calibration in streaming passes: expected confusion counts per sigma, no logits cache.

Pass 1 runs the model over the data once and, for every sigma of a grid, adds each pixel's
class probabilities (aim_cli.theory) into that sigma's C x C matrix of EXPECTED counts; the
target is found by monotone interpolation in log-sigma. Pass 2 runs the model again to get
the exact expected metric at the chosen sigma and to measure it under real noise (Monte
Carlo). Memory holds one batch of logits and a few C x C matrices, whatever the data size.
For a focus target only the target class's pixels matter, and their win probability is
closed form (theory.focus_win_probability), so a dense grid costs next to nothing.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from aim_cli import theory
from aim_cli.calibration.core import (
    Calibration,
    MonteCarloCheck,
    Target,
    check_reachable,
    crossing,
    interpolate,
    log_grid,
    monotonicity_warning,
    solve,
)
from aim_cli.calibration.datasets import SegmentationDataset
from aim_cli.errors import InputError
from aim_cli.metrics import IGNORE_INDEX, ConfusionMatrix, iou, pixel_accuracy, recall
from aim_cli.models.segmenter import Segmenter
from aim_cli.modulation import FocusTarget, Modulation, SeededNoise, modulate
from aim_cli.tasks.common import FailedInput, ProgressCallback, batched
from aim_cli.tasks.segment import SegmentInput, strip_rows, upsample_rows

# Trapezoid steps for the per-pixel integral by number of contending classes: the noisy
# maximum of many close classes is narrower, so it needs finer steps. Each keeps the error
# near float32 round-off (~1e-6 against a 96-node Gauss-Hermite reference, measured for 3 to
# 150 classes; tests/test_theory.py checks 3 to 60 classes).
_STEPS = ((5, 0.6), (12, 0.5), (30, 0.4), (80, 0.3), (200, 0.25))
# A class whose chance to overtake the pixel's top class is below this is left out for that pixel.
SETTLED = 1e-9
# Pixels used to choose the sigma grid before the full pass (from the first images).
PILOT_PIXELS = 4096
# Grid density (points per factor of ten) around the pilot's estimate, and its half width.
GRID_PER_DECADE = 8
GRID_SPREAD = 5.0
# Extra Monte Carlo points along the curve in the confirming pass (for the plot).
CURVE_CHECKS = 4


@lru_cache(maxsize=32)
def _nodes(contenders: int, device: torch.device) -> tuple[torch.Tensor, float]:
    """Trapezoid offsets (relative to the top logit, in units of sigma) and step for `contenders` classes."""
    step = next((h for limit, h in _STEPS if contenders <= limit), 0.2)
    return torch.arange(-5.5, 6.0 + 1e-6, step, dtype=torch.float32, device=device), step


def _trapezoid_probabilities(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """P(argmax == k) for (P, a) logits by one shared trapezoid rule per pixel.

    With u the noisy maximum in units of sigma and a_j = y_j / sigma,
        P(k wins) = integral phi(u - a_k) * prod_{j != k} Phi(u - a_j) du
                  = integral phi(u - a_k) * G(u) / Phi(u - a_k) du,   G(u) = prod_j Phi(u - a_j).
    G is shared by all classes, so the cost is a * nodes per pixel instead of the a^2 * nodes of
    the Gauss-Hermite form (theory.class_probabilities, which this matches to ~1e-6 in float32;
    tests/test_theory.py checks it). The integrand is smooth and negligible outside
    a_max - 5.5 .. a_max + 6 (tails below 1e-9 per class), where the trapezoid rule converges
    geometrically in the step (see _STEPS).
    """
    a = values.to(torch.float32) / sigma
    offsets, step_size = _nodes(values.shape[1], a.device)
    out = torch.empty(a.shape, dtype=torch.float64, device=a.device)
    step = max(1, (1 << 22) // (a.shape[1] * offsets.numel()))
    for start in range(0, a.shape[0], step):
        block = a[start : start + step]
        d = (block.max(dim=1, keepdim=True).values + offsets)[:, None, :] - block[:, :, None]
        cdf = torch.erfc(d * (-1.0 / math.sqrt(2.0))).mul_(0.5)  # erfc keeps the lower tail exact
        shared = cdf.prod(dim=1, keepdim=True)
        integrand = d.square_().mul_(-0.5).exp_().mul_(shared).div_(cdf)
        out[start : start + step] = integrand.sum(dim=2).double() * (step_size / math.sqrt(2.0 * math.pi))
    return out


def expected_class_probabilities(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """P(argmax == k) for every pixel row of (P, C) logits under utility noise sigma.

    Classes are sorted per pixel; one that trails the top by g overtakes it with probability
    at most Phi(-g / (sigma sqrt 2)), so those below SETTLED are dropped (error <= C * SETTLED)
    and pixels with the same number a of contenders are integrated together at cost a, not C.
    """
    count, classes = pixels.shape
    if sigma <= 0:
        return torch.nn.functional.one_hot(pixels.argmax(dim=1), classes).to(torch.float64)
    values, order = pixels.sort(dim=1, descending=True)
    gaps = (values[:, :1] - values).double()
    bound = 0.5 * torch.erfc(gaps / (2.0 * sigma))  # Phi(-g / (sigma sqrt 2))
    contenders = (bound > SETTLED).sum(dim=1).clamp(min=1)  # sorted, so the contenders are a prefix
    ranked = torch.zeros(count, classes, dtype=torch.float64, device=pixels.device)
    for a in torch.unique(contenders).tolist():
        rows = contenders == a
        if a == 1:
            ranked[rows, 0] = 1.0
        else:
            ranked[rows, :a] = _trapezoid_probabilities(values[rows, :a], sigma)
    return torch.zeros_like(ranked).scatter_(1, order, ranked)


def present_miou(matrix: torch.Tensor) -> float:
    """Mean IoU over the classes present in the ground truth.

    Restricting to the truth's classes keeps the expected curve continuous at sigma -> 0:
    a class absent from the masks would otherwise enter the mean (with IoU 0) as soon as
    noise predicts it on a single pixel.
    """
    present = matrix.sum(dim=1) > 0
    return float(iou(matrix)[present].mean()) if bool(present.any()) else math.nan


def matrix_metric(metric: str, target_id: int | None = None) -> Callable[[torch.Tensor], float]:
    """The function that reads a metric off a confusion matrix."""
    if metric == "pixel_accuracy":
        return pixel_accuracy
    if metric == "miou":
        return present_miou
    assert target_id is not None
    return lambda matrix: float(recall(matrix)[target_id])


@dataclass
class _Clock:
    """Seconds spent in the model, in the analytic sums, and on Monte Carlo draws."""

    forward: float = 0.0
    analytic: float = 0.0
    monte_carlo: float = 0.0
    passes: int = 0


@dataclass
class _Stream:
    """One streaming pass over the data: strips of upsampled logits with their truth."""

    segmenter: Segmenter
    dataset: SegmentationDataset
    batch_size: int
    clock: _Clock
    failures: list[FailedInput] | None = None  # collected on the first full pass only
    progress: ProgressCallback | None = None
    images: int = 0

    def strips(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(B, C, rows, W) upsampled logits and (B, rows, W) truth, strip by strip."""
        num_classes = len(self.segmenter.labels)
        for batch in batched(self.dataset.inputs(), self.batch_size):
            groups: dict[tuple[int, int], list[SegmentInput]] = {}
            for item in batch:
                problem = _problem(item, num_classes)
                if problem is not None:
                    if self.failures is not None:
                        self.failures.append(problem)
                    continue
                assert isinstance(item, SegmentInput) and item.truth is not None
                groups.setdefault((item.image.height, item.image.width), []).append(item)
            for size, members in groups.items():
                start = time.perf_counter()
                low = self.segmenter.logits([m.image for m in members])
                self.clock.forward += time.perf_counter() - start
                truth = torch.from_numpy(np.stack([m.truth for m in members]).astype(np.int64)).to(low.device)
                self.images += len(members)
                rows = strip_rows(num_classes, size[1])
                for top in range(0, size[0], rows):
                    bottom = min(size[0], top + rows)
                    yield upsample_rows(low, size, top, bottom), truth[:, top:bottom]
            if self.progress:
                self.progress(len(batch))


def _problem(item: object, num_classes: int) -> FailedInput | None:
    """Why an item cannot be scored (unreadable, no mask, a value the model lacks), or None."""
    if isinstance(item, FailedInput):
        return item
    assert isinstance(item, SegmentInput)
    if item.truth is None:
        return FailedInput(item.path, f"{item.path}: no ground-truth mask")
    values = np.unique(item.truth)
    bad = values[(values != IGNORE_INDEX) & ((values < 0) | (values >= num_classes))]
    if bad.size:
        return FailedInput(
            item.path,
            f"{item.path}: mask holds value {int(bad[0])}, not a class id of this model "
            f"(0..{num_classes - 1}, or {IGNORE_INDEX} for pixels to ignore)",
        )
    return None


def _pixels(strip: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, C) logits and (P,) truth of the scored (non-ignored) pixels of a strip."""
    classes = strip.shape[1]
    flat = strip.permute(0, 2, 3, 1).reshape(-1, classes)
    labels = truth.reshape(-1)
    valid = labels != IGNORE_INDEX
    return flat[valid], labels[valid]


class _UtilitySums:
    """Per-sigma expected confusion matrices (utility noise)."""

    def __init__(self, grid: Sequence[float], num_classes: int) -> None:
        self.grid = list(grid)
        self.matrices = [ConfusionMatrix(num_classes) for _ in self.grid]

    def add(self, pixels: torch.Tensor, truth: torch.Tensor) -> None:
        """Add one strip's expected counts at every sigma."""
        for sigma, matrix in zip(self.grid, self.matrices):
            matrix.update_expected(expected_class_probabilities(pixels, sigma), truth)


class _RecallSums:
    """Per-focus-sigma expected true positives of the target class (closed form)."""

    def __init__(self, grid: Sequence[float], target_id: int, direction: int, utility_sigma: float) -> None:
        self.grid = list(grid)
        self.target_id = target_id
        self.direction = direction
        self.utility_sigma = utility_sigma
        self.hits = [0.0 for _ in self.grid]
        self.support = 0

    def add(self, pixels: torch.Tensor, truth: torch.Tensor) -> None:
        """Add one strip's target pixels' win probabilities at every focus sigma."""
        rows = pixels[truth == self.target_id]
        if rows.shape[0] == 0:
            return
        self.support += int(rows.shape[0])
        classes = torch.full((rows.shape[0],), self.target_id, device=rows.device)
        for i, focus_sigma in enumerate(self.grid):
            if self.utility_sigma > 0:
                p = theory.win_probability_with_focus(rows, classes, self.utility_sigma, self.target_id, focus_sigma, self.direction)
            elif focus_sigma <= 0:
                p = (rows.argmax(dim=1) == self.target_id).double()
            else:
                p = theory.focus_win_probability(rows, self.target_id, focus_sigma, self.direction)
            self.hits[i] += float(p.sum())

    def values(self) -> list[float]:
        """Expected recall at every focus sigma."""
        return [h / self.support if self.support else math.nan for h in self.hits]


@dataclass
class SegmentationCalibrator:
    """Streams a data set through a segmenter to calibrate one target."""

    segmenter: Segmenter
    dataset: SegmentationDataset
    target: Target
    target_id: int | None = None
    utility_sigma: float = 0.0
    draws: int = 20
    seed: int = 0
    batch_size: int = 8
    progress: ProgressCallback | None = None
    clock: _Clock = field(default_factory=_Clock)
    failures: list[FailedInput] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Classes the model predicts."""
        return len(self.segmenter.labels)

    def _stream(self, collect: bool = False) -> _Stream:
        """A fresh pass over the data."""
        self.clock.passes += 1
        return _Stream(self.segmenter, self.dataset, self.batch_size, self.clock,
                       self.failures if collect else None, self.progress)

    def _scale(self) -> float:
        """Typical per-pixel logit range, from the first images (sets where the grid lies)."""
        ranges: list[torch.Tensor] = []
        seen = 0
        stream = _Stream(self.segmenter, self.dataset, self.batch_size, self.clock)
        for strip, truth in stream.strips():
            pixels, _ = _pixels(strip, truth)
            pixels = pixels[: PILOT_PIXELS - seen]  # exactly the first pixels, however the data is batched
            ranges.append((pixels.max(dim=1).values - pixels.min(dim=1).values).float())
            seen += pixels.shape[0]
            if seen >= PILOT_PIXELS:
                break
        if not ranges:
            raise InputError("no image of the data could be scored", "see the failures listed")
        scale = float(torch.cat(ranges).median())
        return scale if scale > 0 and math.isfinite(scale) else 1.0

    def _pilot_grid(self, scale: float) -> list[float]:
        """A grid centred on where the first images reach the target (utility metrics)."""
        wide = [0.0, *log_grid(scale / 1000, scale * 100, 3)]
        sums = _UtilitySums(wide, self.num_classes)
        seen = 0
        stream = _Stream(self.segmenter, self.dataset, self.batch_size, self.clock)
        start = time.perf_counter()
        for strip, truth in stream.strips():
            pixels, labels = _pixels(strip, truth)
            pixels, labels = pixels[: PILOT_PIXELS - seen], labels[: PILOT_PIXELS - seen]
            sums.add(pixels, labels)
            seen += pixels.shape[0]
            if seen >= PILOT_PIXELS:
                break
        read = matrix_metric(self.target.metric, self.target_id)
        values = [read(m.matrix) for m in sums.matrices]
        self.clock.analytic += time.perf_counter() - start
        index = crossing(wide, values, self.target.value)
        if index is None:
            return wide
        guess = solve(wide, values, self.target.value)
        return [0.0, *log_grid(guess / GRID_SPREAD, guess * GRID_SPREAD, GRID_PER_DECADE)]

    def _accumulate(self, sums: "_UtilitySums | _RecallSums", collect: bool) -> None:
        """Stream the data once, adding every strip's pixels into `sums` (timed as analytic work)."""
        stream = self._stream(collect)
        for strip, truth in stream.strips():
            pixels, labels = _pixels(strip, truth)
            start = time.perf_counter()
            sums.add(pixels, labels)
            self.clock.analytic += time.perf_counter() - start
        if stream.images == 0:
            raise InputError("no image of the data could be scored", "see the failures listed")

    def _utility_pass(self, grid: Sequence[float], collect: bool) -> tuple[list[float], torch.Tensor]:
        """Expected metric at every sigma of the grid, and the truth's class support."""
        sums = _UtilitySums(grid, self.num_classes)
        self._accumulate(sums, collect)
        read = matrix_metric(self.target.metric, self.target_id)
        return [read(m.matrix) for m in sums.matrices], sums.matrices[0].matrix.sum(dim=1)

    def _recall_pass(self, grid: Sequence[float], collect: bool) -> list[float]:
        """Expected target recall at every focus sigma of the grid."""
        assert self.target_id is not None
        sums = _RecallSums(grid, self.target_id, self.target.focus_direction, self.utility_sigma)
        self._accumulate(sums, collect)
        if sums.support == 0:
            raise InputError(
                f"the masks hold no '{self.target.focus_class}' pixels, so its recall is undefined",
                "calibrate on data that contains the class",
            )
        return sums.values()

    def run(self) -> Calibration:
        """Pilot, curve pass (plus extensions if the target fell outside), solve, confirm."""
        scale = self._scale()
        recall_target = self.target.metric == "recall"
        if recall_target:
            per_decade = GRID_PER_DECADE if self.utility_sigma <= 0 else 3
            grid = [0.0, *log_grid(scale / 1000, scale * 1000, per_decade)]
            values = self._recall_pass(grid, collect=True)
            limit = 1.0 if self.target.focus_direction > 0 else 0.0
            name = self.target.focus_class
            limit_label = f"always {name}" if self.target.focus_direction > 0 else f"never {name}"
        else:
            grid = self._pilot_grid(scale)
            values, support = self._utility_pass(grid, collect=True)
            limit = _chance(self.target.metric, support, self.num_classes)
            limit_label = "chance"
        clean = values[0]
        check_reachable(self.target, clean, limit, limit_label)
        if not recall_target:
            grid, values = self._extend(grid, values)
        if crossing(grid, values, self.target.value) is None:
            reached = values[-1]
            raise InputError(
                f"target {self.target.label} {self.target.value:g} was not reached on the sigma grid "
                f"(up to {grid[-1]:.3g}, where it is {reached:.4f})",
                "choose a target further from the limit",
            )
        value = 0.0 if self.target.value == clean else solve(grid, values, self.target.value)
        interpolated = interpolate(grid, values, value)
        predicted, check, points, measured = self._confirm(value, grid, values)
        curve = sorted([*zip(grid, values), (value, predicted)])
        falling = not recall_target or self.target.focus_direction < 0
        warnings = []
        analytic = monotonicity_warning(grid, values, falling, 0.005, f"predicted {self.target.label}", self.target.parameter)
        if analytic:
            warnings.append(analytic)
        if abs(predicted - interpolated) > 0.005:
            warnings.append(
                f"the grid interpolation ({interpolated:.4f}) and the exact value at the chosen {self.target.parameter} "
                f"({predicted:.4f}) differ; a denser grid would land closer to the target"
            )
        if check.draws >= 2 and abs(check.mean - predicted) > 3 * check.half_width + 0.005:
            warnings.append(
                f"Monte Carlo {self.target.label} {check.mean:.3f} differs from the predicted {predicted:.3f} "
                "by more than its noise explains"
            )
        ordered = sorted([*points, check], key=lambda p: p.parameter)
        for earlier, later in zip(ordered, ordered[1:]):
            rise = (later.mean - earlier.mean) if falling else (earlier.mean - later.mean)
            if rise > earlier.half_width + later.half_width + 0.005:
                warnings.append(
                    f"the measured {self.target.label} is not monotone: {earlier.mean:.3f} at "
                    f"{earlier.parameter:.3g} but {later.mean:.3f} at {later.parameter:.3g}"
                )
                break
        self.notes.append(
            f"{self.clock.passes} streaming passes (curve + Monte Carlo confirmation); "
            f"{len(grid)} {self.target.parameter.replace('_', ' ')} values from one pass; no logits cache"
        )
        return Calibration(
            task="segment",
            target=self.target,
            value=value,
            predicted=predicted,
            clean=clean,
            limit=limit,
            limit_label=limit_label,
            curve=curve,
            check=check,
            points=points,
            items=len(self.dataset) - len({f.path for f in self.failures}),
            seed=self.seed,
            utility_sigma=self.utility_sigma,
            timing={
                "forward_s": self.clock.forward,
                "analytic_s": self.clock.analytic,
                "monte_carlo_s": self.clock.monte_carlo,
            },
            warnings=warnings,
            measured=measured,
            notes=list(self.notes),
        )

    def _extend(self, grid: list[float], values: list[float]) -> tuple[list[float], list[float]]:
        """Further passes over a wider grid when the target fell outside the first one."""
        for _ in range(2):
            index = crossing(grid, values, self.target.value)
            if index is not None and not (index == 0 and len(grid) > 1 and abs(values[1] - values[0]) > 0.05):
                break
            positive = [s for s in grid if s > 0]
            if index is None:  # the curve had not come down to the target yet: look further out
                extra = log_grid(positive[-1] * 10 ** (1 / GRID_PER_DECADE), positive[-1] * 100, GRID_PER_DECADE)
            else:  # it crossed between zero noise and the smallest sigma: look closer in
                extra = log_grid(positive[0] / 100, positive[0] * 10 ** (-1 / GRID_PER_DECADE), GRID_PER_DECADE)
            self.notes.append(f"target outside the first grid: one more pass over {len(extra)} sigmas")
            extra_values, _ = self._utility_pass(extra, collect=False)
            merged = sorted({**dict(zip(grid, values)), **dict(zip(extra, extra_values))}.items())
            grid, values = [s for s, _ in merged], [v for _, v in merged]
        return grid, values

    def _confirm(
        self, value: float, grid: Sequence[float], values: Sequence[float]
    ) -> tuple[float, MonteCarloCheck, list[MonteCarloCheck], dict[str, float]]:
        """Second pass: exact expected metric at the chosen value, and Monte Carlo measurements."""
        recall_target = self.target.metric == "recall"
        targets = (FocusTarget(self.target_id, self.target.focus_direction),) if recall_target else ()

        def modulation(v: float) -> Modulation:
            if recall_target:
                return Modulation(self.utility_sigma, v, targets)  # type: ignore[arg-type]
            return Modulation(sigma=v)

        # A few curve points between clean and the limit, for the plot and the monotonicity check.
        inside = [s for s, v in zip(grid, values) if s > 0 and abs(v - values[0]) > 0.002 and abs(v - values[-1]) > 0.002]
        picks = [inside[int(k * len(inside) / CURVE_CHECKS)] for k in range(min(CURVE_CHECKS, len(inside)))]
        extra_draws = max(3, self.draws // 4)
        chosen = [ConfusionMatrix(self.num_classes) for _ in range(self.draws)]
        curve_mats = {s: [ConfusionMatrix(self.num_classes) for _ in range(extra_draws)] for s in picks}
        exact = _UtilitySums([value], self.num_classes) if not recall_target else None
        exact_recall = (
            _RecallSums([value], self.target_id, self.target.focus_direction, self.utility_sigma)  # type: ignore[arg-type]
            if recall_target else None
        )
        noise = SeededNoise(self.seed)
        curve_noise = SeededNoise(self.seed + 1)
        stream = self._stream()
        for strip, truth in stream.strips():
            pixels, labels = _pixels(strip, truth)
            start = time.perf_counter()
            (exact or exact_recall).add(pixels, labels)  # type: ignore[union-attr]
            self.clock.analytic += time.perf_counter() - start
            start = time.perf_counter()
            for matrix in chosen:
                matrix.update(modulate(strip, modulation(value), noise, class_dim=1).argmax(dim=1), truth)
            for s, matrices in curve_mats.items():
                for matrix in matrices:
                    matrix.update(modulate(strip, modulation(s), curve_noise, class_dim=1).argmax(dim=1), truth)
            self.clock.monte_carlo += time.perf_counter() - start
        read = matrix_metric(self.target.metric, self.target_id)
        if exact is not None:
            predicted = read(exact.matrices[0].matrix)
        else:
            predicted = exact_recall.values()[0]  # type: ignore[union-attr]
        check = MonteCarloCheck(value, [read(m.matrix) for m in chosen])
        points = [MonteCarloCheck(s, [read(m.matrix) for m in mats]) for s, mats in curve_mats.items()]
        measured = {
            "pixel accuracy": float(np.mean([pixel_accuracy(m.matrix) for m in chosen])),
            "mIoU": float(np.mean([present_miou(m.matrix) for m in chosen])),
        }
        return predicted, check, points, measured


def _chance(metric: str, support: torch.Tensor, num_classes: int) -> float:
    """The metric as sigma grows without bound: every class equally likely at every pixel."""
    if metric == "pixel_accuracy":
        return 1.0 / num_classes
    matrix = support.to(torch.float64)[:, None].expand(-1, num_classes) / num_classes
    return present_miou(matrix.clone())
