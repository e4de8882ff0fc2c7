"""`aim verify`: does a certified tier still hold on this model and data? Exit 0 holds, 1 does not, 2 error."""

from __future__ import annotations

import sys
import warnings
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
    guard_outputs,
    printable,
    progress_bar,
    report_failures,
    say,
    writing_stdout,
)
from aim_cli.cli.layout_options import Layout, LayoutOption, SplitOption
from aim_cli.errors import EXIT_PARTIAL, AimError, FailedInput
from aim_cli.io import check_output_file

if TYPE_CHECKING:  # torch-backed modules load when the command runs, so `aim --help` stays fast
    import torch

    from aim_cli.api.commands import Verification
    from aim_cli.profile import Profile


@app.command()
def verify(
    profile: Annotated[Path, typer.Argument(help="A certified profile (aim calibrate --write-profile).")],
    model: ModelOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    data: DataOption = None,
    allow_outside_paths: Annotated[
        bool,
        typer.Option("--allow-outside-paths", help="Let --data name images outside its folder."),
    ] = False,
    layout: LayoutOption = Layout.auto,
    split: SplitOption = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N items of the data.")] = None,
    draws: Annotated[
        int, typer.Option("--draws", "-r", min=2, max=1000, help="Monte Carlo draws confirming the exact value.")
    ] = 8,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the Monte Carlo draws.")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the result as JSON.")] = None,
    batch_size: BatchOption = 64,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Re-measure a certified tier on a model and data and say whether its certificate holds.

    Exit 0: the metric lies inside the certified interval; 1: it does not; 2: an error (an
    uncertified or edited profile, bad input). A table goes to stdout, JSON to -o.
    """
    from aim_cli.api.commands import REPORT_SUFFIXES, certified
    from aim_cli.devices import resolve_device
    from aim_cli.profile import Profile

    if output is not None:
        check_output_file(output, REPORT_SUFFIXES)
    guard_outputs([("--output", output)], [("--data", data), ("--labels", labels), ("--weights", weights)], model)
    with warnings.catch_warnings():  # an edited profile is an error here, not a warning
        warnings.simplefilter("ignore")
        loaded = Profile.load(profile)
    certificate = certified(loaded)
    task = certificate.task
    if task == "generate" and (weights is not None or labels is not None or layout != Layout.auto or split):
        raise AimError("--weights, --labels, --layout and --split apply to image tiers, not a text tier")
    if (layout != Layout.auto or split is not None) and data is None:
        raise AimError("--layout and --split describe --data")
    torch_device = resolve_device(device)
    if task == "generate":
        result, failures = _generate(loaded, model, data, limit, torch_device, draws, seed, batch_size, quiet)
    else:
        # The image tasks read the same options; segmentation also takes the split.
        image = (loaded, model, weights, labels, data, limit, torch_device, draws, seed, batch_size, quiet)
        if task == "classify":
            result, failures = _classify(*image, allow_outside_paths, layout.value)
        else:
            result, failures = _segment(*image, allow_outside_paths, layout.value, split)
    if output is not None:
        from aim_cli.io import write_json_atomic

        write_json_atomic(result.to_dict(), output)
    with writing_stdout():
        Console(highlight=False, width=None if sys.stdout.isatty() else 120).print(table(result))
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(printable(warning))}", highlight=False)
    if output is not None:
        say(f"wrote result to {output}", quiet)
    report_failures(failures)
    if not result.holds:
        raise typer.Exit(EXIT_PARTIAL)


def _classify(
    profile: Profile,
    model: str | None,
    weights: Path | None,
    labels: Path | None,
    data: Path | None,
    limit: int | None,
    device: torch.device,
    draws: int,
    seed: int,
    batch_size: int,
    quiet: bool,
    allow_outside: bool,
    layout: str,
) -> tuple[Verification, list[FailedInput]]:
    """Load the classifier and the data as aim calibrate does, then verify."""
    from aim_cli.api.commands import demo_classification_set, load_model, read_classification_data, verify_classifier

    dataset = (
        read_classification_data(data, allow_outside, layout)
        if data is not None
        else demo_classification_set(limit or 1000)
    )
    dataset.items = dataset.items[:limit] if limit else dataset.items
    classifier = load_model("classify", model, device=device, weights=weights, labels=labels)
    say(f"model: {classifier.name} | data: {dataset.description}", quiet)
    with progress_bar("forward pass", len(dataset.items), quiet) as advance:
        return verify_classifier(profile, classifier, dataset, draws, seed, batch_size, advance)


def _segment(
    profile: Profile,
    model: str | None,
    weights: Path | None,
    labels: Path | None,
    data: Path | None,
    limit: int | None,
    device: torch.device,
    draws: int,
    seed: int,
    batch_size: int,
    quiet: bool,
    allow_outside: bool,
    layout: str,
    split: str | None,
) -> tuple[Verification, list[FailedInput]]:
    """Load the segmenter and the data as aim calibrate does, then verify."""
    from aim_cli.api.commands import demo_segmentation_set, load_model, read_segmentation_data, verify_segmenter

    dataset = (
        read_segmentation_data(data, allow_outside, layout, split)
        if data is not None
        else demo_segmentation_set(limit or 50)
    )
    dataset.limit(limit)
    segmenter = load_model("segment", model, device=device, weights=weights, labels=labels)
    dataset.prepare(len(segmenter.labels), segmenter.do_reduce_labels)
    say(f"model: {segmenter.name} | data: {dataset.description}", quiet)
    with progress_bar("passes", None, quiet) as advance:
        return verify_segmenter(profile, segmenter, dataset, draws, seed, batch_size, advance)


def _generate(
    profile: Profile,
    model: str | None,
    data: Path | None,
    limit: int | None,
    device: torch.device,
    draws: int,
    seed: int,
    batch_size: int,
    quiet: bool,
) -> tuple[Verification, list[FailedInput]]:
    """Load the language model and its multiple-choice prompts as aim calibrate does, then verify."""
    from aim_cli.api.commands import demo_text_set, load_model, read_text_data, verify_language_model

    dataset = read_text_data(data) if data is not None else demo_text_set(limit or 200)
    dataset.items = dataset.items[:limit] if limit else dataset.items
    lm = load_model("generate", model, device=device)
    say(f"model: {lm.name} | data: {dataset.description}", quiet)
    with progress_bar("scoring", len(dataset.items), quiet) as advance:
        return verify_language_model(profile, lm, dataset, draws, seed, batch_size, advance)


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
