"""A checkpoint's chat template rendered under bounds, so a hostile template cannot run away.

A chat template is code from the checkpoint. transformers renders it in a Jinja sandbox, which
stops file and attribute escapes but neither output size nor work: `{{ content * 10**8 }}`
builds a gigabyte string (and the tokenizer then aborts natively), nested loops run for hours.
aim renders with the sandbox transformers configures (same globals, filters and extensions, so
the same text) plus four bounds: the streamed output stops past PROMPT_CHARS; operators,
calls and filters refuse results (and size arguments) past it before building them; the
Python lines run are counted against TEMPLATE_STEPS; and on Linux the address space may grow
by a fixed amount only while rendering, so any other growth is a clean MemoryError.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aim_cli.errors import ModelError
from aim_cli.limits import PROMPT_CHARS, TEMPLATE_STEPS

_MiB = 1024 * 1024


class _Exceeded(BaseException):
    """A bound was hit while rendering; BaseException so no `except Exception` in a template swallows it."""


def render_chat(tokenizer: Any, messages: list[dict[str, str]], display: str) -> str:
    """The tokenizer's chat template applied to `messages`, ready for the assistant's reply, within the bounds."""
    limit = PROMPT_CHARS.value()
    context = {
        **_plain(tokenizer.special_tokens_map),
        "messages": messages,
        "tools": None,
        "documents": None,
        "add_generation_prompt": True,
    }
    pieces: list[str] = []
    total = 0
    try:
        with _step_budget(TEMPLATE_STEPS.value()), _address_space_headroom(256 * _MiB + 32 * limit):
            # Compiling is bounded too: Jinja folds constant expressions (filters included) while compiling.
            template = _compiled(tokenizer.get_chat_template())
            stream = template.generate(**context)
            try:
                for piece in stream:
                    total += len(piece)
                    if total > limit:
                        raise _Exceeded(f"renders more than {limit:,} characters")
                    pieces.append(piece)
            finally:
                stream.close()
    except _Exceeded as exc:
        hint = TEMPLATE_STEPS.hint() if "steps" in str(exc) else PROMPT_CHARS.hint()
        raise ModelError(
            f"--chat: the chat template of {display} {exc}", f"fix the checkpoint's template, or {hint}"
        ) from None
    except MemoryError:
        raise ModelError(
            f"--chat: the chat template of {display} needs more memory than a prompt of {limit:,} characters",
            f"fix the checkpoint's template, or {PROMPT_CHARS.hint()}",
        ) from None
    except Exception as exc:  # a broken template fails in many types (jinja2.TemplateError and others)
        raise ModelError(f"--chat: the chat template of {display} failed: {_first_line(exc)}") from None
    return "".join(pieces)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception message, for one-line errors."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _plain(value: Any) -> Any:
    """Special tokens as plain str/list (transformers passes AddedToken-like objects through str too)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value if value is None or type(value) in (str, int, float, bool) else str(value)


# --- the bounded sandbox ------------------------------------------------------------------------


def _too_big(value: Any) -> bool:
    """Whether a value a template built is longer than a whole prompt may be."""
    return isinstance(value, (str, list, tuple, dict)) and len(value) > PROMPT_CHARS.value()


def _check_result(value: Any, what: str) -> Any:
    """Refuse a result over the bound (built already, but at most one step past it)."""
    if _too_big(value):
        raise _Exceeded(f"builds a value of {len(value):,} items with {what}, more than a prompt may hold")
    return value


def _check_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> None:
    """Refuse an integer argument past the bound: widths and counts (center, indent, ljust) size results."""
    limit = PROMPT_CHARS.value()
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limit:
            raise _Exceeded(f"passes {value:,} to {what}, past the bound on a prompt's length")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A Jinja filter whose size arguments and result are checked (filters bypass the sandbox's call)."""

    @functools.wraps(function)  # keeps jinja's pass_context / pass_environment marks
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args, kwargs, f"the '{name}' filter")
        return _check_result(function(*args, **kwargs), f"the '{name}' filter")

    return bounded


def _huge_product(left: Any, right: Any) -> bool:
    """Whether int * int has more than 4096 bits: squaring in a loop grows a number past any step bound."""
    ints = [value for value in (left, right) if isinstance(value, int) and not isinstance(value, bool)]
    return len(ints) == 2 and ints[0].bit_length() + ints[1].bit_length() > 4096


def _length(value: Any) -> int | None:
    """The length of a sequence an operator may repeat or join, else None."""
    return len(value) if isinstance(value, (str, list, tuple)) else None


@functools.lru_cache(maxsize=1)
def _environment_class() -> type:
    """An ImmutableSandboxedEnvironment whose operators and calls check sizes before building them."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """Intercepting these operators also keeps Jinja from folding them into constants at compile time."""

        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            limit = PROMPT_CHARS.value()
            if operator == "*":
                if _huge_product(left, right):
                    raise _Exceeded("multiplies integers into a number too large to compute")
                for sequence, count in ((left, right), (right, left)):
                    size = _length(sequence)
                    if size is not None and isinstance(count, int) and size * count > limit:
                        raise _Exceeded(
                            f"repeats a value of {size:,} items {count:,} times, past the bound on a prompt's length"
                        )
            elif operator == "**" and isinstance(left, (int, float)) and isinstance(right, (int, float)):
                if abs(left) > 1 and right > 0 and math.log2(abs(left)) * right > 4096:
                    raise _Exceeded(f"raises {left} to the power {right}, a number too large to compute")
            elif (
                operator == "+"
                and (left_size := _length(left)) is not None
                and (right_size := _length(right)) is not None
                and left_size + right_size > limit
            ):
                raise _Exceeded("joins values past the bound on a prompt's length")
            return _check_result(super().call_binop(context, operator, left, right), f"'{operator}'")

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            what = getattr(__obj, "__name__", type(__obj).__name__)
            _check_arguments(args, kwargs, what)
            return _check_result(super().call(__context, __obj, *args, **kwargs), what)

    return BoundedEnvironment


@functools.lru_cache(maxsize=1)
def _transformers_environment() -> Any:
    """The environment transformers renders chat templates in (from an empty template: nothing runs)."""
    from transformers.utils.chat_template_utils import _compile_jinja_template

    return _compile_jinja_template("").environment


@functools.lru_cache(maxsize=8)
def _compiled(source: str) -> Any:
    """A template compiled once in the bounded environment (calibration renders many prompts)."""
    return _environment().from_string(source)


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    """A bounded copy of transformers' chat-template environment: its options, extensions, filters and globals."""
    import jinja2.ext

    try:
        base = _transformers_environment()
        options = {
            "trim_blocks": base.trim_blocks,
            "lstrip_blocks": base.lstrip_blocks,
            "extensions": [type(extension) for extension in base.extensions.values()],
        }
        filters, globals_ = dict(base.filters), dict(base.globals)
    except (ImportError, AttributeError):  # transformers moved it: its documented settings
        options = {"trim_blocks": True, "lstrip_blocks": True, "extensions": [jinja2.ext.loopcontrols]}
        filters, globals_ = {}, {}
    environment = _environment_class()(**options)
    environment.filters.update(filters)
    environment.globals.update(globals_)
    environment.filters = {name: _bounded_filter(name, f) for name, f in environment.filters.items()}
    return environment


# --- bounds on work and memory ------------------------------------------------------------------


@contextmanager
def _step_budget(steps: int) -> Iterator[None]:
    """Count the Python lines run (the template's compiled code and what it calls); stop past `steps`.

    A trace function is per thread and costs only while rendering; the previous one (a debugger,
    coverage) is put back afterwards.
    """
    count = 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        count += 1
        if count > steps:
            raise _Exceeded(f"runs more than {steps:,} steps to render one prompt")
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        yield
    finally:
        sys.settrace(previous)


@contextmanager
def _address_space_headroom(headroom: int) -> Iterator[None]:
    """On Linux, let the address space grow by at most `headroom` bytes while inside; elsewhere no-op.

    One Jinja expression (a `~` join doubled in a loop, a format width) can ask for gigabytes in
    a single step, past any check between steps; with this soft limit the allocation fails as a
    MemoryError instead of the kernel killing aim. The old limit is restored on the way out.
    """
    try:
        import resource

        with open("/proc/self/statm", encoding="ascii") as handle:
            used = int(handle.read().split()[0]) * resource.getpagesize()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        yield
        return
    cap = used + headroom
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield
        return
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
