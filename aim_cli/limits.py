"""Bounds on what aim accepts from files it did not write, each raisable by an environment variable.

Everything a user hands aim (checkpoint folders, images, text inputs) is untrusted: a value in a
JSON file must not be able to make aim allocate the machine's memory or read without end. Each
bound is generous for real inputs and is checked before anything is allocated; a user with a
real input over a bound raises it with the named environment variable (docs/security.md, "Security model").
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from aim_cli.errors import AimError

_MiB = 1024 * 1024


def ascii_whole(text: str, max_digits: int = 18) -> int | None:
    """The whole number `text` spells in ASCII digits (spaces around allowed), else None; never raises.

    str.isdigit() also accepts '²' and '①', which int() refuses, and int() itself accepts other
    scripts' digits, signs and '_', and refuses over 4,300 digits: each reader of a number in
    untrusted text (an id, a port, a header) checks it here instead.
    """
    stripped = text.strip()
    if not 0 < len(stripped) <= max_digits or not (stripped.isascii() and stripped.isdigit()):
        return None
    return int(stripped)


@dataclass(frozen=True)
class Limit:
    """One bound: its environment variable, default and what it bounds (for messages)."""

    env: str
    default: int
    what: str

    def value(self) -> int:
        """The bound in force: the environment variable when set (a positive integer), else the default."""
        raw = os.environ.get(self.env)
        if raw is None or raw.strip() == "":
            return self.default
        try:
            number = int(raw.strip().replace("_", ""))
        except ValueError:
            number = 0
        if number <= 0:
            raise AimError(f"{self.env}={raw!r} is not a positive integer", f"unset it or give a bound on {self.what}")
        return number

    def hint(self) -> str:
        """How to raise the bound, for the end of an error message."""
        return f"the bound is {self.value():,}: raise it with {self.env}=N if this input is genuine"


IMAGE_BYTES = Limit("AIM_MAX_IMAGE_BYTES", 512 * _MiB, "the size of one image file in bytes")
TEXT_BYTES = Limit(
    "AIM_MAX_TEXT_BYTES", 256 * _MiB, "the size of one text input (prompts, labels, manifests, datasets) in bytes"
)
REQUEST_BYTES = Limit(
    "AIM_MAX_REQUEST_BYTES", 64 * _MiB, "the size of one request body to an image endpoint (aim serve) in bytes"
)
CONFIG_BYTES = Limit("AIM_MAX_CONFIG_BYTES", 64 * _MiB, "the size of one checkpoint config or label file in bytes")
INPUT_PIXELS = Limit(
    "AIM_MAX_INPUT_PIXELS", 4096 * 4096, "the height x width a checkpoint's preprocessing may resize an image to"
)
PROMPT_CHARS = Limit(
    "AIM_MAX_PROMPT_CHARS", 4 * _MiB, "the length of one prompt after its chat template, in characters"
)
FOCUS_TARGETS = Limit("AIM_MAX_FOCUS_TARGETS", 256, "the number of focus targets of one profile or request")
DRAWS = Limit("AIM_MAX_DRAWS", 1000, "the number of Monte Carlo draws of a calibration check")
LABEL_COUNT = Limit(
    "AIM_MAX_LABELS",
    1_000_000,
    "the number of classes a checkpoint's config, weights metadata or labels file may declare",
)
TENSOR_COUNT = Limit("AIM_MAX_TENSORS", 100_000, "the number of tensors one weights file may hold")
SEQUENCE_TOKENS = Limit(
    "AIM_MAX_SEQUENCE_TOKENS", 1 << 20, "a token count a checkpoint's generation config may set (max_length, ...)"
)
TEMPLATE_STEPS = Limit(
    "AIM_MAX_TEMPLATE_STEPS", 10_000_000, "the Python lines a chat template may run to render one prompt"
)
# An image server's bounds are a server's, not a workstation's: a request is anyone's input.
SERVE_PIXELS = Limit(
    "AIM_SERVE_MAX_PIXELS", 4096 * 4096, "the width x height of one image a server decodes, read from its header"
)
SERVE_ANSWER_BYTES = Limit(
    "AIM_SERVE_MAX_ANSWER_BYTES", 16 * _MiB, "the size of one answer of an image server in bytes"
)
RAY_CONNECT_SECONDS = Limit("AIM_RAY_CONNECT_TIMEOUT_S", 10, "the seconds aim waits for a Ray cluster to answer")
