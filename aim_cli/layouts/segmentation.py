"""Segmentation layouts: find the images and masks of a data set, pair them, and map mask values to class ids."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from aim_cli.errors import InputError
from aim_cli.layouts import ade20k, cityscapes, voc
from aim_cli.layouts.common import Listing, MaskConverter, remap
from aim_cli.layouts.conventions import evidence, mask_problem, unsupported

# Masks read to compare their ids with the model before scoring (spread over the data).
SAMPLE_MASKS = 8
ROOT_HINT = (
    "expected DIR/images + DIR/masks (plain), images/ + annotations/ (ADE20K), leftImg8bit/ + gtFine/ "
    "(Cityscapes) or JPEGImages/ + SegmentationClass/ (Pascal VOC)"
)


def root_layout(root: Path) -> str | None:
    """The layout a data set root unambiguously has, or None."""
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "plain"
    for name, module in (("ade20k", ade20k), ("cityscapes", cityscapes), ("voc", voc)):
        if module.looks_like(root):
            return name
    return "voc" if voc.years(root) else None  # two years: open_root says it is ambiguous


def open_root(root: Path, layout: str, split: str | None, within: Path | None = None) -> Listing | None:
    """The listing of a data set root in a named (or detected) layout; None for the plain layout.

    `within`: the folder a file the listing itself reads (VOC's split list) must lie in (None: anywhere).
    """
    structure = root_layout(root)
    chosen = structure if layout == "auto" else layout
    if chosen is None:
        raise InputError(f"data {root}: no known data set layout", ROOT_HINT)
    if chosen == "plain":
        if structure in (None, "plain"):
            return None
        # --layout plain on a data set as it ships: its pairing of images and masks, its values as they are.
        found = open_root(root, structure, split, within)
        assert found is not None
        found.layout, found.description = "plain", f"{found.description}, mask values read as they are"
        return found
    module = {"ade20k": ade20k, "cityscapes": cityscapes, "voc": voc}.get(chosen)
    if module is None:
        raise InputError(f"--layout {chosen} is for classification data", f"segmentation data: {ROOT_HINT}")
    if module is voc:
        root = voc.year_root(root)
        found = voc.listing(root, split, within)
    else:
        found = module.listing(root, split)
    if not found.images:
        raise InputError(f"data {root} ({chosen}): the split holds no images", ROOT_HINT)
    if not any(found.masks.values()):
        raise InputError(f"data {root} ({chosen}): no image of the split has its ground-truth mask", ROOT_HINT)
    return found


def folder_layout(folder: Path) -> str:
    """The layout of a masks folder given beside images named on the command line."""
    if ade20k.is_mask_folder(folder):
        return "ade20k"
    if voc.is_mask_folder(folder):
        return "voc"
    if cityscapes.is_mask_folder(folder):
        return "cityscapes"
    return "plain"


def folder_lookup(folder: Path, layout: str) -> Callable[[Path], Path | None] | None:
    """How an image named on the command line finds its mask in `folder`; None: by base name (plain)."""
    if layout != "cityscapes":
        return None
    index = cityscapes.mask_index(folder)
    return lambda image: index.get(cityscapes.image_key(image))


def converter(layout: str, num_classes: int, do_reduce_labels: bool | None) -> MaskConverter | None:
    """How this layout's mask values become this model's class ids (None: they already are)."""
    if layout == "cityscapes":
        return cityscapes.converter()  # type: ignore[return-value]
    if layout == "ade20k" and ade20k.reduces(num_classes, do_reduce_labels):
        table = ade20k.reduce_table()
        return lambda mask, path: remap(mask, table)
    return None


def _values(path: Path) -> set[int]:
    """The distinct values of one mask (none when it cannot be read: it fails alone when its image is scored)."""
    from aim_cli.masks import read_mask

    try:
        return {int(v) for v in np.unique(read_mask(path))}
    except InputError:
        return set()


def changes_ids(layout: str, num_classes: int, do_reduce_labels: bool | None) -> bool:
    """Whether this layout maps mask values to other ids for this model (ADE20K's shift, Cityscapes' label ids)."""
    return layout == "cityscapes" or (layout == "ade20k" and ade20k.reduces(num_classes, do_reduce_labels))


def check_masks(
    masks: Sequence[Path | None], layout: str, num_classes: int, do_reduce_labels: bool | None, detected: bool = True
) -> None:
    """Before scoring: the masks' ids must not follow a convention the layout leaves unmapped, and a
    detected layout that changes ids must be supported by the content, not only by folder names.

    A sample of the masks is read first; the evidence a detected layout needs is then sought in
    every mask it converts, stopping at the first that shows it (docs/benchmarks.md has the rules).
    """
    present = [m for m in masks if m is not None]
    if not present:
        return
    step = max(1, len(present) // SAMPLE_MASKS)
    values: set[int] = set()
    for path in present[::step][:SAMPLE_MASKS]:
        values |= _values(path)
    reduced = layout == "ade20k" and ade20k.reduces(num_classes, do_reduce_labels)
    problem = mask_problem(values, layout, num_classes, reduced, detected)
    if problem is not None:
        raise InputError(*problem)
    if not detected or not changes_ids(layout, num_classes, do_reduce_labels):
        return
    converted = [m for m in present if not (layout == "cityscapes" and m.name.endswith(cityscapes.TRAIN_IDS))]
    seen: set[int] = set()
    for path in converted:
        seen |= _values(path)
        verdict = evidence(seen, layout, num_classes)
        if verdict is not None:
            break
    else:
        verdict = not converted  # labelTrainIds masks alone: nothing is converted
    if not verdict:
        raise InputError(*unsupported(seen, layout, num_classes))
