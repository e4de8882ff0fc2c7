"""`aim eval`: lm-evaluation-harness tasks at one tier or a sweep of tiers (needs aim-cli[eval])."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from aim_cli.cli.common import (
    BatchOption,
    DeviceOption,
    FocusOption,
    FocusSigmaOption,
    ModelOption,
    ProfileOption,
    QuietOption,
    SeedOption,
    app,
    out_console,
    profile_from_options,
    progress_bar,
    say,
    writing_stdout,
)

if TYPE_CHECKING:
    from aim_cli.api.evaluation import EvalReport

TrustTaskCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-task-code",
        help="Let task YAML under --include-path run Python (!function, class:, includes from outside the folder, "
        "dataset loading scripts), as transformers' trust_remote_code; templates stay sandboxed.",
    ),
]
AllowOutsideOption = Annotated[
    bool,
    typer.Option(
        "--allow-outside-paths",
        help="Let task files under --include-path read data files outside that folder (absolute paths, .., symlinks).",
    ),
]


TasksOption = Annotated[str, typer.Option("--tasks", "-t", help="lm-eval task or group names, comma-separated.")]
SigmasOption = Annotated[
    str | None,
    typer.Option(
        "--sigma", "-s", help="Utility sigmas to run, comma-separated (0 is the clean model; default: the profile's)."
    ),
]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="Score only the first N documents per task.")]
FewshotOption = Annotated[
    int | None, typer.Option("--num-fewshot", min=0, help="Few-shot examples (default: each task's own).")
]
IncludePathOption = Annotated[Path | None, typer.Option("--include-path", help="Folder of your own lm-eval task YAML.")]
OutputOption = Annotated[
    Path | None, typer.Option("--output", "-o", help="Write rows and lm-eval's full results as JSON.")
]
PlotOption = Annotated[
    Path | None, typer.Option("--plot", help="Draw each task metric against sigma to a PNG (aim-cli\\[plot]).")
]


@app.command(name="eval")
def eval_command(
    tasks: TasksOption,
    model: ModelOption = None,
    sigma: SigmasOption = None,
    profile: ProfileOption = None,
    focus: FocusOption = None,
    focus_sigma: FocusSigmaOption = None,
    seed: SeedOption = None,
    limit: LimitOption = None,
    num_fewshot: FewshotOption = None,
    include_path: IncludePathOption = None,
    trust_task_code: TrustTaskCodeOption = False,
    allow_outside_paths: AllowOutsideOption = False,
    output: OutputOption = None,
    plot: PlotOption = None,
    batch_size: BatchOption = 16,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Run lm-evaluation-harness tasks at each sigma (lm-eval's own prompts, batching and scoring).

    The table (task, metric, sigma, value, stderr) goes to stdout; progress to stderr.
    """
    from aim_cli.api.evaluation import evaluate

    base = profile_from_options(profile, None, focus, focus_sigma, seed)
    with _sweep_bar(len(sigma.split(",")) if sigma is not None else 1, quiet) as advance:
        report = evaluate(
            model, tasks, base, sigmas=sigma, limit=limit, num_fewshot=num_fewshot, include_path=include_path,
            trust_task_code=trust_task_code, allow_outside_paths=allow_outside_paths, batch_size=batch_size,
            device=device, output=output, plot=plot, progress=advance, notice=lambda line: say(line, quiet),
        )  # fmt: skip
    with writing_stdout():
        out_console.print(_table(report))
    say(_noise_line(report), quiet)
    for path, what in ((output, "results"), (plot, "plot")):
        if path is not None:
            say(f"wrote {what} to {path}", quiet)


@contextlib.contextmanager
def _sweep_bar(tiers: int, quiet: bool) -> Iterator[Callable[[int], None]]:
    """The tiers' progress bar, shown from the sweep's start (evaluate's first progress call), not while checking."""
    with contextlib.ExitStack() as stack:
        bar: list[Callable[[int], None]] = []

        def advance(steps: int) -> None:
            if not bar:
                bar.append(stack.enter_context(progress_bar("tiers", tiers, quiet)))
            bar[0](steps)

        yield advance


def _noise_line(report: EvalReport) -> str:
    """How the sweep's noise was made: keyed (the secret stays secret) or its seed, and its focus."""
    noise = report.noise
    focus = noise.get("focus")
    return (
        "noise: "
        + ("keyed (secret)" if noise.get("keyed") else f"seed {noise.get('seed')}")
        + (f" | focus {', '.join(map(str, focus))}" if isinstance(focus, (list, tuple)) and focus else "")
    )


def _table(report: EvalReport) -> Table:
    """The rows as a table: task, metric (with its filter), sigma, value, stderr."""
    table = Table(show_header=True, header_style="bold")
    for column, justify in (
        ("task", "left"),
        ("metric", "left"),
        ("sigma", "right"),
        ("value", "right"),
        ("stderr", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in report.rows:
        metric = row.metric if row.filter in ("none", "") else f"{row.metric} ({row.filter})"
        stderr = f"{row.stderr:.4f}" if row.stderr is not None else "-"
        table.add_row(row.task, metric, f"{row.sigma:g}", f"{row.value:.4f}", stderr)
    return table
