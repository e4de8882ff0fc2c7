"""`aim calibrate`: find the sigma (or focus sigma) that reaches a target metric, from one pass."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

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
    RunOutputs,
    WeightsOption,
    app,
    err_console,
    guard_outputs,
    printable,
    progress_bar,
    report_failures,
    require_stdout,
    say,
    writing_stdout,
)
from aim_cli.cli.eval import TrustTaskCodeOption, task_folder_inputs
from aim_cli.cli.layout_options import Layout, LayoutOption, SplitOption
from aim_cli.errors import AimError, FailedInput
from aim_cli.io import check_output_file

if TYPE_CHECKING:  # torch-backed modules load when the command runs, so `aim --help` stays fast
    import torch

    from aim_cli.api.commands import Calibration, CalibrationRequest

T = TypeVar("T")


class Task(str, enum.Enum):
    """The kinds of model aim calibrates."""

    classify = "classify"
    segment = "segment"
    generate = "generate"
    lm_eval = "lm-eval"


@app.command()
def calibrate(
    target_acc: Annotated[
        float | None, typer.Option("--target-acc", help="Target accuracy (pixel accuracy for segment).")
    ] = None,
    target_miou: Annotated[float | None, typer.Option("--target-miou", help="Target mIoU (segment).")] = None,
    target_recall: Annotated[
        float | None, typer.Option("--target-recall", help="Target recall of the --focus class.")
    ] = None,
    focus: Annotated[
        str | None, typer.Option("--focus", "-f", help="Focus class NAME[:up|down] whose focus sigma to find.")
    ] = None,
    sigma: Annotated[
        float | None, typer.Option("--sigma", "-s", help="Utility sigma held fixed while calibrating focus.")
    ] = None,
    task: Annotated[Task, typer.Option("--task", "-t", help="Kind of model.")] = Task.classify,
    model: ModelOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    data: DataOption = None,
    allow_outside_paths: Annotated[
        bool,
        typer.Option(
            "--allow-outside-paths",
            help="Let --data (or --include-path task files) name files outside its folder (absolute paths, .., "
            "symlinks out).",
        ),
    ] = False,
    layout: LayoutOption = Layout.auto,
    split: SplitOption = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N items of the data.")] = None,
    lm_tasks: Annotated[
        str | None, typer.Option("--tasks", help="lm-eval task or group names, comma-separated (--task lm-eval).")
    ] = None,
    include_path: Annotated[
        Path | None, typer.Option("--include-path", help="Folder of your own lm-eval task YAML (--task lm-eval).")
    ] = None,
    trust_task_code: TrustTaskCodeOption = False,
    draws: Annotated[int, typer.Option("--draws", "-r", min=2, help="Monte Carlo draws for the check.")] = 20,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the Monte Carlo check.")] = 0,
    write_profile_to: Annotated[
        Path | None, typer.Option("--write-profile", help="Write a ready YAML profile.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Profile name (default: the file's stem).")] = None,
    confidence: Annotated[
        float,
        typer.Option(
            "--confidence",
            help="Confidence of the certificate's interval in the --write-profile profile (classify, segment).",
        ),
    ] = 0.95,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw the curve to a PNG (needs aim-cli\\[plot]).")
    ] = None,
    batch_size: BatchOption = 64,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Find the sigma that reaches a target metric, from one pass over labelled data.

    The chosen value goes to stdout; the curve, the check and timing to stderr.
    """
    from aim_cli.api.commands import (
        PLOT_SUFFIXES,
        PROFILE_SUFFIXES,
        REPORT_SUFFIXES,
        calibration_request,
        write_profile,
        write_report,
    )
    from aim_cli.certificates import check_confidence
    from aim_cli.devices import resolve_device

    confidence = check_confidence(confidence)
    request = calibration_request(
        task.value, target_acc, target_miou, target_recall, focus, sigma, draws, seed, batch_size
    )
    for path, suffixes in ((write_profile_to, PROFILE_SUFFIXES), (json_out, REPORT_SUFFIXES), (plot, PLOT_SUFFIXES)):
        if path is not None:
            check_output_file(path, suffixes)
    outputs = [("--write-profile", write_profile_to), ("--json", json_out), ("--plot", plot)]
    if write_profile_to is None and json_out is None:
        require_stdout("calibrated value")  # its only other home is a file
    if trust_task_code and include_path is None:
        raise AimError("--trust-task-code applies to the task files of --include-path (--task lm-eval)")
    guard_outputs(
        outputs,
        [
            ("--data", data),
            ("--labels", labels),
            ("--weights", weights),
            *task_folder_inputs(include_path, trust_task_code, allow_outside_paths),
        ],
        model,
    )
    if plot is not None:
        from aim_cli.api.commands import require_matplotlib

        require_matplotlib()
    if (weights is not None or labels is not None) and task == Task.generate:
        raise AimError("--weights and --labels apply to --task classify and segment")
    if (lm_tasks is not None or include_path is not None) != (task == Task.lm_eval) or (
        task == Task.lm_eval and data is not None
    ):
        raise AimError("--task lm-eval takes --tasks (and --include-path), not --data; the other tasks take --data")
    if model is not None and data is None and task != Task.lm_eval:
        raise AimError(
            "--model needs --data: the default evaluation set belongs to the demo model",
            {
                "classify": "an ImageFolder directory or a .csv/.jsonl manifest of path,label",
                "segment": "a directory with images/ and masks/ sub-folders",
                "generate": "a .jsonl file of {prompt, answer} or {prompt, choices, answer}",
            }[task.value],
        )
    if (layout != Layout.auto or split is not None) and (data is None or task == Task.generate):
        raise AimError("--layout and --split describe --data of --task classify or segment")
    torch_device = resolve_device(device)
    if task == Task.classify:
        calibration, failures = _classify(
            request,
            model,
            weights,
            labels,
            data,
            limit,
            torch_device,
            quiet,
            outputs,
            allow_outside_paths,
            layout.value,
        )
    elif task == Task.segment:
        calibration, failures = _segment(
            request,
            model,
            weights,
            labels,
            data,
            limit,
            torch_device,
            quiet,
            allow_outside_paths,
            layout.value,
            split,
            outputs,
        )
    elif task == Task.lm_eval:
        from aim_cli.cli.eval import lm_eval_calibration

        calibration, failures = lm_eval_calibration(
            request, model, lm_tasks or "", include_path, limit, device, quiet, trust_task_code
        )
    else:
        calibration, failures = _generate(request, model, data, limit, torch_device, quiet)
    with RunOutputs() as run:
        run.success(calibration.items)  # a calibration exists only if some items were scored
        if write_profile_to is not None:
            run.document(lambda: write_profile(calibration, write_profile_to, name, confidence))
        if json_out is not None:
            run.document(lambda: write_report(calibration, json_out))
        if plot is not None:
            from aim_cli.api.commands import plot_calibration

            run.document(lambda: plot_calibration(calibration, plot))
    if not run.publish():
        report_failures(failures, published=False)
        return
    if not quiet:
        render(calibration)
        for path, what in ((write_profile_to, "profile"), (json_out, "report"), (plot, "plot")):
            if path is not None:
                say(f"wrote {what} to {path}")
    with writing_stdout():
        typer.echo(f"{calibration.value:.6g}")
    report_failures(failures)


def _limited(items: list[T], limit: int | None) -> list[T]:
    """The first `limit` items (all when no limit)."""
    return items[:limit] if limit else items


def _classify(
    request: CalibrationRequest,
    model: str | None,
    weights: Path | None,
    labels: Path | None,
    data: Path | None,
    limit: int | None,
    torch_device: torch.device,
    quiet: bool,
    outputs: list[tuple[str, Path | None]],
    allow_outside: bool = False,
    layout: str = "auto",
) -> tuple[Calibration, list[FailedInput]]:
    """Load the classifier and its data, then calibrate."""
    from aim_cli.api.commands import (
        calibrate_classifier,
        demo_classification_set,
        load_model,
        read_classification_data,
    )

    dataset = (
        read_classification_data(data, allow_outside, layout)
        if data is not None
        else demo_classification_set(limit or 1000)
    )
    dataset.items = _limited(dataset.items, limit)
    # A manifest may list images anywhere: none of them may be an output (e.g. --plot).
    guard_outputs(outputs, [("--data image", item.path) for item in dataset.items if item.path is not None])
    classifier = load_model("classify", model, device=torch_device, weights=weights, labels=labels)
    say(f"model: {classifier.name} ({len(classifier.labels)} classes) | data: {dataset.description}", quiet)
    with progress_bar("forward pass", len(dataset.items), quiet) as advance:
        return calibrate_classifier(classifier, dataset, request, advance)


def _segment(
    request: CalibrationRequest,
    model: str | None,
    weights: Path | None,
    labels: Path | None,
    data: Path | None,
    limit: int | None,
    torch_device: torch.device,
    quiet: bool,
    allow_outside: bool = False,
    layout: str = "auto",
    split: str | None = None,
    outputs: list[tuple[str, Path | None]] | None = None,
) -> tuple[Calibration, list[FailedInput]]:
    """Load the segmenter and its data, then calibrate in streaming passes."""
    from aim_cli.api.commands import (
        calibrate_segmenter,
        demo_segmentation_set,
        load_model,
        read_segmentation_data,
    )

    dataset = (
        read_segmentation_data(data, allow_outside, layout, split)
        if data is not None
        else demo_segmentation_set(limit or 50)
    )
    dataset.limit(limit)
    guard_outputs(outputs or [], dataset.files())  # a file the data set reaches (a symlink out) is never an output
    segmenter = load_model("segment", model, device=torch_device, weights=weights, labels=labels)
    dataset.prepare(len(segmenter.labels), segmenter.do_reduce_labels)
    say(f"model: {segmenter.name} ({len(segmenter.labels)} classes) | data: {dataset.description}", quiet)
    with progress_bar("streaming passes", None, quiet) as advance:
        return calibrate_segmenter(segmenter, dataset, request, advance)


def _generate(
    request: CalibrationRequest,
    model: str | None,
    data: Path | None,
    limit: int | None,
    device: torch.device,
    quiet: bool,
) -> tuple[Calibration, list[FailedInput]]:
    """Load the language model and its prompts, then calibrate."""
    from aim_cli.api.commands import calibrate_language_model, demo_text_set, load_model, read_text_data

    dataset = read_text_data(data) if data is not None else demo_text_set(limit or 200)
    dataset.items = _limited(dataset.items, limit)
    lm = load_model("generate", model, device=device)
    say(f"model: {lm.name} | data: {dataset.description}", quiet)
    with progress_bar("scoring" if dataset.multiple_choice else "generating", None, quiet) as advance:
        return calibrate_language_model(lm, dataset, request, advance)


def render(calibration: Calibration) -> None:
    """The curve as a table, then the chosen value, the check and timing, on stderr."""
    from aim_cli.api.commands import display_rows

    target = calibration.target
    parameter = target.parameter.replace("_", " ")
    measured = {round(p.parameter, 12): p for p in calibration.points}
    measured[round(calibration.check.parameter, 12)] = calibration.check
    kind = "predicted" if calibration.analytic else "measured"
    table = Table(title=f"{kind} {target.label} vs {parameter}", show_header=True, header_style="bold")
    table.add_column(parameter, justify="right")
    table.add_column(f"{kind} {target.label}", justify="right")
    table.add_column("Monte Carlo (95% CI)", justify="right")
    keep = [calibration.value, *(p.parameter for p in calibration.points)]
    for index in display_rows(calibration.curve, calibration.clean, calibration.limit, max_rows=12, keep=keep):
        value, predicted = calibration.curve[index]
        point = measured.get(round(value, 12))
        cell = f"{point.mean:.3f} ({point.low:.3f}-{point.high:.3f})" if point is not None and value > 0 else ""
        chosen = value == calibration.value
        style = "bold green" if chosen else None
        table.add_row(f"{value:.4g}" + (" <- chosen" if chosen else ""), f"{predicted:.4f}", cell, style=style)
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
