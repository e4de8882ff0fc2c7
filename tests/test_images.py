"""Images decode to the pixels a viewer shows; devices and pipes are refused, not read forever."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from PIL import Image

from aim_cli import demo
from aim_cli.cli import show_warning
from aim_cli.errors import InputError
from aim_cli.images import load_image, loaded_from_image, pixel_key
from aim_cli.masks import read_mask
from tests.conftest import assert_user_error, run_aim

CIRCLE = demo.samples_dir("classify") / "circle_0.png"


def _gradient16() -> np.ndarray:
    """A 16-bit horizontal ramp over the whole range."""
    return np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (32, 1))


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(_gradient16()).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(load_image(path).image)
    assert pixels.shape == (32, 64, 3)
    expected = _gradient16() >> 8
    assert np.array_equal(pixels[..., 0], expected.astype(np.uint8))
    assert len(np.unique(pixels)) > 60  # a ramp, not solid white


def test_float_and_32_bit_greys_keep_their_range(tmp_path):
    ramp = np.tile(np.linspace(0, 1, 16, dtype=np.float32), (4, 1))
    image = loaded_from_image("f", Image.fromarray(ramp, mode="F")).image
    assert np.asarray(image)[..., 0].max() == 255 and np.asarray(image)[..., 0].min() == 0
    wide = Image.fromarray((ramp * 65535).astype(np.int32), mode="I")
    assert np.asarray(loaded_from_image("i", wide).image)[..., 0].max() == 255


def test_exif_orientation_is_applied(tmp_path):
    stored = Image.new("RGB", (40, 20), (255, 0, 0))
    stored.paste((0, 0, 255), (0, 0, 10, 20))  # blue on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif.tobytes(), quality=95)
    shown = load_image(path).image
    assert shown.size == (20, 40)  # displayed upright: portrait
    top = np.asarray(shown)[:5].reshape(-1, 3).mean(axis=0)
    assert top[2] > 200 and top[0] < 60  # the blue edge is now at the top


def test_alpha_is_dropped_like_hf_processors(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    assert np.array_equal(np.asarray(loaded_from_image("a", rgba).image), np.asarray(rgba.convert("RGB")))


def test_pixel_key_ignores_container_and_metadata(tmp_path):
    image = Image.open(CIRCLE).convert("RGB")
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "a different file, the same pixels")
    variants = {
        "plain.png": {},
        "meta.png": {"pnginfo": info},
        "z9.png": {"compress_level": 9},
        "same.bmp": {},
        "same.tiff": {},
        "lossless.webp": {"lossless": True},
    }
    keys = set()
    for name, options in variants.items():
        image.save(tmp_path / name, **options)
        keys.add(load_image(tmp_path / name).key)
    assert len(keys) == 1
    assert pixel_key(image) != pixel_key(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_devices_and_pipes_are_refused_without_reading(tmp_path, special):
    path = tmp_path / "pipe.png" if special == "fifo" else special
    if special == "fifo":
        os.mkfifo(path)
    with pytest.raises(InputError, match="not a regular file"):
        load_image(path)
    with pytest.raises(InputError, match="not a regular file"):
        read_mask(path)


def test_cli_batch_with_a_device_processes_the_rest(tmp_path):
    output = tmp_path / "out.jsonl"
    result = run_aim("classify", "/dev/zero", str(CIRCLE), "-o", str(output))
    assert_user_error(result, 1, "/dev/zero", "not a regular file")
    assert len(output.read_text().splitlines()) == 1


def test_huge_image_warning_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 - 1)  # 64x64 now counts as "huge"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image(path)
    bomb = [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert len(bomb) == 1 and str(path) in str(bomb[0].message)
    show_warning(bomb[0].message, bomb[0].category, "file.py", 1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aim: warning:") and "big.png" in err


def test_sixteen_bit_masks_keep_class_ids_above_255(tmp_path):
    ids = np.array([[0, 300], [1000, 3000]], dtype=np.uint16)
    path = tmp_path / "mask.png"
    Image.fromarray(ids).save(path)
    assert np.array_equal(read_mask(path), ids.astype(np.int64))


def test_corrupt_bytes_are_one_input_error(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(InputError, match="cannot decode image"):
        load_image(path)
