"""Calibration plots: the predicted curve, the Monte Carlo points and the target (optional matplotlib)."""

from __future__ import annotations

from pathlib import Path

from aim_cli.calibration.core import Calibration
from aim_cli.errors import AimError
from aim_cli.io import atomic_open


def require_matplotlib() -> None:
    """Fail early, before any model work, when the optional plotting extra is missing."""
    try:
        import matplotlib  # noqa: F401  (imported, not just found: a broken install fails here too)
    except ImportError:
        raise AimError("--plot needs matplotlib, which is not installed", "pip install 'aim-cli[plot]'") from None


def plot_calibration(calibration: Calibration, path: Path) -> None:
    """Draw the calibration to a PNG, atomically; uses the Agg canvas (no display needed)."""
    require_matplotlib()
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # a broken install: still one clear line
        raise AimError(f"--plot: matplotlib cannot be imported ({exc})", "pip install 'aim-cli[plot]'") from None

    target = calibration.target
    figure = Figure(figsize=(7.0, 4.5), dpi=110)
    FigureCanvasAgg(figure)  # attaching the Agg canvas avoids pyplot and any global backend choice
    axes = figure.add_subplot(1, 1, 1)
    curve = [(s, v) for s, v in calibration.curve if s > 0]
    if calibration.analytic:
        axes.plot(
            [s for s, _ in curve], [v for _, v in curve], color="tab:blue", label=f"predicted {target.label} (analytic)"
        )
    points = sorted([*calibration.points], key=lambda p: p.parameter)
    if points:
        axes.errorbar(
            [p.parameter for p in points],
            [p.mean for p in points],
            yerr=[p.half_width if p.half_width == p.half_width else 0.0 for p in points],
            fmt="o",
            color="tab:orange",
            markersize=4,
            capsize=3,
            label=f"Monte Carlo ({points[0].draws} draws, 95% CI)"
            if calibration.analytic
            else "Monte Carlo search points (95% CI)",
        )
    check = calibration.check
    if calibration.value > 0:
        axes.errorbar(
            [check.parameter],
            [check.mean],
            yerr=[check.half_width if check.half_width == check.half_width else 0.0],
            fmt="D",
            color="tab:red",
            markersize=6,
            capsize=4,
            label=f"chosen {target.parameter} = {calibration.value:.4g}: measured {check.mean:.3f}",
        )
        axes.axvline(calibration.value, color="tab:red", linestyle=":", linewidth=1)
    axes.axhline(target.value, color="tab:green", linestyle="--", linewidth=1, label=f"target {target.value:g}")
    axes.axhline(calibration.limit, color="grey", linestyle=":", linewidth=1, label=calibration.limit_label)
    axes.set_xscale("log")
    axes.set_xlabel(target.parameter.replace("_", " "))
    axes.set_ylabel(target.label)
    axes.set_title(f"aim calibrate: {calibration.model or calibration.task}", fontsize=10)
    axes.grid(True, which="both", alpha=0.25)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png")


def plot_metric_curves(series: dict[str, list[tuple[float, float, float | None]]], path: Path, title: str) -> None:
    """Draw task metrics against sigma (one line per 'task metric', stderr bars), atomically, to a PNG."""
    require_matplotlib()
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # a broken install: still one clear line
        raise AimError(f"--plot: matplotlib cannot be imported ({exc})", "pip install 'aim-cli[plot]'") from None

    figure = Figure(figsize=(7.0, 4.5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    for label, points in series.items():
        points = sorted(points)
        axes.errorbar(
            [s for s, _, _ in points],
            [v for _, v, _ in points],
            yerr=[e if e is not None else 0.0 for _, _, e in points],
            fmt="o-",
            markersize=4,
            capsize=3,
            label=label,
        )
    axes.set_xlabel("sigma")  # linear: sigma 0, the clean model, belongs on the axis
    axes.set_ylabel("task metric")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.25)
    axes.legend(fontsize=8, loc="best")
    figure.tight_layout()
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png")
