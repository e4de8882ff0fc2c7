"""Third-party model sources (the `aim.model_sources` entry points): found, imported and called through one guard.

A plugin is code aim did not write. Whatever it raises (an exception, SystemExit, KeyboardInterrupt,
RecursionError, an AimError with its own exit code) while it is imported, constructed, asked for its
`tasks` or `takes_weights`, or asked to `load()`, ends in one ModelError (exit 2) that names the source,
its package and the call that failed; exit 3 stays for aim's own bugs. A real Ctrl-C or SIGTERM (the
signal handlers of aim_cli.interrupts saw it) still interrupts the run. What a plugin prints goes to
stderr, so machine-readable output on stdout stays clean.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from dataclasses import dataclass
from importlib import metadata
from typing import Any, TypeVar

from aim_cli.errors import AimError, ModelError
from aim_cli.interrupts import raise_if_received

ENTRY_POINT_GROUP = "aim.model_sources"
_SHOWN = 300  # characters of a plugin's own message quoted in ours
_MAX_TASKS = 16  # a `tasks` longer than this is not a list of aim's three tasks

T = TypeVar("T")


class PluginError(ModelError):
    """A model source failed or broke its contract: exit 2, the source and its package named."""


@dataclass(frozen=True)
class Plugin:
    """One installed source: the prefix it claims and the entry point (or points) claiming it."""

    name: str
    entries: tuple[metadata.EntryPoint, ...]

    @property
    def package(self) -> str:
        """'NAME VERSION' of the distribution that declares it (what `pip uninstall` takes)."""
        return _package(self.entries[0])

    def call(self, step: str, function: Callable[..., T], *args: Any) -> T:
        """function(*args) as a call into the plugin: its failures become one ModelError naming it and `step`."""
        try:
            with redirect_stdout(sys.stderr):
                result = function(*args)
        except BaseException as exc:
            if type(exc) is PluginError:  # aim's own check of what the plugin returned
                raise
            raise_if_received()  # the user's Ctrl-C wins, whatever the plugin made of it (wrapped, swallowed)
            failure = self.error(step, describe(exc))
        else:
            raise_if_received()  # a plugin that swallowed a real Ctrl-C does not get to keep the run going
            return result
        # Raised outside the except block, so the plugin's exception is not its context: a
        # KeyboardInterrupt it raised must not read as the user's Ctrl-C further up.
        raise failure

    def error(self, step: str, detail: str) -> PluginError:
        """'model source NAME (package P) failed in STEP: DETAIL', with the fix."""
        return PluginError(
            f"model source '{self.name}' (package {self.package}) failed in {step}: {detail}",
            f"this is a fault of that package, not of aim: report it to its authors, or uninstall it "
            f"(pip uninstall {self.package.split(' ')[0]})",
        )

    def load_object(self) -> Any:
        """Import the entry point and construct the source object when it names a class."""
        if len(self.entries) > 1:
            packages = " and ".join(sorted({_package(entry) for entry in self.entries}))
            raise ModelError(
                f"model source '{self.name}' is declared by more than one installed package ({packages})",
                "uninstall all but one of them",
            )
        loaded = self.call("import", self.entries[0].load)
        if isinstance(loaded, type):
            return self.call("its constructor", loaded)
        return loaded

    def tasks(self, source: Any) -> tuple[str, ...]:
        """The source's `tasks`, checked to be a short sequence of task names."""
        value = self.call("tasks", getattr, source, "tasks")
        if isinstance(value, str) or not isinstance(value, (tuple, list, set, frozenset)):
            raise self.error("tasks", f"it is {_type(value)}, not a tuple of task names such as ('classify',)")
        tasks = tuple(itertools.islice(value, _MAX_TASKS + 1))
        if len(tasks) > _MAX_TASKS or not all(isinstance(task, str) for task in tasks):
            raise self.error("tasks", "it must be a short tuple of task names (classify, segment, generate)")
        return tasks

    def takes_weights(self, source: Any) -> bool:
        """The source's `takes_weights`: True or False."""
        value = self.call("takes_weights", getattr, source, "takes_weights")
        if not isinstance(value, bool):
            raise self.error("takes_weights", f"it is {_type(value)}, not True or False")
        return value


def describe(exc: BaseException) -> str:
    """One short line for a plugin's exception, however odd its message (multi-line, huge, or raising)."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({_safe_repr(exc.code)})"
    text = _safe_str(exc.message) if isinstance(exc, AimError) else _safe_str(exc)
    text = " ".join(text.split())
    if len(text) > _SHOWN:
        text = text[: _SHOWN - 3] + "..."
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _safe_str(value: object) -> str:
    """str(value), or a placeholder when its __str__ itself fails."""
    try:
        return str(value)
    except Exception:
        return "(its message cannot be printed)"


def _safe_repr(value: object) -> str:
    """A short repr of a value a plugin handed aim."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _type(value: object) -> str:
    """How a message names a value of the wrong type."""
    return f"{type(value).__name__} {_safe_repr(value)}"


def _package(entry: metadata.EntryPoint) -> str:
    """'NAME VERSION' of an entry point's distribution, or its module when the metadata says nothing."""
    try:
        dist = entry.dist
        if dist is not None:
            name, version = dist.metadata["Name"], dist.version
            if name:
                return f"{name} {version}" if version else str(name)
    except Exception:
        pass
    return entry.value.partition(":")[0] or entry.name


def discover(builtin: set[str] | frozenset[str]) -> dict[str, Plugin]:
    """The installed sources by prefix (not imported), leaving out names aim's own sources claim.

    A broken metadata file of an unrelated package must not stop aim: discovery that fails is one line.
    """
    try:
        found = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:
        raise ModelError(
            f"cannot list the installed model sources: {describe(exc)}",
            "an installed package has broken metadata (entry_points.txt): reinstall or remove it",
        ) from None
    grouped: dict[str, dict[str, metadata.EntryPoint]] = {}
    for entry in found:
        if entry.name in builtin:
            continue
        # The same distribution seen twice on sys.path is one declaration, not a conflict.
        grouped.setdefault(entry.name, {}).setdefault(_package(entry) + "|" + entry.value, entry)
    return {name: Plugin(name, tuple(entries.values())) for name, entries in grouped.items()}


class GuardedImageModel:
    """A plugin's image model as the tasks see it: its logits() called through the plugin's guard and checked.

    The tasks call nothing else of a model at run time; other attributes (resize, task, ...) are
    read through to the plugin's object.
    """

    def __init__(self, plugin: Plugin, model: Any, task: str, labels: list[str]) -> None:
        self._plugin, self._model, self._task = plugin, model, task
        self.name: str = model.name
        self.device: Any = model.device
        self.labels = labels
        self.preprocess = model.preprocess
        self.task = task
        # Optional settings the tasks read; a plugin's own class need not define them.
        self.resize = getattr(model, "resize", None)
        reduce = getattr(model, "do_reduce_labels", None)
        self.do_reduce_labels = reduce if isinstance(reduce, bool) else None

    def logits(self, images: Any) -> Any:
        """The plugin's logits, refused unless a float tensor of (images, classes[, h, w])."""
        import torch

        out = self._plugin.call("logits()", self._model.logits, images)
        dims = 2 if self._task == "classify" else 4
        if not isinstance(out, torch.Tensor):
            raise self._plugin.error("logits()", f"it returned {type(out).__name__}, not a tensor")
        if out.dim() != dims or out.shape[0] != len(images) or out.shape[1] != len(self.labels):
            expected = "(images, classes)" if dims == 2 else "(images, classes, height, width)"
            raise self._plugin.error(
                "logits()",
                f"it returned shape {tuple(out.shape)} for {len(images)} image(s) and {len(self.labels)} labels; "
                f"expected {expected}",
            )
        if not out.is_floating_point():
            raise self._plugin.error("logits()", f"it returned {out.dtype} logits, not floating point")
        return out

    def __getattr__(self, name: str) -> Any:
        """Anything else: the plugin object's own attribute."""
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._model, name)
