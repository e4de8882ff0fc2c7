"""`aim serve` for image classifiers and segmenters: the tiered endpoint on Ray Serve."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from aim_cli.cli.common import say
from aim_cli.errors import AimError, InputError
from aim_cli.profile import noise_key

RAY_HINT = "pip install 'aim-cli[ray]'"


def secrets_token() -> str:
    """A fresh token for this start: GET / on the port must answer it before the server says ready."""
    import secrets

    return secrets.token_hex(8)


@dataclass(frozen=True)
class ImageServeOptions:
    """Where to listen and what Ray gives the deployment (replicas, resources, batching)."""

    host: str
    port: int
    address: str | None
    weights: Path | None
    labels: Path | None
    replicas: int
    max_replicas: int | None
    num_cpus: float
    num_gpus: float
    max_batch_size: int
    batch_wait_ms: float


def _local(path: str | Path | None) -> str | None:
    """An existing local path made absolute (replicas may start elsewhere); other specs as given."""
    if path is None:
        return None
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def client_example(host: str, port: int, tier: str) -> str:
    """A curl line that sends one image at one tier."""
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    return f"curl --data-binary @image.png -H 'Content-Type: image/png' 'http://{shown}:{port}/?aim_profile={tier}'"


def check_image_model_certificates(
    task: str, model: str, options: ImageServeOptions, tiers: dict[str, object], allow_other_model: bool
) -> None:
    """Start-up check of certified tiers against the served model's fingerprint (refused unless allowed).

    The model is loaded once here, on the CPU, only when some tier is certified: the replicas
    load their own copies later, and a refusal must come before any of them starts.
    """
    from aim_cli.certificates import check_served_tiers, model_fingerprint, tier_certificates

    certificates = tier_certificates(tiers)
    if all(certificate is None for certificate in certificates.values()):
        return
    import torch

    from aim_cli.api.commands import load_model

    served = load_model(task, model, device=torch.device("cpu"), weights=options.weights, labels=options.labels)
    for line in check_served_tiers(certificates, model_fingerprint(served), allow_other_model, model):
        say(f"aim: warning: {line}")


def serve_images(
    task: str,
    model: str,
    profiles: Path,
    default_profile: str | None,
    options: ImageServeOptions,
    extra: Sequence[str],
    dry_run: bool,
    allow_uncertified_model: bool = False,
    allow_ad_hoc: bool = False,
    allow_clean: bool = False,
) -> None:
    """Check the tiers, then deploy the tiered endpoint on Ray Serve and serve until Ctrl-C."""
    from aim_cli.api.commands import (
        DEFAULT_ENV,
        KEY_ENV,
        EndpointSpec,
        TierPolicy,
        default_tier,
        load_profile_dir,
        profile_summary,
    )

    if extra:
        raise InputError(f"unexpected argument {extra[0]!r} for an image model", "see aim serve --help")
    if options.max_replicas is not None and options.max_replicas < options.replicas:
        raise InputError("--max-replicas is below --replicas", "give --max-replicas >= --replicas")
    tiers = load_profile_dir(profiles)
    secrets: dict[str, str] = {}
    for name, tier in tiers.items():  # keyed tiers need their secret before the server starts
        if tier.key_env:
            noise_key(tier, f"tier '{name}'")
            secrets[tier.key_env] = os.environ[tier.key_env]
    check_image_model_certificates(task, model, options, tiers, allow_uncertified_model)
    if os.environ.get(KEY_ENV):  # requests with aim_keyed: true
        secrets[KEY_ENV] = os.environ[KEY_ENV]
    default = default_tier(tiers, {DEFAULT_ENV: default_profile or ""})
    policy = TierPolicy(tiers, default, allow_ad_hoc, allow_clean)
    spec = EndpointSpec(
        task,
        _local(model),
        _local(options.weights),
        _local(options.labels),
        "cuda" if options.num_gpus > 0 else "cpu",
        str(profiles.resolve()),
        default,
        allow_ad_hoc,
        allow_clean,
        secrets_token(),
    )
    say(f"aim: serving {model} ({task}) on Ray Serve at http://{options.host}:{options.port}/; tiers from {profiles}:")
    for line in profile_summary(tiers):
        say(f"  {line}")
    say("aim: clients POST an image (raw, multipart or JSON with base64) and choose a tier with aim_profile, e.g.")
    say("  " + client_example(options.host, options.port, sorted(tiers)[0]))
    for line in policy.guarantees():
        say(f"aim: {line}")
    if dry_run:
        settings = {
            "endpoint": {k: v for k, v in asdict(spec).items() if k != "instance"},
            "ray": {k: v for k, v in asdict(options).items() if k not in ("weights", "labels")},
        }
        typer.echo(json.dumps(settings, default=str, sort_keys=True))
        return
    try:
        from aim_cli.api.commands import ray_serve
    except ImportError:
        raise AimError("aim serve for image models needs Ray Serve, which is not installed here", RAY_HINT) from None
    app = ray_serve.vision_app(
        spec,
        replicas=options.replicas,
        max_replicas=options.max_replicas,
        num_cpus=options.num_cpus,
        num_gpus=options.num_gpus,
        max_batch_size=options.max_batch_size,
        batch_wait_s=options.batch_wait_ms / 1000,
        env=secrets,
    )
    ray_serve.start(app, address=options.address, host=options.host, port=options.port, instance=spec.instance)
    say(f"aim: ready at http://{options.host}:{options.port}/ (Ctrl-C stops it)")
    ray_serve.serve_until_interrupted()
