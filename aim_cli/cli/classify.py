"""`aim classify`: image classification with utility and focus modulation."""

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
    WeightsOption,
    app,
    out_console,
    printable,
    profile_from_options,
    progress_bar,
    report_failures,
    require_stdout,
    say,
    writing_stdout,
)
from aim_cli.cli.engine import Engine, EngineOption, WorkersOption
from aim_cli.errors import FailedInput

if TYPE_CHECKING:  # torch-backed modules load when the command runs, so `aim --help` stays fast
    from aim_cli.api.classification import ClassifiedImage, Prediction

InputsArgument = Annotated[
    list[str] | None, typer.Argument(help="Image files, directories or globs. Default: demo samples.")
]
TopkOption = Annotated[int, typer.Option("--topk", "-k", min=1, help="Classes to report per image.")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Write .jsonl or .csv instead of a table.")]


def _ranked(predictions: list[Prediction]) -> str:
    """'label (0.93), other (0.04)' for a table cell."""
    return escape(printable(", ".join(f"{p.label} ({p.probability:.2f})" for p in predictions)))


@app.command()
def classify(
    inputs: InputsArgument = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    profile: ProfileOption = None,
    sigma: SigmaOption = None,
    focus: FocusOption = None,
    focus_sigma: FocusSigmaOption = None,
    seed: SeedOption = None,
    topk: TopkOption = 1,
    batch_size: BatchOption = 32,
    device: DeviceOption = "auto",
    output: OutputOption = None,
    compare: CompareOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
    engine: EngineOption = Engine.local,
    workers: WorkersOption = None,
) -> None:
    """Classify images with a modulated classifier."""
    from aim_cli.api.classification import classify as run_classify

    settings_profile = profile_from_options(profile, sigma, focus, focus_sigma, seed)
    if output is None:
        require_stdout("results table")
    run = run_classify(
        model,
        inputs,
        settings_profile,
        topk=topk,
        compare=compare,
        batch_size=batch_size,
        device=device,
        weights=weights,
        labels=labels,
        engine="ray" if engine is Engine.ray else "local",
        workers=workers,
        output=output,
        resume=resume,
        notice=lambda note: say(note, quiet),
    )
    results: list[ClassifiedImage] = []
    # closing: a signal that lands in this loop, between two records, still ends the run's writing.
    with progress_bar("classifying", len(run.pending), quiet) as advance, closing(run.results(advance)) as items:
        for item in items:
            if output is None and not isinstance(item, FailedInput):
                results.append(item)
    if run.published and output is None:
        with writing_stdout():
            _print_table(results, compare)
    report_failures(run.failures, published=run.published)


def _print_table(results: list[ClassifiedImage], compare: bool) -> None:
    """Show predictions as a rich table on stdout."""
    table = Table(show_header=True, header_style="bold")
    table.add_column("image", overflow="fold")
    table.add_column("prediction")
    if compare:
        table.add_column("clean")
    for item in results:
        row = [escape(printable(item.path.name)), _ranked(item.top)]
        if compare and item.clean_top is not None:
            changed = item.clean_top[0].class_id != item.top[0].class_id
            row.append(("[yellow]" if changed else "") + _ranked(item.clean_top))
        table.add_row(*row)
    out_console.print(table)
