"""The vLLM path's admission under a tier server's defaults: the same rule as the Ray path (tier_policy).

Drives the plugin's own admission hook (validate_params, which vLLM turns into HTTP 400) and
`aim serve`'s start-up checks. Needs the vllm extra (`make test-vllm`); skipped cleanly without it.
"""

from __future__ import annotations

import socket

import pytest

pytest.importorskip("vllm")

from vllm import SamplingParams

from aim_cli import serving
from aim_cli.integrations.vllm import AimLogitsProcessor
from tests.conftest import REPO, assert_user_error

PROFILES = REPO / "profiles"
KEY = {"AIM_NOISE_KEY": "test-secret"}  # the CLI runs with its own environment: the keyed tier's secret


@pytest.fixture(autouse=True)
def tier_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A server as `aim serve MODEL --profiles profiles/` starts it: no default tier, no opt-ins."""
    monkeypatch.setenv(serving.PROFILES_ENV, str(PROFILES))
    monkeypatch.setenv(serving.KEY_ENV, "test-secret")
    for name in (serving.DEFAULT_ENV, "AIM_ALLOW_AD_HOC_TIERS", "AIM_ALLOW_CLEAN"):
        monkeypatch.delenv(name, raising=False)


def admitted(**extra: object) -> dict | None:
    """validate_params on a request with these extra_args: its args after admission, or ValueError (HTTP 400)."""
    request = SamplingParams(max_tokens=4, extra_args=dict(extra) or None)
    AimLogitsProcessor.validate_params(request)
    return request.extra_args


@pytest.mark.parametrize(
    ("default", "extra", "fragment"),
    [
        ("free-tier", {"aim_sigma": 0}, "aim_sigma: tier 'free-tier' (this server's default) fixes its own sigma"),
        ("free-tier", {"aim_sigma": 0, "aim_keyed": True}, "fixes its own"),
        ("free-tier", {"aim_sigma": -0.0}, "fixes its own sigma"),
        ("free-tier", {"aim_sigma": 1e-300}, "fixes its own sigma"),
        ("free-tier", {"AIM_SIGMA": 0}, "write it aim_sigma"),
        ("free-tier", {"aim_profile": "../free-tier"}, "unknown tier"),
        (None, {}, "names no tier"),
        (None, {"aim_sigma": 2.0}, "aim_sigma: this server serves only its tiers"),
        (None, {"aim_focus": "7"}, "aim_focus: this server serves only its tiers"),
        (None, {"aim_sigma": 0, "aim_keyed": 1}, "serves only its tiers"),
    ],
)
def test_defaults_refuse_what_is_not_a_tier(monkeypatch, default, extra, fragment):
    if default:
        monkeypatch.setenv(serving.DEFAULT_ENV, default)
    with pytest.raises(ValueError, match="aim: ") as caught:
        admitted(**extra)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_defaults_serve_the_tiers_and_their_open_options(monkeypatch):
    assert admitted(aim_profile="free-tier")["aim_profile"] == "free-tier"
    monkeypatch.setenv(serving.DEFAULT_ENV, "free-tier")
    assert admitted() == {"aim_profile": "free-tier"}
    assert admitted(aim_focus="7")["aim_focus"] == "7"  # the default tier leaves focus open


def test_opt_ins_reach_the_plugin_through_the_environment(monkeypatch):
    monkeypatch.setenv("AIM_ALLOW_AD_HOC_TIERS", "1")
    assert admitted(aim_sigma=2.0, aim_seed=3)["aim_sigma"] == 2.0
    with pytest.raises(ValueError, match="asks for no noise"):
        admitted(aim_sigma=0)
    monkeypatch.setenv("AIM_ALLOW_CLEAN", "1")
    assert admitted() is None  # the clean model: the request is left as it is


def test_aim_serve_refuses_a_busy_port_before_vllm_starts(aim):
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = aim("serve", "my/model", "--profiles", str(PROFILES), "--", "--port", str(port), env=KEY, timeout=120)
    assert_user_error(result, 2, f"port {port} on all addresses is in use by another server")


def test_aim_serve_writes_the_opt_ins_for_vllm(aim):
    off = aim("serve", "my/model", "--profiles", str(PROFILES), "--dry-run", env=KEY)
    assert "AIM_ALLOW_AD_HOC_TIERS=0 AIM_ALLOW_CLEAN=0" in off.stdout and "ad-hoc tiers: off" in off.stderr
    on = aim(
        "serve", "my/model", "--profiles", str(PROFILES), "--allow-ad-hoc-tiers", "--allow-clean", "--dry-run", env=KEY
    )
    assert "AIM_ALLOW_AD_HOC_TIERS=1 AIM_ALLOW_CLEAN=1" in on.stdout and "clean model: on" in on.stderr


def test_the_guard_mounts_as_vllm_mounts_a_middleware_class():
    """vLLM's --middleware with a class: app.add_middleware(cls) on its FastAPI app (vllm/entrypoints/serve)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from aim_cli.api.serve import GUARD, vllm_command
    from aim_cli.integrations.vllm_http import AimRequestGuard

    assert vllm_command("m", [])[-2:] == ["--middleware", GUARD]
    app = FastAPI()

    @app.post("/v1/completions")
    async def completions(body: dict) -> dict:
        return {"xargs": body.get("vllm_xargs")}

    app.add_middleware(AimRequestGuard)
    client = TestClient(app)
    twice = b'{"vllm_xargs": {"aim_profile": "free-tier", "aim_profile": "gold"}}'
    refused = client.post("/v1/completions", content=twice, headers={"content-type": "application/json"})
    assert refused.status_code == 400 and "given twice" in refused.json()["error"]["message"]
    assert client.post("/v1/completions?aim_profile=gold", json={}).status_code == 400
    served = client.post("/v1/completions", json={"vllm_xargs": {"aim_profile": "gold"}})
    assert served.json() == {"xargs": {"aim_profile": "gold"}}
