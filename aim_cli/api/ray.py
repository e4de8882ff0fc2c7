"""Image tiers on Ray: the Serve application `aim serve` deploys and the Ray Data job of `--engine ray`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aim_cli.errors import AimError
from aim_cli.plans import ModulationPlan


def vision_app(
    task: str,
    model: str | None = None,
    *,
    profiles: str | None = None,
    default_profile: str | None = None,
    weights: str | None = None,
    labels: str | None = None,
    device: str = "cpu",
    allow_ad_hoc: bool = False,
    allow_clean: bool = False,
    **ray_options: Any,
) -> Any:
    """A Ray Serve Application serving an image model's tiers (what `aim serve` deploys); needs aim-cli[ray].

    task: 'classify' or 'segment'; profiles: a folder of tier profiles (clients pick one with
    aim_profile); with profiles, requests get only those tiers unless allow_ad_hoc / allow_clean
    (`aim serve --allow-ad-hoc-tiers` / `--allow-clean`). Run it with ray.serve.run(app,
    route_prefix=...) or mount it in your own Ray
    application. ray_options: replicas, max_replicas (autoscaling), num_cpus, num_gpus,
    max_batch_size, batch_wait_s (Ray Serve's dynamic batching) and env (for every replica).
    """
    from aim_cli.engines.vision_tiers import EndpointSpec

    try:
        from aim_cli.engines import ray_serve
    except ImportError:
        raise AimError(
            "vision_app needs Ray Serve, which is not installed here", "pip install 'aim-cli[ray]'"
        ) from None
    spec = EndpointSpec(task, model, weights, labels, device, profiles, default_profile, allow_ad_hoc, allow_clean)
    return ray_serve.vision_app(spec, **ray_options)


def vision_job(
    task: str,
    paths: Sequence[Any],
    plan: ModulationPlan,
    *,
    model: str | None = None,
    weights: str | None = None,
    labels: str | None = None,
    device: str = "auto",
    batch_size: int = 32,
    topk: int = 1,
    compare: bool = False,
    workers: int | None = None,
) -> Any:
    """Classify or segment image files on Ray Data workers (`aim classify/segment --engine ray`); needs aim-cli[ray].

    plan: aim.plan(profile, the model's class names). Yields, in input order, what the local
    task yields: results (.path, .top or .prediction) and failures (.path, .reason). An item's
    noise depends only on the plan and its pixels (seeded plans: on the seed and the pixels),
    so any number of workers gives the same results.
    """
    from pathlib import Path

    from aim_cli.engines.ray_data import JobSpec, run_job

    spec = JobSpec(task, model, weights, labels, device, batch_size, topk, compare)
    return run_job(spec, [Path(p) for p in paths], plan, workers)
