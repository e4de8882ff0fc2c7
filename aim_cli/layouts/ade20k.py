"""ADE20K (ADEChallengeData2016): images/<split>/*.jpg with annotations/<split>/*.png, 0 = other."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aim_cli.layouts.common import Listing, is_image, split_dir
from aim_cli.layouts.reads import plain_name
from aim_cli.metrics import IGNORE_INDEX

SPLITS = {"val": "validation", "validation": "validation", "train": "training", "training": "training"}
# A model with one output per annotation value (0 = other, 1..150) reads the ids as they are.
FULL_CLASSES = 151


def looks_like(root: Path) -> bool:
    """A data set root holding images/ and annotations/."""
    return (root / "images").is_dir() and (root / "annotations").is_dir()


def is_mask_folder(folder: Path) -> bool:
    """annotations/<split> of an ADE20K root."""
    return folder.parent.name == "annotations" and looks_like(folder.parent.parent)


def listing(root: Path, split: str | None) -> Listing:
    """Every image of the split, paired with the annotation of the same base name."""
    hint = "ADE20K ships images/validation/*.jpg and annotations/validation/*.png (pass --split training for the other)"
    name = SPLITS.get((split or "val").lower(), plain_name(split or "validation", "--split", hint))
    images_dir = split_dir(root / "images", (name,), f"ADE20K data {root}", hint)
    masks_dir = root / "annotations" / name
    images = sorted(p for p in images_dir.rglob("*") if is_image(p))
    masks = {p: _mask(masks_dir / p.relative_to(images_dir).with_suffix(".png")) for p in images}
    return Listing("ade20k", images, masks, f"ADE20K {name} ({len(images)} images)")


def _mask(path: Path) -> Path | None:
    """The path when the file exists."""
    return path if path.is_file() else None


def reduces(num_classes: int, do_reduce_labels: bool | None) -> bool:
    """Whether annotation k is class k-1 (0 ignored), as the checkpoint's processor does in training.

    A processor that says do_reduce_labels always reduces; otherwise only a model with a class
    for "other" (151 outputs) reads the ids as they are: the 150-class models are trained reduced.
    """
    return bool(do_reduce_labels) or num_classes != FULL_CLASSES


def reduce_table() -> np.ndarray:
    """0 -> ignore, k -> k-1, 255 stays ignored: transformers' reduce_label exactly."""
    table = np.arange(-1, 255, dtype=np.int64)
    table[0] = IGNORE_INDEX
    table[IGNORE_INDEX] = IGNORE_INDEX  # 255 - 1 = 254 is put back to 255 by the processor
    return table
