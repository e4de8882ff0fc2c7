"""Resolve user-given class names against a model's labels: exact, alias, synonym, suggest."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

from aim_cli.errors import AimError
from aim_cli.limits import ascii_whole

# Everyday words people type, mapped to the names datasets use (tried in order).
ALIASES: dict[str, tuple[str, ...]] = {
    "pedestrian": ("person", "pedestrian", "people", "human"),
    "pedestrians": ("person", "pedestrian", "people"),
    "people": ("person", "people"),
    "human": ("person", "people"),
    "man": ("person",),
    "woman": ("person",),
    "child": ("person",),
    "rider": ("rider", "person"),
    "cyclist": ("rider", "bicyclist", "person"),
    "automobile": ("car",),
    "auto": ("car",),
    "vehicle": ("car", "truck"),
    "lorry": ("truck",),
    "bike": ("bicycle", "motorcycle"),
    "motorbike": ("motorcycle",),
    "street": ("road",),
    "pavement": ("sidewalk",),
    "footpath": ("sidewalk",),
    "tree": ("tree", "vegetation"),
    "trees": ("tree", "vegetation"),
    "plant": ("plant", "vegetation"),
    "greenery": ("vegetation",),
    "house": ("house", "building"),
    "traffic light": ("traffic light", "traffic_light"),
    "sign": ("traffic sign", "signboard"),
}


def normalize(name: str) -> str:
    """Lower-case and fold separators so 'Traffic_Light' and 'traffic light' compare equal."""
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def _synonyms(label: str) -> list[str]:
    """Split ADE20K-style labels ('person;individual;someone') into normalised synonyms."""
    return [normalize(part) for part in re.split(r"[;,]", label) if part.strip()]


def resolve_class(name: str, labels: Sequence[str]) -> int:
    """Return the class id a user-given name refers to, or fail with close suggestions."""
    wanted = normalize(name)
    normalized = [normalize(label) for label in labels]
    if wanted in normalized:
        return normalized.index(wanted)
    for candidate in ALIASES.get(wanted, ()):
        if normalize(candidate) in normalized:
            return normalized.index(normalize(candidate))
    for candidate in (wanted, *ALIASES.get(wanted, ())):
        for class_id, label in enumerate(labels):
            if normalize(candidate) in _synonyms(label):
                return class_id
    given_id = ascii_whole(name)
    if given_id is not None and given_id < len(labels):
        return given_id
    vocabulary = sorted({s for label in labels for s in _synonyms(label)})
    close = difflib.get_close_matches(wanted, vocabulary, n=4, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else _label_preview(labels)
    raise AimError(f"unknown class name '{name}' for this model", hint)


def _label_preview(labels: Sequence[str], limit: int = 12) -> str:
    """A short list of the model's labels for an error message."""
    shown = ", ".join(str(label) for label in labels[:limit])
    more = f", ... ({len(labels)} in all)" if len(labels) > limit else ""
    return f"the model's classes are: {shown}{more}"
