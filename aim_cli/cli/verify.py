"""`aim verify`: does a certified tier still hold on this model and data? Exit 0 holds, 1 does not, 2 error."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aim_cli.cli.common import (
    BatchOption,
    DataOption,
    DeviceOption,
    LabelsOption,
    ModelOption,
    QuietOption,
    WeightsOption,
    app,
    err_console,
    printable,
    progress_bar,
    report_failures,
    say,
    writing_stdout,
)
from aim_cli.cli.layout_options import Layout, LayoutOption, SplitOption
from aim_cli.errors import EXIT_PARTIAL

if TYPE_CHECKING:  # torch-backed modules load when the command runs, so `aim --help` stays fast
    from aim_cli.api.verification import Verification

ProfileArgument = Annotated[Path, typer.Argument(help="A certified profile (aim calibrate --write-profile).")]
AllowOutsideOption = Annotated[
    bool, typer.Option("--allow-outside-paths", help="Let --data name images outside its folder.")
]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N items of the data.")]
DrawsOption = Annotated[
    int, typer.Option("--draws", "-r", min=2, max=1000, help="Monte Carlo draws confirming the exact value.")
]
SeedOption = Annotated[int, typer.Option("--seed", min=0, help="Seed of the Monte Carlo draws.")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Write the result as JSON.")]


@app.command()
def verify(
    profile: ProfileArgument,
    model: ModelOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    data: DataOption = None,
    allow_outside_paths: AllowOutsideOption = False,
    layout: LayoutOption = Layout.auto,
    split: SplitOption = None,
    limit: LimitOption = None,
    draws: DrawsOption = 8,
    seed: SeedOption = 0,
    output: OutputOption = None,
    batch_size: BatchOption = 64,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Re-measure a certified tier on a model and data and say whether its certificate holds.

    Exit 0: the metric lies inside the certified interval; 1: it does not; 2: an error (an
    uncertified or edited profile, bad input). A table goes to stdout, JSON to -o.
    """
    from aim_cli.api.verification import verify as verify_tier

    with progress_bar("forward pass", None, quiet) as advance:
        result = verify_tier(
            profile,
            model,
            data,
            weights=weights,
            labels=labels,
            layout=layout.value,
            split=split,
            limit=limit,
            draws=draws,
            seed=seed,
            batch_size=batch_size,
            device=device,
            allow_outside_paths=allow_outside_paths,
            output=output,
            progress=advance,
            notice=lambda message: say(message, quiet),
        )
    with writing_stdout():
        Console(highlight=False, width=None if sys.stdout.isatty() else 120).print(table(result))
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(printable(warning))}", highlight=False)
    if output is not None:
        say(f"wrote result to {output}", quiet)
    report_failures(list(result.failures))
    if not result.holds:
        raise typer.Exit(EXIT_PARTIAL)


def table(result: Verification) -> Table:
    """The verdict and the evidence, one row each."""
    cert = result.certificate
    metric = cert.metric.replace("_", " ") + (f" ({cert.focus_class})" if cert.focus_class else "")
    confidence = f"{cert.interval.confidence:.0%}"
    verdict = "[bold green]HOLDS[/]" if result.holds else "[bold red]DOES NOT HOLD[/]"
    grid = Table(title=f"aim verify {escape(printable(result.profile))}", show_header=True, header_style="bold")
    grid.add_column("")
    grid.add_column("certified")
    grid.add_column("now")
    same = lambda flag: "[green]same[/]" if flag else "[yellow]differs[/]"  # noqa: E731
    grid.add_row(
        "model",
        f"{escape(cert.model_spec)} {cert.model_fingerprint[:19]}",
        f"{escape(result.model)} {(result.model_fingerprint or 'none')[:19]} {same(result.same_model)}",
    )
    grid.add_row(
        "data",
        f"{escape(cert.data_spec)} ({cert.items} {cert.units})",
        f"{escape(result.data)} ({result.units} {cert.units}) {same(result.same_data)}",
    )
    grid.add_row(
        metric, f"{cert.predicted:.4f} ({cert.method})", f"{result.estimate.predicted:.4f} ({result.estimate.method})"
    )
    grid.add_row(
        f"interval ({confidence})",
        f"{cert.interval.low:.4f}-{cert.interval.high:.4f} (n={cert.interval.sample_size})",
        f"{result.low:.4f}-{result.high:.4f} (n={result.units})",
    )
    check = result.check
    grid.add_row("Monte Carlo", "", f"{check.mean:.4f} (95% CI {check.low:.4f}-{check.high:.4f}, {check.draws} draws)")
    grid.add_row("certificate", cert.id, verdict)
    return grid
