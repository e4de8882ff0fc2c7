"""Options, consoles and progress shared by the subcommands."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aim_cli.errors import EXIT_PARTIAL, FailedInput
from aim_cli.io import OutputError
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
