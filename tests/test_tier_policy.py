"""The tier server's admission rule (aim_cli/tier_policy.py), the one both engines call: no extra needed.

The class under test: a request must never be served less noise than the tier it names, or than
the default tier when it names none, and never the clean model or ad-hoc noise unless the
operator opted in; whatever its fields hold.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.errors import ProfileError
from aim_cli.profile import FocusRequest, Profile
from aim_cli.tier_policy import (
    REQUEST_ARGS,
    Resolution,
    TierPolicy,
    aim_fields,
    env_flag,
    fixed_by,
    has_aim_args,
    is_clean,
    resolve,
    weakening,
)

KEY_ENV = "AIM_NOISE_KEY"
TIERS = {
    "free-tier": Profile(name="free-tier", sigma=4.0, seed=1234),
    "keyed-tier": Profile(name="keyed-tier", sigma=2.0, key_env=KEY_ENV),
    "fresh": Profile(name="fresh", sigma=1.5),
    "focus": Profile(name="focus", sigma=1.0, focus=(FocusRequest("person"),), focus_sigma=2.0, seed=3),
    "gold": Profile(name="gold", sigma=0.0),  # the operator's own clean tier
}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's secret for keyed tiers and aim_keyed requests."""
    monkeypatch.setenv(KEY_ENV, "test-secret")


def refused(fields, policy: TierPolicy) -> str:
    """The one-line message of a refused request."""
    with pytest.raises(ProfileError) as caught:
        resolve(fields, policy)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- the defaults: tiers of the folder and their open options, nothing else -----------------------


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        # The cases: a default tier, and a request asking for less.
        ({"aim_sigma": 0}, "aim_sigma: tier 'free-tier' (this server's default) fixes its own sigma"),
        ({"aim_sigma": 0, "aim_keyed": True}, "(this server's default) fixes its own"),
        ({"aim_focus": "cat", "aim_sigma": 0.0}, "aim_sigma: tier 'free-tier'"),
        ({"aim_seed": 7}, "aim_seed: tier 'free-tier' (this server's default) fixes its own noise"),
        ({"aim_profile": "free-tier", "aim_sigma": -0.0}, "aim_sigma: tier 'free-tier' fixes its own sigma"),
        ({"aim_profile": "keyed-tier", "aim_keyed": False}, "fixes its own noise"),
        ({"aim_profile": "focus", "aim_focus": "car"}, "fixes its own focus"),
        ({"AIM_SIGMA": 0}, "unknown request argument 'AIM_SIGMA' (write it aim_sigma)"),
        ({"Aim_Profile": "gold"}, "write it aim_profile"),
        ({"aim_profile": "../free-tier"}, "unknown tier '../free-tier'"),
        ({"aim_profile": ["free-tier"]}, "unknown tier ['free-tier']"),
        ({"aim_profile": "x" * 10_000}, "unknown tier 'xxxxxxxx"),
    ],
)
def test_a_default_tier_is_a_floor(fields, fragment):
    assert fragment in refused(fields, TierPolicy(TIERS, "free-tier"))


def test_without_a_default_a_request_must_name_a_tier():
    policy = TierPolicy(TIERS)
    assert "names no tier" in refused({}, policy) and "give aim_profile (one of: focus, free-tier" in refused(
        {}, policy
    )
    assert "aim_sigma: this server serves only its tiers" in refused({"aim_sigma": 0}, policy)
    assert "--allow-ad-hoc-tiers" in refused({"aim_sigma": 5, "aim_keyed": True}, policy)
    assert "aim_focus: this server serves only its tiers" in refused({"aim_focus": "cat"}, policy)


def test_tiers_and_their_open_options_are_served():
    policy = TierPolicy(TIERS, "free-tier")
    assert resolve({}, policy) == Resolution(TIERS["free-tier"], "free-tier")
    assert resolve({"unrelated": 1}, policy).tier == "free-tier"  # other plugins' fields are not ours
    gold = resolve({"aim_profile": "gold"}, policy)  # a clean tier the operator put in the folder
    assert gold.tier == "gold" and gold.profile == TIERS["gold"] and not gold.ad_hoc
    focused = resolve({"aim_focus": "cat:down", "aim_focus_sigma": 1}, policy)  # the default leaves focus open
    assert focused.tier == "free-tier" and focused.profile.sigma == 4.0 and focused.profile.seed == 1234
    fresh = resolve({"aim_profile": "fresh", "aim_seed": 9}, policy)  # a fresh-seed tier takes a seed
    assert fresh.tier == "fresh" and fresh.profile.seed == 9


# --- the opt-ins ------------------------------------------------------------------------------------


def test_ad_hoc_tiers_only_add_noise_to_their_tier():
    policy = TierPolicy(TIERS, "free-tier", allow_ad_hoc=True)
    louder = resolve({"aim_sigma": 6}, policy)
    assert louder.profile.sigma == 6 and louder.tier is None and louder.ad_hoc
    assert resolve({"aim_keyed": True}, policy).profile.key_env == KEY_ENV  # keyed is stronger than a seed
    assert "less noise than tier 'free-tier' (this server's default): sigma 1 is below its sigma 4" in refused(
        {"aim_sigma": 1}, policy
    )
    assert "less noise than tier 'keyed-tier'" in refused({"aim_profile": "keyed-tier", "aim_seed": 4}, policy)
    assert "its noise is keyed" in refused({"aim_profile": "keyed-tier", "aim_keyed": 0}, policy)
    assert "it fixes its seed" in refused({"aim_seed": 4}, policy)
    assert "it fixes its focus" in refused({"aim_profile": "focus", "aim_focus_sigma": 9}, policy)


def test_the_clean_model_needs_its_own_opt_in():
    ad_hoc = TierPolicy(TIERS, allow_ad_hoc=True)
    assert "asks for no noise" in refused({"aim_sigma": 0}, ad_hoc)
    assert "asks for no noise" in refused({"aim_focus": "cat", "aim_focus_sigma": 0, "aim_sigma": 0}, ad_hoc)
    assert "--allow-clean" in refused({"aim_sigma": 0}, ad_hoc)
    clean = TierPolicy(TIERS, allow_ad_hoc=True, allow_clean=True)
    assert resolve({}, clean) == Resolution(None) and resolve({"aim_sigma": 0}, clean).profile.sigma == 0
    # The clean model alone: requests naming no tier get it, ad-hoc fields are still refused.
    assert resolve({}, TierPolicy(TIERS, allow_clean=True)).profile is None
    assert "serves only its tiers" in refused({"aim_sigma": 0}, TierPolicy(TIERS, allow_clean=True))


def test_a_clean_opt_in_beside_a_default_tier_is_refused_at_start():
    with pytest.raises(ProfileError, match="exclude each other"):
        TierPolicy(TIERS, "free-tier", allow_clean=True)
    with pytest.raises(ProfileError, match="default tier 'nope': no such tier"):
        TierPolicy(TIERS, "nope")


def test_no_tier_folder_is_no_tier_server():
    """A plain vLLM (or vllm.LLM) where aim is installed: the caller is the operator."""
    policy = TierPolicy.open()
    assert resolve({}, policy).profile is None and resolve({"aim_sigma": 0.5}, policy).profile.sigma == 0.5
    assert "this server has no tiers" in refused({"aim_profile": "free-tier"}, policy)


@pytest.mark.parametrize(
    ("policy", "fragments"),
    [
        (TierPolicy(TIERS), ["are refused (no --default-profile", "ad-hoc tiers: off", "clean model: off"]),
        (TierPolicy(TIERS, "fresh"), ["get tier 'fresh', and never less noise than it", "ad-hoc tiers: off"]),
        (
            TierPolicy(TIERS, allow_ad_hoc=True, allow_clean=True),
            ["get the clean model (--allow-clean is on)", "ad-hoc tiers: on", "clean model: on"],
        ),
    ],
)
def test_the_start_up_lines_say_what_is_on(policy, fragments):
    text = "\n".join(policy.guarantees())
    for fragment in fragments:
        assert fragment in text


@pytest.mark.parametrize(("raw", "value"), [("", False), ("0", False), ("1", True), ("TRUE", True), (" on ", True)])
def test_opt_in_variables(raw, value):
    assert env_flag({"X": raw}, "X") is value and env_flag({}, "X") is False


def test_case_variants_are_aim_fields():
    assert has_aim_args({"AIM_SIGMA": 1}) and has_aim_args({"aim_x": 1}) and not has_aim_args({"aimsigma": 1})
    assert aim_fields({"aim_sigma": 1, "other": 2}) == {"aim_sigma": 1}


# --- the class: any request, whatever its fields -------------------------------------------------------

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, 1e-300, 5e-324, 4.0, 4.000001, 1e9, "0", "nan", "-0", "true", "false", "inf"]),
    st.text(max_size=12),
    st.sampled_from(["cat", "cat:up", "person:down", "car", ["cat", "dog:down"], [], [1], {"a": 1}]),
    st.sampled_from([*sorted(TIERS), "../gold", "GOLD", "gold\x00", "free-tier "]),
)
NAMES = st.sampled_from([*REQUEST_ARGS, "AIM_SIGMA", "Aim_profile", "aim_", "aim_sigma ", "other", "topk"])
HOSTILE = st.dictionaries(NAMES, VALUES, max_size=6)
# Well-formed values, so that many requests are served and the floor is checked on them.
PLAUSIBLE = st.fixed_dictionaries(
    {},
    optional={
        "aim_profile": st.sampled_from(sorted(TIERS)),
        "aim_sigma": st.one_of(st.floats(0, 10), st.sampled_from([0, -0.0, 1e-300, 4.0])),
        "aim_focus": st.sampled_from(["cat", "cat:down", ["person"], ["person", "car:down"]]),
        "aim_focus_sigma": st.floats(0, 5),
        "aim_seed": st.integers(0, 2**63 - 1),
        "aim_keyed": st.sampled_from([True, False, "true", "false", 0, 1]),
    },
)
FIELDS = st.one_of(HOSTILE, PLAUSIBLE)
POLICIES = st.builds(
    lambda default, ad_hoc, clean: TierPolicy(TIERS, default, ad_hoc, clean and default is None),
    st.sampled_from([None, *sorted(TIERS)]),
    st.booleans(),
    st.booleans(),
)


def noise_floor(fields, policy: TierPolicy) -> Profile | None:
    """The tier a request may never get less noise than: the one it names, else the default (None: none)."""
    name = fields.get("aim_profile")
    if isinstance(name, str) and name in TIERS:
        return TIERS[name]
    return TIERS[policy.default] if policy.default else None


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=FIELDS, policy=POLICIES)
def test_no_request_gets_less_noise_than_its_tier_or_the_default(fields, policy):
    """For any fields and any policy: refused in one line, or served at least its floor's noise."""
    try:
        resolution = resolve(fields, policy)
    except ProfileError as exc:
        assert "\n" not in str(exc)
        return
    floor = noise_floor(fields, policy)
    profile = resolution.profile
    if floor is not None:
        assert profile is not None and weakening(profile, floor) is None
        assert profile.sigma >= floor.sigma and math.isfinite(profile.sigma)
    if is_clean(profile) and not (floor is not None and is_clean(floor)):
        assert policy.allow_clean  # the clean model only by the operator's opt-in (or its own clean tier)
    if resolution.ad_hoc or (resolution.tier is None and profile is not None):
        assert policy.allow_ad_hoc  # ad-hoc modulation only by the operator's opt-in
    if resolution.tier is not None:
        # Served under a folder tier's name: only options that tier leaves open were applied.
        assert not set(aim_fields(fields)) & set(fixed_by(TIERS[resolution.tier]))
        assert profile.sigma == TIERS[resolution.tier].sigma


@settings(max_examples=100, deadline=None)
@given(fields=FIELDS)
def test_by_default_only_the_folder_tiers_are_served(fields):
    """No opt-in, no default: every served request is a folder tier (its open options at most)."""
    try:
        resolution = resolve(fields, TierPolicy(TIERS))
    except ProfileError:
        return
    assert resolution.tier in TIERS and not resolution.ad_hoc
    assert resolution.profile.sigma == TIERS[resolution.tier].sigma
