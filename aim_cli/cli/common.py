"""Options, consoles and progress shared by the subcommands."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aim_cli import demo
from aim_cli.errors import EXIT_PARTIAL, FailedInput, InputError
from aim_cli.io import OutputError, RecordWriter, find_images, read_records, refuse_clobbering
from aim_cli.profile import Profile, resolve_profile

# 128 + SIGPIPE: what a shell reports for `cat` when its reader went away, so a pipeline run
# under `set -o pipefail` sees aim stop the way any other tool in it does.
EXIT_BROKEN_PIPE = 141

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _ResultsConsole(Console):
    """stdout's console: a reader that went away ends the run with EXIT_BROKEN_PIPE, not rich's exit 1."""

    def on_broken_pipe(self) -> None:
        """Stop quietly, as CLI tools do when their reader closes the pipe."""
        self.quiet = True
        _end_broken_pipe()


# Progress and messages go to stderr so machine-readable stdout stays clean.
err_console = Console(stderr=True)
out_console = _ResultsConsole()

# C0/C1 control characters (ESC starts terminal escape sequences), line and bidi-override
# characters that make text display as something else, and lone surrogates (the undecodable
# bytes of a non-UTF-8 file name, which would also make printing fail).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    """The visible escape of one unprintable character."""
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    return _NAMED_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: object) -> str:
    """`text` safe for a terminal line: control characters shown as escapes (\\x1b, \\n), never sent raw.

    File names, prompts and labels are untrusted: raw, an ESC could rewrite the terminal and a
    newline could fake a line of aim's own output.
    """
    return _UNPRINTABLE.sub(_escaped, str(text))


def _end_broken_pipe() -> None:
    """Point stdout at /dev/null (so the exit-time flush cannot fail again) and exit quietly."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(EXIT_BROKEN_PIPE)


def _stdout_closed() -> bool:
    """Whether stdout is gone: no stream (Python's view of a closed fd 1), a closed stream or a dead descriptor."""
    if sys.stdout is None or sys.stdout.closed:
        return True
    try:
        os.fstat(sys.stdout.fileno())
    except io.UnsupportedOperation:  # an in-memory stream (tests, an embedding program) is usable
        return False
    except (OSError, ValueError):
        return True
    return False


def require_stdout(what: str) -> None:
    """Fail before any work when results are to go to a closed stdout (`aim ... >&-`): they would be lost."""
    if _stdout_closed():
        raise OutputError(
            f"standard output is closed, so the {what} would be lost", "redirect it to a file or pass -o FILE"
        )


@contextlib.contextmanager
def writing_stdout() -> Iterator[None]:
    """Write results to stdout: a closed pipe exits quietly with EXIT_BROKEN_PIPE, any other failure is an error.

    Flushed inside, so a failure surfaces here, not as an ignored exception at interpreter exit.
    """
    try:
        yield
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        _end_broken_pipe()
    except OSError as exc:  # e.g. > /dev/full
        raise OutputError(f"cannot write results to standard output: {exc.strerror or exc}") from None


ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Local HF directory, cached hub id, torchvision:ARCH or timm:ARCH (classifiers). Default: the demo model.",
    ),
]
WeightsOption = Annotated[
    Path | None,
    typer.Option("--weights", help="Weights for torchvision:ARCH or timm:ARCH (.safetensors or .pth)."),
]
LabelsOption = Annotated[Path | None, typer.Option("--labels", help="Class names: .txt (one per line) or .json.")]
DataOption = Annotated[
    Path | None, typer.Option("--data", "-d", help="Labelled data (default: the demo model's evaluation set).")
]
ProfileOption = Annotated[Path | None, typer.Option("--profile", "-p", help="YAML modulation profile.")]
SigmaOption = Annotated[
    float | None, typer.Option("--sigma", "-s", help="Utility noise std on every logit (overrides the profile).")
]
FocusOption = Annotated[list[str] | None, typer.Option("--focus", "-f", help="Focus class NAME[:up|down]; repeatable.")]
FocusSigmaOption = Annotated[
    float | None, typer.Option("--focus-sigma", help="Focus half-normal std (default 2.0 when --focus is given).")
]
SeedOption = Annotated[int | None, typer.Option("--seed", help="Seed for reproducible noise.")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda[:N] or mps.")]
BatchOption = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Inputs per forward pass.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summaries on stderr.")]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an earlier (e.g. interrupted) run: inputs already recorded in the output (same path or prompt"
        " in -o FILE; for segment, mask on disk and in summary.jsonl) are skipped and their records kept, the rest"
        " are added. Use the same settings as that run.",
    ),
]
CompareOption = Annotated[bool, typer.Option("--compare", help="Also report the clean (unmodulated) result.")]


def profile_from_options(
    profile: Path | None, sigma: float | None, focus: list[str] | None, focus_sigma: float | None, seed: int | None
) -> Profile:
    """Merge a profile file with command-line overrides."""
    return resolve_profile(profile, sigma=sigma, focus=focus, focus_sigma=focus_sigma, seed=seed)


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr; yields a callback that advances it."""
    if quiet:
        yield lambda _n: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def say(message: str, quiet: bool = False) -> None:
    """Print a human-oriented note on stderr unless quiet (literal text, control characters escaped)."""
    if not quiet:
        err_console.print(printable(message), highlight=False, markup=False, soft_wrap=True)


def resolve_inputs(inputs: list[str] | None, model: str | None, task: str) -> list[str]:
    """Inputs as given; with neither inputs nor --model, the demo's sample images."""
    if inputs:
        return inputs
    if model is None:
        return [str(demo.samples_dir(task))]
    raise InputError("no inputs given", "pass image files, directories or globs")


def image_paths(inputs: list[str]) -> tuple[list[Path], list[FailedInput]]:
    """Expand inputs; unmatched ones become failures, and finding nothing at all is an error."""
    paths, unmatched = find_images(inputs)
    if not paths:
        raise InputError(f"no images found in {', '.join(inputs)}", "pass image files, directories or globs")
    return paths, [FailedInput(Path(item), f"{item}: no such file, or no images match") for item in unmatched]


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
    output: Path | None, resume: bool, field: str, inputs: list[str], quiet: bool
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
        say(f"resuming: {skipped} input(s) already recorded in {output} are skipped", quiet)
    return kept


def report_failures(failures: list[FailedInput], published: bool = True) -> None:
    """List failed inputs on stderr and exit 1 if there were any.

    `published` is whether this run wrote its outputs (RunOutputs.publish): when not, say so.
    """
    if not failures:
        return
    for failure in failures:
        say(f"aim: failed: {failure.reason}")
    if not published:
        say(f"aim: no input succeeded ({len(failures)} failed); nothing was written and existing outputs were kept")
    else:
        say(f"aim: {len(failures)} input(s) failed; the others were processed")
    raise typer.Exit(EXIT_PARTIAL)


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
        for writer, keep in self._writers:
            if self.succeeded:  # Ctrl-C keeps finished records so that --resume can continue
                writer.abandon(exc, replace_existing=keep)
            else:
                writer.close(success=False)
        if not self.succeeded:
            self._discard()
