"""Segmentation layouts: find the images and masks of a data set, pair them, and map mask values to class ids."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from aim_cli.errors import InputError
from aim_cli.layouts import ade20k, cityscapes, voc
from aim_cli.layouts.common import Listing, MaskConverter, remap
from aim_cli.layouts.conventions import mask_problem

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
    return "voc" if voc.year_folder(root) is not None else None


def open_root(root: Path, layout: str, split: str | None) -> Listing | None:
    """The listing of a data set root in a named (or detected) layout; None for the plain layout."""
    chosen = root_layout(root) if layout == "auto" else layout
    if chosen is None:
        raise InputError(f"data {root}: no known data set layout", ROOT_HINT)
    if chosen == "plain":
        return None
    if chosen == "voc" and not voc.looks_like(root) and voc.year_folder(root) is not None:
        root = voc.year_folder(root)  # type: ignore[assignment]
    module = {"ade20k": ade20k, "cityscapes": cityscapes, "voc": voc}.get(chosen)
    if module is None:
        raise InputError(f"--layout {chosen} is for classification data", f"segmentation data: {ROOT_HINT}")
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


def check_masks(
    masks: Sequence[Path | None], layout: str, num_classes: int, do_reduce_labels: bool | None, detected: bool = True
) -> None:
    """Before scoring: the ids a sample of the masks holds must not follow a convention the layout leaves unmapped."""
    from aim_cli.masks import read_mask

    present = [m for m in masks if m is not None]
    if not present:
        return
    step = max(1, len(present) // SAMPLE_MASKS)
    values: set[int] = set()
    for path in present[::step][:SAMPLE_MASKS]:
        try:
            values.update(int(v) for v in np.unique(read_mask(path)))
        except InputError:
            continue  # an unreadable mask fails alone when its image is scored
    reduced = layout == "ade20k" and ade20k.reduces(num_classes, do_reduce_labels)
    problem = mask_problem(values, layout, num_classes, reduced, detected)
    if problem is not None:
        raise InputError(*problem)
