"""Decoding image files into the RGB pixels a model sees, with a key for keyed noise."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from aim_cli.errors import InputError
from aim_cli.io import read_regular_file

# Larger files are refused rather than read: no sane input image is this big.
MAX_IMAGE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image and the digest of its pixels (its content key for keyed noise)."""

    path: Path
    image: Image.Image
    key: bytes


def pixel_key(image: Image.Image) -> bytes:
    """Digest of decoded pixels and size: equal for any two files the model sees identically."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.digest()


def decode_image(data: bytes, path: Path) -> Image.Image:
    """Decode image bytes to RGB, or raise InputError naming the file."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not an image or corrupt" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise InputError(f"{path}: cannot decode image ({reason})") from None


def load_image(path: Path) -> LoadedImage:
    """Read and decode an image file as RGB, or raise InputError with the reason."""
    data = read_regular_file(path, MAX_IMAGE_BYTES, InputError, "image")
    image = decode_image(data, path)
    return LoadedImage(path, image, pixel_key(image))


def loaded_from_image(name: str | Path, image: Image.Image) -> LoadedImage:
    """Wrap an in-memory image (demo data, API callers) like a decoded file."""
    rgb = image.convert("RGB")
    return LoadedImage(Path(name), rgb, pixel_key(rgb))
