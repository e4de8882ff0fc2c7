"""Numbers spelled in untrusted text (class ids, ports, headers) go through one check that never raises.

str.isdigit() accepts '²' and '①', which int() refuses (a ValueError traceback, found by hypothesis in CI
with the labels key '²'); int() accepts other scripts' digits, signs and '_', and refuses over 4,300 digits.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aim_cli.engines.ray_data import cluster_endpoint
from aim_cli.errors import AimError, ModelError
from aim_cli.labels import resolve_class
from aim_cli.limits import ascii_whole
from aim_cli.models.checkpoint_files import _Where, check_model_config
from aim_cli.models.weights import labels_from_value
from aim_cli.plans import _class_id

LOOKALIKES = ["²", "①", "٣", "1_0", "+1", "-1", "1.0", "", " ", "9" * 5000, "1²"]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30) | st.from_regex(r"\s*[0-9]{1,25}\s*", fullmatch=True))
@example("²")
@example("٣")
@example("9" * 5000)
def test_ascii_whole_is_exactly_a_short_run_of_ascii_digits(text):
    stripped = text.strip()
    expected = int(stripped) if 0 < len(stripped) <= 18 and all(c in "0123456789" for c in stripped) else None
    assert ascii_whole(text) == expected


@pytest.mark.parametrize("text", LOOKALIKES)
def test_a_class_id_key_that_is_not_ascii_digits_is_a_one_line_model_error(text):
    with pytest.raises(ModelError, match="class id"):
        labels_from_value({text: "cat"}, "metadata")


@pytest.mark.parametrize("text", [t for t in LOOKALIKES if t.strip()])
def test_a_config_id2label_key_that_is_not_ascii_digits_is_a_one_line_model_error(text):
    config = {"model_type": "vit", "id2label": {text: "cat"}}
    with pytest.raises(ModelError):
        check_model_config(config, _Where("model", "config.json"))


@pytest.mark.parametrize("text", [t for t in LOOKALIKES if t.strip()])
def test_a_focus_target_that_looks_like_an_id_is_an_aim_error(text):
    with pytest.raises(AimError):
        resolve_class(text, ["road", "car"])
    with pytest.raises(AimError):
        _class_id(text, 10)


@pytest.mark.parametrize("text", LOOKALIKES)
def test_a_ray_port_that_is_not_ascii_digits_is_an_aim_error(text):
    with pytest.raises(AimError, match="HOST:PORT"):
        cluster_endpoint(f"10.0.0.1:{text}")


def test_ascii_ids_still_resolve():
    assert labels_from_value({"0": "road", " 1 ": "car"}, "metadata") == ["road", "car"]
    assert resolve_class("1", ["road", "car"]) == 1
    assert _class_id("9", 10) == 9
    assert cluster_endpoint("10.0.0.1:6379") == ("10.0.0.1", 6379)
