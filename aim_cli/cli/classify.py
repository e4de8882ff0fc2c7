"""`aim classify`: image classification with utility and focus modulation."""

from __future__ import annotations

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
    RunOutputs,
    SeedOption,
    SigmaOption,
    WeightsOption,
    app,
    guard_outputs,
    image_paths,
    out_console,
    printable,
    profile_from_options,
    progress_bar,
    report_failures,
    require_stdout,
    resolve_inputs,
    resumed_records,
    say,
    writing_stdout,
)
from aim_cli.cli.engine import Engine, EngineOption, WorkersOption, check_engine, ray_items
from aim_cli.errors import FailedInput
from aim_cli.io import check_output_file

if TYPE_CHECKING:  # torch-backed modules load when the command runs, so `aim --help` stays fast
    from aim_cli.api.commands import ClassifiedImage, Prediction

OUTPUT_SUFFIXES = (".jsonl", ".csv")


def _record(item: ClassifiedImage, settings: dict[str, object]) -> dict[str, object]:
    """A flat, machine-readable record for one image."""
    best = item.top[0]
    record: dict[str, object] = {
        "path": str(item.path),
        "prediction": best.label,
        "class_id": best.class_id,
        "probability": round(best.probability, 6),
        "topk": [{"label": p.label, "probability": round(p.probability, 6)} for p in item.top],
    }
    if item.clean_top is not None:
        record["clean_prediction"] = item.clean_top[0].label
        record["clean_probability"] = round(item.clean_top[0].probability, 6)
    record.update(settings)
    return record


def _ranked(predictions: list[Prediction]) -> str:
    """'label (0.93), other (0.04)' for a table cell."""
    return escape(printable(", ".join(f"{p.label} ({p.probability:.2f})" for p in predictions)))


@app.command()
def classify(
    inputs: Annotated[
        list[str] | None, typer.Argument(help="Image files, directories or globs. Default: demo samples.")
    ] = None,
    model: ModelOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    profile: ProfileOption = None,
    sigma: SigmaOption = None,
    focus: FocusOption = None,
    focus_sigma: FocusSigmaOption = None,
    seed: SeedOption = None,
    topk: Annotated[int, typer.Option("--topk", "-k", min=1, help="Classes to report per image.")] = 1,
    batch_size: BatchOption = 32,
    device: DeviceOption = "auto",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write .jsonl or .csv instead of a table.")
    ] = None,
    compare: CompareOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
    engine: EngineOption = Engine.local,
    workers: WorkersOption = None,
) -> None:
    """Classify images with a modulated classifier."""
    from aim_cli import api
    from aim_cli.api.commands import classify_images, load_model
    from aim_cli.devices import resolve_device

    settings_profile = profile_from_options(profile, sigma, focus, focus_sigma, seed)
    check_engine(engine, workers)
    if output is not None:
        check_output_file(output, OUTPUT_SUFFIXES)
    else:
        require_stdout("results table")
    paths, failures = image_paths(resolve_inputs(inputs, model, "classify"))
    guard_outputs(
        [("--output", output)],
        [("input", p) for p in paths] + [("--profile", profile), ("--labels", labels), ("--weights", weights)],
        model,
    )
    kept = resumed_records(output, resume, "path", [str(p) for p in paths], lambda note: say(note, quiet))
    recorded = {str(record.get("path")) for record in kept}
    paths = [p for p in paths if str(p) not in recorded]
    # With --engine ray the workers run the model; here it only names the classes (for the plan), on the CPU.
    classifier = load_model(
        "classify",
        model,
        device=resolve_device(device if engine is Engine.local else "cpu"),
        weights=weights,
        labels=labels,
    )
    plan = api.plan(settings_profile, classifier.labels)
    settings = plan.describe()
    say(f"model: {classifier.name} ({len(classifier.labels)} classes) | {plan.summary()}", quiet)
    results: list[ClassifiedImage] = []
    with RunOutputs() as run:
        # Only a resumed file holds the old records too: otherwise Ctrl-C keeps an older -o as it was.
        writer = run.records(output, keep_on_interrupt=bool(kept)) if output else None
        if writer is not None:
            for record in kept:
                writer.write(record)
        with progress_bar("classifying", len(paths), quiet) as advance:
            if engine is Engine.ray:
                spec = dict(model=model, weights=weights, labels=labels, device=device, batch_size=batch_size)
                items = ray_items("classify", paths, plan, workers, advance, topk=topk, compare=compare, **spec)
            else:
                items = classify_images(paths, classifier, plan, batch_size, topk, compare, advance)
            for item in items:
                if isinstance(item, FailedInput):
                    failures.append(item)
                    continue
                if writer:
                    writer.write(_record(item, settings))
                else:
                    results.append(item)
                run.success()
    if not run.publish():
        if not failures:
            say(f"nothing to do: every image is already recorded in {output}", quiet)
        report_failures(failures, published=False)
        return
    if writer:
        say(
            f"wrote {run.succeeded} new and {len(kept)} resumed record(s) to {output}"
            if kept
            else f"wrote {run.succeeded} record(s) to {output}",
            quiet,
        )
    else:
        with writing_stdout():
            _print_table(results, compare)
    report_failures(failures)


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
