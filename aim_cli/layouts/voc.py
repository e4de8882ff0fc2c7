"""Pascal VOC: JPEGImages/*.jpg, SegmentationClass/*.png palette masks (255 border) and an ImageSets split list."""

from __future__ import annotations

from pathlib import Path

from aim_cli.errors import InputError
from aim_cli.io import read_text_file
from aim_cli.layouts.common import Listing
from aim_cli.layouts.reads import plain_name
from aim_cli.limits import TEXT_BYTES

SPLIT_HINT = "VOC ships ImageSets/Segmentation/{train,val,trainval}.txt; name one with --split (e.g. --split val)"


def looks_like(root: Path) -> bool:
    """A VOC20xx folder holding JPEGImages/ and SegmentationClass/."""
    return (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir()


def years(root: Path) -> list[Path]:
    """The VOC20xx folders of a VOCdevkit root (each with JPEGImages/ and SegmentationClass/)."""
    return [p for p in sorted(root.glob("VOC*")) if looks_like(p)] if root.is_dir() else []


def year_folder(root: Path) -> Path | None:
    """VOCdevkit/VOC2012 when `root` is the devkit and it holds exactly one year."""
    found = years(root)
    return found[0] if len(found) == 1 else None


def year_root(root: Path) -> Path:
    """The VOC20xx folder to read: `root` itself, or the devkit's only year; two years are ambiguous."""
    if looks_like(root):
        return root
    found = years(root)
    if len(found) > 1:
        names = " and ".join(p.name for p in found)
        raise InputError(
            f"Pascal VOC devkit {root} holds {names}: which year to score is ambiguous",
            f"pass one year's folder as the data set root, e.g. {found[-1]} (with --layout voc)",
        )
    return found[0] if found else root


def is_mask_folder(folder: Path) -> bool:
    """SegmentationClass of a VOC folder."""
    return folder.name == "SegmentationClass" and (folder.parent / "JPEGImages").is_dir()


def listing(root: Path, split: str | None, within: Path | None = None) -> Listing:
    """The images the split list names, each with SegmentationClass/<id>.png.

    Every entry is one image id (no path, no '..', no NUL, no repeat), and the list itself must
    lie inside `within` (None: outside paths allowed): a list must not reach files elsewhere.
    """
    name = plain_name(split or "val", "--split", SPLIT_HINT)
    split_file = root / "ImageSets" / "Segmentation" / f"{name}.txt"
    if not split_file.is_file():
        raise InputError(f"Pascal VOC data {root}: no split list {split_file}", SPLIT_HINT)
    text = read_text_file(split_file, TEXT_BYTES, InputError, "split list", within)
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        plain_name(
            entry, f"Pascal VOC split list {split_file}, line {number}: entry", "one image id a line, e.g. 2007_000032"
        )
        if entry in seen:
            raise InputError(
                f"Pascal VOC split list {split_file} names {entry} twice (lines {seen[entry]} and {number})",
                "list each image once: a repeat would be scored twice",
            )
        seen[entry] = number
        ids.append(entry)
    if not ids:
        raise InputError(f"Pascal VOC split list {split_file} names no images", "one image id per line")
    images = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    masks = {p: _mask(root / "SegmentationClass" / f"{p.stem}.png") for p in images}
    return Listing("voc", images, masks, f"Pascal VOC {name} ({len(images)} images)")


def _mask(path: Path) -> Path | None:
    """The path when the file exists."""
    return path if path.is_file() else None
