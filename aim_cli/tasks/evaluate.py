"""`aim eval` as a task: lm-evaluation-harness tasks run at each tier on one loaded model.

Knows nothing about Typer. lm-eval (the optional extra aim-cli[eval]) is imported only here
and in aim_cli.integrations.lm_eval, when a command needs it.
"""

from __future__ import annotations

import logging
import math
import secrets
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aim_cli.errors import AimError, InputError, ModelError
from aim_cli.profile import Profile, check_sigma
from aim_cli.tasks.lm_eval_guard import lm_eval_calls

if TYPE_CHECKING:
    from aim_cli.integrations.lm_eval import AimLM

EXTRA_HINT = "pip install 'aim-cli[eval]'"
# lm-eval's per-task metric entries that are not metrics.
_NOT_METRICS = {"alias", "name", "sample_len", "samples", " ", ""}


def require_lm_eval() -> None:
    """Fail with one line, before any work, when lm-evaluation-harness (or what its HF model needs) is missing."""
    try:
        import aim_cli.integrations.lm_eval  # noqa: F401  (imports lm_eval and its HF model)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "lm_eval"
        raise AimError(
            f"this needs lm-evaluation-harness, which is not installed (no module {missing!r})", EXTRA_HINT
        ) from None


def parse_sigmas(text: str) -> list[float]:
    """'0,0.5,1,2' -> [0.0, 0.5, 1.0, 2.0]: each a valid sigma, none repeated."""
    values: list[float] = []
    for part in text.split(","):
        part = part.strip()
        try:
            number = float(part)
        except ValueError:
            raise AimError(
                f"--sigma {text!r}: {part!r} is not a number", "give a comma-separated list, e.g. 0,0.5,1,2"
            ) from None
        sigma = check_sigma(number, "sigma", "--sigma")
        if sigma in values:
            raise AimError(f"--sigma {text!r}: {part} is given twice", "list each sigma once")
        values.append(sigma)
    return values


def parse_task_names(text: str) -> list[str]:
    """'mmlu,gsm8k' -> ['mmlu', 'gsm8k'] (no empty names, no repeats)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise AimError(f"--tasks {text!r}: an empty task name", "give a comma-separated list, e.g. mmlu,gsm8k")
    if len(set(names)) != len(names):
        raise AimError(f"--tasks {text!r}: a task is named twice", "list each task once")
    return names


def quiet_lm_eval() -> None:
    """lm-eval logs every task it builds at INFO; aim shows its own summary instead.

    lm-eval also records `git describe` of the working folder, and outside a repository git's
    "fatal: not a git repository" would reach the terminal as if aim had failed: the same
    lookup runs here with git's stderr discarded.
    """
    for name in ("lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import lm_eval.evaluator

    if hasattr(lm_eval.evaluator, "get_git_commit_hash"):
        lm_eval.evaluator.get_git_commit_hash = _git_hash


def _git_hash() -> str | None:
    """`git describe --always` of the working folder, or None (no repository, no git)."""
    try:
        found = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return found.stdout.strip() or None if found.returncode == 0 else None


# Bounds on counts from the command line, checked before lm-eval allocates anything: no task
# has a billion documents, and no context window holds a thousand worked examples.
MAX_LIMIT = 1_000_000_000
MAX_FEWSHOT = 1_000


def check_eval_counts(limit: int | None, num_fewshot: int | None) -> None:
    """--limit and --num-fewshot within what any task can use, before lm-eval sizes anything by them."""
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise InputError(
            f"--limit {limit}: give a number of documents from 1 to {MAX_LIMIT:,}",
            "leave --limit out to score every document",
        )
    if num_fewshot is not None and not 0 <= num_fewshot <= MAX_FEWSHOT:
        raise InputError(
            f"--num-fewshot {num_fewshot}: give a number of examples from 0 to {MAX_FEWSHOT:,}",
            "leave it out for each task's own",
        )


def task_manager(include_path: Path | None, trust_code: bool = False) -> Any:
    """lm-eval's TaskManager: its built-in tasks, plus task YAML found under include_path.

    Call scan_task_folder on include_path first (the CLI does, to check outputs against what the
    tasks read); lm-eval's indexing runs inside lm_eval_calls, templates sandboxed.
    """
    from lm_eval.tasks import TaskManager

    if include_path is not None and not include_path.is_dir():
        raise InputError(f"--include-path {include_path}: no such folder", "point it at a folder of lm-eval task YAML")
    with lm_eval_calls(["(indexing --include-path)"], sandbox=include_path is not None):
        manager = TaskManager(include_path=str(include_path) if include_path is not None else None)
    # run_eval and calibration read these: user task files render sandboxed and import nothing untrusted.
    manager.aim_include_path = include_path
    manager.aim_trust_code = trust_code
    return manager


def guarded(manager: Any, names: Sequence[str]) -> Any:
    """lm_eval_calls for a run over `names` with this manager: sandboxed when it holds the user's task files."""
    include = getattr(manager, "aim_include_path", None)
    return lm_eval_calls(
        names, sandbox=include is not None, untrusted=None if getattr(manager, "aim_trust_code", False) else include
    )


def check_tasks(names: Sequence[str], manager: Any) -> None:
    """Every name must be a task or group lm-eval knows (built-in or under --include-path)."""
    with guarded(manager, names):
        known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            raise InputError(
                f"unknown lm-eval task {name!r}",
                "check the name (python -m lm_eval ls tasks lists them), or give --include-path DIR for your own YAML",
            )


class _LoadFailed(Exception):
    """HFLM could not read the checkpoint (OSError, ValueError): carried past lm_eval_calls to a ModelError."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(str(exc))
        self.exc = exc


def load_eval_model(spec: str | None, device: str, batch_size: int, dtype: str = "auto") -> AimLM:
    """aim's lm-eval model on a local Hugging Face directory or a cached hub id (the demo LM by default), offline."""
    from aim_cli import demo
    from aim_cli.devices import resolve_device
    from aim_cli.integrations.lm_eval import AimLM
    from aim_cli.models import hub

    source = spec or str(demo.model_dir("generate"))
    where, local = hub.locate(source)
    torch_device = resolve_device(device)
    try:
        with lm_eval_calls([], sandbox=False, subject=f"loading {source} with lm-eval's HF model"):
            try:
                lm = AimLM(pretrained=where, device=str(torch_device), batch_size=batch_size, dtype=dtype)
            except (OSError, ValueError) as exc:
                raise _LoadFailed(exc) from exc
    except _LoadFailed as failed:
        cause = failed.exc
        if not local:
            raise hub._not_cached(source) from None
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ModelError(f"cannot load {source} with lm-eval's HF model: {first}") from None
    lm.aim_model_name = spec or "demo lm"
    return lm


@dataclass
class EvalRow:
    """One number of the table: a task's metric (after a filter) at one sigma, with lm-eval's stderr."""

    task: str
    metric: str
    filter: str
    sigma: float
    value: float
    stderr: float | None

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready row."""
        return {
            "task": self.task,
            "metric": self.metric,
            "filter": self.filter,
            "sigma": self.sigma,
            "value": self.value,
            "stderr": self.stderr,
        }


@dataclass
class EvalReport:
    """A sweep: the rows, lm-eval's full results per sigma, and how the noise was made."""

    model: str
    tasks: list[str]
    sigmas: list[float]
    limit: int | None
    noise: dict[str, object]
    rows: list[EvalRow] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The JSON report: rows for tables and plots, and lm-eval's own results for everything else."""
        return {
            "model": self.model,
            "tasks": self.tasks,
            "sigmas": self.sigmas,
            "limit": self.limit,
            "noise": self.noise,
            "rows": [row.to_dict() for row in self.rows],
            "lm_eval_results": _json_ready(self.results),
            "timing_s": self.seconds,
        }


def _number(value: Any) -> float | None:
    """A finite float from lm-eval's value ('N/A' and NaN stderrs become None)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def result_rows(results: dict[str, dict[str, Any]], names: Sequence[str], sigma: float) -> list[EvalRow]:
    """The rows of the named tasks (a group such as mmlu: its aggregate) from lm-eval's results."""
    rows = []
    for name in names:
        entry = results.get(name) or {}
        for key, value in entry.items():
            if key in _NOT_METRICS or "," not in key or "_stderr" in key:
                continue
            metric, _, filter_name = key.partition(",")
            number = _number(value)
            if number is None:
                continue
            stderr = _number(entry.get(f"{metric}_stderr,{filter_name}"))
            rows.append(EvalRow(name, metric, filter_name, sigma, number, stderr))
    return rows


def _json_ready(value: Any) -> Any:
    """lm-eval's results as plain JSON types (numpy scalars to Python numbers, the rest to text)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        number = float(value) if isinstance(value, float) else int(value)
        return number if not isinstance(number, float) or math.isfinite(number) else None
    item = getattr(value, "item", None)
    if callable(item):
        return _json_ready(item())
    return str(value)


def sweep_profile(base: Profile) -> Profile:
    """The sweep's noise: the profile's seed or key, else one fresh seed for every tier (reported)."""
    if base.seed is None and base.key_env is None:
        return replace(base, seed=secrets.randbits(63))
    return base


def run_eval(
    lm: AimLM,
    names: Sequence[str],
    sigmas: Sequence[float],
    base: Profile,
    manager: Any,
    limit: int | None = None,
    num_fewshot: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalReport:
    """Each task at each sigma through lm_eval.simple_evaluate; the model is loaded once."""
    import lm_eval

    check_eval_counts(limit, num_fewshot)
    base = sweep_profile(base)
    report = EvalReport(
        model=str(getattr(lm, "aim_model_name", "")),
        tasks=list(names),
        sigmas=list(sigmas),
        limit=limit,
        noise={},
    )
    for sigma in sigmas:
        plan = lm.set_profile(replace(base, sigma=sigma))
        report.noise = {k: v for k, v in plan.describe().items() if k != "sigma"}
        start = time.perf_counter()
        with guarded(manager, names):
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=list(names),
                task_manager=manager,
                limit=limit,
                num_fewshot=num_fewshot,
                log_samples=False,
            )
        report.seconds[f"sigma {sigma:g}"] = time.perf_counter() - start
        if out is None:
            raise AimError("lm-eval returned no results")
        report.results[f"{sigma:g}"] = out.get("results", {})
        report.rows.extend(result_rows(out.get("results", {}), names, sigma))
        if progress:
            progress(1)
    return report
