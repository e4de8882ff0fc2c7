"""Property tests of the Python API: any argument gives a correct finite result or ONE aim.AimError.

Logits come in every dtype (float16, bfloat16, float32, float64, int, bool), every rank (0-d to
4-d, empty axes included) and with NaN / +inf / -inf placed anywhere; "one or many" arguments
come as a str or as a sequence. Nothing may raise a raw TypeError, ValueError, IndexError or
torch RuntimeError, and non-finite logits never give a result.
"""

from __future__ import annotations

import math
import os
import tracemalloc
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import aim_cli as aim
from aim_cli.images import load_image
from aim_cli.profile import FocusRequest

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
KEY_ENV = "AIM_TEST_PROPERTY_KEY"
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DTYPES = (*FLOATS, torch.int64, torch.int32, torch.uint8, torch.bool)
SPECIALS = (math.nan, math.inf, -math.inf)
NAMES = ["car", "person", "road", "sky"]


@st.composite
def tensors(draw, min_dims: int = 0, max_dims: int = 4, max_side: int = 4) -> torch.Tensor:
    """A tensor of any dtype and shape (empty axes too), with NaN/inf at random places in some.

    Floating point and 2-d are drawn most often: that is where the API computes something.
    """
    dtype = draw(st.sampled_from(FLOATS * 3 + DTYPES))
    ranks = [r for r in (0, 1, 2, 2, 2, 3, 4) if min_dims <= r <= max_dims]
    shape = tuple(draw(st.sampled_from([0, 1, 2, 3, max_side, 3])) for _ in range(draw(st.sampled_from(ranks))))
    count = int(np.prod(shape, dtype=np.int64))
    values = draw(st.lists(st.floats(-30, 30, width=16), min_size=count, max_size=count))
    array = np.asarray(values, dtype=np.float64).reshape(shape)
    if count and dtype.is_floating_point and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            array.flat[draw(st.integers(0, count - 1))] = draw(st.sampled_from(SPECIALS))
    return torch.from_numpy(array).to(dtype)


def usable(logits: torch.Tensor, class_dim: int = 1, masked: bool = False) -> bool:
    """What the API accepts: finite floating-point logits with an item axis and a separate class axis.

    `masked` (modulating): -inf is a mask, allowed while every item keeps a finite value.
    """
    if not logits.is_floating_point() or logits.dim() < 2:
        return False
    if not -logits.dim() <= class_dim < logits.dim() or class_dim % logits.dim() == 0:
        return False
    if masked and logits.numel() == 0:
        return True
    if masked:
        return bool(torch.isfinite(logits.reshape(logits.shape[0], -1).amax(dim=1)).all())
    return bool(torch.isfinite(logits).all())


def outcome(call):
    """The call's result, or None when it raised one aim.AimError with a one-line message."""
    try:
        return call()
    except aim.AimError as exc:
        assert "\n" not in str(exc), str(exc)
        return None


profiles = st.sampled_from(
    [
        0.0,
        0.5,
        3.0,
        {"utility": {"sigma": 1.0}, "noise": {"seed": 3}},
        {"utility": {"sigma": 1.0}, "focus": {"sigma": 2.0, "targets": ["1:down"]}, "noise": {"seed": 3}},
        {"focus": {"sigma": 2.0, "targets": ["person"]}, "noise": {"seed": 3}},
        {"utility": {"sigma": 1.0}, "noise": {"key_env": KEY_ENV}},
    ]
)


def _class_names(data, logits: torch.Tensor, class_dim: int):
    """Mostly one name per class (so the call can succeed), sometimes a wrong count or a str."""
    count = logits.shape[class_dim] if logits.dim() and -logits.dim() <= class_dim < logits.dim() else 3
    return data.draw(st.sampled_from([None, [f"c{i}" for i in range(count)], NAMES[:1], "car", 7]))


def _keys(data, logits: torch.Tensor):
    """Mostly one key per item, as a list or (for one item) a bare str or bytes; sometimes wrong."""
    items = logits.shape[0] if logits.dim() else 1
    one = ["k"] if items == 1 else []
    return data.draw(
        st.sampled_from(
            [
                None,
                [f"k{i}" for i in range(items)],
                *one,
                b"k",
                ["a", "b", "c", "d", "e"],
                {"a"},
            ]
        )
    )


@SETTINGS
@given(tensors(), profiles, st.sampled_from([1, 1, -1, 0, 2, 3, -5, 5]), st.data())
def test_modulate_returns_finite_logits_or_one_aim_error(logits, profile, class_dim, data):
    class_names, keys = _class_names(data, logits, class_dim), _keys(data, logits)
    with mock.patch.dict(os.environ, {KEY_ENV: "property-secret"}):
        result = outcome(lambda: aim.modulate(logits, profile, class_dim=class_dim, class_names=class_names, keys=keys))
    if not usable(logits, class_dim, masked=True):
        assert result is None, "unusable logits must be refused"
    if result is not None:
        assert result.shape == logits.shape and result.dtype == logits.dtype
        assert torch.equal(torch.isfinite(result), torch.isfinite(logits))  # -inf masks stay, nothing else


@SETTINGS
@given(tensors(), st.integers(-5, 5), st.sampled_from([None, 1, 3, 4]))
def test_plan_apply_validates_what_it_is_given(logits, class_dim, planned_classes):
    plan = aim.plan({"utility": {"sigma": 1.0}, "noise": {"seed": 0}}, num_classes=planned_classes)
    result = outcome(lambda: plan.apply(logits, class_dim))
    if not usable(logits, class_dim, masked=True):
        assert result is None
    elif planned_classes is not None and logits.shape[class_dim] != planned_classes:
        assert result is None, "a plan for C classes must refuse logits with another class count"
    else:  # finite where the logits were, -inf (a mask) where they were -inf
        assert result is not None and torch.equal(torch.isfinite(result), torch.isfinite(logits))


class_names_arguments = st.sampled_from([None, NAMES[:1], NAMES[:2], NAMES[:3], NAMES, "car", 7])
labels_arguments = st.one_of(
    st.lists(st.integers(-1, 4), max_size=5),
    st.sampled_from(
        ["car", "person", 1, 1.5, None, [0.5, 1.0], [True, False], [[0, 1]], {0, 1}, ["car", "sky"], ["car", 1], [None]]
    ),
    st.lists(st.integers(0, 3), max_size=5).map(torch.tensor),
)
sigmas = st.sampled_from([0.0, 0.7, 4.0, 0.7, 4.0, -1.0, math.nan, math.inf, "1", None])


def _labels(data, logits: torch.Tensor):
    """Mostly valid label ids (a list or a tensor) for the logits' rows; sometimes anything."""
    rows = logits.shape[0] if logits.dim() else 1
    classes = logits.shape[1] if logits.dim() > 1 else 1
    valid = st.lists(st.integers(0, max(0, classes - 1)), min_size=rows, max_size=rows)
    return data.draw(st.one_of(valid, valid.map(torch.tensor), valid, labels_arguments))


def _check_probability(value: float) -> None:
    """A probability, and a finite one."""
    assert isinstance(value, float) and math.isfinite(value) and -1e-9 <= value <= 1 + 1e-9, value


@SETTINGS
@given(tensors(max_dims=3), sigmas, class_names_arguments, st.data())
def test_analytic_functions_give_a_probability_or_one_aim_error(logits, sigma, class_names, data):
    labels = _labels(data, logits)
    accuracy = outcome(lambda: aim.expected_accuracy(logits, labels, sigma))
    if accuracy is not None:
        _check_probability(accuracy)
    curve = outcome(lambda: aim.accuracy_curve(logits, labels, [0.0, sigma]))
    if curve is not None:
        for value in curve:
            _check_probability(value)
    wins = outcome(
        lambda: aim.win_probability(logits, labels, 0.5, focus="1", focus_sigma=sigma, class_names=class_names)
    )
    if wins is not None:
        assert bool(torch.isfinite(wins).all()) and bool(((wins >= -1e-9) & (wins <= 1 + 1e-9)).all())
    recall = outcome(lambda: aim.expected_recall(logits, labels, "person", sigma, class_names=class_names))
    if recall is not None:
        _check_probability(recall)
    if not usable(logits) or logits.dim() != 2:
        assert accuracy is curve is wins is recall is None, "unusable logits must be refused"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(tensors(min_dims=2, max_dims=2), st.sampled_from([0.3, 0.6, 1.0, 0.6, 0.0, 2.0, math.nan, "x"]), st.data())
def test_calibrate_logits_gives_a_calibration_or_one_aim_error(logits, target, data):
    labels = _labels(data, logits)
    result = outcome(lambda: aim.calibrate_logits(logits, labels, target_acc=target, draws=4))
    if not usable(logits):
        assert result is None
    if result is not None:
        assert math.isfinite(result.sigma) and result.sigma >= 0
        _check_probability(result.predicted)


@pytest.mark.parametrize("where", [(0, 0), (1, 2), (2, 3)])
@pytest.mark.parametrize("value", SPECIALS)
def test_non_finite_logits_are_an_input_error_everywhere(where, value):
    logits = torch.randn(3, 4)
    logits[where] = value
    labels = [0, 1, 2]
    # Modulating keeps -inf as a mask (noise leaves it -inf); NaN and +inf are refused there too.
    modulating = [lambda: aim.modulate(logits, 1.0), lambda: aim.plan(1.0, num_classes=4).apply(logits)]
    if value == float("-inf"):
        for call in modulating:
            assert call()[where] == float("-inf")
        modulating = []
    calls = [
        *modulating,
        lambda: aim.expected_accuracy(logits, labels, 1.0),
        lambda: aim.accuracy_curve(logits, labels, [0.5, 1.0]),
        lambda: aim.win_probability(logits, labels, 1.0),
        lambda: aim.win_probability(logits, labels, 0.0, focus=1, focus_sigma=2.0),
        lambda: aim.expected_recall(logits, labels, 1, 2.0),
        lambda: aim.calibrate_logits(logits, labels, target_acc=0.5),
    ]
    for call in calls:
        with pytest.raises(aim.InputError, match="non-finite"):
            call()


# "One or many" arguments: a str is one item everywhere.

focus_texts = st.sampled_from(["person", "person:down", "car:up", "3", "", ":up", "x:sideways", "traffic light"])


@SETTINGS
@given(focus_texts)
def test_a_focus_string_is_one_target_in_every_entry(text):
    as_one = outcome(lambda: aim.Profile().with_overrides(focus=text))
    as_list = outcome(lambda: aim.Profile().with_overrides(focus=[text]))
    constructed = outcome(lambda: aim.Profile(focus=text))
    assert as_one == as_list
    assert (as_one is None) == (constructed is None)
    if as_one is not None:
        assert as_one.focus == constructed.focus and len(as_one.focus) == 1


def test_with_overrides_focus_string_is_not_split_into_characters():
    profile = aim.Profile(sigma=1.0).with_overrides(focus="person")
    assert profile.focus == (FocusRequest("person"),)
    assert profile == aim.Profile(sigma=1.0, focus="person")
    assert aim.Profile().with_overrides(focus=("car", "person:down")).focus == (
        FocusRequest("car"),
        FocusRequest("person", -1),
    )


def test_unordered_focus_is_refused():
    with pytest.raises(aim.ProfileError, match="order"):
        aim.Profile().with_overrides(focus={"car", "person"})


def test_a_key_string_is_one_key():
    logits = torch.randn(1, 5)
    profile = {"utility": {"sigma": 1.0}, "noise": {"key_env": KEY_ENV}}
    with mock.patch.dict(os.environ, {KEY_ENV: "secret"}):
        one = aim.modulate(logits, profile, keys="request-1")
        assert torch.equal(one, aim.modulate(logits, profile, keys=["request-1"]))
        assert torch.equal(aim.modulate(logits, profile, keys=b"raw"), aim.modulate(logits, profile, keys=[b"raw"]))
        with pytest.raises(aim.InputError, match="1 keys for a batch of 2"):
            aim.modulate(torch.randn(2, 5), profile, keys="request-1")


def test_a_single_sigma_and_a_single_label_are_one_item():
    logits = torch.tensor([[2.0, 0.0, 1.0]])
    assert aim.accuracy_curve(logits, [0], 0.5) == aim.accuracy_curve(logits, [0], [0.5])
    with_names = aim.win_probability(logits, "car", 0.5, class_names=["car", "person", "road"])
    assert torch.equal(with_names, aim.win_probability(logits, ["car"], 0.5, class_names=["car", "person", "road"]))
    assert aim.expected_accuracy(logits, 0, 0.5) == aim.expected_accuracy(logits, [0], 0.5)


# plan.apply checks what it is given.


def test_plan_apply_refuses_integer_logits_a_wrong_class_count_and_the_item_axis():
    plan = aim.plan(1.0, ["car", "person", "road"], seed=0)
    with pytest.raises(aim.InputError, match="floating-point"):
        plan.apply(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(aim.InputError, match="3 classes"):
        plan.apply(torch.randn(2, 7))
    with pytest.raises(aim.InputError, match="class_dim 0"):
        plan.apply(torch.randn(3, 3), class_dim=0)
    with pytest.raises(aim.InputError, match="class_dim 4"):
        plan.apply(torch.randn(3, 3), class_dim=4)


# Class names are materialised only to resolve a name.


class CountingNames:
    """A lazy label list that counts the names read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.reads = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if not -self.size <= index < self.size:
            raise IndexError(index)
        self.reads += 1
        return f"class{index % self.size}"


def test_no_per_class_strings_without_focus_by_name():
    names = CountingNames(152_064)
    logits = torch.randn(2, 152_064)
    aim.modulate(logits, 1.0, class_names=names, seed=0)
    aim.plan({"focus": {"targets": ["7"]}, "noise": {"seed": 1}}, num_classes=152_064).apply(logits)
    assert names.reads == 0
    tracemalloc.start()
    try:
        plan = aim.plan({"utility": {"sigma": 1.0}, "focus": {"targets": ["5:down"]}}, num_classes=10**6)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert plan.describe()["focus"] == ["5:down"]
    assert peak < 2_000_000, f"planning 10^6 classes took {peak / 1e6:.1f} MB"


# Image keys: the API keys an image the way the CLI does.


def _kinds() -> dict[str, Image.Image]:
    """One image of every kind the CLI decodes: alpha, palette, grey+alpha, 16-bit grey, EXIF-rotated."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (6, 9, 1), dtype=np.uint8)], axis=2)
    grey16 = rng.integers(0, 65536, (6, 9), dtype=np.uint16)
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    rotated.info["exif"] = exif.tobytes()
    return {
        "RGBA": Image.fromarray(rgba),
        "P": Image.fromarray(rgb).quantize(16),
        "LA": Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]])),
        "I;16": Image.fromarray(grey16),
        "EXIF-rotated": rotated,
    }


@pytest.mark.parametrize("kind", list(_kinds()))
def test_api_key_equals_cli_key_for_every_image_kind(kind, tmp_path):
    image = _kinds()[kind]
    path = tmp_path / f"{kind.replace(';', '')}.png"
    if kind == "EXIF-rotated":
        image.save(path, exif=image.info["exif"])
    else:
        image.save(path)
    cli_key = load_image(path).key
    with Image.open(path) as opened:
        assert aim.item_key(opened) == cli_key
    assert aim.item_key(image) == cli_key  # the in-memory image that was saved: same pixels, same key


def test_rgba_copies_of_the_same_pixels_get_one_noise_draw():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    copies = [Image.fromarray(np.dstack([rgb, np.full((8, 8), alpha, np.uint8)])) for alpha in range(0, 255, 17)]
    assert len(copies) == 15
    profile = {"utility": {"sigma": 2.0}, "noise": {"key_env": KEY_ENV}}
    with mock.patch.dict(os.environ, {KEY_ENV: "secret"}):
        noisy = aim.modulate(torch.zeros(15, 10), profile, keys=copies)
    assert len({aim.item_key(image) for image in copies}) == 1
    assert bool((noisy == noisy[0]).all())
