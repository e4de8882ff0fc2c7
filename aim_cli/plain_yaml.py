"""Plain YAML for configuration files: no anchors or aliases, no duplicate keys, YAML 1.2 numbers.

Every problem is a `ValueError` subclass carrying the 1-based line, so the caller can name
file, key and line in one message. Aliases are refused while parsing events, before anything
is expanded: a few hundred bytes of nested aliases would otherwise grow into gigabytes.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class PlainYAMLError(ValueError):
    """A document that is not plain YAML; `line` is 1-based (None when unknown)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as 1e-1 (YAML 1.1 requires a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _line(mark: Any) -> int | None:
    """1-based line of a YAML mark."""
    return mark.line + 1 if mark is not None else None


# Configuration needs a handful of levels; PyYAML composes nodes recursively, so a document
# of many thousand nested brackets (well inside any size cap) would overflow Python's stack.
MAX_DEPTH = 32


def _implicit(event: Any) -> bool:
    """True when the event's tag was resolved from its plain form, not written in the document."""
    implicit = getattr(event, "implicit", True)
    return any(implicit) if isinstance(implicit, tuple) else bool(implicit)


def _refuse_references(text: str) -> None:
    """Fail on the first anchor, alias or too-deep nesting, scanning events only (nothing is expanded)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                message = f"lists and mappings are nested deeper than {MAX_DEPTH} levels"
                raise PlainYAMLError(message, _line(event.start_mark))
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if isinstance(event, yaml.AliasEvent):
            raise PlainYAMLError(f"alias *{event.anchor} is not allowed", _line(event.start_mark))
        if getattr(event, "anchor", None):
            raise PlainYAMLError(f"anchor &{event.anchor} is not allowed", _line(event.start_mark))
        # Explicit tags (!!timestamp x, !!binary ...) reach constructors that crash or build odd types.
        if getattr(event, "tag", None) is not None and not _implicit(event):
            raise PlainYAMLError(f"tag {event.tag} is not allowed: write the plain value", _line(event.start_mark))


def _check_keys(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    """Record each key's line; fail on a key given twice in one mapping."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value)
            line = key_node.start_mark.line + 1
            key = f"{path}.{name}" if path else name
            if key_node.tag == "tag:yaml.org,2002:merge":  # copies keys in unseen, hiding duplicates
                raise PlainYAMLError(f"merge key '{name}' is not allowed: write the keys out", line)
            if name in seen:
                raise PlainYAMLError(f"key '{key}' is given twice (lines {seen[name]} and {line})", line)
            seen[name] = line
            lines[key] = line
            _check_keys(value_node, key, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{path}[{index}]"
            lines[key] = item.start_mark.line + 1
            _check_keys(item, key, lines)


def load(text: str) -> tuple[Any, dict[str, int]]:
    """Parse one plain YAML document; returns the data and a map of dotted key paths to lines."""
    try:
        _refuse_references(text)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            lines: dict[str, int] = {}
            if node is not None:
                _check_keys(node, "", lines)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlainYAMLError(f"YAML syntax error: {' '.join(str(problem).split())}", _line(mark)) from None
    except (ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, PlainYAMLError):
            raise
        # e.g. a date such as 2024-13-45 that matches the timestamp pattern but is no date
        # (keep the first clause: Python's advice about interpreter limits is no help to a user)
        reason = " ".join(str(exc).split(";")[0].split())
        raise PlainYAMLError(f"a value cannot be read: {reason}") from None
    return data, lines
