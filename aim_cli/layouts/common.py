"""What every layout shares: its listing of image/mask pairs, value tables, and the optional extra."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aim_cli.errors import InputError
from aim_cli.io import IMAGE_SUFFIXES
from aim_cli.layouts import EXTRA

# Reads a mask's raw values and its path (a layout may ship several kinds of mask file) into class ids.
MaskConverter = Callable[[np.ndarray, Path], np.ndarray]


@dataclass
class Listing:
    """The images of one split and the ground-truth mask of each (None: the image has none)."""

    layout: str
    images: list[Path]
    masks: dict[Path, Path | None] = field(default_factory=dict)
    description: str = ""

    def mask_of(self, image: Path) -> Path | None:
        """The mask paired with this image."""
        return self.masks.get(image)


def is_image(path: Path) -> bool:
    """A regular, non-hidden file with an image suffix."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def remap(mask: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Mask values looked up in `table`; values beyond it stay as they are (and are reported as unknown)."""
    out = mask.copy()
    inside = (mask >= 0) & (mask < len(table))
    out[inside] = table[mask[inside]]
    return out


def require(module: str, layout: str, why: str) -> None:
    """Fail with one line naming the extra when a layout's source of truth is not installed."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise InputError(
            f"--layout {layout} needs the {module.split('.')[0]} package ({why}), which is not installed",
            f"pip install '{EXTRA}'",
        ) from None


def split_dir(root: Path, names: tuple[str, ...], what: str, hint: str) -> Path:
    """The first existing folder root/<name>, or one line naming what was looked for."""
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise InputError(f"{what}: no {' or '.join(str(root / n) for n in names)}", hint)
