"""The report's figures, drawn with matplotlib (Agg, no display) and embedded as SVG data URIs."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from aim_cli.errors import AimError
from aim_cli.report.model import METRIC_NAMES, ReportData

# Tier colours: matplotlib's tab10 cycle after the clean model's grey.
CLEAN_COLOUR = "#555555"
CURVE_STYLES = {"accuracy": "-", "miou": "-", "pixel_accuracy": "--"}


def _new_figure(width: float, height: float) -> Any:
    """A figure on its own Agg canvas (no pyplot, no global backend choice)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise AimError("aim report needs matplotlib, which is not installed", "pip install 'aim-cli[plot]'") from None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def data_uri(figure: Any) -> str:
    """The figure as an SVG data URI (text drawn as paths: no font needed to show it)."""
    import matplotlib

    buffer = io.BytesIO()
    # No date and fixed element ids (a random salt by default): the same data gives the same page.
    with matplotlib.rc_context({"svg.hashsalt": "aim-report"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def tier_colour(index: int) -> str:
    """The colour of the index-th tier (tab10, repeating)."""
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    return palette[index % len(palette)]


def curve_figure(data: ReportData) -> str:
    """The metric-vs-sigma curve(s), each tier at its sigma, and certified intervals where tiers carry them."""
    figure = _new_figure(8.2, 4.6)
    axes = figure.add_subplot(1, 1, 1)
    left = min(s for curve in data.curves.values() for s, _ in curve if s > 0)
    for name, curve in data.curves.items():
        label = METRIC_NAMES.get(name, name)
        points = [(s, v) for s, v in curve if s > 0]
        axes.plot(
            [s for s, _ in points],
            [v for _, v in points],
            color="#222222",
            linestyle=CURVE_STYLES.get(name, "-"),
            linewidth=1.6,
            label=f"expected {label}",
        )
        axes.axhline(data.clean[name], color=CLEAN_COLOUR, linestyle=":", linewidth=0.8)
    primary = next(iter(data.curves))
    for index, result in enumerate(data.tiers):
        if result.problem is not None:
            continue
        colour = tier_colour(index)
        sigma = result.tier.profile.sigma
        x = sigma if sigma > 0 else left  # sigma 0 (focus only) sits at the axis' left edge
        for name in data.curves:
            value = result.metrics.get(name)
            if value is None or not math.isfinite(value):
                continue
            marker = "o" if result.exact else "s"
            axes.plot(
                [x],
                [value],
                marker=marker,
                color=colour,
                markersize=8,
                linestyle="none",
                label=result.tier.name if name == primary else None,
                zorder=4,
            )
            if name == primary:
                axes.annotate(
                    result.tier.name, (x, value), textcoords="offset points", xytext=(7, 6), fontsize=8, color=colour
                )
        certificate = result.tier.certificate
        # Only a promise about this tier on this model is drawn: not a void one (settings edited since),
        # nor one made on another model (the table says which).
        if (
            certificate is not None
            and result.tier.certificate_problem is None
            and certificate.model_fingerprint == data.model_fingerprint
            and certificate.metric in data.curves
        ):
            centre, low, high = certificate.predicted, certificate.interval.low, certificate.interval.high
            axes.errorbar(
                [x],
                [centre],
                yerr=[[centre - low], [high - centre]],
                fmt="D",
                color=colour,
                mfc="white",
                capsize=6,
                capthick=1.5,
                elinewidth=1.5,
                markersize=6,
                zorder=5,
            )
    axes.set_xscale("log")
    axes.set_xlabel("utility sigma (log scale)")
    axes.set_ylabel(" / ".join(METRIC_NAMES.get(n, n) for n in data.curves))
    axes.set_ylim(bottom=min(0.0, axes.get_ylim()[0]), top=1.02)
    axes.grid(True, which="both", alpha=0.25)
    axes.legend(fontsize=8, loc="lower left", framealpha=0.9)
    figure.tight_layout()
    return data_uri(figure)


def recall_figure(data: ReportData) -> str | None:
    """Per-class recall, clean beside every focus tier (None when no tier shifts focus)."""
    focused = [(i, r) for i, r in enumerate(data.tiers) if r.has_focus and r.recall is not None and r.problem is None]
    if not focused:
        return None
    classes = len(data.labels)
    figure = _new_figure(8.2, 3.8)
    axes = figure.add_subplot(1, 1, 1)
    groups = 1 + len(focused)
    width = 0.8 / groups
    positions = range(classes)
    series = [("clean", CLEAN_COLOUR, data.clean_recall)]
    series += [(r.tier.name, tier_colour(i), r.recall or []) for i, r in focused]
    for offset, (name, colour, values) in enumerate(series):
        axes.bar(
            [p - 0.4 + width * (offset + 0.5) for p in positions],
            [0.0 if not math.isfinite(v) else v for v in values],
            width=width,
            color=colour,
            label=name,
        )
    targets = {name.rsplit(":", 1)[0] for _, r in focused for name in r.focus_labels}
    axes.set_xticks(list(positions))
    axes.set_xticklabels(
        data.labels, rotation=30 if classes > 6 else 0, ha="right" if classes > 6 else "center", fontsize=8
    )
    for tick, label in zip(axes.get_xticklabels(), data.labels):
        if label in targets:
            tick.set_fontweight("bold")
    axes.set_ylabel("recall")
    axes.set_ylim(0, 1.05)
    axes.grid(True, axis="y", alpha=0.25)
    axes.legend(fontsize=8, loc="lower right", framealpha=0.9)
    figure.tight_layout()
    return data_uri(figure)
