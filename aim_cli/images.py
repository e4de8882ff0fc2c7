"""Decoding image files into the RGB pixels a model sees, with a key for keyed noise."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from aim_cli.errors import InputError
from aim_cli.io import read_regular_file
from aim_cli.limits import IMAGE_BYTES

# Larger files are refused rather than read (AIM_MAX_IMAGE_BYTES raises the bound).
MAX_IMAGE_BYTES = IMAGE_BYTES
# Modes whose samples exceed 8 bits: convert("RGB") would clip them (16-bit grey turns white).
_DEEP_GREY_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
# The EXIF tag that says how to rotate the stored pixels for display.
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image and the digest of its pixels (its content key for keyed noise)."""

    path: Path
    image: Image.Image
    key: bytes


def pixel_key(image: Image.Image) -> bytes:
    """The keyed-noise key of an image, for the CLI and the API alike: digest of its decoded RGB pixels and size.

    Any image is first decoded as the CLI decodes files (to_rgb: EXIF orientation, deep grey
    scaled, alpha dropped), so equal pixels as the model sees them give equal keys.
    """
    rgb = image if _is_decoded(image) else to_rgb(image)
    digest = hashlib.sha256(f"{rgb.mode}:{rgb.width}x{rgb.height}:".encode())
    digest.update(rgb.tobytes())
    return digest.digest()


def _is_decoded(image: Image.Image) -> bool:
    """True for RGB pixels with no EXIF rotation left to apply (what to_rgb returns): no copy needed."""
    return image.mode == "RGB" and image.getexif().get(_ORIENTATION, 1) == 1


def _deep_to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float greyscale scaled to 8 bits as viewers show them (not clipped)."""
    values = np.asarray(image)
    grey: np.ndarray
    if image.mode == "F":
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0  # float images are 0..1 or 0..255
        grey = np.clip(finite * scale, 0, 255).round()
    else:
        wide = values.astype(np.int64)
        if image.mode.startswith("I;16") or 255 < wide.max(initial=0) <= 65535:
            grey = np.clip(wide, 0, 65535) >> 8  # 16-bit samples: keep the high byte
        elif wide.max(initial=0) > 65535:
            grey = np.clip(wide, 0, None) * 255 // wide.max()
        else:
            grey = np.clip(wide, 0, 255)
    return Image.fromarray(grey.astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """The RGB pixels a viewer displays: EXIF orientation applied, deep greyscale scaled, alpha dropped.

    Alpha is dropped (not composited) as Hugging Face image processors and torchvision's RGB
    read mode do, so aim sees what the pipelines users compare against see.
    """
    image = ImageOps.exif_transpose(image) or image
    if image.mode in _DEEP_GREY_MODES:
        image = _deep_to_8bit(image)
    return image.convert("RGB")


def decode_image(data: bytes, path: Path, formats: tuple[str, ...] | None = None) -> Image.Image:
    """Decode image bytes to RGB, or raise InputError naming the file; `formats` limits Pillow's decoders."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as image:
                image.load()
                rgb = to_rgb(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = "not an image or corrupt" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise InputError(f"{path}: cannot decode image ({reason})") from None
    for warning in caught:  # re-issued once, naming the file (the CLI prints warnings as one line)
        if issubclass(warning.category, Image.DecompressionBombWarning):
            warnings.warn(
                f"{path}: very large image ({rgb.width}x{rgb.height} pixels); decoding it needs a lot of memory",
                Image.DecompressionBombWarning,
                stacklevel=2,
            )
    return rgb


def load_image(path: Path, within: Path | None = None) -> LoadedImage:
    """Read and decode an image file as RGB, or raise InputError with the reason.

    With `within`, an image whose real path lies outside that folder is refused (a data set's).
    """
    data = read_regular_file(path, MAX_IMAGE_BYTES, InputError, "image", within)
    image = decode_image(data, path)
    return LoadedImage(path, image, pixel_key(image))


def loaded_from_image(name: str | Path, image: Image.Image) -> LoadedImage:
    """Wrap an in-memory image (demo data, API callers) like a decoded file."""
    rgb = to_rgb(image)
    return LoadedImage(Path(name), rgb, pixel_key(rgb))
