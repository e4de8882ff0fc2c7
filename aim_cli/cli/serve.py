"""`aim serve`: tiers behind a real server. Language models: vLLM's OpenAI-compatible server (vLLM does
all the serving). Image classifiers and segmenters: a Ray Serve deployment (Ray does the serving)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from aim_cli.cli.common import app, say
from aim_cli.errors import AimError, InputError
from aim_cli.profile import noise_key

VLLM_HINT = "pip install 'aim-cli[vllm]'"
# vLLM's --middleware import path of aim's request guard (aim_cli/integrations/vllm_http.py).
GUARD = "aim_cli.integrations.vllm_http.AimRequestGuard"
RAY_HINT = "pip install 'aim-cli[ray]'"
TASKS = ("auto", "generate", "classify", "segment")
# vLLM's speculative-decoding options: under it the V1 runner silently skips plugins, and aim
# cannot key V2's draft rows. Refused here, before vLLM starts, as a courtesy; the guard that
# holds for every form (a --config file included) is on the final engine config (integrations.vllm).
SPECULATIVE_OPTIONS = ("--speculative-config", "-sc", "--spec-method", "--spec-model", "--spec-tokens")


def _option(args: Sequence[str], name: str, default: str) -> str:
    """The value of a vLLM option among the pass-through args (`--port 9000` or `--port=9000`)."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return default


def vllm_command(model: str, vllm_args: Sequence[str]) -> list[str]:
    """`vllm serve MODEL ARGS` run by this interpreter, so vLLM loads the aim plugin installed beside it.

    No --logits-processors flag: vLLM loads installed plugins by entry point, and naming the class
    again would load it twice (noise applied twice). One --middleware: the guard that refuses aim
    fields in the query string and aim fields repeated in the body (vLLM would keep the last).
    """
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model, *vllm_args, "--middleware", GUARD]


def client_example(model: str, vllm_args: Sequence[str], tier: str) -> str:
    """A curl line that asks the server for one tier through vllm_xargs."""
    host = _option(vllm_args, "--host", "localhost") or "localhost"
    port = _option(vllm_args, "--port", "8000")
    served = _option(vllm_args, "--served-model-name", model)
    body = {
        "model": served,
        "prompt": "The capital of France is",
        "max_tokens": 16,
        "vllm_xargs": {"aim_profile": tier},
    }
    data = shlex.quote(json.dumps(body))
    return f"curl http://{host}:{port}/v1/completions -H 'Content-Type: application/json' -d {data}"


def refuse_speculative(vllm_args: Sequence[str]) -> None:
    """Speculative decoding is not supported with aim's tiers: a one-line error naming the option."""
    for arg in vllm_args:
        name = arg.split("=", 1)[0].split(".", 1)[0]  # vLLM's dotted form: --speculative-config.method
        if name.startswith("--"):
            name = "--" + name[2:].replace("_", "-")  # vLLM accepts --speculative_config too
        if name in SPECULATIVE_OPTIONS:
            raise AimError(f"{name}: aim's tiers do not support speculative decoding", "serve without it")


def model_task(model: str) -> str:
    """What a model serves: classify or segment (image models, on Ray Serve), else generate (vLLM).

    torchvision:/timm: specs by their architecture; a local checkpoint folder by the architectures
    its config.json names; anything else (a hub id) goes to vLLM, as before.
    """
    if model.startswith("timm:"):
        return "classify"
    if model.startswith("torchvision:"):
        from aim_cli.api.commands import segmentation_architectures

        return "segment" if model.split(":", 1)[1] in segmentation_architectures() else "classify"
    config = Path(model) / "config.json"
    if not config.is_file():
        return "generate"
    from aim_cli.errors import ModelError
    from aim_cli.io import read_text_file
    from aim_cli.limits import CONFIG_BYTES

    try:
        names = json.loads(read_text_file(config, CONFIG_BYTES, ModelError, "config")).get("architectures") or []
    except (ValueError, AttributeError):
        return "generate"  # vLLM gives its own message for a config it cannot read
    names = [str(name) for name in names] if isinstance(names, list) else []
    if any("Segmentation" in name for name in names):
        return "segment"
    if any("ImageClassification" in name for name in names):
        return "classify"
    return "generate"


def check_language_model_certificates(tiers: dict[str, object], model: str, allow_other_model: bool) -> None:
    """Start-up check of certified tiers against the folder vLLM will load (a content hash of its files)."""
    from aim_cli.certificates import check_served_tiers, directory_fingerprint, tier_certificates

    certificates = tier_certificates(tiers)
    if all(certificate is None for certificate in certificates.values()):
        return
    from aim_cli.api.commands import locate

    where, local = locate(model)
    if not local:  # a cached hub id: its snapshot folder, found offline
        from huggingface_hub import snapshot_download

        where = snapshot_download(where, local_files_only=True)
    fingerprint = directory_fingerprint(Path(where))
    for line in check_served_tiers(certificates, fingerprint, allow_other_model, model):
        say(f"aim: warning: {line}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model for vLLM: a local HF folder or a cached hub id.")],
    profiles: Annotated[
        Path, typer.Option("--profiles", "-p", help="Folder of tier profiles (*.yaml); clients pick one by file name.")
    ],
    default_profile: Annotated[
        str | None,
        typer.Option(
            "--default-profile",
            help="Tier of requests that name none; no request gets less noise than it (default: those are refused).",
        ),
    ] = None,
    allow_ad_hoc_tiers: Annotated[
        bool,
        typer.Option(
            "--allow-ad-hoc-tiers",
            help="Let requests set aim_sigma, aim_keyed, ... past a tier's open options (on a tier: more noise only).",
        ),
    ] = False,
    allow_clean: Annotated[
        bool,
        typer.Option("--allow-clean", help="Serve the clean model to requests that name no tier or ask for no noise."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the vLLM command (or the Ray Serve settings) and exit.")
    ] = False,
    task: Annotated[
        str,
        typer.Option(
            "--task",
            help="auto (the model decides), generate (vLLM), classify or segment (Ray Serve).",
            show_default=True,
        ),
    ] = "auto",
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="Port (default 8000).")] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Images: a running Ray cluster (default: RAY_ADDRESS, or a local Ray)."),
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="Images: weights for torchvision:ARCH / timm:ARCH.")
    ] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="Images: class names (.txt or .json).")] = None,
    replicas: Annotated[
        int | None, typer.Option("--replicas", min=1, help="Images: Ray Serve replicas (default 1).")
    ] = None,
    max_replicas: Annotated[
        int | None, typer.Option("--max-replicas", min=1, help="Images: autoscale between --replicas and this.")
    ] = None,
    num_cpus: Annotated[
        float | None, typer.Option("--num-cpus", min=0, help="Images: CPUs per replica (default 1).")
    ] = None,
    num_gpus: Annotated[
        float | None,
        typer.Option("--num-gpus", min=0, help="Images: GPUs per replica (default 0; > 0 runs on cuda)."),
    ] = None,
    max_batch_size: Annotated[
        int | None,
        typer.Option("--max-batch-size", min=1, help="Images: Ray Serve's dynamic batch size (default 8)."),
    ] = None,
    batch_wait_ms: Annotated[
        float | None,
        typer.Option("--batch-wait-ms", min=0, help="Images: longest wait to fill a batch (default 5)."),
    ] = None,
    allow_uncertified_model: Annotated[
        bool,
        typer.Option(
            "--allow-uncertified-model",
            help="Serve certified tiers on a model other than the one certified (a warning on every start).",
        ),
    ] = False,
) -> None:
    """Serve tiers: vLLM's OpenAI server for language models (options after -- go to `vllm serve`), or Ray Serve
    for image models."""
    # torch-backed: loaded when the command runs, so `aim --help` stays fast
    from aim_cli.api.commands import (
        ALLOW_AD_HOC_ENV,
        ALLOW_CLEAN_ENV,
        DEFAULT_ENV,
        PROFILES_ENV,
        TierPolicy,
        check_port_free,
        default_tier,
        load_profile_dir,
        profile_summary,
    )

    if task not in TASKS:
        raise InputError(f"--task {task}: not a task aim serves", f"choose one of {', '.join(TASKS)}")
    kind = model_task(model) if task == "auto" else task
    image_options = {
        "--address": address,
        "--weights": weights,
        "--labels": labels,
        "--replicas": replicas,
        "--max-replicas": max_replicas,
        "--num-cpus": num_cpus,
        "--num-gpus": num_gpus,
        "--max-batch-size": max_batch_size,
        "--batch-wait-ms": batch_wait_ms,
    }
    if kind != "generate":
        from aim_cli.cli.serve_images import ImageServeOptions, serve_images

        options = ImageServeOptions(
            host or "127.0.0.1",
            port or 8000,
            address,
            weights,
            labels,
            replicas or 1,
            max_replicas,
            1.0 if num_cpus is None else num_cpus,
            num_gpus or 0.0,
            max_batch_size or 8,
            5.0 if batch_wait_ms is None else batch_wait_ms,
        )
        serve_images(
            kind,
            model,
            profiles,
            default_profile,
            options,
            list(ctx.args),
            dry_run,
            allow_uncertified_model=allow_uncertified_model,
            allow_ad_hoc=allow_ad_hoc_tiers,
            allow_clean=allow_clean,
        )
        return
    given = [name for name, value in image_options.items() if value is not None]
    if given:
        raise InputError(
            f"{given[0]} is for image models on Ray Serve", "vLLM options go after --, e.g. -- --port 9000"
        )
    # --host / --port before -- mean what they always meant: vLLM's own.
    ctx.args[:0] = [*(["--host", host] if host else []), *(["--port", str(port)] if port else [])]
    if importlib.util.find_spec("vllm") is None:
        raise AimError("aim serve needs vLLM, which is not installed here", VLLM_HINT)
    vllm_args = list(ctx.args)
    refuse_speculative(vllm_args)
    tiers = load_profile_dir(profiles)
    for name, tier in tiers.items():  # keyed tiers need their secret before the server starts
        if tier.key_env:
            noise_key(tier, f"tier '{name}'")
    check_language_model_certificates(tiers, model, allow_uncertified_model)
    # The opt-ins are always written, so an inherited variable never opts in behind the operator's back.
    overrides = {
        PROFILES_ENV: str(profiles.resolve()),
        ALLOW_AD_HOC_ENV: "1" if allow_ad_hoc_tiers else "0",
        ALLOW_CLEAN_ENV: "1" if allow_clean else "0",
    }
    if default_profile is not None:
        overrides[DEFAULT_ENV] = default_profile
    # --default-profile alone says which tier is the default: an inherited AIM_DEFAULT_PROFILE is dropped.
    env = {name: value for name, value in os.environ.items() if name != DEFAULT_ENV}
    env.update(overrides)
    default = default_tier(tiers, env)
    policy = TierPolicy(tiers, default, allow_ad_hoc_tiers, allow_clean)
    command = vllm_command(model, vllm_args)
    say(f"aim: serving {model} with vLLM; tiers from {profiles}:")
    for line in profile_summary(tiers):
        say(f"  {line}")
    say("aim: clients choose a tier per request with vllm_xargs (or SamplingParams.extra_args), e.g.")
    say("  " + client_example(model, vllm_args, sorted(tiers)[0]))
    for line in policy.guarantees():
        say(f"aim: {line}")
    if dry_run:
        shown = " ".join(f"{name}={shlex.quote(value)}" for name, value in overrides.items())
        typer.echo(f"{shown} " + shlex.join(command))
        return
    if "--uds" not in vllm_args and not any(arg.startswith("--uds=") for arg in vllm_args):
        port_text = _option(vllm_args, "--port", "8000")
        if port_text.isdigit():  # anything else is vLLM's to refuse
            check_port_free(_option(vllm_args, "--host", ""), int(port_text))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)  # vLLM replaces this process: its signals, its exit code
