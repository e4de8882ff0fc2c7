"""Property tests: any YAML document is either a valid profile or ONE clean ProfileError."""

from __future__ import annotations

import string
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aim_cli.errors import ProfileError
from aim_cli.profile import MAX_SEED, MAX_SIGMA, Profile, load_profile

KEYS = [
    "version",
    "name",
    "description",
    "utility",
    "focus",
    "noise",
    "sigma",
    "targets",
    "seed",
    "key_env",
    "class",
    "direction",
    "utilty",
    "extra",
    "1",
    "null",
    "<<",
]
TRICKY_TEXT = [
    "1e-1",
    "1E5",
    ".inf",
    "-.inf",
    ".nan",
    "0x1F",
    "0o17",
    "2024-01-01",
    "2024-13-45",
    "yes",
    "no",
    "~",
    "null",
    "1_000",
    "+1",
    "-0",
    "1:2",
    "12:30:00",
    "up",
    "down",
    "person",
    "&a",
    "*a",
    "!!str x",
    "!!timestamp x",
    "!!int 0x",
    "!!float 1",
    "!local x",
]
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(TRICKY_TEXT),
    st.text(alphabet=string.printable, max_size=12),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=20,
)


def _check(path: Path) -> None:
    """The property: a Profile, or a ProfileError whose message is one line."""
    try:
        profile = load_profile(path)
    except ProfileError as exc:
        assert "\n" not in str(exc), str(exc)
        return
    assert isinstance(profile, Profile)
    assert 0 <= profile.sigma <= MAX_SIGMA
    assert profile.seed is None or 0 <= profile.seed <= MAX_SEED


@SETTINGS
@given(document=documents)
def test_structured_documents_load_or_fail_cleanly(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("p") / "p.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    _check(path)


@SETTINGS
@given(text=st.text(alphabet=string.printable + "&*!|>%@`", max_size=200))
def test_arbitrary_text_loads_or_fails_cleanly(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("p") / "p.yaml"
    path.write_text(text)
    _check(path)


valid_profiles = st.fixed_dictionaries(
    {"utility": st.fixed_dictionaries({"sigma": st.floats(min_value=0, max_value=MAX_SIGMA)})},
    optional={
        "version": st.just(1),
        "name": st.text(alphabet=string.ascii_letters, min_size=1, max_size=10),
        "focus": st.fixed_dictionaries(
            {
                "sigma": st.floats(min_value=0, max_value=100),
                # One direction per class (a class both up and down is refused; tested in test_argument_bounds.py).
                "targets": st.lists(
                    st.fixed_dictionaries(
                        {"class": st.sampled_from(["person", "car", "3"]), "direction": st.sampled_from(["up", "down"])}
                    ),
                    max_size=3,
                    unique_by=lambda target: target["class"],
                ),
            }
        ),
        "noise": st.fixed_dictionaries({"seed": st.integers(min_value=0, max_value=MAX_SEED)}),
    },
)


@SETTINGS
@given(document=valid_profiles)
def test_valid_profiles_round_trip(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("p") / "p.yaml"
    path.write_text(yaml.safe_dump(document))
    profile = load_profile(path)
    assert profile.sigma == document["utility"]["sigma"]
    if "noise" in document:
        assert profile.seed == document["noise"]["seed"]
    if "focus" in document:
        assert profile.focus_sigma == document["focus"]["sigma"]
        assert [f.name for f in profile.focus] == [t["class"] for t in document["focus"]["targets"]]


def _render(value: object) -> str:
    """Write a nested structure as flow YAML with every scalar token left UNQUOTED (as users type them)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_render(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(item) for item in value) + "]"
    return str(value)


# Unquoted tokens that YAML resolves to dates, timestamps, hex/octal ints, huge ints, inf/nan, 1e-1...
raw_tokens = st.one_of(
    st.sampled_from(TRICKY_TEXT),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.dates().map(str),
    st.datetimes().map(lambda moment: moment.isoformat(sep=" ")),
)
raw_documents = st.dictionaries(
    st.sampled_from(KEYS),
    st.recursive(
        raw_tokens,
        lambda children: st.one_of(
            st.lists(children, max_size=3), st.dictionaries(st.sampled_from(KEYS), children, max_size=3)
        ),
        max_leaves=10,
    ),
    max_size=5,
)


@SETTINGS
@given(document=raw_documents)
def test_unquoted_tricky_scalars_load_or_fail_cleanly(tmp_path_factory, document):
    path = tmp_path_factory.mktemp("p") / "p.yaml"
    path.write_text("\n".join(f"{key}: {_render(value)}" for key, value in document.items()) + "\n")
    _check(path)
