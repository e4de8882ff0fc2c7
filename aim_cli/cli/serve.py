"""`aim serve`: tiers behind a real server. Language models: vLLM's OpenAI-compatible server (vLLM does
all the serving). Image classifiers and segmenters: a Ray Serve deployment (Ray does the serving).

The start-up checks and the engine choice are aim_cli.api.serve's (aim.serve_plan); this prints and starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aim_cli.cli.common import app, say

ModelArgument = Annotated[str, typer.Argument(help="Model for vLLM: a local HF folder or a cached hub id.")]
ProfilesOption = Annotated[
    Path, typer.Option("--profiles", "-p", help="Folder of tier profiles (*.yaml); clients pick one by file name.")
]
DefaultProfileOption = Annotated[
    str | None,
    typer.Option(
        "--default-profile",
        help="Tier of requests that name none; no request gets less noise than it (default: those are refused).",
    ),
]
AllowAdHocOption = Annotated[
    bool,
    typer.Option(
        "--allow-ad-hoc-tiers",
        help="Let requests set aim_sigma, aim_keyed, ... past a tier's open options (on a tier: more noise only).",
    ),
]
AllowCleanOption = Annotated[
    bool,
    typer.Option("--allow-clean", help="Serve the clean model to requests that name no tier or ask for no noise."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the vLLM command (or the Ray Serve settings) and exit.")
]
TaskOption = Annotated[
    str,
    typer.Option(
        "--task", help="auto (the model decides), generate (vLLM), classify or segment (Ray Serve).", show_default=True
    ),
]
HostOption = Annotated[str | None, typer.Option("--host", help="Address to listen on (default 127.0.0.1).")]
PortOption = Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port (default 8000).")]
AddressOption = Annotated[
    str | None, typer.Option("--address", help="Images: a running Ray cluster (default: RAY_ADDRESS, or a local Ray).")
]
WeightsOption = Annotated[
    Path | None, typer.Option("--weights", help="Images: weights for torchvision:ARCH / timm:ARCH.")
]
LabelsOption = Annotated[Path | None, typer.Option("--labels", help="Images: class names (.txt or .json).")]
ReplicasOption = Annotated[
    int | None, typer.Option("--replicas", min=1, help="Images: Ray Serve replicas (default 1).")
]
MaxReplicasOption = Annotated[
    int | None, typer.Option("--max-replicas", min=1, help="Images: autoscale between --replicas and this.")
]
NumCpusOption = Annotated[float | None, typer.Option("--num-cpus", min=0, help="Images: CPUs per replica (default 1).")]
NumGpusOption = Annotated[
    float | None, typer.Option("--num-gpus", min=0, help="Images: GPUs per replica (default 0; > 0 runs on cuda).")
]
MaxBatchOption = Annotated[
    int | None, typer.Option("--max-batch-size", min=1, help="Images: Ray Serve's dynamic batch size (default 8).")
]
BatchWaitOption = Annotated[
    float | None, typer.Option("--batch-wait-ms", min=0, help="Images: longest wait to fill a batch (default 5).")
]
AllowUncertifiedOption = Annotated[
    bool,
    typer.Option(
        "--allow-uncertified-model",
        help="Serve certified tiers on a model other than the one certified (a warning on every start).",
    ),
]


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    model: ModelArgument,
    profiles: ProfilesOption,
    default_profile: DefaultProfileOption = None,
    allow_ad_hoc_tiers: AllowAdHocOption = False,
    allow_clean: AllowCleanOption = False,
    dry_run: DryRunOption = False,
    task: TaskOption = "auto",
    host: HostOption = None,
    port: PortOption = None,
    address: AddressOption = None,
    weights: WeightsOption = None,
    labels: LabelsOption = None,
    replicas: ReplicasOption = None,
    max_replicas: MaxReplicasOption = None,
    num_cpus: NumCpusOption = None,
    num_gpus: NumGpusOption = None,
    max_batch_size: MaxBatchOption = None,
    batch_wait_ms: BatchWaitOption = None,
    allow_uncertified_model: AllowUncertifiedOption = False,
) -> None:
    """Serve tiers: vLLM's OpenAI server for language models (options after -- go to `vllm serve`), or Ray Serve
    for image models."""
    # torch-backed: loaded when the command runs, so `aim --help` stays fast
    from aim_cli.api.serve import ServeSettings, serve_plan, start_server

    settings = ServeSettings(
        model, profiles, default_profile=default_profile, allow_ad_hoc_tiers=allow_ad_hoc_tiers,
        allow_clean=allow_clean, allow_uncertified_model=allow_uncertified_model, task=task, host=host, port=port,
        address=address, weights=weights, labels=labels, replicas=replicas, max_replicas=max_replicas,
        num_cpus=num_cpus, num_gpus=num_gpus, max_batch_size=max_batch_size, batch_wait_ms=batch_wait_ms,
        engine_args=tuple(ctx.args),
    )  # fmt: skip
    plan = serve_plan(settings, notice=say)
    for line in plan.banner:
        say(line)
    if dry_run:
        typer.echo(plan.dry_run())
        return
    start_server(plan, notice=say)
