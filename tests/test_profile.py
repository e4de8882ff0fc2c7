"""Profile loading, validation messages and command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from aim_cli.errors import ProfileError
from aim_cli.modulation import KeyedNoise, SeededNoise
from aim_cli.profile import (
    DEFAULT_FOCUS_SIGMA,
    FocusRequest,
    Profile,
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
    with pytest.raises(ProfileError, match=r"utility\.sigma"):
        load_profile(write(tmp_path, f"version: 1\nutility:\n  sigma: {value}\n"))


def test_bad_direction_and_target_shape(tmp_path):
    with pytest.raises(ProfileError, match="direction"):
        load_profile(write(tmp_path, "focus:\n  targets:\n    - {class: person, direction: sideways}\n"))
    with pytest.raises(ProfileError, match=r"focus\.targets\[0\]"):
        load_profile(write(tmp_path, "focus:\n  targets:\n    - {name: person}\n"))


def test_seed_and_key_exclusive(tmp_path):
    with pytest.raises(ProfileError, match="exclude"):
        load_profile(write(tmp_path, "utility:\n  sigma: 1\nnoise:\n  seed: 1\n  key_env: K\n"))


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
    keyed = load_profile(write(tmp_path, "utility:\n  sigma: 1\nnoise:\n  key_env: AIM_TEST_KEY\n"))
    monkeypatch.delenv("AIM_TEST_KEY", raising=False)
    with pytest.raises(ProfileError, match="AIM_TEST_KEY"):
        noise_source(keyed)
    monkeypatch.setenv("AIM_TEST_KEY", "s3cret")
    source, seed = noise_source(keyed)
    assert isinstance(source, KeyedNoise) and seed is None


# --- hardening: hostile and careless profiles ------------------------------------------------


def test_alias_bomb_is_refused_before_expansion(tmp_path):
    """A 10-level billion-laughs document: refused at its first anchor, in milliseconds."""
    import time

    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    lines += ["utility: {sigma: *a9}"]
    path = write(tmp_path, "\n".join(lines) + "\n")
    start = time.process_time()  # this process's CPU time: other jobs on the machine do not count
    with pytest.raises(ProfileError, match=r"line 1: anchor &a0 is not allowed"):
        load_profile(path)
    assert time.process_time() - start < 2


def test_plain_alias_is_refused(tmp_path):
    with pytest.raises(ProfileError, match="line 2: anchor"):
        load_profile(write(tmp_path, "version: 1\nbase: &b {sigma: 1}\nutility: *b\n"))


@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_devices_and_pipes_are_not_read_as_profiles(tmp_path, special):
    import os

    path = tmp_path / "p.yaml" if special == "fifo" else Path(special)
    if special == "fifo":
        os.mkfifo(path)
    with pytest.raises(ProfileError, match="not a regular file"):
        load_profile(path)


def test_oversized_profile_is_refused(tmp_path):
    with pytest.raises(ProfileError, match="limit"):
        load_profile(write(tmp_path, "# " + "x" * (1024 * 1024) + "\nutility: {sigma: 1}\n"))


@pytest.mark.parametrize(
    "text, lines",
    [
        ("utility:\n  sigma: 1\nutility:\n  sigma: 2\n", "lines 1 and 3"),
        ("utility:\n  sigma: 1\n  sigma: 2\n", "lines 2 and 3"),
    ],
)
def test_duplicate_keys_name_both_lines(tmp_path, text, lines):
    with pytest.raises(ProfileError, match=f"given twice \\({lines}\\)"):
        load_profile(write(tmp_path, text))


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n", "name: x\ndescription: y\n", "version: 1\n"])
def test_profile_without_modulation_is_an_error(tmp_path, text):
    with pytest.raises(ProfileError, match="sets no modulation"):
        load_profile(write(tmp_path, text))


def test_explicit_clean_tier_is_allowed(tmp_path):
    assert load_profile(write(tmp_path, "utility:\n  sigma: 0\n")).sigma == 0


@pytest.mark.parametrize("value, expected", [("1e-1", 0.1), ("2E0", 2.0), ("1.5e+1", 15.0), (".5", 0.5)])
def test_yaml_12_floats_are_numbers(tmp_path, value, expected):
    assert load_profile(write(tmp_path, f"utility:\n  sigma: {value}\n")).sigma == pytest.approx(expected)


@pytest.mark.parametrize("sigma", ["1e308", "1e5", ".inf", ".nan", "-1", "10001"])
def test_out_of_range_sigmas_are_refused(tmp_path, sigma):
    with pytest.raises(ProfileError, match="sigma"):
        load_profile(write(tmp_path, f"utility:\n  sigma: {sigma}\n"))
    with pytest.raises(ProfileError):
        apply_overrides(
            load_profile(PROFILES / "free-tier.yaml"), sigma=float(sigma.replace(".inf", "inf").replace(".nan", "nan"))
        )


@pytest.mark.parametrize("seed", [2**64, 2**63, -1])
def test_out_of_range_seeds_are_refused(tmp_path, seed):
    with pytest.raises(ProfileError, match="2\\^63"):
        load_profile(write(tmp_path, f"utility:\n  sigma: 1\nnoise:\n  seed: {seed}\n"))
    with pytest.raises(ProfileError, match="--seed"):
        apply_overrides(load_profile(PROFILES / "free-tier.yaml"), seed=seed)


def test_quoted_version_says_to_write_the_number(tmp_path):
    with pytest.raises(ProfileError, match=r"the text '1'.*the number, unquoted"):
        load_profile(write(tmp_path, 'version: "1"\nutility: {sigma: 1}\n'))


def test_unknown_class_names_the_profile_key(tmp_path):
    from aim_cli.plans import plan_modulation

    profile = load_profile(write(tmp_path, "utility:\n  sigma: 1\nfocus:\n  targets:\n    - {class: pedestrain}\n"))
    with pytest.raises(ProfileError, match=r"p\.yaml, line 5, key 'focus\.targets\[0\]\.class': unknown class"):
        plan_modulation(profile, ["person", "car"])
    with pytest.raises(ProfileError, match="--focus 'zebra'"):
        plan_modulation(apply_overrides(Profile(), focus=["zebra"]), ["person", "car"])


def test_cli_refuses_alias_bomb_and_huge_seed(tmp_path):
    from tests.conftest import assert_user_error, run_aim

    bomb = write(tmp_path, "a: &a [1,1]\nb: [*a,*a]\nutility: {sigma: 1}\n")
    assert_user_error(run_aim("classify", "--profile", str(bomb)), 2, "anchor &a is not allowed")
    assert_user_error(run_aim("classify", "--seed", str(2**64)), 2, "--seed")
    assert_user_error(run_aim("calibrate", "--target-acc", "0.6", "--seed", str(2**64)), 2, "--seed")
    assert_user_error(run_aim("classify", "--sigma", "1e308"), 2, "above the maximum")


@pytest.mark.parametrize("opening, closing", [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_a_profile_error_not_a_recursion_crash(tmp_path, opening, closing):
    """50,000 nested brackets fit in the size cap; PyYAML's recursive composer would overflow."""
    text = "utility: " + opening * 50_000 + "1" + closing * 50_000 + "\n"
    with pytest.raises(ProfileError, match=r"line 1: .*nested deeper than"):
        load_profile(write(tmp_path, text))


def test_merge_keys_are_refused(tmp_path):
    """`<<` copies keys from elsewhere, hiding duplicates: plain profiles write each key out."""
    with pytest.raises(ProfileError, match=r"line 2: merge key '<<' is not allowed"):
        load_profile(write(tmp_path, "utility:\n  <<: {sigma: 1}\n"))


@pytest.mark.parametrize("value", ["null", "[a, b]", "{x: 1}", "true", "1.5"])
def test_focus_class_must_be_a_name_or_id(tmp_path, value):
    text = f"utility: {{sigma: 1}}\nfocus:\n  targets:\n    - class: {value}\n"
    where = r"line 4, key 'focus\.targets\[0\]\.class'"
    with pytest.raises(ProfileError, match=where + ": expected a class name"):
        load_profile(write(tmp_path, text))


def test_integer_class_id_is_accepted(tmp_path):
    profile = load_profile(write(tmp_path, "utility: {sigma: 1}\nfocus:\n  targets:\n    - class: 3\n"))
    assert profile.focus[0].name == "3"


def test_huge_integer_is_one_line_without_interpreter_advice(tmp_path):
    with pytest.raises(ProfileError, match="a value cannot be read") as caught:
        load_profile(write(tmp_path, "utility: {sigma: " + "9" * 5000 + "}\n"))
    assert "set_int_max_str_digits" not in str(caught.value)


@pytest.mark.parametrize(
    "tagged", ["!!timestamp x", "!!int 0x", "!!python/int 1", "!!binary aGk=", "!local 1", "!!set {a}"]
)
def test_explicit_tags_are_refused_with_their_line(tmp_path, tagged):
    """`!!timestamp x` crashed PyYAML's constructor (AttributeError): profiles write plain values, untagged."""
    with pytest.raises(ProfileError, match=r"line 2: tag .* is not allowed"):
        load_profile(write(tmp_path, f"version: 1\nutility: {{sigma: {tagged}}}\n"))
