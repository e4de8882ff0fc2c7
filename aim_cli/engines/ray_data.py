"""Offline classification and segmentation on Ray Data: the local tasks, run by a pool of Ray workers.

The driver cuts the input list into chunks of --batch-size images in input order, each worker
runs the same task code as `aim classify` / `aim segment` (aim_cli.tasks) on whole chunks, and
the results come back in input order to the CLI, which writes the same records and masks it
writes for a local run. Ray does the scheduling, retries and backpressure; aim adds none.

Every item's noise depends only on the profile and the item, never on the chunk, the worker or
a retry: keyed profiles key each image on its decoded pixels (as locally), and seeded profiles
draw each image's noise from the counter-based generator keyed on (seed, pixels)
(serving.seed_keyed_noise, the per-request rule of the servers). A seeded job therefore writes the
same bytes on any number of workers; it does not reproduce the local engine's single stream,
which depends on the order of the whole run.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from aim_cli.engines.vision_tiers import per_item_plan
from aim_cli.errors import AimError
from aim_cli.limits import RAY_CONNECT_SECONDS, ascii_whole
from aim_cli.plans import ModulationPlan
from aim_cli.tasks.batches import ProgressCallback

RAY_HINT = "pip install 'aim-cli[ray]'"
TASKS = ("classify", "segment")


@dataclass(frozen=True)
class JobSpec:
    """What a worker needs to rebuild the model and run the task: plain values, pickled to every worker."""

    task: str
    model: str | None
    weights: str | None = None
    labels: str | None = None
    device: str = "auto"
    batch_size: int = 32
    topk: int = 1
    compare: bool = False
    # The driver's working directory: workers resolve relative paths (and name them in messages)
    # as the CLI does; on a cluster it must be a shared file system, as the inputs must.
    cwd: str = ""


def require_ray() -> Any:
    """The ray module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise AimError("--engine ray needs Ray, which is not installed here", RAY_HINT) from None
    return ray


def cluster_endpoint(address: str) -> tuple[str, int] | None:
    """The (host, port) a Ray address names: GCS host:port, or ray://host:port (Ray Client); None for auto/local."""
    text = address.strip()
    if text.lower() in ("", "auto", "local"):
        return None
    client = text.lower().startswith("ray://")
    hostport = text[6:] if client else text.split("://", 1)[-1]
    hostport = hostport.split("/", 1)[0]
    host, sep, port = hostport.rpartition(":")
    if not sep:
        host, port = hostport, "10001" if client else "6379"  # Ray's own default ports
    host = host.strip("[]")  # [::1]:6379
    port_number = ascii_whole(port)
    if not host or port_number is None or not 0 < port_number < 65536:
        raise AimError(
            f"Ray address {address[:100]!r}: expected HOST:PORT or ray://HOST:PORT", "fix --address or RAY_ADDRESS"
        )
    return host, int(port)


def check_reachable(address: str | None) -> None:
    """A Ray cluster that does not answer is one line within AIM_RAY_CONNECT_TIMEOUT_S, not Ray's endless retries."""
    given = address if address is not None else os.environ.get("RAY_ADDRESS", "")
    endpoint = cluster_endpoint(given)
    if endpoint is None:
        return
    seconds = RAY_CONNECT_SECONDS.value()
    try:
        with socket.create_connection(endpoint, timeout=seconds):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        source = "--address" if address is not None else "RAY_ADDRESS"
        raise AimError(
            f"cannot reach the Ray cluster at {given[:100]} ({source}) within {seconds} s: {reason}",
            "start it (ray start --head), fix the address, or unset it for a local Ray",
        ) from None


def connect(address: str | None = None) -> Any:
    """Join the running Ray (RAY_ADDRESS or `address`), or start a local one without its dashboard."""
    ray = require_ray()
    if not ray.is_initialized():
        check_reachable(address)
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR)
    return ray


class TaskWorker:
    """One Ray actor: loads the model once, then runs the local task on whole chunks of paths."""

    def __init__(self, spec: JobSpec, plan: ModulationPlan) -> None:
        from aim_cli.devices import resolve_device

        if spec.cwd:
            os.chdir(spec.cwd)  # this actor's own process: paths mean what they mean to the driver
        self.spec = spec
        self.plan = per_item_plan(plan)
        device = resolve_device(spec.device)
        weights = Path(spec.weights) if spec.weights else None
        labels = Path(spec.labels) if spec.labels else None
        if spec.task == "classify":
            from aim_cli.models.registry import load_model

            self.model = load_model("classify", spec.model, device=device, weights=weights, labels=labels)
        else:
            from aim_cli.models.registry import load_model

            self.model = load_model("segment", spec.model, device=device, weights=weights, labels=labels)

    def run(self, paths: Sequence[Path]) -> list[Any]:
        """The task's results for one chunk, in its order (ClassifiedImage / SegmentedImage / FailedInput)."""
        if self.spec.task == "classify":
            from aim_cli.tasks.classify import classify_images

            items: Iterator[Any] = classify_images(
                paths, self.model, self.plan, self.spec.batch_size, self.spec.topk, self.spec.compare
            )
        else:
            from aim_cli.tasks.segment import segment_files

            items = segment_files(paths, self.model, self.plan, None, self.spec.batch_size, self.spec.compare)
        return list(items)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data's map_batches entry: rows of (chunk, paths) in, rows of (chunk, pickled results) out."""
        chunks = [int(c) for c in batch["chunk"]]
        results = [pickle.dumps(self.run([Path(p) for p in str(paths).split("\0")])) for paths in batch["paths"]]
        return {"chunk": np.asarray(chunks, dtype=np.int64), "results": np.asarray(results, dtype=object)}


def default_workers(ray: Any, gpus: int) -> int:
    """One worker per CPU of the cluster (per GPU when workers take one)."""
    resources = ray.cluster_resources()
    count = resources.get("GPU", 0) if gpus else resources.get("CPU", 1)
    return max(1, int(count))


def run_job(
    spec: JobSpec,
    paths: Sequence[Path],
    plan: ModulationPlan,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    address: str | None = None,
) -> Iterator[Any]:
    """The task's results for every path, in input order, computed by `workers` Ray actors.

    Yields what the local task yields (results and FailedInput), with each item's path as given.
    """
    if spec.task not in TASKS:
        raise AimError(f"unknown task {spec.task!r} for a Ray job", f"choose one of {', '.join(TASKS)}")
    if not paths:
        return
    ray = connect(address)
    from ray import data as ray_data

    # Set after importing ray.data, which configures its loggers: Ray's progress and plan messages
    # would drown aim's one-line output; its errors still show.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = ray_data.DataContext.get_current()
    context.execution_options.preserve_order = True  # records in input order, as a local run writes them
    context.enable_progress_bars = False  # aim has its own progress bar
    # Chunks of batch_size in input order: a worker's batches are exactly those of a local run.
    given = list(paths)
    size = max(1, spec.batch_size)
    chunks = [given[i : i + size] for i in range(0, len(given), size)]
    rows = [{"chunk": k, "paths": "\0".join(str(p) for p in chunk)} for k, chunk in enumerate(chunks)]
    gpus = 1 if spec.device.startswith("cuda") or (spec.device == "auto" and ray.cluster_resources().get("GPU")) else 0
    count = min(len(chunks), workers or default_workers(ray, gpus))
    remote_spec = replace(spec, cwd=spec.cwd or os.getcwd())
    dataset = ray_data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        TaskWorker,
        fn_constructor_args=(remote_spec, per_item_plan(plan)),
        batch_size=1,
        compute=ray_data.ActorPoolStrategy(size=count),
        num_cpus=1,
        num_gpus=gpus,
    )
    try:
        for row in dataset.iter_rows():
            for item in pickle.loads(row["results"]):
                yield item
                if progress:
                    progress(1)
    except ray.exceptions.RayError as exc:
        raise job_error(exc) from None


def job_error(exc: BaseException) -> AimError:
    """A failed Ray job as aim's one-line error: the worker's own AimError when it raised one."""
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, AimError):
        return cause
    lines = str(cause).strip().splitlines() or [type(cause).__name__]
    return AimError(f"the Ray job failed: {lines[-1][:300]}", "rerun with --resume to continue where it stopped")


__all__ = [
    "JobSpec",
    "TaskWorker",
    "check_reachable",
    "cluster_endpoint",
    "connect",
    "per_item_plan",
    "require_ray",
    "run_job",
]
