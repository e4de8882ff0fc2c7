"""Property tests of the modulation core: shapes, dtypes, identity, reproducibility, focus locality."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aim_cli.modulation import BOOST, SUPPRESS, FocusTarget, KeyedNoise, Modulation, SeededNoise, modulate

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@st.composite
def logits_cases(draw):
    """A logits tensor of a task's shape: (N, C), (N, C, H, W) or (N, V) with the class axis last."""
    kind = draw(st.sampled_from(["classify", "segment", "generate"]))
    n = draw(st.integers(1, 4))
    c = draw(st.integers(2, 12))
    dtype = draw(st.sampled_from(DTYPES))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    if kind == "segment":
        shape, class_dim = (n, c, draw(st.integers(1, 5)), draw(st.integers(1, 5))), 1
    elif kind == "generate":
        shape, class_dim = (n, c), -1
    else:
        shape, class_dim = (n, c), 1
    return (torch.randn(shape, generator=generator) * 3).to(dtype), class_dim


@SETTINGS
@given(case=logits_cases(), sigma=st.floats(0.01, 50), seed=st.integers(0, 2**63 - 1))
def test_shape_dtype_and_seeded_reproducibility(case, sigma, seed):
    logits, class_dim = case
    first = modulate(logits, Modulation(sigma), SeededNoise(seed), class_dim=class_dim)
    again = modulate(logits, Modulation(sigma), SeededNoise(seed), class_dim=class_dim)
    other = modulate(logits, Modulation(sigma), SeededNoise((seed + 1) % 2**63), class_dim=class_dim)
    assert first.shape == logits.shape and first.dtype == logits.dtype
    assert torch.equal(first, again)
    assert not torch.equal(first, other) or logits.numel() < 4  # (a tiny low-precision tensor may collide)


@SETTINGS
@given(case=logits_cases(), seed=st.integers(0, 2**32))
def test_sigma_zero_without_focus_is_the_identity(case, seed):
    logits, class_dim = case
    assert torch.equal(modulate(logits, Modulation(0.0), SeededNoise(seed), class_dim=class_dim), logits)


@SETTINGS
@given(case=logits_cases(), focus_sigma=st.floats(0.1, 20), seed=st.integers(0, 2**32), data=st.data())
def test_focus_touches_only_its_targets_in_its_direction(case, focus_sigma, seed, data):
    logits, class_dim = case
    classes = logits.shape[class_dim]
    chosen = data.draw(st.lists(st.integers(0, classes - 1), min_size=1, max_size=3, unique=True))
    directions = data.draw(st.lists(st.sampled_from([BOOST, SUPPRESS]), min_size=len(chosen), max_size=len(chosen)))
    modulation = Modulation(0.0, focus_sigma, tuple(FocusTarget(k, d) for k, d in zip(chosen, directions)))
    out = modulate(logits, modulation, SeededNoise(seed), class_dim=class_dim).movedim(class_dim, -1)
    base = logits.movedim(class_dim, -1)
    for k in range(classes):
        if k not in chosen:
            assert torch.equal(out[..., k], base[..., k])
    for k, direction in zip(chosen, directions):
        change = (out[..., k].double() - base[..., k].double()) * direction
        assert bool((change >= 0).all())


@SETTINGS
@given(
    classes=st.integers(2, 50),
    sigma=st.floats(0.1, 10),
    keys=st.lists(st.binary(min_size=1, max_size=8), min_size=2, max_size=5, unique=True),
    data=st.data(),
)
def test_keyed_noise_depends_on_the_item_not_its_batch(classes, sigma, keys, data):
    noise = KeyedNoise(b"secret")
    logits = torch.zeros(len(keys), classes)
    together = modulate(logits, Modulation(sigma), noise, item_keys=keys)
    order = data.draw(st.permutations(range(len(keys))))
    shuffled = modulate(logits, Modulation(sigma), noise, item_keys=[keys[i] for i in order])
    for position, index in enumerate(order):
        assert torch.equal(shuffled[position], together[index])
    alone = modulate(logits[:1], Modulation(sigma), noise, item_keys=keys[:1])
    assert torch.equal(alone[0], together[0])
    other_key = modulate(logits, Modulation(sigma), KeyedNoise(b"other"), item_keys=keys)
    assert not torch.equal(other_key, together)


def test_half_precision_noise_saturates_instead_of_overflowing():
    """float16 tops out at 65504: finite logits must stay finite, whatever the noise draws."""
    from aim_cli.profile import MAX_SIGMA

    logits = torch.full((8, 1000), 60000.0, dtype=torch.float16)
    logits[:, ::2] = -60000.0
    modulation = Modulation(MAX_SIGMA, MAX_SIGMA, (FocusTarget(1, BOOST), FocusTarget(2, SUPPRESS)))
    logits[0, 0] = -torch.inf  # a masked token stays masked
    out = modulate(logits, modulation, SeededNoise(0))
    assert out.dtype == torch.float16 and bool(torch.isfinite(out.flatten()[1:]).all())
    assert out[0, 0] == -torch.inf
