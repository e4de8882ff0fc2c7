"""What a data set run reads: every image and mask a listing names, resolved before the run starts.

The one place `aim segment --masks ROOT` and `aim calibrate --task segment` hold a data set's
files to the rules for files given on the command line: a name taken from inside the data (a
split-list entry, `--split`) is one plain name, never a path; every image and mask must really
lie inside its root (a symlink or entry leading out is refused for that image, unless the user
allows outside paths); and the list of files goes to the output guard, so none is an output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aim_cli.errors import InputError
from aim_cli.io import check_inside


def plain_name(value: str, what: str, hint: str) -> str:
    """`value` when it is one file or folder name (no separator, '.', '..' or NUL), else one line saying so."""
    if not value or "\x00" in value or "/" in value or "\\" in value or value in (".", ".."):
        shown = value.replace("\x00", "\\0")
        raise InputError(f"{what} {shown!r} is not a plain name (a path, '..' or a NUL byte)", hint)
    return value


@dataclass
class Reads:
    """The images of a run, each one's mask, and the images refused because a file of theirs lies outside."""

    images: list[Path]
    masks: dict[Path, Path | None] = field(default_factory=dict)
    refused: dict[Path, str] = field(default_factory=dict)  # image -> one line: which file of it is not read, why

    def files(self) -> list[tuple[str, Path]]:
        """Every file the run reads, named for the output guard."""
        named = [("data image", image) for image in self.images if image not in self.refused]
        return named + [
            ("ground-truth mask", m) for i, m in self.masks.items() if m is not None and i not in self.refused
        ]


def resolve_reads(
    images: Iterable[Path],
    mask_of: Callable[[Path], Path | None],
    within: Path | None,
    images_named: bool = False,
) -> Reads:
    """Each image's mask, and which images read a file (through a symlink, `..` or an absolute path) outside `within`.

    `within` None: the user allowed outside paths. `images_named`: the images were given on the
    command line (named explicitly, so only their masks, found inside the data, are held to `within`).
    """
    reads = Reads(list(dict.fromkeys(images)))
    for image in reads.images:
        mask = mask_of(image)
        reads.masks[image] = mask
        checked = [("mask", mask)] if images_named else [("image", image), ("mask", mask)]
        for what, candidate in checked:
            if candidate is None:
                continue
            problem = _problem(candidate, within, what)
            if problem is not None:
                reads.refused[image] = f"{image}: {problem}"
                break
    return reads


def _problem(path: Path, within: Path | None, what: str) -> str | None:
    """Why the run may not read `path`: a symlink loop, or a real location outside `within`; None when it may."""
    try:
        real = path.resolve()  # pathlib names a loop (os.path.realpath would hand it back unresolved)
    except (RuntimeError, OSError) as exc:
        return f"{what} {path} cannot be resolved ({'a symlink loop' if isinstance(exc, RuntimeError) else exc})"
    if within is None:
        return None
    try:
        check_inside(real, path, within, InputError, what)
    except InputError as exc:
        return str(exc)
    return None
