"""Arguments that used to be taken without a bound or a meaning are refused in one line (issue 15, minors)."""

from __future__ import annotations

import pytest
import torch

from aim_cli import serving
from aim_cli.errors import AimError, ProfileError
from aim_cli.modulation import FocusTarget, Modulation, SeededNoise, modulate
from aim_cli.plans import plan_modulation
from aim_cli.profile import Profile
from tests.conftest import assert_user_error, run_aim

LABELS = ["background", "person", "car", "ring"]


@pytest.mark.parametrize("focus", [["ring:up", "ring:down"], ["ring", "RING:down"], ["ring:+", " ring :-"]])
def test_one_name_up_and_down_is_refused(focus):
    with pytest.raises(ProfileError, match="both up and down"):
        Profile(focus=focus)


def test_one_class_up_and_down_through_a_synonym_is_refused():
    """pedestrian resolves to person: the conflict is only visible once names meet the model's labels."""
    with pytest.raises(ProfileError, match="already focused the other way"):
        plan_modulation(Profile(focus=["person:up", "pedestrian:down"]), LABELS)


def test_a_class_named_twice_gets_one_focus_draw():
    """Synonyms for one class must not add two half-normal terms (the theory assumes one)."""
    once = plan_modulation(Profile(focus=["person"], seed=3), LABELS)
    twice = plan_modulation(Profile(focus=["person", "pedestrian"], seed=3), LABELS)
    assert once.modulation.targets == twice.modulation.targets == (FocusTarget(1, 1),)
    logits = torch.zeros(5, len(LABELS))
    assert torch.equal(once.apply(logits.clone()), twice.apply(logits.clone()))
    modulation = Modulation(0.0, 2.0, (FocusTarget(1, 1), FocusTarget(1, 1)))
    assert modulation.targets == (FocusTarget(1, 1),)
    out = modulate(logits, modulation, SeededNoise(0))
    assert out.shape == logits.shape


def test_focus_targets_are_bounded(monkeypatch):
    monkeypatch.setenv("AIM_MAX_FOCUS_TARGETS", "4")
    Profile(focus=[f"c{i}" for i in range(4)])
    with pytest.raises(ProfileError, match=r"5 focus targets.*AIM_MAX_FOCUS_TARGETS"):
        Profile(focus=[f"c{i}" for i in range(5)])
    with pytest.raises(ProfileError, match="AIM_MAX_FOCUS_TARGETS"):
        serving.admit({"aim_focus": ["w"] * 10**6}, serving.TierPolicy.open())


def test_a_huge_focus_word_is_refused_without_echoing_it():
    word = "x" * 10**6
    with pytest.raises(ProfileError) as caught:
        serving.admit({"aim_focus": word, "aim_sigma": 1.0}, serving.TierPolicy.open())
    assert len(str(caught.value)) < 300


def test_a_bad_bound_in_the_environment_is_one_line(monkeypatch):
    monkeypatch.setenv("AIM_MAX_FOCUS_TARGETS", "lots")
    with pytest.raises(AimError, match="AIM_MAX_FOCUS_TARGETS='lots' is not a positive integer"):
        Profile(focus=["person"])


def test_cli_refuses_focus_sigma_without_focus_and_opposite_directions():
    result = run_aim("classify", "--focus-sigma", "3")
    assert_user_error(result, 2, "--focus-sigma has no effect without focus targets")
    result = run_aim("segment", "--focus", "person:up", "--focus", "person:down", "-o", "unused-dir")
    assert_user_error(result, 2, "both up and down")


def test_cli_bounds_monte_carlo_draws():
    result = run_aim("calibrate", "--target-acc", "0.6", "--draws", "100000000")
    assert_user_error(result, 2, "too many Monte Carlo draws", "AIM_MAX_DRAWS")
