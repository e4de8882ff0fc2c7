"""The fast segmentation decision path is the method, exactly: checked against the dense computation.

aim_cli.tasks.segment.decide upsamples one image at a time in class-last layout, draws noise
in chunks and adds it in place. None of that may change what a pixel's decision is: given
the same standard-normal draws, every mask must equal argmax(F.interpolate(low) + noise)
computed densely, the plain way. Values may differ from the dense path by float32 rounding
(channels-last interpolation, fused add), so equality is required wherever the top two
noisy logits are further apart than 1e-4 (a tie at that level is a coin toss either way).
No class is skipped and no draw is shared, so the output distribution is the method's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aim_cli.modulation import FocusTarget, KeyedNoise, Modulation, NoiseSource, SeededNoise
from aim_cli.tasks import segment as segment_task
from aim_cli.tasks.segment import decide, upsample_at, upsampled_pixels

TIE = 1e-4


class RecordingNoise(NoiseSource):
    """Seeded draws that are also kept, so a test can redo the computation densely."""

    def __init__(self, seed: int) -> None:
        self.inner = SeededNoise(seed)
        self.draws: list[torch.Tensor] = []

    def standard_normal(
        self, shape: Sequence[int], like: torch.Tensor, item_keys: Sequence[bytes] | None = None
    ) -> torch.Tensor:
        draws = self.inner.standard_normal(shape, like, item_keys)
        self.draws.append(draws.clone())
        return draws


def _low(count: int = 2, classes: int = 6, height: int = 9, width: int = 11, seed: int = 0) -> torch.Tensor:
    """Random low-resolution logits with clear structure (classes differ by a few units)."""
    generator = torch.Generator().manual_seed(seed)
    return 3.0 * torch.randn((count, classes, height, width), generator=generator)


def _dense(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The plain path's upsampled logits, class-last (N, H, W, C)."""
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)


def _agree_off_ties(mask: np.ndarray, values: torch.Tensor) -> None:
    """mask == argmax(values) at every pixel whose top two values differ by more than TIE."""
    top2 = values.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1] > TIE).numpy()
    assert clear.mean() > 0.99  # the check covers nearly every pixel
    expected = values.argmax(dim=-1).numpy()
    assert np.array_equal(mask[clear], expected[clear])


def test_upsample_at_matches_interpolate():
    low = _low(count=3)
    size = (23, 31)
    dense = _dense(low, size).reshape(-1, low.shape[1])
    index = torch.randperm(dense.shape[0], generator=torch.Generator().manual_seed(1))[:500]
    assert torch.allclose(upsample_at(low, size, index), dense[index], atol=1e-5, rtol=0)
    # Downsampling and equal sizes follow the same rule.
    for other in ((5, 4), (9, 11)):
        dense = _dense(low, other).reshape(-1, low.shape[1])
        every = torch.arange(dense.shape[0])
        assert torch.allclose(upsample_at(low, other, every), dense, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("start", "stop"), [(0, 40), (0, 7), (13, 29), (33, 40)])
def test_class_last_strips_match_interpolate(start, stop):
    low = _low(count=1)
    size = (40, 37)
    expected = _dense(low, size)[0, start:stop]
    assert torch.allclose(upsampled_pixels(low, size, start, stop), expected, atol=1e-5, rtol=0)


def test_decide_reads_the_strip_budget_at_call_time(monkeypatch):
    """Regression: strip_rows' default budget was bound at import, so shrinking STRIP_ELEMENTS did nothing."""
    calls = []
    original = segment_task.upsample_rows

    def counting(low, size, start, stop):  # type: ignore[no-untyped-def]
        calls.append((start, stop))
        return original(low, size, start, stop)

    monkeypatch.setattr(segment_task, "upsample_rows", counting)
    monkeypatch.setattr(segment_task, "STRIP_ELEMENTS", 6 * 11 * 4)  # 4 rows of 6 classes x 11 columns
    decide(_low(count=1), (18, 11), Modulation(), SeededNoise(0))
    assert calls == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 18)]


@pytest.mark.parametrize("strips", [False, True])
def test_clean_masks_equal_the_plain_path(monkeypatch, strips):
    if strips:
        monkeypatch.setattr(segment_task, "STRIP_ELEMENTS", 6 * 29 * 3)
    low = _low()
    size = (31, 29)
    modulated, clean = decide(low, size, Modulation(), SeededNoise(0), need_clean=True)
    assert np.array_equal(modulated, clean)
    _agree_off_ties(clean, _dense(low, size))


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize(
    "modulation",
    [
        Modulation(sigma=1.5),
        Modulation(sigma=1.0, focus_sigma=2.0, targets=(FocusTarget(2, 1), FocusTarget(4, -1))),
        Modulation(focus_sigma=3.0, targets=(FocusTarget(5, 1),)),
    ],
    ids=["utility", "utility+focus", "focus-only"],
)
def test_modulated_masks_are_the_dense_method_on_the_same_draws(monkeypatch, modulation, chunked):
    """decide == argmax(y + sigma z[:C] + sum_t d_t sigma_f |z[C+t]| e_t), with y the plain upsampled logits."""
    if chunked:  # several strips per image and several noise chunks per strip
        monkeypatch.setattr(segment_task, "STRIP_ELEMENTS", 6 * 29 * 10)
        monkeypatch.setattr(segment_task, "NOISE_ELEMENTS", 9 * 29 * 3)
    low = _low()
    size = (31, 29)
    noise = RecordingNoise(7)
    masks, _ = decide(low, size, modulation, noise)
    classes = low.shape[1]
    # The chunks come image by image, top to bottom: they tile each image's (H, W, depth) draws.
    draws = torch.cat([d[0] for d in noise.draws]).reshape(low.shape[0], *size, -1)
    utility = classes if modulation.sigma > 0 else 0
    assert draws.shape[-1] == utility + len(modulation.targets)  # one draw per pixel and class, one per target
    values = _dense(low, size).clone()
    if utility:
        values += modulation.sigma * draws[..., :utility]
    for k, target in enumerate(modulation.targets):
        values[..., target.class_id] += target.direction * modulation.focus_sigma * draws[..., utility + k].abs()
    _agree_off_ties(masks, values)
    if chunked:
        assert len(noise.draws) > low.shape[0]


def test_every_pixel_gets_its_own_draws():
    """No draw is reused across pixels, strips or images (the theory's independence)."""
    noise = RecordingNoise(3)
    decide(_low(), (31, 29), Modulation(sigma=1.0), noise)
    draws = torch.cat([d.reshape(-1) for d in noise.draws])
    assert draws.numel() == 2 * 31 * 29 * 6
    assert torch.unique(draws).numel() == draws.numel()


def test_keyed_chunks_do_not_depend_on_the_batch(monkeypatch):
    monkeypatch.setattr(segment_task, "NOISE_ELEMENTS", 6 * 29 * 4)
    low = _low(count=3)
    noise = KeyedNoise(b"secret")
    keys = [b"a", b"b", b"c"]
    together, _ = decide(low, (31, 29), Modulation(sigma=2.0), noise, keys)
    alone, _ = decide(low[1:2], (31, 29), Modulation(sigma=2.0), noise, keys[1:2])
    assert np.array_equal(together[1], alone[0])
    again, _ = decide(low, (31, 29), Modulation(sigma=2.0), noise, keys)
    assert np.array_equal(together, again)


def test_focus_class_outside_the_model_is_refused():
    with pytest.raises(ValueError, match=r"outside 0\.\.5"):
        decide(_low(), (8, 8), Modulation(focus_sigma=1.0, targets=(FocusTarget(6, 1),)), SeededNoise(0))
