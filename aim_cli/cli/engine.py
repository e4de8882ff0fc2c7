"""`--engine {local,ray}` and `--workers` for `aim classify` / `aim segment`: where the batches run."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer


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
