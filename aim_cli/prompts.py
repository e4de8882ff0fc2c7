"""Reading prompts: --prompt values, a .txt or .jsonl file, or standard input."""

from __future__ import annotations

import io
import json
import select
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from aim_cli.errors import InputError
from aim_cli.io import read_text_file
from aim_cli.limits import TEXT_BYTES

PROMPT_FILE_SUFFIXES = (".txt", ".jsonl")
# How long stdin may stay silent before aim says it is waiting for prompts there.
STDIN_GRACE_S = 0.5


def read_prompt_file(path: Path) -> list[str]:
    """Prompts from a .txt file (one per non-blank line) or a .jsonl file (a `prompt` field per line)."""
    suffix = path.suffix.lower()
    if suffix not in PROMPT_FILE_SUFFIXES:
        raise InputError(f"prompts file {path}: unsupported file type", "use .txt (one prompt per line) or .jsonl")
    text = read_text_file(path, TEXT_BYTES, InputError, "prompts file")
    prompts = _jsonl_prompts(text, path) if suffix == ".jsonl" else split_lines(text)
    if not prompts:
        raise InputError(f"prompts file {path} holds no prompts")
    return prompts


def split_lines(text: str) -> list[str]:
    """One prompt per line; blank lines separate nothing and are skipped."""
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _jsonl_prompts(text: str, path: Path) -> list[str]:
    """The `prompt` field of every non-blank JSONL line; a bad line is named by its number."""
    prompts = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"prompts file {path}, line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or "prompt" not in record:
            raise InputError(
                f'prompts file {path}, line {number}: expected an object with a "prompt" field',
                'e.g. {"prompt": "12+7="}',
            )
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            raise InputError(f'prompts file {path}, line {number}: "prompt" must be text, got {type(prompt).__name__}')
        if not prompt.strip():
            raise InputError(f"prompts file {path}, line {number}: the prompt is empty")
        prompts.append(prompt)
    return prompts


def gather_prompts(
    given: Sequence[str] | None,
    prompts_file: Path | Sequence[Path] | None,
    stdin: TextIO | None,
    default: str | None,
    notice: Callable[[], None] | None = None,
) -> list[str]:
    """Prompts from --prompt and --prompts (one or more files); else stdin unless it is a terminal; else `default`."""
    prompts = list(given or [])
    for index, prompt in enumerate(prompts):
        if not prompt.strip():
            raise InputError(f"--prompt {index + 1} is empty", "give some text to complete")
    files = [prompts_file] if isinstance(prompts_file, Path) else list(prompts_file or [])
    for path in files:
        prompts.extend(read_prompt_file(path))
    if prompts:
        return prompts
    if stdin is not None and not _is_terminal(stdin):
        if notice is not None and not _ready(stdin, STDIN_GRACE_S):
            notice()  # a pipe left open would otherwise wait silently
        prompts = split_lines(_read_bounded(stdin))
        if prompts:
            return prompts
    if default is not None:
        return [default]
    raise InputError("no prompt given", "pass --prompt TEXT, --prompts FILE (.txt/.jsonl), or pipe prompts on stdin")


def _read_bounded(stream: TextIO) -> str:
    """All of `stream`, refused past the text bound (a character is at least a byte, so none is lost)."""
    bound = TEXT_BYTES.value()
    text = stream.read(bound + 1)
    if len(text) > bound:
        raise InputError(f"standard input holds more than {bound:,} characters of prompts", TEXT_BYTES.hint())
    return text


def _ready(stream: TextIO, timeout: float) -> bool:
    """True when reading `stream` would not block (data or end of input within `timeout`)."""
    try:
        readable, _, _ = select.select([stream], [], [], timeout)
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        return True  # not a real file descriptor (e.g. a StringIO): reading cannot wait
    return bool(readable)


def _is_terminal(stream: TextIO) -> bool:
    """True when the stream is an interactive terminal (then it is not read for prompts)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return True
