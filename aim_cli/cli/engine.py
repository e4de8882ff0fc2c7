"""`--engine {local,ray}` and `--workers` for `aim classify` / `aim segment`: where the batches run."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from aim_cli.api import ModulationPlan


class Engine(str, Enum):
    """Where a classify or segment run computes: this process, or a pool of Ray Data workers."""

    local = "local"
    ray = "ray"


EngineOption = Annotated[
    Engine,
    typer.Option(
        "--engine",
        help="local: this process. ray: Ray Data workers on the running Ray (RAY_ADDRESS) or a local one;"
        " same files and records (pip install 'aim-cli[ray]').",
    ),
]
WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="With --engine ray: worker processes (default: one per CPU of the cluster)."),
]


def check_engine(engine: Engine, workers: int | None) -> None:
    """Before any work: --workers only with --engine ray, and Ray installed when it is asked for."""
    from aim_cli.api.commands import check_engine as check

    check(engine.value, workers)


def ray_items(
    task: str, paths: list[Path], plan: ModulationPlan, workers: int | None, progress: Any, **spec: Any
) -> Any:
    """The task's results over `paths` from Ray Data workers, in input order (what the local task yields)."""
    from aim_cli.api.commands import ray_items as items

    return items(task, paths, plan, workers, progress, **spec)
