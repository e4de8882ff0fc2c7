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

from aim_cli import serving
from aim_cli.cli.common import app, say
from aim_cli.errors import AimError, ProfileError

VLLM_HINT = "pip install 'aim-cli[vllm]'"


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
    body = {"model": served, "prompt": "The capital of France is", "max_tokens": 16, "vllm_xargs": {"aim_profile": tier}}
    return f"curl http://{host}:{port}/v1/completions -H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}"


def _check_keys(profiles: dict[str, serving.Profile]) -> None:
    """Keyed tiers need their secret in the server's environment before it starts."""
    for name, profile in profiles.items():
        if profile.key_env and not os.environ.get(profile.key_env):
            raise ProfileError(f"tier '{name}' uses keyed noise, but {profile.key_env} is not set", f"export {profile.key_env}=<secret>")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model for vLLM: a local HF folder or a cached hub id.")],
    profiles: Annotated[Path, typer.Option("--profiles", "-p", help="Folder of tier profiles (*.yaml); clients pick one by file name.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the vLLM command and exit.")] = False,
) -> None:
    """Serve tiers with vLLM's OpenAI server; other options (after --) go to `vllm serve`."""
    if importlib.util.find_spec("vllm") is None:
        raise AimError("aim serve needs vLLM, which is not installed here", VLLM_HINT)
    tiers = serving.load_profile_dir(profiles)
    _check_keys(tiers)
    vllm_args = list(ctx.args)
    command = vllm_command(model, vllm_args)
    env = dict(os.environ, **{serving.PROFILES_ENV: str(profiles.resolve())})
    say(f"aim: serving {model} with vLLM; tiers from {profiles}:")
    for line in serving.profile_summary(tiers):
        say(f"  {line}")
    say("aim: clients choose a tier per request with vllm_xargs (or SamplingParams.extra_args), e.g.")
    say("  " + client_example(model, vllm_args, sorted(tiers)[0]))
    say("aim: or set it explicitly: {\"aim_sigma\": 2.0, \"aim_seed\": 7}, {\"aim_focus\": [\"word:up\"]}, {\"aim_keyed\": true}")
    if dry_run:
        typer.echo(f"{serving.PROFILES_ENV}={shlex.quote(env[serving.PROFILES_ENV])} " + shlex.join(command))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)  # vLLM replaces this process: its signals, its exit code
