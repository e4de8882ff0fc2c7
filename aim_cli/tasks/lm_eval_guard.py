"""Every call into lm-eval and `datasets` goes through here: templates sandboxed, failures named.

lm-eval renders task templates (`doc_to_text`, `doc_to_target`, `doc_to_choice`, ...) with a
plain Jinja environment, so a template in a task file could reach `os.system`. Inside
`lm_eval_calls(..., sandbox=True)` lm-eval's `apply_template` renders in aim's bounded
ImmutableSandboxedEnvironment instead (the one chat templates use: no attribute escapes, no
mutation, output, operators and work bounded); lm-eval's own is put back on the way out.

A failure raised inside lm-eval, `datasets` or their libraries (a task key lm-eval rejects, a
broken JSONL file, an answer index out of range, a `sys.exit` or a stray KeyboardInterrupt) is a
problem with the task or its data, not a bug in aim: it becomes one line naming the tasks and
the library (exit 2). A failure raised in aim's own code still reaches the CLI as a bug (exit 3),
and a real Ctrl-C stays an interrupt.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aim_cli.errors import AimError, InputError
from aim_cli.limits import PROMPT_CHARS, TEMPLATE_STEPS
from aim_cli.tasks.task_folder import TRUST_TASK_CODE_FLAG

# Where a failure was raised -> the library to name. Checked against the innermost frame.
_LIBRARIES = (
    ("datasets", "datasets"),
    ("pyarrow", "datasets"),
    ("fsspec", "datasets"),
    ("huggingface_hub", "datasets"),
    ("jinja2", "lm-eval (a task template)"),
    ("lm_eval", "lm-eval"),
    ("yaml", "lm-eval (a task file)"),
)


class TaskError(InputError):
    """lm-eval or datasets refused a task, its template or its data (exit 2)."""


class _TemplateStopped(BaseException):
    """A refusal inside lm-eval; a BaseException so that no `except Exception` in lm-eval swallows it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message, else its type."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _described(exc: BaseException) -> str:
    """`Type: message`, and the root cause's when a library wrapped it (datasets hides JSON errors so)."""
    text = f"{type(exc).__name__}: {_first_line(exc)}"
    root, seen = exc, {id(exc)}
    while (root.__cause__ or root.__context__) is not None and id(root.__cause__ or root.__context__) not in seen:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
        seen.add(id(root))
    if root is not exc:
        text += f" ({type(root).__name__}: {_first_line(root)})"
    return text


def _raised_in(exc: BaseException) -> str:
    """The package (or file) of the innermost frame of `exc`'s traceback outside Python's standard library."""
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"].replace("\\", "/")
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        filename = frame.filename.replace("\\", "/")
        for marker in ("/site-packages/", "/dist-packages/"):
            if marker in filename:
                return filename.split(marker, 1)[1].split("/", 1)[0]
        if "/aim_cli/" in filename:
            return "aim_cli"
        if filename.startswith("<") or filename.startswith(stdlib + "/"):
            continue  # random.sample raising for lm-eval: name lm-eval, the caller
        return filename.rsplit("/", 1)[-1]  # a task's own Python file (trusted code)
    return ""


def _library(exc: BaseException) -> str | None:
    """The third-party library a failure came from, or None when aim's own code raised it."""
    where = _raised_in(exc)
    if where == "aim_cli":
        return None
    for prefix, name in _LIBRARIES:
        if where.startswith(prefix):
            return name
    return where or "lm-eval"


def _from_user(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt (or aim's Interrupted) is a real signal aim received, not one a library raised."""
    from aim_cli.interrupts import as_interrupt

    if type(exc).__name__ == "Interrupted":
        return True
    return as_interrupt(RuntimeError()) is not None  # a signal reached aim's handler during the run


@contextmanager
def lm_eval_calls(
    tasks: Sequence[str], sandbox: bool = True, untrusted: Path | None = None, subject: str | None = None
) -> Iterator[None]:
    """Run lm-eval calls with sandboxed templates; its failures become one-line TaskErrors naming `tasks`.

    With `untrusted` (a task folder the user did not trust), lm-eval's `!function` importer refuses
    any task file under it: scan_task_folder refused those already, and this catches a file that
    changed after the scan. `subject` replaces "lm-eval task NAMES" at the head of messages.
    """
    named = subject or f"lm-eval task {', '.join(tasks) if tasks else '(none)'}"
    undo = [_sandbox_templates() if sandbox else (lambda: None)]
    if untrusted is not None:
        undo.append(_refuse_imports_under(untrusted))
    try:
        yield
    except _TemplateStopped as exc:
        raise TaskError(f"{named}: {exc.message}", exc.hint) from None
    except AimError:
        raise
    except MemoryError:
        raise TaskError(
            f"{named}: out of memory inside lm-eval",
            "check the task's data and --limit/--num-fewshot",
        ) from None
    except SystemExit as exc:
        raise TaskError(f"{named}: lm-eval tried to exit (code {exc.code!r})", "check the task and its data") from None
    except KeyboardInterrupt as exc:
        if _from_user(exc):
            raise
        raise TaskError(f"{named}: lm-eval raised KeyboardInterrupt", "check the task") from None
    except Exception as exc:
        library = _library(exc)
        if library is None:
            raise  # aim's own code: a bug, reported as one (exit 3)
        raise TaskError(
            f"{named}: {library} failed: {_described(exc)}",
            "check the task's YAML and data files; rerun with --debug for the traceback",
        ) from exc
    finally:
        for restore in reversed(undo):
            restore()


# --- lm-eval's templates in the bounded sandbox ------------------------------------------------


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    """aim's bounded ImmutableSandboxedEnvironment with lm-eval's settings and its one filter."""
    from jinja2 import BaseLoader, StrictUndefined

    # The chat-template sandbox: the same bounds on operators, calls and filters.
    from aim_cli.models.chat_template import _bounded_filter, _environment_class

    environment = _environment_class()(loader=BaseLoader(), undefined=StrictUndefined, keep_trailing_newline=True)
    environment.filters["regex_replace"] = _regex_replace
    environment.filters = {name: _bounded_filter(name, f) for name, f in environment.filters.items()}
    return environment


def _regex_replace(string: str, pattern: str, repl: str, count: int = 0) -> str:
    """lm-eval's `regex_replace` filter (re.sub)."""
    import re

    return re.sub(pattern, repl, string, count=count)


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> Any:
    """A template compiled once (lm-eval renders the same few templates for every document)."""
    return _environment().from_string(source)


def sandboxed_apply_template(template: str, doc: dict) -> str:
    """lm-eval's apply_template, rendered in the bounded sandbox: output, operators and steps are bounded."""
    from jinja2.exceptions import SecurityError

    from aim_cli.models.chat_template import _Exceeded, _step_budget

    limit = PROMPT_CHARS.value()
    pieces: list[str] = []
    total = 0
    try:
        with _step_budget(TEMPLATE_STEPS.value()):
            stream = _compiled(template).generate(**doc)
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
        raise _TemplateStopped(f"the template {_shown(template)} {exc}", f"fix the template, or {hint}") from None
    except SecurityError as exc:
        raise _TemplateStopped(
            f"the template {_shown(template)} was stopped by the sandbox: {_first_line(exc)}",
            "task templates may format the document's fields, not reach Python objects",
        ) from None
    return "".join(pieces)


def _shown(template: str) -> str:
    """A template, shortened to show in one line."""
    text = " ".join(template.split())
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _sandbox_templates() -> Callable[[], None]:
    """Point lm-eval at the sandboxed apply_template (every module that holds it); return the undo."""
    try:
        import lm_eval.utils as utils
    except ImportError:
        return lambda: None
    original = getattr(utils, "apply_template", None)
    if original is None or original is sandboxed_apply_template:
        return lambda: None
    swapped = []
    for name, module in list(sys.modules.items()):
        if (name == "lm_eval" or name.startswith("lm_eval.")) and getattr(module, "apply_template", None) is original:
            module.apply_template = sandboxed_apply_template  # type: ignore[attr-defined]
            swapped.append(module)

    def restore() -> None:
        for module in swapped:
            module.apply_template = original  # type: ignore[attr-defined]

    return restore


def _refuse_imports_under(folder: Path) -> Callable[[], None]:
    """Make lm-eval's `!function` importer refuse task files under `folder`; return the undo.

    lm-eval 0.4.10+ imports through tasks._yaml_loader._import_func_in_yml(spec, yaml folder);
    earlier versions through utils.import_function(loader, node); both are wrapped where present.
    """
    root = Path(os.path.realpath(folder))
    undo: list[Callable[[], None]] = []

    def refuse(source: str) -> None:
        raise _TemplateStopped(
            f"a task file in {source or folder} has a `!function`, which imports and runs Python",
            f"pass {TRUST_TASK_CODE_FLAG} if you trust this task folder",
        )

    def under(path: object) -> bool:
        return not str(path or "") or Path(os.path.realpath(str(path))).is_relative_to(root)

    try:
        import lm_eval.tasks._yaml_loader as loader_module
    except ImportError:
        loader_module = None
    original_new = getattr(loader_module, "_import_func_in_yml", None)
    if original_new is not None:

        def import_func_in_yml(qual: str, base_dir: Path, *args: Any, **kwargs: Any) -> Any:
            if under(base_dir):
                refuse(str(base_dir))
            return original_new(qual, base_dir, *args, **kwargs)

        loader_module._import_func_in_yml = import_func_in_yml
        undo.append(lambda: setattr(loader_module, "_import_func_in_yml", original_new))
    try:
        import lm_eval.utils as utils
    except ImportError:
        utils = None
    original_old = getattr(utils, "import_function", None)
    if original_old is not None:

        def import_function(loader: Any, node: Any, *args: Any, **kwargs: Any) -> Any:
            source = str(getattr(loader, "name", "") or "")
            if under(os.path.dirname(source) if source else ""):
                refuse(source)
            return original_old(loader, node, *args, **kwargs)

        utils.import_function = import_function
        undo.append(lambda: setattr(utils, "import_function", original_old))

    def restore() -> None:
        for step in reversed(undo):
            step()

    return restore


__all__ = ["TaskError", "lm_eval_calls", "sandboxed_apply_template"]
