"""Tiers behind a real server: `aim.serve_plan` checks what `aim serve` checks, `aim.start_server` starts it.

Language models go to vLLM's OpenAI-compatible server (vLLM does all the serving, with aim's
plugin); image classifiers and segmenters to a Ray Serve deployment. Every start-up check (the
tiers, their keys, their certificates, the engine's options and the operator's opt-ins) runs in
serve_plan, before anything starts; the plan says what would run (ServePlan.dry_run()).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from aim_cli.api.arguments import Notice
from aim_cli.engines.vision_tiers import EndpointSpec
from aim_cli.errors import AimError, InputError, ModelError
from aim_cli.limits import ascii_whole
from aim_cli.profile import Profile, noise_key
from aim_cli.serving import DEFAULT_ENV, KEY_ENV, PROFILES_ENV, default_tier, load_profile_dir, profile_summary
from aim_cli.tier_policy import ALLOW_AD_HOC_ENV, ALLOW_CLEAN_ENV, TierPolicy

__all__ = ["ImageServeOptions", "ServePlan", "ServeSettings", "serve_plan", "start_server"]

VLLM_HINT = "pip install 'aim-cli[vllm]'"
RAY_HINT = "pip install 'aim-cli[ray]'"
# vLLM's --middleware import path of aim's request guard (aim_cli/integrations/vllm_http.py).
GUARD = "aim_cli.integrations.vllm_http.AimRequestGuard"
TASKS = ("auto", "generate", "classify", "segment")
# vLLM's speculative-decoding options: under it the V1 runner silently skips plugins, and aim
# cannot key V2's draft rows. Refused here, before vLLM starts, as a courtesy; the guard that
# holds for every form (a --config file included) is on the final engine config (integrations.vllm).
SPECULATIVE_OPTIONS = ("--speculative-config", "-sc", "--spec-method", "--spec-model", "--spec-tokens")


@dataclass(frozen=True)
class ServeSettings:
    """What `aim serve` is asked to serve: its options, one field each (None: the engine's default).

    engine_args: vLLM's own options (what follows `--` on the command line); an image model takes none.
    The image options (address to batch_wait_ms) are for Ray Serve only.
    """

    model: str
    profiles: str | Path
    default_profile: str | None = None
    allow_ad_hoc_tiers: bool = False
    allow_clean: bool = False
    allow_uncertified_model: bool = False
    task: str = "auto"
    host: str | None = None
    port: int | None = None
    address: str | None = None
    weights: Path | None = None
    labels: Path | None = None
    replicas: int | None = None
    max_replicas: int | None = None
    num_cpus: float | None = None
    num_gpus: float | None = None
    max_batch_size: int | None = None
    batch_wait_ms: float | None = None
    engine_args: tuple[str, ...] = ()

    def image_options(self) -> dict[str, object]:
        """The Ray Serve options by their flag (None where not given)."""
        return {
            "--address": self.address,
            "--weights": self.weights,
            "--labels": self.labels,
            "--replicas": self.replicas,
            "--max-replicas": self.max_replicas,
            "--num-cpus": self.num_cpus,
            "--num-gpus": self.num_gpus,
            "--max-batch-size": self.max_batch_size,
            "--batch-wait-ms": self.batch_wait_ms,
        }


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

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> ImageServeOptions:
        """The settings with Ray Serve's defaults filled in (127.0.0.1:8000, one replica on one CPU, batches of 8)."""
        return cls(
            settings.host or "127.0.0.1",
            settings.port or 8000,
            settings.address,
            settings.weights,
            settings.labels,
            settings.replicas or 1,
            settings.max_replicas,
            1.0 if settings.num_cpus is None else settings.num_cpus,
            settings.num_gpus or 0.0,
            settings.max_batch_size or 8,
            5.0 if settings.batch_wait_ms is None else settings.batch_wait_ms,
        )


@dataclass(frozen=True)
class ServePlan:
    """A checked start: the engine, the tiers and their policy, the banner lines, and what the engine runs.

    vllm: `command` run with `env` (`overrides` are the variables aim sets in it). ray: the `endpoint`
    each replica loads and the deployment's `options`, with the `secrets` its replicas need.
    banner: the start-up lines `aim serve` prints (the tiers, a client call, the policy).
    """

    engine: Literal["vllm", "ray"]
    model: str
    task: str
    tiers: Mapping[str, Profile]
    policy: TierPolicy
    banner: tuple[str, ...]
    command: tuple[str, ...] = ()
    vllm_args: tuple[str, ...] = ()
    overrides: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    endpoint: EndpointSpec | None = None
    options: ImageServeOptions | None = None
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    def dry_run(self) -> str:
        """What `aim serve --dry-run` prints: the vLLM command with its variables, or the Ray Serve settings as JSON."""
        if self.endpoint is None or self.options is None:
            shown = " ".join(f"{name}={shlex.quote(value)}" for name, value in self.overrides.items())
            return f"{shown} " + shlex.join(self.command)
        settings = {
            "endpoint": {k: v for k, v in asdict(self.endpoint).items() if k != "instance"},
            "ray": {k: v for k, v in asdict(self.options).items() if k not in ("weights", "labels")},
        }
        return json.dumps(settings, default=str, sort_keys=True)


def option_value(args: Sequence[str], name: str, default: str) -> str:
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
    host = option_value(vllm_args, "--host", "localhost") or "localhost"
    port = option_value(vllm_args, "--port", "8000")
    served = option_value(vllm_args, "--served-model-name", model)
    body = {
        "model": served,
        "prompt": "The capital of France is",
        "max_tokens": 16,
        "vllm_xargs": {"aim_profile": tier},
    }
    data = shlex.quote(json.dumps(body))
    return f"curl http://{host}:{port}/v1/completions -H 'Content-Type: application/json' -d {data}"


def image_client_example(host: str, port: int, tier: str) -> str:
    """A curl line that sends one image at one tier."""
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    return f"curl --data-binary @image.png -H 'Content-Type: image/png' 'http://{shown}:{port}/?aim_profile={tier}'"


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
        from aim_cli.models.segmenter import segmentation_architectures

        return "segment" if model.split(":", 1)[1] in segmentation_architectures() else "classify"
    config = Path(model) / "config.json"
    if not config.is_file():
        return "generate"
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


def _warn(notice: Notice | None, lines: Sequence[str]) -> None:
    """Each certificate warning as aim prints it."""
    for line in lines:
        if notice is not None:
            notice(f"aim: warning: {line}")


def check_language_model_certificates(
    tiers: Mapping[str, Profile], model: str, allow_other_model: bool, notice: Notice | None = None
) -> None:
    """Start-up check of certified tiers against the folder vLLM will load (a content hash of its files)."""
    from aim_cli.certificates import check_served_tiers, directory_fingerprint, tier_certificates

    certificates = tier_certificates(tiers)
    if all(certificate is None for certificate in certificates.values()):
        return
    from aim_cli.models.hub import locate

    where, local = locate(model)
    if not local:  # a cached hub id: its snapshot folder, found offline
        from huggingface_hub import snapshot_download

        where = snapshot_download(where, local_files_only=True)
    fingerprint = directory_fingerprint(Path(where))
    _warn(notice, check_served_tiers(certificates, fingerprint, allow_other_model, model))


def check_image_model_certificates(
    task: str,
    model: str,
    options: ImageServeOptions,
    tiers: Mapping[str, Profile],
    allow_other_model: bool,
    notice: Notice | None = None,
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

    from aim_cli.models.registry import load_model

    image_task: Literal["classify", "segment"] = "segment" if task == "segment" else "classify"
    cpu = torch.device("cpu")
    served = load_model(image_task, model, device=cpu, weights=options.weights, labels=options.labels)
    _warn(notice, check_served_tiers(certificates, model_fingerprint(served), allow_other_model, model))


def _local(path: str | Path | None) -> str | None:
    """An existing local path made absolute (replicas may start elsewhere); other specs as given."""
    if path is None:
        return None
    return str(Path(path).resolve()) if Path(path).exists() else str(path)


def _secrets_token() -> str:
    """A fresh token for this start: GET / on the port must answer it before the server says ready."""
    import secrets

    return secrets.token_hex(8)


def _image_plan(task: str, settings: ServeSettings, notice: Notice | None) -> ServePlan:
    """The Ray Serve start of an image model's tiers, checked."""
    options = ImageServeOptions.from_settings(settings)
    if settings.engine_args:
        raise InputError(f"unexpected argument {settings.engine_args[0]!r} for an image model", "see aim serve --help")
    if options.max_replicas is not None and options.max_replicas < options.replicas:
        raise InputError("--max-replicas is below --replicas", "give --max-replicas >= --replicas")
    profiles = Path(settings.profiles)
    tiers = load_profile_dir(profiles)
    secrets: dict[str, str] = {}
    for name, tier in tiers.items():  # keyed tiers need their secret before the server starts
        if tier.key_env:
            noise_key(tier, f"tier '{name}'")
            secrets[tier.key_env] = os.environ[tier.key_env]
    check_image_model_certificates(task, settings.model, options, tiers, settings.allow_uncertified_model, notice)
    if os.environ.get(KEY_ENV):  # requests with aim_keyed: true
        secrets[KEY_ENV] = os.environ[KEY_ENV]
    default = default_tier(tiers, {DEFAULT_ENV: settings.default_profile or ""})
    policy = TierPolicy(tiers, default, settings.allow_ad_hoc_tiers, settings.allow_clean)
    endpoint = EndpointSpec(
        task,
        _local(settings.model),
        _local(options.weights),
        _local(options.labels),
        "cuda" if options.num_gpus > 0 else "cpu",
        str(profiles.resolve()),
        default,
        settings.allow_ad_hoc_tiers,
        settings.allow_clean,
        _secrets_token(),
    )
    banner = [
        f"aim: serving {settings.model} ({task}) on Ray Serve at http://{options.host}:{options.port}/; "
        f"tiers from {profiles}:",
        *(f"  {line}" for line in profile_summary(tiers)),
        "aim: clients POST an image (raw, multipart or JSON with base64) and choose a tier with aim_profile, e.g.",
        "  " + image_client_example(options.host, options.port, sorted(tiers)[0]),
        *(f"aim: {line}" for line in policy.guarantees()),
    ]
    return ServePlan(
        "ray", settings.model, task, tiers, policy, tuple(banner), endpoint=endpoint, options=options, secrets=secrets
    )


def _vllm_plan(settings: ServeSettings, notice: Notice | None) -> ServePlan:
    """The vLLM start of a language model's tiers, checked."""
    given = [name for name, value in settings.image_options().items() if value is not None]
    if given:
        raise InputError(
            f"{given[0]} is for image models on Ray Serve", "vLLM options go after --, e.g. -- --port 9000"
        )
    # --host / --port before -- mean what they always meant: vLLM's own.
    host, port = settings.host, settings.port
    vllm_args = [*(["--host", host] if host else []), *(["--port", str(port)] if port else []), *settings.engine_args]
    if importlib.util.find_spec("vllm") is None:
        raise AimError("aim serve needs vLLM, which is not installed here", VLLM_HINT)
    refuse_speculative(vllm_args)
    profiles = Path(settings.profiles)
    tiers = load_profile_dir(profiles)
    for name, tier in tiers.items():  # keyed tiers need their secret before the server starts
        if tier.key_env:
            noise_key(tier, f"tier '{name}'")
    check_language_model_certificates(tiers, settings.model, settings.allow_uncertified_model, notice)
    # The opt-ins are always written, so an inherited variable never opts in behind the operator's back.
    overrides = {
        PROFILES_ENV: str(profiles.resolve()),
        ALLOW_AD_HOC_ENV: "1" if settings.allow_ad_hoc_tiers else "0",
        ALLOW_CLEAN_ENV: "1" if settings.allow_clean else "0",
    }
    if settings.default_profile is not None:
        overrides[DEFAULT_ENV] = settings.default_profile
    # --default-profile alone says which tier is the default: an inherited AIM_DEFAULT_PROFILE is dropped.
    env = {name: value for name, value in os.environ.items() if name != DEFAULT_ENV}
    env.update(overrides)
    default = default_tier(tiers, env)
    policy = TierPolicy(tiers, default, settings.allow_ad_hoc_tiers, settings.allow_clean)
    banner = [
        f"aim: serving {settings.model} with vLLM; tiers from {profiles}:",
        *(f"  {line}" for line in profile_summary(tiers)),
        "aim: clients choose a tier per request with vllm_xargs (or SamplingParams.extra_args), e.g.",
        "  " + client_example(settings.model, vllm_args, sorted(tiers)[0]),
        *(f"aim: {line}" for line in policy.guarantees()),
    ]
    command = tuple(vllm_command(settings.model, vllm_args))
    return ServePlan(
        "vllm", settings.model, "generate", tiers, policy, tuple(banner), command, tuple(vllm_args), overrides, env
    )


def serve_plan(settings: ServeSettings, *, notice: Notice | None = None) -> ServePlan:
    """Check a start of `aim serve` before anything runs: the engine for the model, its options, the tiers.

    task 'auto' lets the model decide (image models go to Ray Serve, the rest to vLLM). Keyed tiers
    need their secret now; a certified tier on another model is refused unless
    allow_uncertified_model (then each such tier is a warning, sent to `notice`). Errors are aim errors.
    """
    if settings.task not in TASKS:
        raise InputError(f"--task {settings.task}: not a task aim serves", f"choose one of {', '.join(TASKS)}")
    kind = model_task(settings.model) if settings.task == "auto" else settings.task
    return _vllm_plan(settings, notice) if kind == "generate" else _image_plan(kind, settings, notice)


def start_server(plan: ServePlan, *, notice: Notice | None = None) -> None:
    """Start the plan's server and serve until Ctrl-C.

    vLLM replaces this process (its signals, its exit code) once the port is checked free; Ray
    Serve deploys the endpoint, says ready to `notice`, and serves until interrupted.
    """
    if plan.engine == "vllm":
        args = plan.vllm_args
        if "--uds" not in args and not any(arg.startswith("--uds=") for arg in args):
            port = ascii_whole(option_value(args, "--port", "8000"))
            if port is not None:  # anything else is vLLM's to refuse
                from aim_cli.ports import check_port_free

                check_port_free(option_value(args, "--host", ""), port)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execvpe(plan.command[0], list(plan.command), dict(plan.env))
    if plan.endpoint is None or plan.options is None:
        raise InputError("this plan has no Ray Serve endpoint", "build it with aim.serve_plan")  # hand-made
    try:
        from aim_cli.engines import ray_serve
    except ImportError:
        raise AimError("aim serve for image models needs Ray Serve, which is not installed here", RAY_HINT) from None
    options = plan.options
    app = ray_serve.vision_app(
        plan.endpoint,
        replicas=options.replicas,
        max_replicas=options.max_replicas,
        num_cpus=options.num_cpus,
        num_gpus=options.num_gpus,
        max_batch_size=options.max_batch_size,
        batch_wait_s=options.batch_wait_ms / 1000,
        env=dict(plan.secrets),
    )
    ray_serve.start(app, address=options.address, host=options.host, port=options.port, instance=plan.endpoint.instance)
    if notice is not None:
        notice(f"aim: ready at http://{options.host}:{options.port}/ (Ctrl-C stops it)")
    ray_serve.serve_until_interrupted()
