"""`aim serve`: start vLLM's OpenAI-compatible server with aim's tiers (vLLM does all the serving)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Sequence

import typer

from aim_cli.cli.common import app, say
from aim_cli.errors import AimError
from aim_cli.profile import noise_key

VLLM_HINT = "pip install 'aim-cli[vllm]'"
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
    again would load it twice (noise applied twice).
    """
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model, *vllm_args]


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
            "--default-profile", help="Tier of requests without aim_* arguments (default: they get the clean model)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the vLLM command and exit.")] = False,
) -> None:
    """Serve tiers with vLLM's OpenAI server; other options (after --) go to `vllm serve`."""
    # torch-backed: loaded when the command runs, so `aim --help` stays fast
    from aim_cli.api.commands import DEFAULT_ENV, PROFILES_ENV, default_tier, load_profile_dir, profile_summary

    if importlib.util.find_spec("vllm") is None:
        raise AimError("aim serve needs vLLM, which is not installed here", VLLM_HINT)
    vllm_args = list(ctx.args)
    refuse_speculative(vllm_args)
    tiers = load_profile_dir(profiles)
    for name, tier in tiers.items():  # keyed tiers need their secret before the server starts
        if tier.key_env:
            noise_key(tier, f"tier '{name}'")
    overrides = {PROFILES_ENV: str(profiles.resolve())}
    if default_profile is not None:
        overrides[DEFAULT_ENV] = default_profile
    env = dict(os.environ, **overrides)
    default = default_tier(tiers, env)
    command = vllm_command(model, vllm_args)
    say(f"aim: serving {model} with vLLM; tiers from {profiles}:")
    for line in profile_summary(tiers):
        say(f"  {line}")
    say("aim: clients choose a tier per request with vllm_xargs (or SamplingParams.extra_args), e.g.")
    say("  " + client_example(model, vllm_args, sorted(tiers)[0]))
    if default is None:
        say("aim: requests without aim_* arguments get the clean model: let only your gateway set vllm_xargs")
    else:
        say(f"aim: requests without aim_* arguments get tier '{default}'")
    if dry_run:
        shown = " ".join(f"{name}={shlex.quote(value)}" for name, value in overrides.items())
        typer.echo(f"{shown} " + shlex.join(command))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)  # vLLM replaces this process: its signals, its exit code
