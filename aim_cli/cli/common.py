"""Options, consoles and progress shared by the subcommands."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from aim_cli import demo
from aim_cli.errors import EXIT_PARTIAL, InputError
from aim_cli.io import find_images, read_records, refuse_clobbering
from aim_cli.profile import Profile, resolve_profile
from aim_cli.tasks.common import FailedInput

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Progress and messages go to stderr so machine-readable stdout stays clean.
err_console = Console(stderr=True)
out_console = Console()

ModelOption = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Local HF directory, cached hub id, torchvision:ARCH or timm:ARCH (classifiers). Default: the demo model."),
]
ProfileOption = Annotated[Optional[Path], typer.Option("--profile", "-p", help="YAML modulation profile.")]
SigmaOption = Annotated[Optional[float], typer.Option("--sigma", "-s", help="Utility noise std on every logit (overrides the profile).")]
FocusOption = Annotated[
    Optional[list[str]], typer.Option("--focus", "-f", help="Focus class NAME[:up|down]; repeatable.")
]
FocusSigmaOption = Annotated[
    Optional[float], typer.Option("--focus-sigma", help="Focus half-normal std (default 2.0 when --focus is given).")
]
SeedOption = Annotated[Optional[int], typer.Option("--seed", help="Seed for reproducible noise.")]
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
    """Print a human-oriented note on stderr unless quiet."""
    if not quiet:
        err_console.print(message, highlight=False, markup=False, soft_wrap=True)  # one line, literal text


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
    """For --resume: the records of `output` whose `field` names one of `inputs` (each used once)."""
    if not resume:
        return []
    if output is None:
        raise InputError("--resume needs --output FILE", "it skips the inputs already recorded there")
    wanted = Counter(inputs)
    kept = []
    for record in read_records(output):
        key = str(record.get(field))
        if wanted[key] > 0:
            wanted[key] -= 1
            kept.append(record)
    if kept:
        say(f"resuming: {len(kept)} input(s) already recorded in {output} are skipped", quiet)
    return kept


def report_failures(failures: list[FailedInput], succeeded: int | None = None) -> None:
    """List failed inputs on stderr and exit 1 if there were any.

    `succeeded` is how many inputs produced output: when it is 0, say that nothing was written.
    """
    if not failures:
        return
    for failure in failures:
        err_console.print(f"aim: failed: {failure.reason}", highlight=False, markup=False, soft_wrap=True)
    if succeeded == 0:
        message = f"aim: no input succeeded ({len(failures)} failed); nothing was written and existing outputs were kept"
    else:
        message = f"aim: {len(failures)} input(s) failed; the others were processed"
    err_console.print(message, highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_PARTIAL)
