"""Class-id masks: colour palettes, palette PNGs, overlays, and reading ground-truth masks."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from aim_cli.errors import InputError
from aim_cli.io import read_regular_file, save_png_atomic
from aim_cli.labels import normalize
from aim_cli.limits import IMAGE_BYTES

# Cityscapes colours, so familiar classes look the way people expect in any model.
KNOWN_COLOURS: dict[str, tuple[int, int, int]] = {
    "road": (128, 64, 128),
    "sidewalk": (244, 35, 232),
    "building": (70, 70, 70),
    "wall": (102, 102, 156),
    "fence": (190, 153, 153),
    "pole": (153, 153, 153),
    "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0),
    "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152),
    "sky": (70, 130, 180),
    "person": (220, 20, 60),
    "rider": (255, 0, 0),
    "car": (0, 0, 142),
    "truck": (0, 0, 70),
    "bus": (0, 60, 100),
    "train": (0, 80, 100),
    "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}
for _name in ("background", "unlabeled", "unlabelled", "void", "ignore"):
    KNOWN_COLOURS[_name] = (0, 0, 0)
KNOWN_COLOURS.update(
    {
        "tree": KNOWN_COLOURS["vegetation"],
        "people": KNOWN_COLOURS["person"],
        "pedestrian": KNOWN_COLOURS["person"],
        "grass": KNOWN_COLOURS["terrain"],
    }
)

# A palette PNG holds 256 entries, so masks of bigger label sets are stored as 16-bit grey.
PALETTE_SIZE = 256


def _key(name: str) -> str:
    """Normalised name with folded separators trimmed ('__background__' -> 'background')."""
    return normalize(name).strip()


def class_colour(label: str) -> tuple[int, int, int]:
    """The colour of a class: Cityscapes' for known names, else derived from the name's hash."""
    # ADE20K-style labels list synonyms ('person;individual;someone'): any of them may be known.
    synonyms = [_key(part) for part in str(label).replace(",", ";").split(";") if part.strip()]
    for name in synonyms:
        if name in KNOWN_COLOURS:
            return KNOWN_COLOURS[name]
    # sha256 rather than hash(): Python salts str hashes per process, colours must not change.
    digest = hashlib.sha256(_key(str(label)).encode("utf-8")).digest()
    return digest[0], digest[1], digest[2]


def colour_table(labels: Sequence[str]) -> np.ndarray:
    """An (classes, 3) uint8 array of class colours."""
    return np.array([class_colour(label) for label in labels], dtype=np.uint8).reshape(-1, 3)


def mask_image(prediction: np.ndarray, colours: np.ndarray) -> Image.Image:
    """A mode-"P" image whose pixel values are class ids, with the class colours embedded."""
    if len(colours) > PALETTE_SIZE:
        return Image.fromarray(prediction.astype(np.uint16))
    image = Image.fromarray(prediction.astype(np.uint8)).convert("P")
    palette = np.zeros((PALETTE_SIZE, 3), dtype=np.uint8)
    palette[: len(colours)] = colours
    image.putpalette(palette.reshape(-1).tolist())
    return image


def overlay_image(image: Image.Image, prediction: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The input with the class colours blended over it."""
    coloured = Image.fromarray(colours[prediction.astype(np.int64)])
    return Image.blend(image.convert("RGB"), coloured, alpha)


def save_mask(prediction: np.ndarray, colours: np.ndarray, path: Path) -> None:
    """Write a class-id mask as a palette PNG, atomically."""
    save_png_atomic(mask_image(prediction, colours), path)


def save_overlay(image: Image.Image, prediction: np.ndarray, colours: np.ndarray, path: Path) -> None:
    """Write a colour overlay of a mask on its image, atomically."""
    save_png_atomic(overlay_image(image, prediction, colours), path)


def read_mask(path: Path) -> np.ndarray:
    """Read a single-channel class-id mask (palette, grey or 16-bit) as an (H, W) int64 array."""
    data = read_regular_file(path, IMAGE_BYTES, InputError, "mask")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            if mode in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
                return np.asarray(image).astype(np.int64)
            if mode in ("RGB", "RGBA"):
                rgb = np.asarray(image)[..., :3]
                # Grey saved as RGB is still class ids; real colour masks need a palette mapping.
                if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
                    return rgb[..., 0].astype(np.int64)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not an image or corrupt" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise InputError(f"mask {path} cannot be read ({reason})") from None
    raise InputError(
        f"mask {path} is a colour ({mode}) image, not single-channel class ids",
        "save masks as 8-bit grey or palette PNGs whose pixel values are class ids",
    )
