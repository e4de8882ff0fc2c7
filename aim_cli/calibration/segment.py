"""Segmentation calibration in streaming passes: a common-random-numbers curve, then a real check.

Pass 1 runs the model over the data once. Every scored pixel's upsampled logits y get ONE
standard-normal draw z per class, shared by every sigma of the grid: the pixel's decision at
sigma is argmax(y + sigma z), counted into that sigma's C x C confusion matrix. Reusing z
(common random numbers) pays randn once per pixel, keeps the curve smooth in sigma, and makes
each point exactly one Monte Carlo run of the modulated model over all the data (errors:
docs/design.md, "Segmentation calibration estimator"). The target is found by monotone
interpolation in log-sigma. Pass 2 measures the metric under the real modulated path (the
task's own upsampling and noise) at the chosen sigma. Memory holds one batch of logits, a
capped cache of low-resolution logits (so pass 2 skips the model for the first images, or for
all of them when they fit) and a grid of C x C matrices, whatever the data size. For a focus
target only the target class's pixels matter, and their win probability is closed form, so
pass 1 is exact there.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

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
from aim_cli.errors import FailedInput, InputError
from aim_cli.metrics import IGNORE_INDEX, ConfusionMatrix, iou, pixel_accuracy, recall
from aim_cli.models.segmenter import Segmenter
from aim_cli.modulation import FocusTarget, Modulation, NoiseSource, SeededNoise
from aim_cli.tasks import segment as segment_task
from aim_cli.tasks.batches import ProgressCallback, batched, check_model_logits
from aim_cli.tasks.segment import SegmentInput, add_strip_noise_, truth_problem, upsample_at, upsampled_pixels

# The exact per-pixel expectation (expected_class_probabilities) is kept for analysis and
# tests; calibration uses the common-random-numbers curve, which is far cheaper at many classes.
# A class whose chance to overtake the pixel's top class is below this is left out for that pixel.
SETTLED = 1e-9
# The curve decides every scored pixel once per sigma with one shared draw; data with fewer
# than MIN_DRAWS pixels gets up to MAX_REPEATS draws per pixel (pixel-metric SE <= 0.5/256).
MIN_DRAWS = 1 << 16
MAX_REPEATS = 8
# Elements (pixels x classes) of one block of draws: 16 MiB of float32.
SAMPLE_ELEMENTS = 1 << 22
# Pixels of the first image that place the grid before the pass proper.
PILOT_PIXELS = 1 << 14
# Utility grid: the first image's pilot pixels, on a coarse grid from scale/1000 to scale*100
# (scale: their median logit range; metrics go from clean to chance in there), place the
# target; the pass then uses GRID_PER_DECADE points per factor of ten within GRID_SPREAD of it.
PILOT_PER_DECADE = 3
GRID_PER_DECADE = 12
GRID_SPREAD = 2.0
# Extra Monte Carlo points along the curve in the confirming pass (for the plot), measured on
# the data's first rows only (at most CURVE_PIXELS pixels, and about one check draw's worth of
# work in all): they illustrate, the chosen sigma confirms.
CURVE_CHECKS = 4
CURVE_DRAWS = 2
CURVE_PIXELS = 1 << 19
# Standard error aimed at by the Monte Carlo check at the chosen value (per-draw SE from the
# pixel counts); --draws caps the number of draws, at least MIN_CHECK_DRAWS are taken.
CHECK_SE = 0.002
MIN_CHECK_DRAWS = 3
# Low-resolution logits kept from pass 1 for pass 2 (bytes): a fixed cap, not per image.
LOGITS_CACHE_BYTES = 256 << 20


def expected_class_probabilities(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """P(argmax == k) for every pixel row of (P, C) logits under utility noise sigma.

    Classes are sorted per pixel; one that trails the top by g overtakes it with probability
    at most Phi(-g / (sigma sqrt 2)), so those below SETTLED are dropped (error <= C * SETTLED)
    and pixels with the same number a of contenders go to theory.class_probabilities together,
    over a columns, not C.
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
            ranked[rows, :a] = theory.class_probabilities(values[rows, :a], sigma)
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
class _Group:
    """Same-size images of one batch: their low-resolution logits and (N, H, W) truth."""

    low: torch.Tensor
    truth: torch.Tensor
    size: tuple[int, int]


@dataclass
class _Stream:
    """Passes over the data: groups of low-resolution logits with their truth.

    The first groups (up to LOGITS_CACHE_BYTES of logits and truth, a fixed cap) are kept, so
    a later pass skips the model for them; when the whole data fits, it skips reading too.
    """

    segmenter: Segmenter
    dataset: SegmentationDataset
    batch_size: int
    clock: _Clock
    failures: list[FailedInput]
    progress: ProgressCallback | None = None
    cache: dict[tuple[int, int], _Group] = field(default_factory=dict)
    cached_bytes: int = 0
    complete: bool = False
    images: int = 0
    pixels: int = 0

    def groups(self, collect: bool = False) -> Iterator[_Group]:
        """Every group of scorable images in data order; failures are collected when asked."""
        self.images = self.pixels = 0
        if self.complete:
            for cached in self.cache.values():
                self.images += cached.low.shape[0]
                self.pixels += cached.truth.numel()
                yield cached
                if self.progress:
                    self.progress(cached.low.shape[0])
            return
        num_classes = len(self.segmenter.labels)
        overflow = False
        for b, batch in enumerate(batched(self.dataset.inputs(), self.batch_size)):
            groups: dict[tuple[int, int], list[SegmentInput]] = {}
            for item in batch:
                problem = _problem(item, num_classes)
                if problem is not None:
                    if collect:
                        self.failures.append(problem)
                    continue
                assert isinstance(item, SegmentInput) and item.truth is not None
                groups.setdefault((item.image.height, item.image.width), []).append(item)
            for g, (size, members) in enumerate(groups.items()):
                group = self.cache.get((b, g))
                if group is None:
                    start = time.perf_counter()
                    low = self.segmenter.logits([m.image for m in members])
                    self.clock.forward += time.perf_counter() - start
                    check_model_logits(low, [m.path for m in members])  # NaN/inf: no sigma can be found
                    truths = [m.truth for m in members if m.truth is not None]  # all of them: checked above
                    truth = torch.from_numpy(np.stack(truths).astype(np.int64)).to(low.device)
                    group = _Group(low, truth, size)
                    size_bytes = low.numel() * low.element_size() + truth.numel() * truth.element_size()
                    if not overflow and self.cached_bytes + size_bytes <= LOGITS_CACHE_BYTES:
                        self.cache[(b, g)] = group
                        self.cached_bytes += size_bytes
                    else:
                        overflow = True
                self.images += len(members)
                self.pixels += group.truth.numel()
                yield group
            if self.progress:
                self.progress(len(batch))
        self.complete = not overflow


def _problem(item: object, num_classes: int) -> FailedInput | None:
    """Why an item cannot be scored (unreadable, no mask, a value the model lacks), or None."""
    if isinstance(item, FailedInput):
        return item
    assert isinstance(item, SegmentInput)
    if item.truth is None:
        return FailedInput(item.path, f"{item.path}: no ground-truth mask")
    problem = truth_problem(item, num_classes)  # the check `aim segment --masks` makes
    return None if problem is None else FailedInput(item.path, problem)


def _repeats(pixels: int, images: int) -> int:
    """Draws per pixel for the curve: 1, or more when the whole data holds few pixels (< MIN_DRAWS)."""
    return max(1, min(MAX_REPEATS, round(MIN_DRAWS / max(1, pixels * images))))


class _CrnSums:
    """Per-sigma confusion matrices of every scored pixel, with common random numbers across the grid."""

    def __init__(self, grid: Sequence[float], num_classes: int) -> None:
        self.grid = list(grid)
        self.num_classes = num_classes
        self.counts = torch.zeros(len(self.grid), num_classes, num_classes, dtype=torch.float64)

    def add(self, pixels: torch.Tensor, truth: torch.Tensor, noise: NoiseSource, repeats: int = 1) -> None:
        """Decide (P, C) scored pixels at every sigma with ONE N(0,1) draw per pixel and class, and count.

        The draw z is shared by all sigmas (decision: argmax(y + sigma z)); with `repeats` > 1
        every pixel gets that many independent draws, each counting 1 / repeats.
        """
        c = self.num_classes
        size = len(self.grid) * c * c
        offsets = torch.arange(len(self.grid), device=pixels.device)[:, None] * (c * c)
        step = max(1, SAMPLE_ELEMENTS // c)  # bounds the (rows x C) draw and its noisy copy
        counts = torch.zeros(size, dtype=torch.long, device=pixels.device)
        for top in range(0, pixels.shape[0], step):
            block = pixels[top : top + step]
            base = offsets + truth[None, top : top + step] * c
            noisy = torch.empty_like(block)
            for _ in range(repeats):
                z = noise.standard_normal(block.shape, block)
                decided = torch.empty_like(base)
                for g, sigma in enumerate(self.grid):
                    chosen = block if sigma <= 0 else torch.add(block, z, alpha=sigma, out=noisy)
                    decided[g] = chosen.argmax(dim=1)
                counts += torch.bincount((base + decided).reshape(-1), minlength=size)
        self.counts += counts.reshape(len(self.grid), c, c).to(device="cpu", dtype=torch.float64) / repeats

    def values(self, read: Callable[[torch.Tensor], float]) -> list[float]:
        """The metric at every sigma of the grid."""
        return [read(self.counts[g]) for g in range(len(self.grid))]


class _RecallSums:
    """Per-focus-sigma expected true positives of the target class (closed form)."""

    def __init__(self, grid: Sequence[float], target_id: int, direction: int, utility_sigma: float) -> None:
        self.grid = list(grid)
        self.target_id = target_id
        self.direction = direction
        self.utility_sigma = utility_sigma
        self.hits = [0.0 for _ in self.grid]
        self.support = 0

    def add(self, rows: torch.Tensor) -> None:
        """Add the target pixels' (rows x C logits) win probabilities at every focus sigma."""
        if rows.shape[0] == 0:
            return
        self.support += int(rows.shape[0])
        for i, focus_sigma in enumerate(self.grid):
            p = theory.target_win_probability(rows, self.target_id, focus_sigma, self.direction, self.utility_sigma)
            self.hits[i] += float(p.sum())

    def values(self) -> list[float]:
        """Expected recall at every focus sigma."""
        return [h / self.support if self.support else math.nan for h in self.hits]


def _target_rows(group: _Group, target_id: int) -> torch.Tensor:
    """Upsampled logits (P, C) of the group's pixels whose truth is the target class."""
    index = (group.truth.reshape(-1) == target_id).nonzero().squeeze(1)
    return upsample_at(group.low, group.size, index)


def _strips(group: _Group) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Class-last upsampled logits (rows, W, C) with truth (rows, W): the task's own upsampling.

    A group whose upsampled logits fit STRIP_ELEMENTS comes as one block (its images stacked
    along the rows); otherwise image by image, in the task's strips.
    """
    count, classes = group.low.shape[:2]
    height, width = group.size
    if count * classes * height * width <= segment_task.STRIP_ELEMENTS:
        whole = F.interpolate(
            group.low.contiguous(memory_format=torch.channels_last),
            size=group.size,
            mode="bilinear",
            align_corners=False,
        )
        yield (
            whole.permute(0, 2, 3, 1).reshape(count * height, width, classes),
            group.truth.reshape(count * height, width),
        )
        return
    rows = segment_task.strip_rows(classes, width, segment_task.STRIP_ELEMENTS)
    for i in range(count):
        for top in range(0, height, rows):
            bottom = min(height, top + rows)
            yield upsampled_pixels(group.low[i : i + 1], group.size, top, bottom), group.truth[i, top:bottom]


def _scored(strip: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, C) logits and (P,) truth of a strip's scored (non-ignored) pixels."""
    pixels = strip.reshape(-1, strip.shape[-1])
    labels = truth.reshape(-1)
    valid = labels != IGNORE_INDEX
    if bool(valid.all()):
        return pixels, labels
    return pixels[valid], labels[valid]


def check_draws(metric: str, support: torch.Tensor, most: int) -> int:
    """Monte Carlo draws so the check's standard error is about CHECK_SE (3, or `most` if fewer, to `most`).

    Per draw, a pixel metric over n pixels has SE <= 0.5 / sqrt(n) (independent per-pixel
    draws); mIoU averages K present classes, SE ~ sqrt(sum_k 0.25 / n_k) / K; recall uses the
    target's pixels (support holds just that class then). At least 3 draws, so the Student-t
    interval of the check is informative (t_0.975 is 12.7 with 2 draws, 4.3 with 3).
    """
    upper = max(2, most)
    lower = min(MIN_CHECK_DRAWS, upper)
    present = support[support > 0].to(torch.float64)
    if present.numel() == 0:
        return upper
    variance = float((0.25 / present).sum()) / present.numel() ** 2 if metric == "miou" else 0.25 / float(present.sum())
    return int(min(max(lower, math.ceil(variance / CHECK_SE**2)), upper))


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
    _stream: _Stream | None = None

    @property
    def num_classes(self) -> int:
        """Classes the model predicts."""
        return len(self.segmenter.labels)

    def _focus_id(self) -> int:
        """The focus class of a recall target (only recall calibrations ask)."""
        if self.target_id is None:
            raise ValueError("a recall target needs the focus class id")
        return self.target_id

    def _groups(self, collect: bool = False) -> Iterator[_Group]:
        """A fresh pass over the data (the first images' logits come from the bounded cache)."""
        if self._stream is None:
            self._stream = _Stream(
                self.segmenter, self.dataset, self.batch_size, self.clock, self.failures, self.progress
            )
        self.clock.passes += 1
        yield from self._stream.groups(collect)
        if self._stream.images == 0:
            first = f" (first: {self.failures[0].reason})" if self.failures else ""
            raise InputError(
                f"no image of the data could be scored{first}", "fix or remove the failing images and run again"
            )

    def certification_pass(self) -> Iterator[_Group]:
        """One more pass over the scored images (aim_cli.calibration.certify reads each image's counts)."""
        yield from self._groups()

    def _pilot(self, group: _Group) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Up to PILOT_PIXELS scored pixels of the first image, at random: their logits (P, C) and truth.

        The first image only, so the grid does not depend on how the data is batched.
        """
        group = _Group(group.low[:1], group.truth[:1], group.size)
        flat = group.truth.reshape(-1)
        scored = (flat != IGNORE_INDEX).nonzero().squeeze(1)
        if scored.numel() == 0:
            return None
        if scored.numel() > PILOT_PIXELS:
            # A sample of pixels, not noise (modulation.py makes only normal draws): an explicit seeded generator.
            generator = torch.Generator(device=group.low.device).manual_seed(self.seed + 1)
            scored = scored[torch.randperm(scored.numel(), generator=generator, device=scored.device)[:PILOT_PIXELS]]
        return upsample_at(group.low, group.size, scored), flat[scored]

    def _scale(self, pilot: tuple[torch.Tensor, torch.Tensor] | None) -> float:
        """Median per-pixel logit range of the pilot pixels (sets where the grid lies)."""
        if pilot is None:
            return 1.0
        pixels = pilot[0]
        scale = float((pixels.max(dim=1).values - pixels.min(dim=1).values).median())
        return scale if scale > 0 and math.isfinite(scale) else 1.0

    def _grid(self, group: _Group) -> list[float]:
        """The utility sigma grid, centred on where the first image's pilot pixels reach the target."""
        pilot = self._pilot(group)
        scale = self._scale(pilot)
        wide = [0.0, *log_grid(scale / 1000, scale * 100, PILOT_PER_DECADE)]
        if pilot is None:
            return [0.0, *log_grid(scale / 1000, scale * 100, GRID_PER_DECADE)]
        sums = _CrnSums(wide, self.num_classes)
        sums.add(*pilot, SeededNoise(self.seed + 2))
        values = sums.values(matrix_metric(self.target.metric, self.target_id))
        index = crossing(wide, values, self.target.value)
        if index is None:
            return [0.0, *log_grid(scale / 1000, scale * 100, GRID_PER_DECADE)]
        # A rough guess is all the pilot owes: linear in log-sigma between the bracketing points.
        low, high = max(wide[index], scale / 1000), wide[index + 1]
        a, b = values[index] - self.target.value, values[index + 1] - self.target.value
        guess = low * (high / low) ** (a / (a - b)) if a != b else low
        return [0.0, *log_grid(guess / GRID_SPREAD, guess * GRID_SPREAD, GRID_PER_DECADE)]

    def _utility_pass(
        self, grid: Sequence[float] | None, collect: bool
    ) -> tuple[list[float], list[float], float, torch.Tensor]:
        """Pass 1: grid, CRN metric at every sigma, the exact clean metric, and the truth's class support."""
        sums: _CrnSums | None = None if grid is None else _CrnSums(grid, self.num_classes)
        clean = ConfusionMatrix(self.num_classes)
        noise: SeededNoise | None = None
        repeats = 1
        for group in self._groups(collect):
            if sums is None:
                sums = _CrnSums(self._grid(group), self.num_classes)
            if noise is None:
                noise = SeededNoise(self.seed)
                repeats = _repeats(group.size[0] * group.size[1], len(self.dataset))
            start = time.perf_counter()
            for strip, truth in _strips(group):
                clean.update(strip.argmax(dim=-1), truth)
                pixels, labels = _scored(strip, truth)
                sums.add(pixels, labels, noise, repeats)
            self.clock.analytic += time.perf_counter() - start
        assert sums is not None
        read = matrix_metric(self.target.metric, self.target_id)
        if grid is None:
            draws = f"{repeats} shared N(0,1) draws" if repeats > 1 else "one shared N(0,1) draw"
            self.notes.append(
                f"curve: every scored pixel decided at {len(sums.grid)} sigmas with {draws} per class (common "
                "random numbers)"
            )
        return sums.grid, sums.values(read), read(clean.matrix), clean.matrix.sum(dim=1)

    def _recall_pass(self, collect: bool) -> tuple[list[float], list[float], int]:
        """Pass 1 for a focus target: exact expected target recall at every focus sigma, and its pixel count."""
        assert self.target_id is not None
        sums: _RecallSums | None = None
        for group in self._groups(collect):
            if sums is None:
                scale = self._scale(self._pilot(group))
                per_decade = GRID_PER_DECADE if self.utility_sigma <= 0 else 3
                grid = [0.0, *log_grid(scale / 1000, scale * 1000, per_decade)]
                sums = _RecallSums(grid, self.target_id, self.target.focus_direction, self.utility_sigma)
            start = time.perf_counter()
            sums.add(_target_rows(group, self.target_id))
            self.clock.analytic += time.perf_counter() - start
        assert sums is not None
        if sums.support == 0:
            raise InputError(
                f"the masks hold no '{self.target.focus_class}' pixels, so its recall is undefined",
                "calibrate on data that contains the class",
            )
        return sums.grid, sums.values(), sums.support

    def run(self) -> Calibration:
        """Curve pass (plus extensions if the target fell outside), solve, confirm."""
        recall_target = self.target.metric == "recall"
        if recall_target:
            grid, values, pixels = self._recall_pass(collect=True)
            clean = values[0]
            support = torch.zeros(self.num_classes, dtype=torch.float64)
            support[self.target_id] = pixels  # the check's draws follow the target's pixel count
            limit = 1.0 if self.target.focus_direction > 0 else 0.0
            name = self.target.focus_class
            limit_label = f"always {name}" if self.target.focus_direction > 0 else f"never {name}"
        else:
            grid, values, clean, support = self._utility_pass(None, collect=True)
            limit = _chance(self.target.metric, support, self.num_classes)
            limit_label = "chance"
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
        predicted, check, points, measured = self._confirm(value, grid, values, support)
        curve = sorted([*zip(grid, values), (value, predicted)])
        falling = not recall_target or self.target.focus_direction < 0
        warnings = []
        analytic = monotonicity_warning(
            grid, values, falling, 0.005, f"predicted {self.target.label}", self.target.parameter
        )
        if analytic:
            warnings.append(analytic)
        if abs(predicted - interpolated) > 0.005:
            warnings.append(
                f"the grid interpolation ({interpolated:.4f}) and the exact value at the chosen "
                f"{self.target.parameter} "
                f"({predicted:.4f}) differ; a denser grid would land closer to the target"
            )
        if check.draws >= 2 and abs(check.mean - predicted) > 3 * check.half_width + 0.005:
            warnings.append(
                f"Monte Carlo {self.target.label} {check.mean:.3f} differs from the predicted {predicted:.3f} "
                "by more than its noise explains"
            )
        ordered = sorted(points, key=lambda p: p.parameter)  # measured on the same first images
        for earlier, later in itertools.pairwise(ordered):
            rise = (later.mean - earlier.mean) if falling else (earlier.mean - later.mean)
            if rise > earlier.half_width + later.half_width + 0.005:
                warnings.append(
                    f"the measured {self.target.label} is not monotone: {earlier.mean:.3f} at "
                    f"{earlier.parameter:.3g} but {later.mean:.3f} at {later.parameter:.3g}"
                )
                break
        estimator = "exact expected recall" if recall_target else "common random numbers"
        self.notes.append(
            f"{self.clock.passes} streaming passes (curve + Monte Carlo confirmation, {check.draws} draws); "
            f"{len(grid)} {self.target.parameter.replace('_', ' ')} values from one pass ({estimator}); "
            "no full-resolution logits cache"
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
            # Same seed: the same sampled pixels and draws, so the merged curve stays one CRN curve.
            _, extra_values, _, _ = self._utility_pass(extra, collect=False)
            merged = sorted({**dict(zip(grid, values)), **dict(zip(extra, extra_values))}.items())
            grid, values = [s for s, _ in merged], [v for _, v in merged]
        return grid, values

    def _confirm(
        self, value: float, grid: Sequence[float], values: Sequence[float], support: torch.Tensor
    ) -> tuple[float, MonteCarloCheck, list[MonteCarloCheck], dict[str, float]]:
        """Second pass: real modulated runs at the chosen value (and the exact recall for a focus target)."""
        recall_target = self.target.metric == "recall"
        targets = (FocusTarget(self._focus_id(), self.target.focus_direction),) if recall_target else ()

        def modulation(v: float) -> Modulation:
            if recall_target:
                return Modulation(self.utility_sigma, v, targets)
            return Modulation(sigma=v)

        # A few curve points between clean and the limit, for the plot and the monotonicity check.
        inside = [
            s for s, v in zip(grid, values) if s > 0 and abs(v - values[0]) > 0.002 and abs(v - values[-1]) > 0.002
        ]
        picks = [inside[int(k * len(inside) / CURVE_CHECKS)] for k in range(min(CURVE_CHECKS, len(inside)))]
        chosen = [
            ConfusionMatrix(self.num_classes) for _ in range(check_draws(self.target.metric, support, self.draws))
        ]
        curve_mats = {s: [ConfusionMatrix(self.num_classes) for _ in range(CURVE_DRAWS)] for s in picks}
        seen = self._stream.pixels if self._stream is not None else 0
        curve_budget = min(CURVE_PIXELS, max(1, seen // (CURVE_CHECKS * CURVE_DRAWS)))
        exact_recall = (
            _RecallSums([value], self._focus_id(), self.target.focus_direction, self.utility_sigma)
            if recall_target
            else None
        )
        noise = SeededNoise(self.seed)
        curve_noise = SeededNoise(self.seed + 1)
        curve_pixels = 0
        for group in self._groups():
            if exact_recall is not None:  # exact expected recall at the chosen focus sigma
                start = time.perf_counter()
                exact_recall.add(_target_rows(group, self._focus_id()))
                self.clock.analytic += time.perf_counter() - start
            start = time.perf_counter()
            for strip, truth in _strips(group):
                for matrix in chosen:
                    matrix.update(add_strip_noise_(strip.clone(), modulation(value), noise).argmax(dim=-1), truth)
                # Curve points illustrate: measured on the data's first rows only (about one check draw's worth).
                rows = min(strip.shape[0], -(-(curve_budget - curve_pixels) // strip.shape[1]))
                if rows > 0:
                    for s, matrices in curve_mats.items():
                        for matrix in matrices:
                            matrix.update(
                                add_strip_noise_(strip[:rows].clone(), modulation(s), curve_noise).argmax(dim=-1),
                                truth[:rows],
                            )
                    curve_pixels += rows * strip.shape[1]
            self.clock.monte_carlo += time.perf_counter() - start
        if curve_mats and curve_pixels < seen:
            self.notes.append(
                f"Monte Carlo points other than the chosen {self.target.parameter.replace('_', ' ')} use the first "
                f"{curve_pixels:,} of {seen:,} pixels (an illustration, so they may differ from the curve); "
                "the check at the chosen value uses all of them"
            )
        read = matrix_metric(self.target.metric, self.target_id)
        # Utility: the curve's value at the chosen sigma (one more CRN estimate would be no more
        # than one more Monte Carlo draw); recall: the exact expectation.
        predicted = exact_recall.values()[0] if exact_recall is not None else interpolate(grid, values, value)
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
