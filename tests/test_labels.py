"""Class-name resolution."""

from __future__ import annotations

import pytest

from aim_cli.errors import AimError
from aim_cli.labels import resolve_class

CITYSCAPES = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
]
ADE = [
    "wall",
    "building;edifice",
    "sky",
    "floor;flooring",
    "tree",
    "person;individual;someone;somebody;mortal;soul",
    "car;auto;automobile;machine;motorcar",
]


def test_exact_and_case_insensitive():
    assert resolve_class("Person", CITYSCAPES) == 11
    assert resolve_class("traffic_light", CITYSCAPES) == 6
    assert resolve_class("TRAFFIC-LIGHT", CITYSCAPES) == 6


def test_alias_pedestrian_to_person():
    assert resolve_class("pedestrian", CITYSCAPES) == 11
    assert resolve_class("pedestrian", ADE) == 5


def test_ade_synonym_lists():
    assert resolve_class("someone", ADE) == 5
    assert resolve_class("automobile", ADE) == 6
    assert resolve_class("edifice", ADE) == 1


def test_numeric_class_id():
    assert resolve_class("3", CITYSCAPES) == 3


def test_unknown_name_suggests_closest():
    with pytest.raises(AimError) as info:
        resolve_class("persn", CITYSCAPES)
    assert "persn" in str(info.value) and "'person'" in str(info.value)


def test_unknown_name_without_close_match_lists_labels():
    with pytest.raises(AimError) as info:
        resolve_class("zzzzzz", CITYSCAPES)
    assert "road" in str(info.value)
