"""Keyed noise: a vectorised counter-based stream per input (splitmix64 + Box-Muller)."""

from __future__ import annotations

import hashlib
import hmac
import math
from pathlib import Path

import pytest
import torch

from aim_cli.modulation import KeyedNoise, counter_normal

KEYS = [hashlib.sha256(bytes([i])).digest() for i in range(6)]
MASK64 = (1 << 64) - 1


def _splitmix64(seed: int, index: int) -> int:
    """Reference splitmix64 output number `index` (1-based) in unsigned Python integers."""
    z = (seed + index * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _reference_pair(seed: int, index: int) -> tuple[float, float]:
    """Box-Muller pair from the reference generator (24-bit uniforms, as in the module)."""
    z = _splitmix64(seed, index)
    u1 = (((z >> 40) & 0xFFFFFF) + 0.5) * 2.0**-24
    theta = (z & 0xFFFFFF) * 2.0 * math.pi * 2.0**-24
    radius = math.sqrt(-2.0 * math.log(u1))
    return radius * math.cos(theta), radius * math.sin(theta)


def test_matches_reference_splitmix64_including_high_bit_seeds() -> None:
    # Seeds with the top bit set exercise torch's signed int64 arithmetic shift and wrap-around.
    for seed in (0, 1, (1 << 63) + 12345, MASK64):
        signed = seed - (1 << 64) if seed >= 1 << 63 else seed
        draws = counter_normal(torch.tensor([signed]), (5,), torch.zeros(1, dtype=torch.float64))[0]
        expected = [_reference_pair(seed, j + 1) for j in range(3)]  # 5 draws -> 3 pairs
        cosines = [c for c, _ in expected]
        sines = [s for _, s in expected]
        assert draws.tolist() == pytest.approx((cosines + sines)[:5], abs=1e-12)


def test_mac_is_hmac_sha256_for_short_and_long_keys() -> None:
    for key in (b"k", b"x" * 64, b"long" * 40):
        noise = KeyedNoise(key)
        assert noise._mac(b"item") == hmac.new(key, b"item", hashlib.sha256).digest()
        digest = hmac.new(key, b"item", hashlib.sha256).digest()
        assert noise.item_seed(b"item") == int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def test_item_noise_independent_of_batch_position_and_composition() -> None:
    noise = KeyedNoise(b"secret")
    like = torch.zeros(1)
    batch = noise.standard_normal((6, 7, 3), like, KEYS)
    alone = noise.standard_normal((1, 7, 3), like, KEYS[4:5])
    reordered = noise.standard_normal((3, 7, 3), like, [KEYS[2], KEYS[4], KEYS[0]])
    assert torch.equal(batch[4], alone[0])
    assert torch.equal(batch[4], reordered[1]) and torch.equal(batch[0], reordered[2])
    assert torch.equal(batch, noise.standard_normal((6, 7, 3), like, KEYS))


def test_large_items_span_several_blocks_identically() -> None:
    # 2 items x 100k pairs crosses the internal block size: values must not depend on blocking.
    noise = KeyedNoise(b"secret")
    like = torch.zeros(1, dtype=torch.float64)
    two = noise.standard_normal((2, 200_001), like, KEYS[:2])
    one = noise.standard_normal((1, 200_001), like, KEYS[1:2])
    assert torch.equal(two[1], one[0])
    seed = int.from_bytes(noise._mac(KEYS[1])[:8], "little")
    c, s = _reference_pair(seed, 70_000)  # pair 70_000 lies in a later block
    assert one[0, 69_999].item() == pytest.approx(c, abs=1e-12)
    assert one[0, 100_001 + 69_999].item() == pytest.approx(s, abs=1e-12)


def test_output_dtype_and_shape_follow_the_logits() -> None:
    noise = KeyedNoise(b"secret")
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        draws = noise.standard_normal((2, 3, 5), torch.zeros(1, dtype=dtype), KEYS[:2])
        assert draws.dtype == dtype and draws.shape == (2, 3, 5)
    assert noise.standard_normal((2, 0), torch.zeros(1), KEYS[:2]).shape == (2, 0)


def test_draws_are_standard_normal() -> None:
    n = 200_000
    draws = KeyedNoise(b"secret").standard_normal((4, n // 4), torch.zeros(1, dtype=torch.float64), KEYS[:4])
    flat = draws.flatten()
    # Fixed key, so these are deterministic; bounds are 5 standard errors for n draws.
    assert abs(flat.mean().item()) < 5 / math.sqrt(n)
    assert abs(flat.var().item() - 1) < 5 * math.sqrt(2 / n)
    # Kolmogorov-Smirnov against N(0,1): 1.95/sqrt(n) is the 0.1% critical value.
    ordered = flat.sort().values
    cdf = torch.special.ndtr(ordered)
    grid = torch.arange(1, n + 1, dtype=torch.float64) / n
    statistic = torch.maximum(grid - cdf, cdf - (grid - 1 / n)).max().item()
    assert statistic < 1.95 / math.sqrt(n)
    # Tails: P(|z| > 3) = 0.0027; binomial standard error on n draws.
    tail = (flat.abs() > 3).double().mean().item()
    assert abs(tail - 0.0027) < 5 * math.sqrt(0.0027 / n)


def test_streams_of_different_items_and_keys_are_uncorrelated() -> None:
    n = 100_000
    like = torch.zeros(1, dtype=torch.float64)
    a, b = KeyedNoise(b"secret").standard_normal((2, n), like, KEYS[:2])
    other = KeyedNoise(b"other").standard_normal((1, n), like, KEYS[:1])[0]
    bound = 5 / math.sqrt(n)
    for x, y in ((a, b), (a, other), (a[1:], a[:-1]), (a[: n // 2], a[n // 2 :])):
        r = torch.corrcoef(torch.stack((x, y)))[0, 1].item()
        assert abs(r) < bound


def _lossless_copies(source, folder) -> list:
    """Write the same pixels in 12 lossless encodings (containers, compression levels, metadata)."""
    from PIL import Image, PngImagePlugin

    image = Image.open(source).convert("RGB")
    comment = PngImagePlugin.PngInfo()
    comment.add_text("Comment", "re-encoded to dodge keyed noise")
    writes = [
        ("level0.png", {"compress_level": 0}),
        ("level1.png", {"compress_level": 1}),
        ("level9.png", {"compress_level": 9}),
        ("optimized.png", {"optimize": True}),
        ("comment.png", {"pnginfo": comment}),
        ("dpi.png", {"dpi": (300, 300)}),
        ("lossless.webp", {"lossless": True, "quality": 100}),
        ("plain.bmp", {}),
        ("raw.tiff", {}),
        ("lzw.tiff", {"compression": "tiff_lzw"}),
        ("deflate.tiff", {"compression": "tiff_adobe_deflate"}),
        ("plain.ppm", {}),
    ]
    paths = []
    for name, options in writes:
        path = folder / name
        image.save(path, **options)
        paths.append(path)
    return paths


def test_lossless_reencodings_get_identical_keyed_noise_through_the_cli(tmp_path) -> None:
    """Re-encoding an image losslessly (12 ways) must not give an attacker fresh noise to vote with."""
    import json

    from PIL import Image

    from aim_cli import demo
    from tests.conftest import run_aim

    source = sorted(demo.samples_dir("classify").glob("*.png"))[0]
    folder = tmp_path / "copies"
    folder.mkdir()
    copies = _lossless_copies(source, folder)
    # Control: one changed pixel is a different input and must get different noise.
    changed = Image.open(source).convert("RGB")
    changed.putpixel((0, 0), tuple((v + 1) % 256 for v in changed.getpixel((0, 0))))
    changed.save(folder / "zz_one_pixel_changed.png")
    profile = tmp_path / "keyed.yaml"
    profile.write_text("version: 1\nname: keyed\nutility:\n  sigma: 4\nnoise:\n  key_env: AIM_NOISE_KEY\n")
    out = tmp_path / "out.jsonl"
    result = run_aim(
        "classify",
        str(folder),
        "--profile",
        str(profile),
        "-o",
        str(out),
        "-q",
        "--topk",
        "10",
        env={"AIM_NOISE_KEY": "secret"},
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_name = {Path(str(r.get("path", r.get("input", "")))).name: r["topk"] for r in records}
    assert set(by_name) == {p.name for p in copies} | {"zz_one_pixel_changed.png"}, by_name.keys()
    lossless = [by_name[p.name] for p in copies]
    assert all(t == lossless[0] for t in lossless)
    # sigma 4 on the demo's logits makes the full top-10 order noise-driven: a new key must change it.
    assert by_name["zz_one_pixel_changed.png"] != lossless[0]
