"""`aim segment`: semantic segmentation with utility and focus modulation."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from aim_cli.cli.common import (
    BatchOption,
    CompareOption,
    DeviceOption,
    FocusOption,
    FocusSigmaOption,
    LabelsOption,
    ModelOption,
    ProfileOption,
    QuietOption,
    ResumeOption,
    SeedOption,
    SigmaOption,
    app,
    out_console,
    printable,
    profile_from_options,
    progress_bar,
    report_failures,
    say,
    writing_stdout,
)
from aim_cli.cli.engine import Engine, EngineOption, WorkersOption
from aim_cli.cli.layout_options import AllowOutsideOption, Layout, LayoutOption, SplitOption
from aim_cli.directions import direction_name
from aim_cli.errors import FailedInput

if TYPE_CHECKING:  # torch-backed modules load when the command runs, so `aim --help` stays fast
    import numpy as np

    from aim_cli.api import ModulationPlan
    from aim_cli.api.segmentation import SegmentEvaluation

DEFAULT_OUTPUT_DIR = Path("aim-segment-output")

InputsArgument = Annotated[
    list[str] | None, typer.Argument(help="Image files, directories or globs. Default: demo samples.")
]
SegmentWeightsOption = Annotated[
    Path | None, typer.Option("--weights", help="Weights for torchvision:ARCH (.safetensors or .pth).")
]
OutputDirOption = Annotated[
    Path,
    typer.Option(
        "--output-dir", "-o", help="Where masks, overlays and summary.jsonl go (created if its parent exists)."
    ),
]
OverlayOption = Annotated[
    bool, typer.Option("--overlay", help="Also write overlays/NAME.png: mask colours blended over the image.")
]
MasksOption = Annotated[
    Path | None,
    typer.Option(
        "--masks",
        help="Ground-truth class-id masks (same base names as the images): report accuracy, mIoU, IoU and recall.",
    ),
]


@app.command()
def segment(
    inputs: InputsArgument = None,
    model: ModelOption = None,
    weights: SegmentWeightsOption = None,
    labels: LabelsOption = None,
    profile: ProfileOption = None,
    sigma: SigmaOption = None,
    focus: FocusOption = None,
    focus_sigma: FocusSigmaOption = None,
    seed: SeedOption = None,
    output_dir: OutputDirOption = DEFAULT_OUTPUT_DIR,
    overlay: OverlayOption = False,
    masks: MasksOption = None,
    layout: LayoutOption = Layout.auto,
    split: SplitOption = None,
    allow_outside_paths: AllowOutsideOption = False,
    batch_size: BatchOption = 8,
    device: DeviceOption = "auto",
    compare: CompareOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
    engine: EngineOption = Engine.local,
    workers: WorkersOption = None,
) -> None:
    """Segment images with a modulated segmentation model; write palette PNG masks."""
    from aim_cli.api.segmentation import EVALUATION_FILE
    from aim_cli.api.segmentation import segment as run_segment

    settings_profile = profile_from_options(profile, sigma, focus, focus_sigma, seed)
    run = run_segment(
        model, inputs, settings_profile, masks=masks, layout=layout.value, split=split,
        allow_outside_paths=allow_outside_paths, compare=compare, batch_size=batch_size, device=device,
        weights=weights, labels=labels, engine=engine.value, workers=workers, output_dir=output_dir,
        overlay=overlay, resume=resume, notice=lambda note: say(note, quiet),
    )  # fmt: skip
    with progress_bar("segmenting", run.total, quiet) as advance, closing(run.stream(advance)) as records:
        failures = [item for item in records if isinstance(item, FailedInput)]  # closing: as in aim classify
    if not run.published:
        report_failures(failures, published=False)
        return
    with writing_stdout():
        if run.plan.modulation.has_focus:
            _print_focus_table(run.pixels, run.clean_pixels, run.labels, run.plan)
        else:
            _print_share_table(run.pixels, run.clean_pixels, run.labels)
        if run.evaluation is not None:
            _print_evaluation_table(run.evaluation, run.plan)
    if run.evaluation is not None:
        say(f"evaluation written to {output_dir / EVALUATION_FILE}", quiet)
    report_failures(failures)


def _share(count: int, total: int) -> str:
    """A pixel share as a percentage."""
    return f"{100.0 * count / max(1, total):.2f}%"


def _change(clean: int, modulated: int, total: int) -> str:
    """Percentage-point change and ratio of a class's pixel share."""
    points = 100.0 * (modulated - clean) / max(1, total)
    ratio = f" (x{modulated / clean:.2f})" if clean else ""
    return f"{points:+.2f} pp{ratio}"


def _print_focus_table(totals: np.ndarray, clean: np.ndarray | None, labels: list[str], plan: ModulationPlan) -> None:
    """How much each focus target grew or shrank: its pixel share, clean vs modulated."""
    total = int(totals.sum())
    clean_totals = clean if clean is not None else totals * 0  # focus always computes the clean masks
    table = Table(title="focus effect (share of all pixels)", show_header=True, header_style="bold")
    for column in ("class", "direction", "clean", "modulated", "change"):
        table.add_column(column, justify="left" if column in ("class", "direction") else "right")
    for target in plan.modulation.targets:
        k = target.class_id
        table.add_row(
            escape(printable(labels[k])),
            direction_name(target.direction),
            _share(int(clean_totals[k]), total),
            _share(int(totals[k]), total),
            _change(int(clean_totals[k]), int(totals[k]), total),
        )
    out_console.print(table)


def _print_share_table(totals: np.ndarray, clean_totals: np.ndarray | None, labels: list[str]) -> None:
    """Pixel share of every predicted class (and the clean share when it was computed)."""
    total = int(totals.sum())
    table = Table(title="class pixel share", show_header=True, header_style="bold")
    table.add_column("class")
    if clean_totals is not None:
        table.add_column("clean", justify="right")
    table.add_column("modulated" if clean_totals is not None else "share", justify="right")
    present = totals > 0 if clean_totals is None else (totals > 0) | (clean_totals > 0)
    for k in present.nonzero()[0]:
        row = [escape(printable(labels[k]))]
        if clean_totals is not None:
            row.append(_share(int(clean_totals[k]), total))
        row.append(_share(int(totals[k]), total))
        table.add_row(*row)
    out_console.print(table)


def _metric(value: float | None) -> str:
    """A metric for a table cell ('-' when undefined)."""
    return "-" if value is None else f"{value:.3f}"


def _delta(clean: float | None, modulated: float | None) -> str:
    """Signed change of a metric."""
    return "" if clean is None or modulated is None else f"{modulated - clean:+.3f}"


def _print_evaluation_table(evaluation: SegmentEvaluation, plan: ModulationPlan) -> None:
    """Pixel accuracy, mIoU and per-class IoU / recall of the clean and the modulated model (as evaluation.json)."""
    clean, modulated = evaluation.clean, evaluation.modulated
    targets = {t.class_id for t in plan.modulation.targets} if plan.modulation.has_focus else set()
    table = Table(
        title=f"evaluation on {evaluation.images} image(s): clean vs modulated", show_header=True, header_style="bold"
    )
    table.add_column("class", no_wrap=True)
    for column in ("IoU clean", "IoU mod", "Δ", "recall clean", "recall mod", "Δ"):
        table.add_column(column, justify="right")
    for k, label in enumerate(evaluation.labels):
        if label not in clean.classes and label not in modulated.classes:  # in no mask, truth or predicted
            continue
        before, after = clean.classes.get(label, {}), modulated.classes.get(label, {})
        iou_c, iou_m, rec_c, rec_m = before.get("iou"), after.get("iou"), before.get("recall"), after.get("recall")
        name = escape(printable(f"{label} *" if k in targets else label))
        row = [_metric(iou_c), _metric(iou_m), _delta(iou_c, iou_m), _metric(rec_c), _metric(rec_m)]
        table.add_row(name, *row, _delta(rec_c, rec_m))
    table.add_section()
    m_c, m_m, a_c, a_m = clean.miou, modulated.miou, clean.pixel_accuracy, modulated.pixel_accuracy
    table.add_row("mIoU", _metric(m_c), _metric(m_m), _delta(m_c, m_m), "", "", "")
    table.add_row("pixel acc.", "", "", "", _metric(a_c), _metric(a_m), _delta(a_c, a_m))
    if targets:
        table.caption = "* focus target"
    out_console.print(table)
