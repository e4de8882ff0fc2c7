"""`aim.serve_plan` is `aim serve`'s start-up: the same options give the same settings, banner and refusals.

The CLI runs as a process with --dry-run; the API builds the plan in this process. The vLLM path
uses a stand-in `vllm` package (an empty one: the plan never imports it), so it runs without the extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import aim_cli as aim
from tests.conftest import REPO, run_aim

DEMO = REPO / "aim_cli" / "demo"


@pytest.fixture(scope="module")
def tiers(tmp_path_factory) -> Path:
    """Two unkeyed tiers (the plan then needs no secret)."""
    folder = tmp_path_factory.mktemp("serve_tiers")
    (folder / "gold.yaml").write_text("version: 1\nutility: {sigma: 0.5}\nnoise: {seed: 7}\n")
    (folder / "free.yaml").write_text("version: 1\nutility: {sigma: 2.0}\n")
    return folder


@pytest.fixture
def stand_in_vllm(tmp_path, monkeypatch) -> Path:
    """An empty `vllm` package on the path: `aim serve` takes the vLLM path (what --dry-run shows needs no vLLM)."""
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def banner(stderr: str) -> list[str]:
    """The CLI's start-up lines as the plan holds them (rich may wrap none: soft_wrap)."""
    return [line for line in stderr.splitlines() if line]


def test_image_model_settings_are_the_same_from_cli_and_api(tiers):
    model = str(DEMO / "classifier")
    result = run_aim(
        "serve", model, "-p", str(tiers), "--default-profile", "gold", "--replicas", "2", "--max-replicas", "3",
        "--num-cpus", "0.5", "--batch-wait-ms", "2", "--port", "9123", "--allow-ad-hoc-tiers", "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    settings = aim.ServeSettings(
        model, tiers, default_profile="gold", replicas=2, max_replicas=3, num_cpus=0.5, batch_wait_ms=2,
        port=9123, allow_ad_hoc_tiers=True,
    )  # fmt: skip
    plan = aim.serve_plan(settings)
    assert plan.engine == "ray" and plan.task == "classify"
    assert json.loads(plan.dry_run()) == json.loads(result.stdout)
    assert list(plan.banner) == banner(result.stderr)
    assert plan.options is not None and plan.options.replicas == 2 and plan.options.host == "127.0.0.1"
    assert plan.endpoint is not None and plan.endpoint.default_profile == "gold" and plan.endpoint.allow_ad_hoc


def test_language_model_command_is_the_same_from_cli_and_api(tiers, stand_in_vllm):
    result = run_aim(
        "serve", "my/model", "-p", str(tiers), "--allow-clean", "--port", "9000", "--dry-run", "--", "--max-model-len",
        "512", env={"PYTHONPATH": f"{stand_in_vllm}:{REPO}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = aim.serve_plan(
        aim.ServeSettings("my/model", tiers, allow_clean=True, port=9000, engine_args=("--max-model-len", "512"))
    )
    assert plan.engine == "vllm" and plan.dry_run() == result.stdout.strip()
    assert list(plan.banner) == banner(result.stderr)
    assert plan.command[-4:] == (
        "--max-model-len",
        "512",
        "--middleware",
        "aim_cli.integrations.vllm_http.AimRequestGuard",
    )
    assert plan.vllm_args == ("--port", "9000", "--max-model-len", "512")
    assert dict(plan.overrides) == {
        "AIM_PROFILES_DIR": str(tiers.resolve()),
        "AIM_ALLOW_AD_HOC_TIERS": "0",
        "AIM_ALLOW_CLEAN": "1",
    }
    assert plan.env["AIM_ALLOW_CLEAN"] == "1" and "AIM_DEFAULT_PROFILE" not in plan.env


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"task": "translate"}, "--task translate: not a task aim serves"),
        ({"replicas": 2}, "--replicas is for image models on Ray Serve"),
        ({"engine_args": ("--speculative_config.method", "ngram")}, "--speculative-config: aim's tiers do not support"),
        ({"default_profile": "platinum"}, "AIM_DEFAULT_PROFILE=platinum: no such tier"),
        ({"default_profile": "gold", "allow_clean": True}, "--allow-clean and a default tier ('gold') exclude"),
    ],
)
def test_language_model_refusals(tiers, stand_in_vllm, settings, fragment):
    with pytest.raises(aim.AimError) as caught:
        aim.serve_plan(aim.ServeSettings("my/model", tiers, **settings))
    assert fragment in str(caught.value)


def test_image_model_refusals(tiers):
    model = str(DEMO / "segmenter")
    with pytest.raises(aim.InputError, match="unexpected argument '--x' for an image model"):
        aim.serve_plan(aim.ServeSettings(model, tiers, engine_args=("--x",)))
    with pytest.raises(aim.InputError, match="--max-replicas is below --replicas"):
        aim.serve_plan(aim.ServeSettings(model, tiers, replicas=3, max_replicas=2))
    with pytest.raises(aim.ProfileError, match="not a directory"):
        aim.serve_plan(aim.ServeSettings(model, tiers / "missing"))


def test_keyed_tier_secrets_stay_out_of_the_plans_repr(tmp_path, monkeypatch):
    (tmp_path / "keyed.yaml").write_text("version: 1\nutility: {sigma: 1}\nnoise: {key_env: AIM_TEST_SERVE_KEY}\n")
    model = str(DEMO / "classifier")
    with pytest.raises(aim.ProfileError, match="tier 'keyed': keyed noise needs the environment variable"):
        aim.serve_plan(aim.ServeSettings(model, tmp_path))
    monkeypatch.setenv("AIM_TEST_SERVE_KEY", "very-secret-value")
    plan = aim.serve_plan(aim.ServeSettings(model, tmp_path))
    assert plan.secrets == {"AIM_TEST_SERVE_KEY": "very-secret-value"}
    assert "very-secret-value" not in repr(plan) and "very-secret-value" not in plan.dry_run()
