"""Pascal VOC: JPEGImages/*.jpg, SegmentationClass/*.png palette masks (255 border) and an ImageSets split list."""

from __future__ import annotations

from pathlib import Path

from aim_cli.errors import InputError
from aim_cli.io import read_text_file
from aim_cli.layouts.common import Listing
from aim_cli.limits import TEXT_BYTES


def looks_like(root: Path) -> bool:
    """A VOC20xx folder holding JPEGImages/ and SegmentationClass/."""
    return (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir()


def year_folder(root: Path) -> Path | None:
    """VOCdevkit/VOC2012 when `root` is the devkit and it holds exactly one year."""
    years = [p for p in sorted(root.glob("VOC*")) if looks_like(p)] if root.is_dir() else []
    return years[0] if len(years) == 1 else None


def is_mask_folder(folder: Path) -> bool:
    """SegmentationClass of a VOC folder."""
    return folder.name == "SegmentationClass" and (folder.parent / "JPEGImages").is_dir()


def listing(root: Path, split: str | None) -> Listing:
    """The images the split list names, each with SegmentationClass/<id>.png."""
    name = split or "val"
    split_file = root / "ImageSets" / "Segmentation" / f"{name}.txt"
    if not split_file.is_file():
        raise InputError(
            f"Pascal VOC data {root}: no split list {split_file}",
            "VOC ships ImageSets/Segmentation/{train,val,trainval}.txt; name one with --split",
        )
    ids = [line.strip() for line in read_text_file(split_file, TEXT_BYTES, InputError, "split list").splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise InputError(f"Pascal VOC split list {split_file} names no images", "one image id per line")
    images = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    masks = {p: _mask(root / "SegmentationClass" / f"{p.stem}.png") for p in images}
    return Listing("voc", images, masks, f"Pascal VOC {name} ({len(images)} images)")


def _mask(path: Path) -> Path | None:
    """The path when the file exists."""
    return path if path.is_file() else None
