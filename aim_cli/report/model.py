"""What the report shows, independent of how it is drawn: curves, tiers, per-class recall, examples."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from aim_cli.report.tiers import Tier

# The metric of each curve, as the calibration names it, and its display name.
METRIC_NAMES = {"accuracy": "accuracy", "pixel_accuracy": "pixel accuracy", "miou": "mIoU", "recall": "recall"}


@dataclass
class Cell:
    """One example under one column (clean or a tier): an image and its caption, or a text answer alone."""

    image: Image.Image | None
    caption: str
    correct: bool | None = None  # green or red caption; None: no verdict (e.g. a pixel score)


@dataclass
class Example:
    """One input shown side by side: what it is, then one cell per column."""

    name: str
    truth: str
    reference: list[tuple[str, Image.Image]] = field(default_factory=list)  # e.g. the input and its true mask
    cells: list[Cell] = field(default_factory=list)  # clean first, then the tiers in order


@dataclass
class TierResult:
    """A tier measured on the data: its metrics, per-class recall, and whether it applies at all."""

    tier: Tier
    metrics: dict[str, float] = field(default_factory=dict)
    exact: bool = False  # metrics from the formula (True) or measured under the tier's noise
    recall: list[float] | None = None
    problem: str | None = None  # why the tier does not apply to this model (e.g. an unknown focus class)
    noise: str = ""  # how the examples' noise was drawn
    focus_labels: list[str] = field(default_factory=list)  # the model's names of the focus classes, e.g. person:up

    @property
    def has_focus(self) -> bool:
        """Whether the tier shifts focus (its per-class effects get a figure)."""
        return bool(self.tier.profile.focus)


@dataclass
class ReportData:
    """Everything the page shows, collected from one model, one tiers folder and one data set."""

    task: str
    model: str
    data: str
    items: int
    labels: list[str]
    curves: dict[str, list[tuple[float, float]]]  # metric -> (sigma, value), sigma 0 first
    curve_method: str
    clean: dict[str, float]
    clean_recall: list[float]
    support: list[int]
    tiers: list[TierResult]
    examples: list[Example]
    colours: list[tuple[int, int, int]] | None = None  # segmentation class colours, for the legend
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    # The content hash of the model the report ran on (None: no tier is certified, or none could be made),
    # compared with each certificate's model fingerprint.
    model_fingerprint: str | None = None
