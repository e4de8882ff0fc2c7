"""`aim report`: one self-contained HTML page of what every tier of a folder does to a model."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from aim_cli.cli.common import (
    BatchOption,
    DataOption,
    DeviceOption,
    LabelsOption,
    ModelOption,
    QuietOption,
    WeightsOption,
    app,
    progress_bar,
    report_failures,
    say,
)
from aim_cli.cli.layout_options import Layout, LayoutOption, SplitOption


class ReportTask(str, enum.Enum):
    """The kinds of model a report covers."""

    classify = "classify"
    segment = "segment"
    generate = "generate"


OutputOption = Annotated[Path, typer.Option("--output", "-o", help="The HTML page to write (.html).")]
TaskOption = Annotated[ReportTask, typer.Option("--task", "-t", help="Kind of model.")]
TiersOption = Annotated[Path, typer.Option("--tiers", help="Folder of tier profiles (*.yaml), certified or not.")]
AllowOutsideOption = Annotated[
    bool,
    typer.Option(
        "--allow-outside-paths",
        help="Let --data name images outside its folder (absolute paths, .., symlinks out).",
    ),
]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N items of the data.")]
ExamplesOption = Annotated[
    int, typer.Option("--examples", min=1, max=32, help="Inputs shown side by side under every tier.")
]
SeedOption = Annotated[
    int, typer.Option("--seed", min=0, help="Seed of the examples' noise for tiers without their own.")
]


@app.command()
def report(
    output: OutputOption,
    task: TaskOption = ReportTask.classify,
    tiers: TiersOption = Path("profiles"),
    model: ModelOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    data: DataOption = None,
    allow_outside_paths: AllowOutsideOption = False,
    layout: LayoutOption = Layout.auto,
    split: SplitOption = None,
    limit: LimitOption = None,
    examples: ExamplesOption = 6,
    seed: SeedOption = 0,
    batch_size: BatchOption = 64,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Write one HTML page (no network needed to view it): the metric-vs-sigma curve with every tier and
    its certified interval, per-class effects of focus tiers, and the same examples under every tier.
    """
    from aim_cli.api.report import write_report

    with progress_bar("forward pass", None, quiet) as advance:
        summary = write_report(
            tiers,
            model,
            data,
            output=output,
            task=task.value,
            weights=weights,
            labels=labels,
            layout=layout.value,
            split=split,
            limit=limit,
            examples=examples,
            seed=seed,
            batch_size=batch_size,
            device=device,
            allow_outside_paths=allow_outside_paths,
            progress=advance,
            notice=lambda message: say(message, quiet),
        )
    say(
        f"wrote report to {output} ({len(summary.tiers)} tier(s), {summary.items} items, "
        f"{summary.seconds:.1f} s of model and analysis)",
        quiet,
    )
    report_failures(list(summary.failures))
