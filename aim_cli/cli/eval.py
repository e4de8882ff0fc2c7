"""`aim eval`: lm-evaluation-harness tasks at one tier or a sweep of tiers (needs aim-cli[eval])."""

from __future__ import annotations

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
    guard_outputs,
    out_console,
    profile_from_options,
    progress_bar,
    say,
    writing_stdout,
)
from aim_cli.io import check_output_file

if TYPE_CHECKING:
    from aim_cli.api.commands import EvalReport

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


def task_folder_inputs(include_path: Path | None, trust_code: bool, allow_outside: bool) -> list[tuple[str, Path]]:
    """What a run over --include-path reads (the folder, the data files its tasks name), judged before any work.

    Task code is refused unless trusted, files outside the folder unless allowed; the pairs go to
    guard_outputs so that no output replaces any of them.
    """
    if include_path is None:
        return []
    from aim_cli.api.commands import scan_task_folder

    return scan_task_folder(include_path, trust_code, allow_outside).inputs()


@app.command(name="eval")
def eval_command(
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="lm-eval task or group names, comma-separated.")],
    model: ModelOption = None,
    sigma: Annotated[
        str | None,
        typer.Option(
            "--sigma",
            "-s",
            help="Utility sigmas to run, comma-separated (0 is the clean model; default: the profile's).",
        ),
    ] = None,
    profile: ProfileOption = None,
    focus: FocusOption = None,
    focus_sigma: FocusSigmaOption = None,
    seed: SeedOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Score only the first N documents per task.")
    ] = None,
    num_fewshot: Annotated[
        int | None, typer.Option("--num-fewshot", min=0, help="Few-shot examples (default: each task's own).")
    ] = None,
    include_path: Annotated[
        Path | None, typer.Option("--include-path", help="Folder of your own lm-eval task YAML.")
    ] = None,
    trust_task_code: TrustTaskCodeOption = False,
    allow_outside_paths: AllowOutsideOption = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write rows and lm-eval's full results as JSON.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw each task metric against sigma to a PNG (aim-cli\\[plot]).")
    ] = None,
    batch_size: BatchOption = 16,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Run lm-evaluation-harness tasks at each sigma (lm-eval's own prompts, batching and scoring).

    The table (task, metric, sigma, value, stderr) goes to stdout; progress to stderr.
    """
    from aim_cli.api.commands import (
        check_eval_counts,
        parse_sigmas,
        parse_task_names,
        quiet_lm_eval,
        require_lm_eval,
        run_eval,
    )

    names = parse_task_names(tasks)
    check_eval_counts(limit, num_fewshot)
    if (trust_task_code or allow_outside_paths) and include_path is None:
        from aim_cli.errors import AimError

        raise AimError(
            "--trust-task-code and --allow-outside-paths apply to the task files of --include-path",
            "the tasks lm-eval ships need neither",
        )
    base = profile_from_options(profile, None, focus, focus_sigma, seed)
    sigmas = parse_sigmas(sigma) if sigma is not None else [base.sigma]
    if base.key_env is not None:
        from aim_cli.profile import noise_key

        noise_key(base)  # an unset key fails now, not after the model has loaded
    for path, suffixes in ((output, (".json",)), (plot, (".png",))):
        if path is not None:
            check_output_file(path, suffixes)
    reads = task_folder_inputs(include_path, trust_task_code, allow_outside_paths)
    guard_outputs([("--output", output), ("--plot", plot)], [("--profile", profile), *reads], model)
    if plot is not None:
        from aim_cli.api.commands import require_matplotlib

        require_matplotlib()
    require_lm_eval()
    quiet_lm_eval()
    from aim_cli.api.commands import check_tasks, load_eval_model, locate, task_manager

    if model is not None:
        locate(model)  # a missing model fails before lm-eval indexes its thousands of tasks
    manager = task_manager(include_path, trust_task_code)
    check_tasks(names, manager)
    lm = load_eval_model(model, device, batch_size)
    say(f"model: {lm.aim_model_name} | tasks: {', '.join(names)} | sigma: {', '.join(f'{s:g}' for s in sigmas)}", quiet)
    with progress_bar("tiers", len(sigmas), quiet) as advance:
        report = run_eval(lm, names, sigmas, base, manager, limit, num_fewshot, advance)
    if not report.rows:
        from aim_cli.errors import AimError

        raise AimError(f"lm-eval reported no metrics for {', '.join(names)}", "check the tasks' metric_list")
    if output is not None:
        from aim_cli.io import write_json_atomic

        write_json_atomic(report.to_dict(), output)
    if plot is not None:
        _plot(report, plot)
    with writing_stdout():
        out_console.print(_table(report))
    noise = report.noise
    say(
        "noise: "
        + ("keyed (secret)" if noise.get("keyed") else f"seed {noise.get('seed')}")
        + (f" | focus {', '.join(map(str, noise.get('focus') or []))}" if noise.get("focus") else ""),
        quiet,
    )
    for path, what in ((output, "results"), (plot, "plot")):
        if path is not None:
            say(f"wrote {what} to {path}", quiet)


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


def _plot(report: EvalReport, path: Path) -> None:
    """Each task metric against sigma (lm-eval's stderr as bars)."""
    from aim_cli.api.commands import plot_metric_curves

    series: dict[str, list[tuple[float, float, float | None]]] = {}
    for row in report.rows:
        label = f"{row.task} {row.metric}" + ("" if row.filter in ("none", "") else f" ({row.filter})")
        series.setdefault(label, []).append((row.sigma, row.value, row.stderr))
    plot_metric_curves(series, path, f"aim eval: {report.model}")
