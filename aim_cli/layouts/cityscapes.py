"""Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png with gtFine/<split>/<city>/*_gtFine_labelIds.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aim_cli.layouts.common import Listing, remap, require, split_dir
from aim_cli.layouts.reads import plain_name
from aim_cli.metrics import IGNORE_INDEX

IMAGE_SUFFIX = "_leftImg8bit"
# labelTrainIds (made by cityscapesscripts' createTrainIdLabelImgs) already hold train ids: preferred.
MASK_SUFFIXES = ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png")
TRAIN_IDS = "_gtFine_labelTrainIds.png"
TRAIN_CLASSES = 19


def looks_like(root: Path) -> bool:
    """A data set root holding leftImg8bit/ and gtFine/."""
    return (root / "leftImg8bit").is_dir() and (root / "gtFine").is_dir()


def is_mask_folder(folder: Path) -> bool:
    """A folder (gtFine, gtFine/<split> or one city) holding gtFine label-id masks."""
    return any(True for suffix in MASK_SUFFIXES for _ in _first(folder.rglob(f"*{suffix}")))


def _first(paths: object) -> list[Path]:
    """At most the first path of an iterator (detection must not walk the whole tree)."""
    for path in paths:  # type: ignore[attr-defined]
        return [path]
    return []


def frame_key(path: Path, suffix: str) -> tuple[str, str] | None:
    """(city, frame) of a Cityscapes file name with the given suffix, e.g. ('aachen', 'aachen_000000_000019')."""
    stem = path.name
    if not stem.endswith(suffix):
        return None
    return path.parent.name, stem[: -len(suffix)]


def mask_index(folder: Path) -> dict[tuple[str, str], Path]:
    """Every gtFine mask under `folder` by (city, frame); labelTrainIds wins over labelIds."""
    index: dict[tuple[str, str], Path] = {}
    for suffix in reversed(MASK_SUFFIXES):  # the preferred kind is written last
        for path in sorted(folder.rglob(f"*{suffix}")):
            key = frame_key(path, suffix)
            if key is not None:
                index[key] = path
    return index


def image_key(path: Path) -> tuple[str, str]:
    """(city, frame) of a leftImg8bit image (any image suffix)."""
    stem = path.stem
    return path.parent.name, stem[: -len(IMAGE_SUFFIX)] if stem.endswith(IMAGE_SUFFIX) else stem


def listing(root: Path, split: str | None) -> Listing:
    """Every leftImg8bit image of the split, paired with its gtFine mask by city and frame."""
    hint = "Cityscapes ships leftImg8bit/val/<city>/*_leftImg8bit.png beside gtFine/val/<city>/ (see --split)"
    name = plain_name(split or "val", "--split", hint)
    images_dir = split_dir(root / "leftImg8bit", (name,), f"Cityscapes data {root}", hint)
    images = sorted(images_dir.rglob(f"*{IMAGE_SUFFIX}.png"))
    index = mask_index(root / "gtFine" / name) if (root / "gtFine" / name).is_dir() else {}
    masks = {p: index.get(image_key(p)) for p in images}
    return Listing("cityscapes", images, masks, f"Cityscapes {name} ({len(images)} images)")


def finder(folder: Path) -> dict[tuple[str, str], Path]:
    """The mask index of a gtFine folder given beside images named on the command line."""
    return mask_index(folder)


def train_id_table() -> np.ndarray:
    """The 34 label ids -> 19 train ids (others ignored), from cityscapesscripts' official table."""
    require("cityscapesscripts.helpers.labels", "cityscapes", "the official label-id table")
    from cityscapesscripts.helpers.labels import labels

    table = np.arange(256, dtype=np.int64)  # values no label has stay, so they are reported, not hidden
    for label in labels:
        if 0 <= label.id < 256:
            table[label.id] = label.trainId if 0 <= label.trainId < IGNORE_INDEX else IGNORE_INDEX
    return table


def converter() -> object:
    """Label-id masks mapped to train ids; labelTrainIds masks read as they are."""
    table = train_id_table()

    def convert(mask: np.ndarray, path: Path) -> np.ndarray:
        return mask if path.name.endswith(TRAIN_IDS) else remap(mask, table)

    return convert
