"""lm-evaluation-harness tasks at one tier or a sweep of tiers: `aim.evaluate` (as `aim eval`; needs aim-cli[eval]).

Named evaluation, not evaluate: a submodule named like the function it exports would be shadowed by
it in aim_cli.api (for `import aim_cli.api.evaluate as m`, mypy and the reference alike).

lm-eval does the prompts, batching and scoring; aim's lm-eval model adds each tier's noise to
the logits it scores. The lm-eval code lives in aim_cli.tasks.evaluate, aim_cli.tasks.task_folder
and aim_cli.integrations.lm_eval; this module is the one door to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from aim_cli.api.arguments import PathLike, as_path, profile_file
from aim_cli.api.logits import ProfileLike, as_profile
from aim_cli.errors import AimError, InputError
from aim_cli.io import check_output_file, write_json_atomic
from aim_cli.outputs import guard_outputs
from aim_cli.profile import Profile, check_sigma, is_real_number, noise_key
from aim_cli.tasks.evaluate import (
    EvalReport,
    EvalRow,
    check_eval_counts,
    check_tasks,
    load_eval_model,
    parse_sigmas,
    parse_task_names,
    quiet_lm_eval,
    require_lm_eval,
    run_eval,
    task_manager,
)
from aim_cli.tasks.task_folder import scan_task_folder

__all__ = ["EvalReport", "EvalRow", "evaluate"]


def _task_names(tasks: str | Sequence[str]) -> list[str]:
    """Task or group names from 'mmlu,gsm8k' or a list of names (none empty, none repeated)."""
    if isinstance(tasks, str):
        return parse_task_names(tasks)
    names = list(tasks)
    if not names or not all(isinstance(name, str) for name in names):
        raise InputError("tasks: give lm-eval task or group names", "e.g. 'mmlu,gsm8k' or ['mmlu', 'gsm8k']")
    return parse_task_names(",".join(names))


def _sigmas(sigmas: str | Sequence[float] | None, base: Profile) -> list[float]:
    """The sweep's sigmas: '0,0.5,1' or a list of numbers (each valid, none repeated); None: the profile's own."""
    if sigmas is None:
        return [base.sigma]
    if isinstance(sigmas, str):
        return parse_sigmas(sigmas)
    values: list[float] = []
    for value in sigmas:
        if not is_real_number(value):
            raise InputError(f"sigmas: {value!r} is not a number", "give numbers, e.g. [0, 0.5, 1, 2]")
        sigma = check_sigma(value, "sigma", "sigmas")
        if sigma in values:
            raise InputError(f"sigmas: {value!r} is given twice", "list each sigma once")
        values.append(sigma)
    if not values:
        raise InputError("sigmas: none given", "give at least one, e.g. [0, 1]")
    return values


def _plot(report: EvalReport, path: Path) -> None:
    """Each task metric against sigma (lm-eval's stderr as bars)."""
    from aim_cli.calibration.plot import plot_metric_curves

    series: dict[str, list[tuple[float, float, float | None]]] = {}
    for row in report.rows:
        label = f"{row.task} {row.metric}" + ("" if row.filter in ("none", "") else f" ({row.filter})")
        series.setdefault(label, []).append((row.sigma, row.value, row.stderr))
    plot_metric_curves(series, path, f"aim eval: {report.model}")


def _checked_outputs(
    model: str | None,
    base: Profile,
    output: Path | None,
    plot: Path | None,
    include_path: Path | None,
    trust_task_code: bool,
    allow_outside_paths: bool,
) -> None:
    """Before any work: output names, the task folder judged (code, files outside it), no output over an input."""
    for path, suffixes in ((output, (".json",)), (plot, (".png",))):
        if path is not None:
            check_output_file(path, suffixes)
    reads = (
        [] if include_path is None else scan_task_folder(include_path, trust_task_code, allow_outside_paths).inputs()
    )
    guard_outputs([("--output", output), ("--plot", plot)], [("--profile", profile_file(base)), *reads], model)
    if plot is not None:
        from aim_cli.calibration.plot import require_matplotlib

        require_matplotlib()


def evaluate(
    model: str | None = None,
    tasks: str | Sequence[str] = (),
    profile: ProfileLike | None = None,
    *,
    sigmas: str | Sequence[float] | None = None,
    seed: int | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    include_path: PathLike | None = None,
    trust_task_code: bool = False,
    allow_outside_paths: bool = False,
    batch_size: int = 16,
    device: str = "auto",
    dtype: str = "auto",
    output: PathLike | None = None,
    plot: PathLike | None = None,
    progress: Callable[[int], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> EvalReport:
    """Run lm-evaluation-harness tasks at each sigma on one loaded model, as `aim eval` does; needs aim-cli[eval].

    Args:
        model: a local Hugging Face folder or a cached hub id (as --model); None is the demo LM.
        tasks: lm-eval task or group names ('mmlu,gsm8k' or a list).
        profile: the tier (an aim.ProfileLike; None is the clean model); its focus and noise apply at every sigma.
        sigmas: the sigmas to run ('0,0.5,1' or a list); None runs the profile's own sigma.
        seed: overrides the profile's noise (an unseeded, unkeyed sweep draws one seed, reported).
        limit: score only the first `limit` documents of each task (lm-eval's --limit).
        num_fewshot: few-shot examples (default: each task's own).
        include_path: a folder of your own task YAML; its code runs only with trust_task_code, and its
            data files outside it are read only with allow_outside_paths.
        output: a .json file for the rows and lm-eval's full results (written as `aim eval -o` writes it).
        plot: a .png of each task metric against sigma (aim-cli[plot]).
        batch_size: lm-eval's batch size.
        device: auto, cpu, cuda, cuda:N or mps.
        dtype: the model's dtype (auto: the checkpoint's).
        progress: called with 0 when the sweep starts (the model loaded), then with 1 after each sigma.
        notice: human notes (the model, tasks and sigmas being run).

    Returns the EvalReport (its rows: task, metric, filter, sigma, value, stderr). Errors are aim errors.
    """
    names = _task_names(tasks)
    check_eval_counts(limit, num_fewshot)
    folder = as_path(include_path, "include_path")
    if (trust_task_code or allow_outside_paths) and folder is None:
        raise AimError(
            "--trust-task-code and --allow-outside-paths apply to the task files of --include-path",
            "the tasks lm-eval ships need neither",
        )
    base = as_profile(Profile() if profile is None else profile, seed)
    sweep = _sigmas(sigmas, base)
    if base.key_env is not None:
        noise_key(base)  # an unset key fails now, not after the model has loaded
    if model is not None and not isinstance(model, str):
        raise InputError(f"model must be a str (as --model), got {type(model).__name__}")
    output_path, plot_path = as_path(output, "output"), as_path(plot, "plot")
    _checked_outputs(model, base, output_path, plot_path, folder, trust_task_code, allow_outside_paths)
    require_lm_eval()
    quiet_lm_eval()
    if model is not None:
        from aim_cli.models.hub import locate

        locate(model)  # a missing model fails before lm-eval indexes its thousands of tasks
    manager = task_manager(folder, trust_task_code)
    check_tasks(names, manager)
    lm = load_eval_model(model, device, batch_size, dtype)
    if notice is not None:
        notice(f"model: {lm.aim_model_name} | tasks: {', '.join(names)} | sigma: {', '.join(f'{s:g}' for s in sweep)}")
    if progress is not None:
        progress(0)
    report = run_eval(lm, names, sweep, base, manager, limit, num_fewshot, progress)
    if not report.rows:
        raise AimError(f"lm-eval reported no metrics for {', '.join(names)}", "check the tasks' metric_list")
    if output_path is not None:
        write_json_atomic(report.to_dict(), output_path)
    if plot_path is not None:
        _plot(report, plot_path)
    return report
