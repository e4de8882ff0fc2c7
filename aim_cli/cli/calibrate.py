"""`aim calibrate`: find the sigma (or focus sigma) that reaches a target metric, from one pass."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
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
    require_stdout,
    say,
    writing_stdout,
)
from aim_cli.cli.eval import TrustTaskCodeOption
from aim_cli.cli.layout_options import Layout, LayoutOption, SplitOption

if TYPE_CHECKING:  # torch-backed modules load when the command runs, so `aim --help` stays fast
    from aim_cli.api import Calibration


class Task(str, enum.Enum):
    """The kinds of model aim calibrates."""

    classify = "classify"
    segment = "segment"
    generate = "generate"
    lm_eval = "lm-eval"


# What the progress bar counts, per task.
PASSES = {"classify": "forward pass", "segment": "streaming passes", "generate": "scoring", "lm-eval": "lm-eval"}

TargetAccOption = Annotated[
    float | None, typer.Option("--target-acc", help="Target accuracy (pixel accuracy for segment).")
]
TargetMiouOption = Annotated[float | None, typer.Option("--target-miou", help="Target mIoU (segment).")]
TargetRecallOption = Annotated[
    float | None, typer.Option("--target-recall", help="Target recall of the --focus class.")
]
FocusClassOption = Annotated[
    str | None, typer.Option("--focus", "-f", help="Focus class NAME[:up|down] whose focus sigma to find.")
]
FixedSigmaOption = Annotated[
    float | None, typer.Option("--sigma", "-s", help="Utility sigma held fixed while calibrating focus.")
]
TaskOption = Annotated[Task, typer.Option("--task", "-t", help="Kind of model.")]
AllowOutsideOption = Annotated[
    bool,
    typer.Option(
        "--allow-outside-paths",
        help="Let --data (or --include-path task files) name files outside its folder (absolute paths, .., "
        "symlinks out).",
    ),
]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N items of the data.")]
LmTasksOption = Annotated[
    str | None, typer.Option("--tasks", help="lm-eval task or group names, comma-separated (--task lm-eval).")
]
IncludePathOption = Annotated[
    Path | None, typer.Option("--include-path", help="Folder of your own lm-eval task YAML (--task lm-eval).")
]
DrawsOption = Annotated[int, typer.Option("--draws", "-r", min=2, help="Monte Carlo draws for the check.")]
CheckSeedOption = Annotated[int, typer.Option("--seed", min=0, help="Seed of the Monte Carlo check.")]
WriteProfileOption = Annotated[Path | None, typer.Option("--write-profile", help="Write a ready YAML profile.")]
NameOption = Annotated[str | None, typer.Option("--name", help="Profile name (default: the file's stem).")]
ConfidenceOption = Annotated[
    float,
    typer.Option(
        "--confidence",
        help="Confidence of the certificate's interval in the --write-profile profile (classify, segment).",
    ),
]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")]
PlotOption = Annotated[Path | None, typer.Option("--plot", help="Draw the curve to a PNG (needs aim-cli\\[plot]).")]


@app.command()
def calibrate(
    target_acc: TargetAccOption = None,
    target_miou: TargetMiouOption = None,
    target_recall: TargetRecallOption = None,
    focus: FocusClassOption = None,
    sigma: FixedSigmaOption = None,
    task: TaskOption = Task.classify,
    model: ModelOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    data: DataOption = None,
    allow_outside_paths: AllowOutsideOption = False,
    layout: LayoutOption = Layout.auto,
    split: SplitOption = None,
    limit: LimitOption = None,
    lm_tasks: LmTasksOption = None,
    include_path: IncludePathOption = None,
    trust_task_code: TrustTaskCodeOption = False,
    draws: DrawsOption = 20,
    seed: CheckSeedOption = 0,
    profile_out: WriteProfileOption = None,
    name: NameOption = None,
    confidence: ConfidenceOption = 0.95,
    report_out: JsonOption = None,
    plot_out: PlotOption = None,
    batch_size: BatchOption = 64,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Find the sigma that reaches a target metric, from one pass over labelled data.

    The chosen value goes to stdout; the curve, the check and timing to stderr.
    """
    # The options are aim.calibrate's keywords, by the same names (tests/test_api_calibrate.py checks).
    options = dict(locals(), task=task.value, layout=layout.value)
    del options["quiet"]
    from aim_cli.api.calibration import calibrate as run_calibration

    if profile_out is None and report_out is None:
        require_stdout("calibrated value")  # its only other home is a file
    with progress_bar(PASSES[task.value], None, quiet) as advance:
        calibration = run_calibration(**options, progress=advance, notice=None if quiet else say)
    if not calibration.items:  # nothing was scored, so nothing was written
        report_failures(calibration.failures, published=False)
        return
    if not quiet:
        render(calibration)
        for path, what in ((profile_out, "profile"), (report_out, "report"), (plot_out, "plot")):
            if path is not None:
                say(f"wrote {what} to {path}")
    with writing_stdout():
        typer.echo(f"{calibration.value:.6g}")
    report_failures(calibration.failures)


def render(calibration: Calibration) -> None:
    """The curve as a table, then the chosen value, the check and timing, on stderr."""
    target = calibration.target
    parameter = target.parameter.replace("_", " ")
    kind = "predicted" if calibration.analytic else "measured"
    table = Table(title=f"{kind} {target.label} vs {parameter}", show_header=True, header_style="bold")
    table.add_column(parameter, justify="right")
    table.add_column(f"{kind} {target.label}", justify="right")
    table.add_column("Monte Carlo (95% CI)", justify="right")
    for row in calibration.rows(max_rows=12):
        point = row.check
        cell = f"{point.mean:.3f} ({point.low:.3f}-{point.high:.3f})" if point is not None else ""
        value = f"{row.parameter:.4g}" + (" <- chosen" if row.chosen else "")
        table.add_row(value, f"{row.predicted:.4f}", cell, style="bold green" if row.chosen else None)
    err_console.print(table)
    check = calibration.check
    extra = "".join(f" | {k} {v:.3f}" for k, v in calibration.measured.items())
    lines = [
        f"[bold]target {target.label} {target.value:g} -> {target.parameter} = {calibration.value:.4g}[/]"
        + (
            f" (utility sigma {calibration.utility_sigma:g} held fixed)"
            if target.metric == "recall" and calibration.utility_sigma
            else ""
        ),
        (f"predicted {calibration.predicted:.4f} | " if calibration.analytic else "")
        + f"measured {check.mean:.4f} (95% CI {check.low:.4f}-{check.high:.4f}, {check.draws} draws, "
        f"seed {calibration.seed}){extra}",
        f"clean {calibration.clean:.4f} | {calibration.limit_label} {calibration.limit:.4f} | "
        f"{calibration.items} items",
        "time: "
        + " | ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.2f} s" for k, v in calibration.timing.items()),
    ]
    for line in lines:
        err_console.print(line, highlight=False)
    for note in calibration.notes:
        err_console.print(f"[dim]{escape(printable(note))}[/]", highlight=False)
    for warning in calibration.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(printable(warning))}", highlight=False)
