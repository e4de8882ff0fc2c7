"""What `aim segment` / `aim.segment` write: mask names mirroring the input tree, summary records, evaluation.json.

Output planning and resuming of a segmentation run, below the API: the names are fixed (and
checked against the file system's name limit) before any work, and a resumed summary keeps
every record it held.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from aim_cli.errors import FailedInput
from aim_cli.io import name_bytes, name_max, read_records
from aim_cli.metrics import summarize
from aim_cli.tasks.segment import SegmentationEvaluation, SegmentedImage

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


def overlay_names(names: dict[Path, Path]) -> dict[Path, Path]:
    """Each image's overlay path relative to the output dir: its mask name under overlays/."""
    return {path: Path(OVERLAY_DIR) / name for path, name in names.items()}


def unwritable_names(
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


def finished(
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


def _fractions(counts: np.ndarray, labels: list[str], keep: np.ndarray) -> dict[str, float]:
    """Class pixel fractions of one mask, for the classes in `keep`."""
    total = max(1, int(counts.sum()))
    return {labels[k]: round(int(counts[k]) / total, 6) for k in keep.nonzero()[0]}


def summary_record(
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


def evaluation_report(
    evaluation: SegmentationEvaluation, model: str, labels: list[str], settings: dict[str, object], masks: Path | None
) -> dict[str, object]:
    """The evaluation.json document: both models' metrics, settings and confusion matrices."""
    return {
        "images": evaluation.images,
        "masks": str(masks),
        "model": model,
        "labels": list(labels),
        "settings": settings,
        "clean": summarize(evaluation.clean.matrix, labels),
        "modulated": summarize(evaluation.modulated.matrix, labels),
        "confusion": {
            "rows": "ground truth",
            "columns": "prediction",
            "clean": evaluation.clean.to_list(),
            "modulated": evaluation.modulated.to_list(),
        },
    }
