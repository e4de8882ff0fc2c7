"""Argument checks every API function shares: paths, image inputs, counts, choices, model specs.

Private to aim_cli.api. Each check turns a caller's argument into what the run uses, or raises an
aim.InputError naming the argument (as the CLI's option would be named), before any work.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aim_cli import demo
from aim_cli.errors import FailedInput, InputError
from aim_cli.io import find_images
from aim_cli.profile import Profile, is_integer_number

PathLike = str | Path
Notice = Callable[[str], None]
Progress = Callable[[int], None]


def quiet(_message: str) -> None:
    """The default notice: say nothing (the API never prints)."""


def no_progress(_count: int) -> None:
    """The default progress: count nothing."""


def as_path(value: PathLike | None, what: str) -> Path | None:
    """A str or Path argument as a Path (None stays None)."""
    if value is None or isinstance(value, Path):
        return value
    if isinstance(value, str):
        return Path(value)
    raise InputError(f"{what} must be a path (str or pathlib.Path), got {type(value).__name__}")


def image_inputs(
    inputs: PathLike | Sequence[PathLike] | None, demo_task: str | None
) -> tuple[list[Path], list[FailedInput]]:
    """Image files, folders (recursive) and globs as paths; ones that match nothing become failures.

    No inputs: the demo's samples for `demo_task` (the demo model's), else an error; finding no
    image at all is an error.
    """
    given = [inputs] if isinstance(inputs, (str, Path)) else list(inputs or [])
    if not given:
        if demo_task is None:
            raise InputError("no inputs given", "pass image files, directories or globs")
        given = [demo.samples_dir(demo_task)]
    names = [str(as_path(item, "each input")) for item in given]
    paths, unmatched = find_images(names)
    if not paths:
        raise InputError(f"no images found in {', '.join(names)}", "pass image files, directories or globs")
    return paths, [FailedInput(Path(item), f"{item}: no such file, or no images match") for item in unmatched]


# The words of check_whole's message for a count of at least 1, as the task functions say it.
POSITIVE = "a positive integer"


def check_whole(value: Any, what: str, low: int = 1, high: int | None = None, *, span: str | None = None) -> int:
    """An integer (a numpy integer too, never a bool) within [low, high], as an int; an InputError otherwise.

    span: the message's words for what is allowed (default: 'an integer LOW..HIGH' or 'an integer >= LOW').
    """
    number = operator.index(value) if is_integer_number(value) else None
    if number is None or number < low or (high is not None and number > high):
        span = span or (f"an integer {low}..{high}" if high is not None else f"an integer >= {low}")
        raise InputError(f"{what} must be {span}, got {value!r}")
    return number


def check_choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (an enum member's value counts); an InputError otherwise."""
    value = getattr(value, "value", value)
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"unknown {what} {value!r}", f"use one of {', '.join(choices)}")
    return value


def model_spec(model: object) -> str | None:
    """The spec of a model argument (None for the demo model or one already loaded)."""
    if model is None or isinstance(model, str):
        return model
    from aim_cli.models.image_model import ImageModel
    from aim_cli.models.language import LanguageModel

    if isinstance(model, (ImageModel, LanguageModel)):
        return None
    raise InputError(
        f"model must be a spec (str, as --model) or a model from aim.load_model, got {type(model).__name__}"
    )


def profile_file(profile: object) -> Path | None:
    """The YAML file a Profile was loaded from (an input no output may replace), if any."""
    source = profile.source if isinstance(profile, Profile) else None
    return Path(source) if source and Path(source).is_file() else None
