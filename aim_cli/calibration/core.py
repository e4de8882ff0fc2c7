"""Task-independent calibration pieces: targets, reachable bounds, root finding, Monte Carlo."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aim_cli import theory
from aim_cli.certificates import Certificate
from aim_cli.directions import direction_name
from aim_cli.errors import AimError, FailedInput, InputError
from aim_cli.profile import PROFILE_VERSION, Profile

# Two-sided 95% Student-t quantiles for small draw counts; the normal value beyond.
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    25: 2.060,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}

METRIC_LABELS = {
    "accuracy": "accuracy",
    "pixel_accuracy": "pixel accuracy",
    "miou": "mIoU",
    "recall": "recall",
}


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (1.96 for large df)."""
    if df <= 0:
        return math.inf
    for known in sorted(_T975):
        if df <= known:
            return _T975[known]
    return 1.96


@dataclass(frozen=True)
class Target:
    """What to calibrate for: a metric, its target value, and for recall the focus class."""

    metric: str  # accuracy | pixel_accuracy | miou | recall
    value: float
    focus_class: str | None = None  # the model's label for recall targets
    focus_direction: int = 1

    @property
    def parameter(self) -> str:
        """The knob being solved for: utility 'sigma' or 'focus_sigma'."""
        return "focus_sigma" if self.metric == "recall" else "sigma"

    @property
    def label(self) -> str:
        """Human name of the metric, e.g. 'accuracy' or 'person recall'."""
        if self.metric == "recall":
            return f"{self.focus_class} recall"
        return METRIC_LABELS.get(self.metric, self.metric)


@dataclass
class MonteCarloCheck:
    """Metric values measured over R seeded noise draws at one parameter value."""

    parameter: float
    values: list[float]

    @property
    def draws(self) -> int:
        """How many noise draws were measured."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean measured metric over the draws."""
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def half_width(self) -> float:
        """Half width of the 95% interval of the mean (Student t over the draws)."""
        if len(self.values) < 2:
            return math.nan
        return t_quantile_975(len(self.values) - 1) * float(np.std(self.values, ddof=1)) / math.sqrt(len(self.values))

    @property
    def low(self) -> float:
        """Lower end of the 95% interval."""
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        """Upper end of the 95% interval."""
        return self.mean + self.half_width

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "parameter": self.parameter,
            "draws": self.draws,
            "mean": self.mean,
            "ci95": [self.low, self.high],
            "values": list(self.values),
        }


@dataclass(frozen=True)
class CurveRow:
    """One row of a calibration's table: a parameter value, the metric there, its Monte Carlo check if measured."""

    parameter: float  # the sigma (or focus sigma) of this row
    predicted: float  # the metric the curve gives there (measured, for a measured curve)
    check: MonteCarloCheck | None  # seeded draws at this value, where some were taken
    chosen: bool  # the calibrated value


@dataclass
class Calibration:
    """The result of one calibration: the curve, the chosen value, and how it was checked."""

    task: str
    target: Target
    value: float
    predicted: float
    clean: float
    limit: float
    limit_label: str
    curve: list[tuple[float, float]]
    check: MonteCarloCheck
    points: list[MonteCarloCheck] = field(default_factory=list)
    items: int = 0
    model: str = ""
    data: str = ""
    seed: int = 0
    utility_sigma: float = 0.0
    timing: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    measured: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    analytic: bool = True  # False when the curve itself is measured (free-form text)
    # Multiple-choice text: the cached next-token logits and answer ids, for its certificate.
    cached_logits: tuple[Any, Any] | None = field(default=None, repr=False, compare=False)
    # Certifies a profile of this calibration at a confidence (classify, segment, multiple choice; None: cannot).
    certifier: Callable[[Profile, float], Certificate | None] | None = field(default=None, repr=False, compare=False)
    # The inputs that could not be read or scored (the others were calibrated on).
    failures: list[FailedInput] = field(default_factory=list, repr=False, compare=False)

    @property
    def sigma(self) -> float:
        """The utility sigma of the calibrated setting (the one held fixed for a recall target)."""
        return self.utility_sigma if self.target.metric == "recall" else self.value

    @property
    def focus_sigma(self) -> float | None:
        """The calibrated focus sigma for a recall target, else None."""
        return self.value if self.target.metric == "recall" else None

    def profile(self, name: str = "calibrated") -> Profile:
        """The validated Profile that applies the calibrated value (what --write-profile writes)."""
        return Profile.from_dict(profile_document(self, name), source=f"calibrated profile {name!r}")

    def rows(self, max_rows: int = 12) -> list[CurveRow]:
        """The curve where it moves, thinned to about `max_rows`, with the chosen value and its checks (aim's table)."""
        measured = {round(p.parameter, 12): p for p in self.points}
        measured[round(self.check.parameter, 12)] = self.check
        keep = [self.value, *(p.parameter for p in self.points)]
        rows = []
        for index in display_rows(self.curve, self.clean, self.limit, max_rows=max_rows, keep=keep):
            value, predicted = self.curve[index]
            check = measured.get(round(value, 12)) if value > 0 else None
            rows.append(CurveRow(value, predicted, check, value == self.value))
        return rows

    def to_dict(self) -> dict[str, object]:
        """The JSON report."""
        target = self.target
        return {
            "task": self.task,
            "model": self.model,
            "data": self.data,
            "items": self.items,
            "metric": target.metric,
            "metric_label": target.label,
            "parameter": target.parameter,
            "target": target.value,
            "focus": (
                {"class": target.focus_class, "direction": direction_name(target.focus_direction)}
                if target.metric == "recall"
                else None
            ),
            "utility_sigma": self.sigma,
            "value": self.value,
            "predicted": self.predicted,
            "clean": self.clean,
            "limit": {"value": self.limit, "label": self.limit_label},
            "monte_carlo": self.check.to_dict(),
            "monte_carlo_points": [p.to_dict() for p in self.points],
            "measured_at_value": self.measured,
            "curve_kind": "analytic" if self.analytic else "measured",
            "curve": [{"parameter": s, "predicted": v} for s, v in self.curve],
            "seed": self.seed,
            "timing_s": self.timing,
            "warnings": self.warnings,
        }


def _round(value: float) -> float:
    """Five significant digits: the rounding moves the metric by well under 0.001."""
    return float(f"{value:.5g}")


def profile_document(calibration: Calibration, name: str) -> dict[str, Any]:
    """The profile mapping (schema of aim_cli.profile, version 1) that applies the calibrated value."""
    target = calibration.target
    measured = calibration.check
    description = (
        f"Calibrated by aim calibrate for {target.label} {target.value:g} with {calibration.model or 'the model'} "
        f"on {calibration.data or 'the data'}: predicted {calibration.predicted:.3f}, "
        f"measured {measured.mean:.3f} (95% CI {measured.low:.3f}-{measured.high:.3f}, {measured.draws} draws)."
    )
    document: dict[str, Any] = {"version": PROFILE_VERSION, "name": name, "description": description}
    if target.metric == "recall":
        if calibration.utility_sigma > 0:
            document["utility"] = {"sigma": _round(calibration.utility_sigma)}
        document["focus"] = {
            "sigma": _round(calibration.value),
            "targets": [{"class": target.focus_class, "direction": direction_name(target.focus_direction)}],
        }
    else:
        document["utility"] = {"sigma": _round(calibration.value)}
    return document


def fmt(value: float, other: float | None = None) -> str:
    """Two decimals, or four when two would make `value` and `other` look equal; never 'nan'."""
    if not math.isfinite(value):
        return "undefined"
    if other is not None and f"{value:.2f}" == f"{other:.2f}" and value != other:
        return f"{value:.4f}"
    return f"{value:.2f}"


def check_reachable(target: Target, clean: float, limit: float, limit_label: str) -> None:
    """Fail with both bounds when the target lies outside what the knob can reach.

    The clean end is reached at zero noise; the other end (`limit`) only as the knob grows
    without bound, so a target exactly at the limit is unreachable too. Every message is built
    here, and speaks of focus only for a recall target (the one kind the user gave --focus for).
    """
    t = target.value
    name = target.label
    recall = target.metric == "recall"
    if not (math.isfinite(clean) and math.isfinite(limit)):
        raise InputError(
            f"the clean model's {name} on this data is undefined: nothing in it is scored "
            "(every ground-truth pixel or example is ignored, or the class never occurs)",
            "check that the data's labels or masks hold the model's class ids, in the layout it is read in",
        )
    knob = "focus" if recall else "noise"
    falling = limit <= clean
    low, high = (limit, clean) if falling else (clean, limit)
    span = (
        f"reachable targets lie between {fmt(low, t)} ({limit_label if falling else 'clean'}) "
        f"and {fmt(high, t)}{'' if falling else f' ({limit_label})'}"
    )
    hint = "pick a target in that range"
    if falling:
        if t > clean:
            if recall:
                hint = f"suppressing a class only lowers its recall; to raise it use --focus {target.focus_class}:up"
            raise AimError(f"target {name} {fmt(t, clean)} is above the clean model's {fmt(clean, t)}; {span}", hint)
        if t <= limit:
            raise AimError(
                f"target {name} {fmt(t, limit)} is at or below {limit_label} level ({fmt(limit, t)}); {span}", hint
            )
    else:
        if t < clean:
            raised = "a boost only raises it" if recall else f"noise only moves it toward {limit_label} ({fmt(limit)})"
            raise AimError(
                f"target {name} {fmt(t, clean)} is below the clean model's {fmt(clean, t)} and {raised}; {span}",
                f"to lower it, suppress the class: --focus {target.focus_class}:down" if recall else hint,
            )
        if t >= limit:
            raise AimError(
                f"target {name} {fmt(t, limit)} is at or above {fmt(limit, t)} ({limit_label}), which {knob} "
                f"only approaches; {span}",
                hint,
            )


def crossing(grid: Sequence[float], values: Sequence[float], target: float) -> int | None:
    """Index i of the first grid interval [i, i+1] whose values straddle the target."""
    for i in range(len(grid) - 1):
        a, b = values[i] - target, values[i + 1] - target
        if a == 0:
            return i
        if a * b <= 0:
            return i
    return None


def monotonicity_warning(
    grid: Sequence[float], values: Sequence[float], falling: bool, tolerance: float, what: str, parameter: str
) -> str | None:
    """A plain warning when a curve moves against its expected direction by more than `tolerance`."""
    sign = 1.0 if falling else -1.0
    best = values[0]
    best_at = grid[0]
    for s, v in zip(grid, values):
        if sign * (v - best) > tolerance:
            direction = "rises" if falling else "falls"
            return (
                f"the {what} curve is not monotone: it {direction} from {best:.3f} at {parameter} {best_at:g} "
                f"to {v:.3f} at {parameter} {s:g}, so more than one {parameter} may reach the target "
                f"(the smallest is reported)"
            )
        if sign * (best - v) > 0:
            best, best_at = v, s
    return None


def solve(
    grid: Sequence[float],
    values: Sequence[float],
    target: float,
    exact: Callable[[float], float] | None = None,
) -> float:
    """The smallest parameter where the curve meets the target.

    With an exact metric (cached logits) a bracketed bisection refines the grid crossing
    (theory.solve_increasing_parameter); otherwise monotone cubic interpolation in log-sigma.
    """
    index = crossing(grid, values, target)
    if index is None:
        raise ValueError("target is not bracketed by the curve")
    low, high = grid[index], grid[index + 1]
    if values[index] == target:
        return float(low)
    if values[index + 1] == target:
        return float(high)
    known: tuple[float, float] | None = (values[index], values[index + 1])
    if low <= 0:
        # The root finder works in log-sigma; start just above zero, where the metric is still clean.
        low, known = high * 1e-6, None
        if exact is None:
            return float(high * (values[0] - target) / (values[0] - values[index + 1]))
        _refuse_jump_at_zero(values[index], exact(low), low, target)
    if exact is not None:
        return float(theory.solve_increasing_parameter(exact, target, low, high, tolerance=1e-5, known=known))
    return float(inverse_interpolate(grid, values, target, index))


def _refuse_jump_at_zero(clean: float, near_zero: float, at: float, target: float) -> None:
    """Fail clearly when the target lies in a jump of the curve between zero noise and the least noise.

    argmax settles a tie between top scores by index, but any noise at all makes it a coin
    flip, so the metric jumps at sigma 0 and no sigma reaches a target inside the jump.
    """
    if (clean - target) * (near_zero - target) < 0:
        raise AimError(
            f"no sigma reaches {target:g}: the metric is {clean:.4f} without noise but {near_zero:.4f} with any "
            f"noise (sigma {at:.1e}), because some inputs' top scores tie (or differ by less than that), "
            "as float16/bfloat16 logits often do",
            f"pick a target {'at or below' if near_zero < clean else 'at or above'} {near_zero:.4f}, "
            "or run the model in float32",
        )


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson slopes: a shape-preserving (monotone) cubic through the points."""
    h = np.diff(x)
    delta = np.diff(y) / h
    slopes = np.zeros_like(y)
    for k in range(1, len(x) - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            slopes[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    if len(x) > 1:
        slopes[0], slopes[-1] = delta[0], delta[-1]
    return slopes


def interpolate(grid: Sequence[float], values: Sequence[float], at: float) -> float:
    """Curve value at `at` by monotone cubic interpolation in log-parameter (positive grid part)."""
    points = [(s, v) for s, v in zip(grid, values) if s > 0]
    x = np.log([s for s, _ in points])
    y = np.asarray([v for _, v in points], dtype=float)
    if at <= 0:
        return float(values[0])
    u = math.log(at)
    if u <= x[0]:
        return float(y[0])
    if u >= x[-1]:
        return float(y[-1])
    slopes = _pchip_slopes(x, y)
    k = int(np.searchsorted(x, u) - 1)
    h = x[k + 1] - x[k]
    t = (u - x[k]) / h
    h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
    h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2
    return float(h00 * y[k] + h10 * h * slopes[k] + h01 * y[k + 1] + h11 * h * slopes[k + 1])


def inverse_interpolate(grid: Sequence[float], values: Sequence[float], target: float, index: int) -> float:
    """Solve interpolate(x) == target inside the grid interval `index` by bisection in log x."""
    lo, hi = math.log(grid[index]), math.log(grid[index + 1])
    f_lo = interpolate(grid, values, grid[index]) - target
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        f_mid = interpolate(grid, values, math.exp(mid)) - target
        if (f_mid > 0) == (f_lo > 0):
            lo, f_lo = mid, f_mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def log_grid(low: float, high: float, per_decade: int) -> list[float]:
    """Log-spaced positive points from low to high, about `per_decade` per factor of ten."""
    count = max(2, round(math.log10(high / low) * per_decade) + 1)
    return [float(v) for v in np.geomspace(low, high, count)]


def extend_to_bracket(
    metric: Callable[[float], float],
    grid: list[float],
    values: list[float],
    target: float,
    max_decades: int = 6,
) -> None:
    """Grow a curve (in place) by decades at the high end until it straddles the target.

    Only the high end can miss: the curve starts at zero noise (the clean metric), and a
    crossing between zero and the first grid point is refined by the root finder.
    """
    for _ in range(max_decades):
        if crossing(grid, values, target) is not None:
            return
        new = [grid[-1] * 10 ** (k / 10) for k in range(1, 11)]
        grid.extend(new)
        values.extend(metric(s) for s in new)
    if crossing(grid, values, target) is None:  # e.g. logits so far apart (1e30) that no noise moves them
        raise AimError(
            f"the target {target:g} is not reached for any value up to {grid[-1]:.3g} (the metric stays at "
            f"{values[-1]:.4g})",
            "check the model's logits: gaps this large make the decisions immune to noise",
        )


def display_rows(
    curve: Sequence[tuple[float, float]], clean: float, limit: float, max_rows: int = 18, keep: Sequence[float] = ()
) -> list[int]:
    """Indices of the curve worth showing: where it moves, thinned to about `max_rows`.

    Points whose parameter is in `keep` (the chosen value) are always shown.
    """
    kept = {i for i, (s, _) in enumerate(curve) if s in set(keep)}
    span = abs(clean - limit) or 1.0
    moving = [i for i, (_, v) in enumerate(curve) if abs(v - clean) > 0.002 * span and abs(v - limit) > 0.01 * span]
    if not moving:
        return sorted(set(range(0, len(curve), max(1, len(curve) // max_rows))) | kept)
    first, last = max(0, moving[0] - 1), min(len(curve) - 1, moving[-1] + 1)
    rows = list(range(first, last + 1))
    if len(rows) > max_rows:
        step = len(rows) / max_rows
        rows = sorted({rows[int(k * step)] for k in range(max_rows)} | {rows[-1]})
    return sorted(set(rows) | kept)
