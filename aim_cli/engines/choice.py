"""Where a classify or segment run computes: this process (`local`) or a pool of Ray Data workers (`ray`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aim_cli.errors import InputError

if TYPE_CHECKING:
    from aim_cli.plans import ModulationPlan

EngineName = Literal["local", "ray"]
ENGINES: tuple[str, ...] = ("local", "ray")


def check_engine(engine: str, workers: int | None) -> None:
    """Before any work: a known engine, workers only with ray, and Ray installed when it is asked for."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}", f"use one of {', '.join(ENGINES)}")
    if workers is not None and engine != "ray":
        raise InputError("--workers goes with --engine ray", "add --engine ray, or drop --workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if engine == "ray":
        from aim_cli.engines.ray_data import require_ray

        require_ray()


def ray_items(
    task: str,
    paths: list[Path],
    plan: ModulationPlan,
    workers: int | None,
    progress: Callable[[int], None] | None,
    *,
    model: str | None,
    weights: Path | None = None,
    labels: Path | None = None,
    device: str = "auto",
    batch_size: int = 32,
    topk: int = 1,
    compare: bool = False,
) -> Iterator[Any]:
    """The task's results over `paths` from Ray Data workers, in input order (what the local task yields).

    The workers rebuild the model from its spec (model, weights, labels): plain values, pickled.
    """
    from aim_cli.engines.ray_data import JobSpec, run_job

    text = {name: None if value is None else str(value) for name, value in (("weights", weights), ("labels", labels))}
    spec = JobSpec(task, model, text["weights"], text["labels"], device, batch_size, topk, compare)
    return run_job(spec, paths, plan, workers, progress)
