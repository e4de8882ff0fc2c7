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
    RunOutputs,
    WeightsOption,
    app,
    guard_outputs,
    progress_bar,
    report_failures,
    say,
)
from aim_cli.cli.layout_options import Layout, LayoutOption, SplitOption
from aim_cli.errors import AimError
from aim_cli.io import check_output_file

REPORT_SUFFIXES = (".html", ".htm")


class ReportTask(str, enum.Enum):
    """The kinds of model a report covers."""

    classify = "classify"
    segment = "segment"
    generate = "generate"


@app.command()
def report(
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML page to write (.html).")],
    task: Annotated[ReportTask, typer.Option("--task", "-t", help="Kind of model.")] = ReportTask.classify,
    tiers: Annotated[Path, typer.Option("--tiers", help="Folder of tier profiles (*.yaml), certified or not.")] = Path(
        "profiles"
    ),
    model: ModelOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    data: DataOption = None,
    allow_outside_paths: Annotated[
        bool,
        typer.Option(
            "--allow-outside-paths",
            help="Let --data name images outside its folder (absolute paths, .., symlinks out).",
        ),
    ] = False,
    layout: LayoutOption = Layout.auto,
    split: SplitOption = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N items of the data.")] = None,
    examples: Annotated[
        int, typer.Option("--examples", min=1, max=32, help="Inputs shown side by side under every tier.")
    ] = 6,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Seed of the examples' noise for tiers without their own.")
    ] = 0,
    batch_size: BatchOption = 64,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Write one HTML page (no network needed to view it): the metric-vs-sigma curve with every tier and
    its certified interval, per-class effects of focus tiers, and the same examples under every tier.
    """
    from aim_cli.api.commands import load_tiers
    from aim_cli.devices import resolve_device

    check_output_file(output, REPORT_SUFFIXES)
    guard_outputs(
        [("--output", output)],
        [("--data", data), ("--labels", labels), ("--weights", weights), ("--tiers", tiers)],
        model,
    )
    if model is not None and data is None:
        raise AimError(
            "--model needs --data: the default evaluation set belongs to the demo model",
            {
                "classify": "an ImageFolder directory or a .csv/.jsonl manifest of path,label",
                "segment": "a directory with images/ and masks/ sub-folders",
                "generate": "a .jsonl file of {prompt, choices, answer}",
            }[task.value],
        )
    if (layout != Layout.auto or split is not None) and data is None:
        raise AimError("--layout and --split describe --data")
    tier_list = load_tiers(tiers)
    torch_device = resolve_device(device)
    if task == ReportTask.classify:
        from aim_cli.api.commands import (
            collect_classification,
            demo_classification_set,
            load_model,
            read_classification_data,
        )

        dataset = (
            read_classification_data(data, allow_outside_paths, layout.value)
            if data is not None
            else demo_classification_set(limit or 1000)
        )
        if limit:
            dataset.items = dataset.items[:limit]
        guard_outputs([("--output", output)], [("--data image", i.path) for i in dataset.items if i.path is not None])
        classifier = load_model("classify", model, device=torch_device, weights=weights, labels=labels)
        say(f"model: {classifier.name} ({len(classifier.labels)} classes) | data: {dataset.description}", quiet)
        with progress_bar("forward pass", len(dataset.items), quiet) as advance:
            collected, failures = collect_classification(
                classifier, dataset, tier_list, examples, seed, batch_size, advance
            )
    elif task == ReportTask.generate:
        from aim_cli.api.commands import collect_text, demo_text_set, load_model, read_text_data

        if layout != Layout.auto or split is not None or weights is not None or labels is not None:
            raise AimError("--layout, --split, --weights and --labels apply to --task classify and segment")
        text_set = read_text_data(data) if data is not None else demo_text_set(limit or 200)
        if limit:
            text_set.items = text_set.items[:limit]
        lm = load_model("generate", model, device=torch_device)
        say(f"model: {lm.name} | data: {text_set.description}", quiet)
        with progress_bar("forward pass", len(text_set.items), quiet) as advance:
            collected, failures = collect_text(lm, text_set, tier_list, examples, seed, batch_size, advance)
    else:
        from aim_cli.api.commands import collect_segmentation, demo_segmentation_set, load_model, read_segmentation_data

        segment_set = (
            read_segmentation_data(data, allow_outside_paths, layout.value, split)
            if data is not None
            else demo_segmentation_set(limit or 50)
        )
        segment_set.limit(limit)
        segmenter = load_model("segment", model, device=torch_device, weights=weights, labels=labels)
        segment_set.prepare(len(segmenter.labels), segmenter.do_reduce_labels)
        say(f"model: {segmenter.name} ({len(segmenter.labels)} classes) | data: {segment_set.description}", quiet)
        with progress_bar("forward pass", len(segment_set), quiet) as advance:
            collected, failures = collect_segmentation(
                segmenter, segment_set, tier_list, min(examples, 6), seed, advance
            )
    from aim_cli import __version__
    from aim_cli.api.commands import write_html_report

    with RunOutputs() as run:
        run.success(collected.items)
        run.document(lambda: write_html_report(collected, output, __version__))
    run.publish()
    say(
        f"wrote report to {output} ({len(tier_list)} tier(s), {collected.items} items, "
        f"{collected.seconds.get('total', 0.0):.1f} s of model and analysis)",
        quiet,
    )
    report_failures(failures)
