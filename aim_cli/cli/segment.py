"""`aim segment`: semantic segmentation with utility and focus modulation."""

from __future__ import annotations

import os
from collections import Counter
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
    app,
    guard_outputs,
    image_paths,
    out_console,
    printable,
    profile_from_options,
    progress_bar,
    report_failures,
    resolve_inputs,
    say,
    writing_stdout,
)
from aim_cli.cli.engine import Engine, EngineOption, WorkersOption, check_engine, ray_items
from aim_cli.cli.layout_options import AllowOutsideOption, Layout, LayoutOption, SplitOption
from aim_cli.directions import direction_name
from aim_cli.errors import AimError, FailedInput, InputError
from aim_cli.io import check_output_dir, check_output_paths, name_bytes, name_max, read_records, write_json_atomic

if TYPE_CHECKING:  # torch-backed modules load when the command runs, so `aim --help` stays fast
    import numpy as np

    from aim_cli.api import ModulationPlan
    from aim_cli.api.commands import SegmentationEvaluation, SegmentedImage, Segmenter

DEFAULT_OUTPUT_DIR = Path("aim-segment-output")
SUMMARY_FILE = "summary.jsonl"
EVALUATION_FILE = "evaluation.json"


OVERLAY_DIR = "overlays"


def output_names(paths: list[Path]) -> dict[Path, Path]:
    """Each image's mask path relative to the output dir: the input tree mirrored, '.png' suffix.

    Images are placed relative to the deepest folder holding them all, so same-named files in
    different folders stay apart; two images of one folder that differ only in their suffix
    (a.jpg, a.png) keep it in the name (a.jpg.png, a.png.png).
    """
    resolved = [path.resolve() for path in paths]
    root = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path()
    relative = [p.relative_to(root) for p in resolved]
    stems = Counter(rel.with_suffix("") for rel in relative)
    names: dict[Path, Path] = {}
    for path, rel in zip(paths, relative):
        name = rel.name if stems[rel.with_suffix("")] > 1 else rel.stem
        names[path] = rel.parent / f"{name}.png"
    return names


def _unwritable_names(
    names: dict[Path, Path], overlays: dict[Path, Path] | None, output_dir: Path
) -> dict[Path, FailedInput]:
    """Images whose mask (or overlay) name is over the file system's name limit: each fails alone.

    A shortened name would break the image -> mask mapping that --masks, --resume and users
    rely on (same base name), so the image is reported, to be renamed, and the batch goes on.
    """
    limit = name_max(output_dir)
    failed: dict[Path, FailedInput] = {}
    for path, name in names.items():
        longest = max(name_bytes(part) for part in name.parts)
        if overlays is not None:
            longest = max(longest, *(name_bytes(part) for part in overlays[path].parts))
        if longest > limit:
            failed[path] = FailedInput(
                path,
                f"{path}: its output name would be {longest} bytes, over the file system's {limit}-byte limit"
                " (rename the image)",
            )
    return failed


def _fractions(counts: np.ndarray, labels: list[str], keep: np.ndarray) -> dict[str, float]:
    """Class pixel fractions of one mask, for the classes in `keep`."""
    total = max(1, int(counts.sum()))
    return {labels[k]: round(int(counts[k]) / total, 6) for k in keep.nonzero()[0]}


def _record(
    item: SegmentedImage, names: dict[str, str], labels: list[str], compare: bool, settings: dict[str, object]
) -> dict[str, object]:
    """One summary.jsonl line: files written, class fractions, accuracy, settings."""
    height, width = item.prediction.shape
    present = item.counts > 0
    if compare and item.clean_counts is not None:
        present = present | (item.clean_counts > 0)
    record: dict[str, object] = {"image": str(item.path), **names, "width": width, "height": height}
    record["fractions"] = _fractions(item.counts, labels, present)
    if compare and item.clean_counts is not None:
        record["clean_fractions"] = _fractions(item.clean_counts, labels, present)
    if item.pixel_accuracy is not None:
        record["pixel_accuracy"] = round(item.pixel_accuracy, 6)
        if item.clean_pixel_accuracy is not None:
            record["clean_pixel_accuracy"] = round(item.clean_pixel_accuracy, 6)
    record.update(settings)
    return record


@app.command()
def segment(
    inputs: Annotated[
        list[str] | None, typer.Argument(help="Image files, directories or globs. Default: demo samples.")
    ] = None,
    model: ModelOption = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Weights for torchvision:ARCH (.safetensors or .pth).")
    ] = None,
    labels: LabelsOption = None,
    profile: ProfileOption = None,
    sigma: SigmaOption = None,
    focus: FocusOption = None,
    focus_sigma: FocusSigmaOption = None,
    seed: SeedOption = None,
    output_dir: Annotated[
        Path,
        typer.Option(
            "--output-dir", "-o", help="Where masks, overlays and summary.jsonl go (created if its parent exists)."
        ),
    ] = DEFAULT_OUTPUT_DIR,
    overlay: Annotated[
        bool, typer.Option("--overlay", help="Also write overlays/NAME.png: mask colours blended over the image.")
    ] = False,
    masks: Annotated[
        Path | None,
        typer.Option(
            "--masks",
            help="Ground-truth class-id masks (same base names as the images): report accuracy, mIoU, IoU and recall.",
        ),
    ] = None,
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
    from aim_cli import api
    from aim_cli.api.commands import (
        SegmentationEvaluation,
        ground_truth,
        load_model,
        read_inputs,
        segment_inputs,
    )
    from aim_cli.devices import resolve_device
    from aim_cli.masks import colour_table, save_mask, save_overlay  # numpy and PIL: not for `aim --help`

    settings_profile = profile_from_options(profile, sigma, focus, focus_sigma, seed)
    check_output_dir(output_dir, create=False)
    check_engine(engine, workers)
    if engine is Engine.ray and masks is not None:
        raise AimError("--engine ray does not evaluate against --masks", "evaluate with --engine local")
    if resume and masks is not None:
        raise AimError("--resume cannot be combined with --masks", "the evaluation needs every image in one run")
    if masks is not None and not masks.is_dir():
        problem = "is not a directory" if masks.exists() else "does not exist"
        raise InputError(f"masks directory {masks} {problem}", "pass the folder of ground-truth masks")
    if masks is None and (layout != Layout.auto or split is not None or allow_outside_paths):
        raise AimError("--layout, --split and --allow-outside-paths describe the --masks data", "add --masks DIR")
    truth = ground_truth(bool(inputs), masks, layout.value, split, allow_outside_paths)
    paths, failures = (truth.paths, []) if truth.paths else image_paths(resolve_inputs(inputs, model, "segment"))
    reads = truth.resolve(paths) if masks is not None else None  # every file the run reads, before it starts
    if reads is not None:
        failures += [FailedInput(path, why) for path, why in reads.refused.items()]
        paths = [path for path in reads.images if path not in reads.refused]
    names = output_names(paths)
    overlay_names = {path: Path(OVERLAY_DIR) / name for path, name in names.items()}
    too_long = _unwritable_names(names, overlay_names if overlay else None, output_dir)
    failures += too_long.values()
    paths = [path for path in paths if path not in too_long]
    truths = [("ground-truth mask", reads.masks[path]) for path in paths] if reads is not None else []
    planned = [("mask", output_dir / names[path]) for path in paths]
    planned += [("overlay", output_dir / overlay_names[path]) for path in paths] if overlay else []
    planned += [("summary", output_dir / SUMMARY_FILE), ("evaluation", output_dir / EVALUATION_FILE)]
    guard_outputs(
        [("--output-dir", output_dir), *planned],
        [("input", p) for p in paths]
        + truths
        + [("--masks", masks), ("--profile", profile), ("--labels", labels), ("--weights", weights)],
        model,
    )
    check_output_paths(planned, output_dir)  # e.g. a folder named summary.jsonl: found now, not after the work
    # With --engine ray the workers run the model; here it only names the classes (for the plan), on the CPU.
    segmenter = load_model(
        "segment",
        model,
        device=resolve_device(device if engine is Engine.local else "cpu"),
        weights=weights,
        labels=labels,
    )
    plan = api.plan(settings_profile, segmenter.labels)
    convert = truth.prepare(paths, segmenter) if masks is not None else None
    run = RunOutputs()
    if not output_dir.is_dir():
        run.created(output_dir)
    check_output_dir(output_dir)
    done, others = _finished(paths, names, overlay_names if overlay else None, output_dir) if resume else ({}, [])
    if done:
        say(f"resuming: {len(done)} image(s) already have their outputs in {output_dir} and are skipped", quiet)
        paths = [path for path in paths if path not in done]
    say(f"model: {segmenter.name} ({len(segmenter.labels)} classes) | {plan.summary()} | output {output_dir}", quiet)
    settings = {"model": segmenter.name, **plan.describe()}
    colours = colour_table(segmenter.labels)
    num_classes = len(segmenter.labels)
    evaluation = SegmentationEvaluation(num_classes) if masks is not None else None
    import numpy as np

    totals = np.zeros(num_classes, dtype=np.int64)
    clean_totals = np.zeros(num_classes, dtype=np.int64)
    with run:
        writer = run.records(output_dir / SUMMARY_FILE)
        for record in [*others, *done.values()]:  # a resumed summary keeps every record it held
            writer.write(record)
        if evaluation is not None:
            report = output_dir / EVALUATION_FILE
            run.document(lambda: write_json_atomic(_evaluation_report(evaluation, segmenter, plan, masks), report))
        with progress_bar("segmenting", len(paths), quiet) as advance:
            if engine is Engine.ray:
                spec = dict(model=model, weights=weights, labels=labels, device=device, batch_size=batch_size)
                results = ray_items("segment", paths, plan, workers, advance, compare=compare, **spec)
            else:
                items = (
                    read_inputs(paths, truth.masks, truth.mask_of, convert) if masks is not None else read_inputs(paths)
                )
                results = segment_inputs(items, segmenter, plan, batch_size, compare, evaluation, advance)
            for item in results:
                if isinstance(item, FailedInput):
                    failures.append(item)
                    continue
                files = {"mask": names[item.path].as_posix()}
                _make_parent(output_dir / names[item.path])
                save_mask(item.prediction, colours, output_dir / names[item.path])
                if overlay:
                    files["overlay"] = overlay_names[item.path].as_posix()
                    _make_parent(output_dir / overlay_names[item.path])
                    save_overlay(item.image, item.prediction, colours, output_dir / overlay_names[item.path])
                writer.write(_record(item, files, segmenter.labels, compare, settings))
                run.success()
                totals += item.counts
                if item.clean_counts is not None:
                    clean_totals += item.clean_counts
    if not run.publish():
        if not failures:
            say(f"nothing to do: every image already has its outputs in {output_dir}", quiet)
        report_failures(failures, published=False)
        return
    say(f"wrote {run.succeeded} mask(s){' and overlays' if overlay else ''} and {SUMMARY_FILE} to {output_dir}", quiet)
    with writing_stdout():
        has_clean = plan.modulation.has_focus or compare or evaluation is not None
        if plan.modulation.has_focus:
            _print_focus_table(totals, clean_totals, segmenter.labels, plan)
        else:
            _print_share_table(totals, clean_totals if has_clean else None, segmenter.labels)
        if evaluation is not None and evaluation.images:
            _print_evaluation_table(evaluation, segmenter.labels, plan)
    if evaluation is not None and evaluation.images:
        say(f"evaluation written to {output_dir / EVALUATION_FILE}", quiet)
    report_failures(failures)


def _make_parent(path: Path) -> None:
    """Create the sub-folders that mirror the input tree."""
    path.parent.mkdir(parents=True, exist_ok=True)


def _finished(
    paths: list[Path], names: dict[Path, Path], overlays: dict[Path, Path] | None, output_dir: Path
) -> tuple[dict[Path, dict[str, object]], list[dict[str, object]]]:
    """Images whose mask (and overlay) exist and whose summary record survives, with that record;
    and the summary's records of images this run was not given (kept: resuming must lose none)."""
    every = read_records(output_dir / SUMMARY_FILE)
    given = {str(path) for path in paths}
    others = [r for r in every if str(r.get("image")) not in given]
    records = {str(r.get("image")): r for r in every}
    done: dict[Path, dict[str, object]] = {}
    for path in paths:
        record = records.get(str(path))
        files = [names[path]] + ([overlays[path]] if overlays is not None else [])
        if record is not None and all((output_dir / name).is_file() for name in files):
            done[path] = record
    return done, others


def _evaluation_report(
    evaluation: SegmentationEvaluation, segmenter: Segmenter, plan: ModulationPlan, masks: Path | None
) -> dict[str, object]:
    """The evaluation.json document: both models' metrics, settings and confusion matrices."""
    from aim_cli.metrics import summarize

    return {
        "images": evaluation.images,
        "masks": str(masks),
        "model": segmenter.name,
        "labels": list(segmenter.labels),
        "settings": plan.describe(),
        "clean": summarize(evaluation.clean.matrix, segmenter.labels),
        "modulated": summarize(evaluation.modulated.matrix, segmenter.labels),
        "confusion": {
            "rows": "ground truth",
            "columns": "prediction",
            "clean": evaluation.clean.to_list(),
            "modulated": evaluation.modulated.to_list(),
        },
    }


def _share(count: int, total: int) -> str:
    """A pixel share as a percentage."""
    return f"{100.0 * count / max(1, total):.2f}%"


def _change(clean: int, modulated: int, total: int) -> str:
    """Percentage-point change and ratio of a class's pixel share."""
    points = 100.0 * (modulated - clean) / max(1, total)
    ratio = f" (x{modulated / clean:.2f})" if clean else ""
    return f"{points:+.2f} pp{ratio}"


def _print_focus_table(totals: np.ndarray, clean_totals: np.ndarray, labels: list[str], plan: ModulationPlan) -> None:
    """How much each focus target grew or shrank: its pixel share, clean vs modulated."""
    total = int(totals.sum())
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


def _metric(value: float) -> str:
    """A metric for a table cell ('-' when undefined)."""
    return "-" if value != value else f"{value:.3f}"


def _delta(clean: float, modulated: float) -> str:
    """Signed change of a metric."""
    return "" if clean != clean or modulated != modulated else f"{modulated - clean:+.3f}"


def _print_evaluation_table(evaluation: SegmentationEvaluation, labels: list[str], plan: ModulationPlan) -> None:
    """Pixel accuracy, mIoU and per-class IoU / recall of the clean and the modulated model."""
    from aim_cli.metrics import iou, mean_iou, pixel_accuracy, recall

    clean, modulated = evaluation.clean.matrix, evaluation.modulated.matrix
    targets = {t.class_id for t in plan.modulation.targets} if plan.modulation.has_focus else set()
    table = Table(
        title=f"evaluation on {evaluation.images} image(s): clean vs modulated", show_header=True, header_style="bold"
    )
    table.add_column("class", no_wrap=True)
    for column in ("IoU clean", "IoU mod", "Δ", "recall clean", "recall mod", "Δ"):
        table.add_column(column, justify="right")
    iou_c, iou_m, rec_c, rec_m = iou(clean), iou(modulated), recall(clean), recall(modulated)
    support = clean.sum(dim=1) + clean.sum(dim=0) + modulated.sum(dim=0)
    for k, label in enumerate(labels):
        if float(support[k]) == 0:
            continue
        values = [float(v[k]) for v in (iou_c, iou_m, rec_c, rec_m)]
        name = escape(printable(f"{label} *" if k in targets else label))
        table.add_row(
            name,
            _metric(values[0]),
            _metric(values[1]),
            _delta(values[0], values[1]),
            _metric(values[2]),
            _metric(values[3]),
            _delta(values[2], values[3]),
        )
    table.add_section()
    m_c, m_m = mean_iou(clean), mean_iou(modulated)
    a_c, a_m = pixel_accuracy(clean), pixel_accuracy(modulated)
    table.add_row("mIoU", _metric(m_c), _metric(m_m), _delta(m_c, m_m), "", "", "")
    table.add_row("pixel acc.", "", "", "", _metric(a_c), _metric(a_m), _delta(a_c, a_m))
    if targets:
        table.caption = "* focus target"
    out_console.print(table)
