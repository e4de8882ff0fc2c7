"""Profile loading, validation messages and command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from aim_cli.errors import ProfileError
from aim_cli.modulation import KeyedNoise, SeededNoise
from aim_cli.profile import (
    DEFAULT_FOCUS_SIGMA,
    FocusRequest,
    apply_overrides,
    load_profile,
    noise_source,
    parse_focus,
)

PROFILES = Path(__file__).resolve().parents[1] / "profiles"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_profile_is_valid(path):
    profile = load_profile(path)
    assert profile.name


def test_full_example_fields():
    profile = load_profile(PROFILES / "full-example.yaml")
    assert profile.sigma == 0.5 and profile.focus_sigma == 2.0 and profile.seed == 7
    assert profile.focus == (FocusRequest("person", 1), FocusRequest("car", -1))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "version: 1\nutility:\n  sigma: [1.0\nname: x\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert str(path) in message and "line" in message and "syntax" in message


def test_unknown_key_names_key_and_line(tmp_path):
    path = write(tmp_path, "version: 1\nutility:\n  sigma: 1.0\n  sigmaa: 2\n")
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    assert "utility.sigmaa" in str(info.value) and "line 4" in str(info.value)


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ProfileError, match="line 2, key 'utilty'"):
        load_profile(write(tmp_path, "version: 1\nutilty:\n  sigma: 1\n"))


@pytest.mark.parametrize("value", ["-1", ".nan", ".inf", "'high'", "true"])
def test_bad_sigma_values(tmp_path, value):
    with pytest.raises(ProfileError, match="utility.sigma"):
        load_profile(write(tmp_path, f"version: 1\nutility:\n  sigma: {value}\n"))


def test_bad_direction_and_target_shape(tmp_path):
    with pytest.raises(ProfileError, match="direction"):
        load_profile(write(tmp_path, "focus:\n  targets:\n    - {class: person, direction: sideways}\n"))
    with pytest.raises(ProfileError, match="focus.targets\\[0\\]"):
        load_profile(write(tmp_path, "focus:\n  targets:\n    - {name: person}\n"))


def test_seed_and_key_exclusive(tmp_path):
    with pytest.raises(ProfileError, match="exclude"):
        load_profile(write(tmp_path, "noise:\n  seed: 1\n  key_env: K\n"))


def test_missing_file_and_wrong_version(tmp_path):
    with pytest.raises(ProfileError, match="not found"):
        load_profile(tmp_path / "nope.yaml")
    with pytest.raises(ProfileError, match="version"):
        load_profile(write(tmp_path, "version: 2\n"))


def test_non_mapping_profile(tmp_path):
    with pytest.raises(ProfileError, match="mapping"):
        load_profile(write(tmp_path, "- a\n- b\n"))


def test_overrides_take_precedence():
    profile = load_profile(PROFILES / "full-example.yaml")
    merged = apply_overrides(profile, sigma=3.0, focus=["car:up"], focus_sigma=0.5, seed=9)
    assert merged.sigma == 3.0 and merged.focus == (FocusRequest("car", 1),)
    assert merged.focus_sigma == 0.5 and merged.seed == 9
    assert apply_overrides(profile).sigma == 0.5


def test_override_validation():
    with pytest.raises(ProfileError, match="--sigma"):
        apply_overrides(load_profile(PROFILES / "free-tier.yaml"), sigma=float("nan"))
    with pytest.raises(ProfileError, match="direction"):
        parse_focus("person:left")


def test_focus_without_sigma_gets_default():
    profile = apply_overrides(load_profile(PROFILES / "free-tier.yaml"), focus=["person"])
    assert profile.effective_focus_sigma == DEFAULT_FOCUS_SIGMA


def test_noise_sources(monkeypatch, tmp_path):
    source, seed = noise_source(load_profile(PROFILES / "free-tier.yaml"))
    assert isinstance(source, SeededNoise) and seed == 1234
    keyed = load_profile(write(tmp_path, "noise:\n  key_env: AIM_TEST_KEY\n"))
    monkeypatch.delenv("AIM_TEST_KEY", raising=False)
    with pytest.raises(ProfileError, match="AIM_TEST_KEY"):
        noise_source(keyed)
    monkeypatch.setenv("AIM_TEST_KEY", "s3cret")
    source, seed = noise_source(keyed)
    assert isinstance(source, KeyedNoise) and seed is None
