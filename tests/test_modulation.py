"""The modulation core: where noise goes, how much, and how it is seeded."""

from __future__ import annotations

import math

import pytest
import torch

from aim_cli.modulation import (
    BOOST,
    SUPPRESS,
    FocusTarget,
    KeyedNoise,
    Modulation,
    SeededNoise,
    add_noise_,
    content_key,
    modulate,
    noise_width,
)
from aim_cli.tasks.segment import add_strip_noise_


@pytest.mark.parametrize("shape,class_dim", [((4, 10), 1), ((2, 7, 5, 6), 1), ((3, 50), -1)])
def test_zero_sigma_returns_logits_unchanged(shape, class_dim):
    logits = torch.randn(shape)
    out = modulate(logits, Modulation(), SeededNoise(0), class_dim=class_dim)
    assert out is logits


@pytest.mark.parametrize("shape", [(4000, 10), (8, 10, 20, 25)])
def test_utility_noise_has_requested_std_and_zero_mean(shape):
    logits = torch.zeros(shape)
    sigma = 1.7
    noise = modulate(logits, Modulation(sigma=sigma), SeededNoise(3))
    n = noise.numel()
    # The sample std of n normals has relative SE ~ 1/sqrt(2n); 5 SE keeps the test deterministic-safe.
    assert abs(noise.std().item() / sigma - 1) < 5 / math.sqrt(2 * n)
    assert abs(noise.mean().item()) < 5 * sigma / math.sqrt(n)
    assert noise.shape == logits.shape and noise.dtype == logits.dtype


def test_focus_only_touches_targets_with_their_sign():
    logits = torch.zeros(20000, 6)
    modulation = Modulation(focus_sigma=2.0, targets=(FocusTarget(1, BOOST), FocusTarget(4, SUPPRESS)))
    out = modulate(logits, modulation, SeededNoise(5))
    untouched = [0, 2, 3, 5]
    assert torch.equal(out[:, untouched], logits[:, untouched])
    assert (out[:, 1] >= 0).all() and (out[:, 4] <= 0).all()
    # E|N(0, s^2)| = s * sqrt(2/pi); SE of the mean is s * sqrt(1 - 2/pi) / sqrt(n).
    expected = 2.0 * math.sqrt(2 / math.pi)
    tolerance = 5 * 2.0 * math.sqrt(1 - 2 / math.pi) / math.sqrt(20000)
    assert abs(out[:, 1].mean().item() - expected) < tolerance
    assert abs(-out[:, 4].mean().item() - expected) < tolerance


def test_focus_on_class_dim_of_segmentation_logits():
    logits = torch.zeros(2, 5, 8, 8)
    modulation = Modulation(focus_sigma=1.0, targets=(FocusTarget(3, BOOST),))
    out = modulate(logits, modulation, SeededNoise(1), class_dim=1)
    assert (out[:, 3] > 0).all() and torch.equal(out[:, [0, 1, 2, 4]], logits[:, [0, 1, 2, 4]])


def test_utility_and_focus_together():
    logits = torch.zeros(50000, 3)
    modulation = Modulation(sigma=1.0, focus_sigma=3.0, targets=(FocusTarget(0, BOOST),))
    out = modulate(logits, modulation, SeededNoise(2))
    expected = 3.0 * math.sqrt(2 / math.pi)
    se = math.sqrt(1.0 + 9.0 * (1 - 2 / math.pi)) / math.sqrt(50000)
    assert abs(out[:, 0].mean().item() - expected) < 5 * se
    assert abs(out[:, 1].mean().item()) < 5 / math.sqrt(50000)


def test_seeded_noise_is_reproducible_and_seed_dependent():
    logits = torch.randn(16, 10)
    modulation = Modulation(sigma=1.0, focus_sigma=1.0, targets=(FocusTarget(2),))
    a = modulate(logits, modulation, SeededNoise(42))
    b = modulate(logits, modulation, SeededNoise(42))
    c = modulate(logits, modulation, SeededNoise(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_keyed_noise_depends_on_content_and_key_only():
    logits = torch.zeros(3, 10)
    keys = [content_key(b"image-a"), content_key(b"image-b"), content_key(b"image-a")]
    out = modulate(logits, Modulation(sigma=1.0), KeyedNoise(b"secret"), item_keys=keys)
    assert torch.equal(out[0], out[2]) and not torch.equal(out[0], out[1])
    again = modulate(logits[:1], Modulation(sigma=1.0), KeyedNoise(b"secret"), item_keys=keys[:1])
    assert torch.equal(again[0], out[0])  # same input alone or in a batch: same noise
    other_key = modulate(logits[:1], Modulation(sigma=1.0), KeyedNoise(b"other"), item_keys=keys[:1])
    assert not torch.equal(other_key[0], out[0])


def test_keyed_noise_requires_one_key_per_item():
    with pytest.raises(ValueError):
        modulate(torch.zeros(2, 3), Modulation(sigma=1.0), KeyedNoise(b"k"), item_keys=None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_noise_keeps_dtype_and_device(dtype):
    logits = torch.zeros(4, 8, dtype=dtype)
    out = modulate(logits, Modulation(sigma=1.0, focus_sigma=1.0, targets=(FocusTarget(0),)), SeededNoise(0))
    assert out.dtype == dtype and out.device == logits.device


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_invalid_sigma_rejected(bad):
    with pytest.raises(ValueError):
        Modulation(sigma=bad)


def test_focus_class_out_of_range_rejected():
    with pytest.raises(ValueError):
        modulate(torch.zeros(1, 3), Modulation(focus_sigma=1.0, targets=(FocusTarget(5),)), SeededNoise(0))


@pytest.mark.parametrize("sigma, focus_sigma", [(0.8, 0.0), (0.8, 1.5), (0.0, 2.0)])
def test_one_kernel_serves_modulate_and_the_segmentation_strips(sigma, focus_sigma):
    """modulate, and the in-place strip path, are the same kernel: equal bits from the same keyed draws."""
    targets = (FocusTarget(2, BOOST), FocusTarget(5, SUPPRESS))
    modulation = Modulation(sigma, focus_sigma, targets)
    strip = torch.randn(6, 9, 7)  # (rows, width, classes): one image, class-last
    key = content_key(b"image")
    expected = modulate(strip.unsqueeze(0), modulation, KeyedNoise(b"k"), class_dim=-1, item_keys=[key])[0]
    assert torch.equal(add_strip_noise_(strip.clone(), modulation, KeyedNoise(b"k"), key), expected)
    draws = torch.randn(6, 9, noise_width(modulation, 7))
    kept = draws.clone()
    in_place = strip.clone()
    assert add_noise_(in_place, modulation, draws) is in_place and torch.equal(draws, kept)  # draws left as given
    by_hand = strip.clone()
    if sigma:
        by_hand += sigma * draws[..., :7]
    if focus_sigma:  # utility columns first, then one per target in the order given
        width = 7 if sigma else 0
        by_hand[..., 2] += focus_sigma * draws[..., width].abs()
        by_hand[..., 5] -= focus_sigma * draws[..., width + 1].abs()
    assert torch.allclose(in_place, by_hand, atol=1e-6)


def test_a_lent_global_stream_repeats_its_seed_and_gives_the_callers_generator_back():
    """Draws made on torch's global generator inside lent() are those of a seeded global one, and nothing leaks out."""
    from aim_cli.modulation import LentGlobalStream

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(21)
        reference = [torch.rand(4), torch.multinomial(torch.ones(10), 3)]
    torch.manual_seed(5)
    caller = torch.get_rng_state()
    stream = LentGlobalStream(21)
    with stream.lent():
        first = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), caller)  # the caller's state, untouched
    with stream.lent():  # the stream goes on where it stopped, as one seeded run would
        second = torch.multinomial(torch.ones(10), 3)
    assert torch.equal(first, reference[0]) and torch.equal(second, reference[1])
    assert torch.equal(torch.get_rng_state(), caller)
