"""What one run writes, under one rule: no input succeeded, nothing replaced; outputs never clobber inputs.

Output planning and resuming live here, below the tasks' API and the CLI alike: the files a run
may write are checked against what it reads before any work, `--resume` keeps every earlier
record, and `RunOutputs` publishes record files and documents only when an input succeeded.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from aim_cli.errors import InputError
from aim_cli.interrupts import as_interrupt
from aim_cli.io import RecordWriter, read_records, refuse_clobbering


def guard_outputs(
    outputs: Iterable[tuple[str, Path | None]], inputs: Iterable[tuple[str, Path | None]], model: str | None = None
) -> None:
    """Refuse, before any work, outputs that would replace an input or each other.

    A local `model` (a directory or file, not a hub id or torchvision:ARCH) counts as an input.
    """
    local_model = Path(model) if model is not None and Path(model).exists() else None
    refuse_clobbering(
        [(label, path) for label, path in outputs if path is not None],
        [(label, path) for label, path in [*inputs, ("--model", local_model)] if path is not None],
    )


def resumed_records(
    output: Path | None, resume: bool, field: str, inputs: list[str], notice: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """For --resume: every record of `output`, kept as they are; inputs they name (`field`) are not run again."""
    if not resume:
        return []
    if output is None:
        raise InputError("--resume needs --output FILE", "it skips the inputs already recorded there")
    wanted = Counter(inputs)
    kept = read_records(output)  # all of them: resuming rewrites the file, and no record of it may be lost
    skipped = 0
    for record in kept:
        key = str(record.get(field))
        if wanted[key] > 0:
            wanted[key] -= 1
            skipped += 1
    if skipped:
        notice(f"resuming: {skipped} input(s) already recorded in {output} are skipped")
    return kept


class RunOutputs:
    """Every output of one run, under one rule: when no input succeeded, no existing output is replaced or emptied.

    Record files stream into temp files and whole documents (evaluation.json, a profile, a
    report, a plot) are queued; `publish()` makes them all visible only if `succeeded` is
    non-zero, and otherwise discards them and removes the output folder this run created.
    Per-input files (masks, overlays) are written only for an input that succeeded. Use as a
    context manager: an exception (a failure or Ctrl-C) abandons everything not yet published.
    """

    def __init__(self) -> None:
        self.succeeded = 0
        self.published = False
        self._writers: list[tuple[RecordWriter, bool]] = []
        self._documents: list[Callable[[], None]] = []
        self._created: list[Path] = []

    def records(self, path: Path, keep_on_interrupt: bool = True) -> RecordWriter:
        """A record file for this run; `keep_on_interrupt` False keeps an older file at `path` on Ctrl-C."""
        writer = RecordWriter(path)
        self._writers.append((writer, keep_on_interrupt))
        return writer

    def document(self, write: Callable[[], None]) -> None:
        """Queue a whole-file output, written at publish() (it may read results gathered until then)."""
        self._documents.append(write)

    def created(self, directory: Path) -> None:
        """Note a folder this run made, removed again (when still empty) if nothing is published."""
        self._created.append(directory)

    def success(self, count: int = 1) -> None:
        """Count inputs that produced output."""
        self.succeeded += count

    def publish(self) -> bool:
        """Make every output visible if an input succeeded; else discard them all. Returns whether published."""
        if not self.succeeded:
            self._discard()
            return False
        for writer, _keep in self._writers:
            writer.close()
        for write in self._documents:
            write()
        self.published = True
        return True

    def _discard(self) -> None:
        """Drop unpublished records and documents, and the empty folders this run made."""
        for writer, _keep in self._writers:
            writer.close(success=False)
        self._documents.clear()
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):
                directory.rmdir()  # only an empty folder goes

    def __enter__(self) -> RunOutputs:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            return
        # A signal may land in the caller's code between two records: a run written as a generator
        # then stops with GeneratorExit (or a library's wrapper of the interrupt), still an interrupt.
        stop = as_interrupt(exc) or exc
        for writer, keep in self._writers:
            if self.succeeded:  # Ctrl-C keeps finished records so that --resume can continue
                writer.abandon(stop, replace_existing=keep)
            else:
                writer.close(success=False)
        if not self.succeeded:
            self._discard()
