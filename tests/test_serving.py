"""The engine-neutral serving core (aim_cli/serving.py): request args -> tier -> modulated rows.

No vLLM needed: the vLLM adapter only maps its batch bookkeeping onto these functions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from aim_cli import serving
from aim_cli.errors import ProfileError
from aim_cli.generation import ModulationProcessor
from aim_cli.modulation import BOOST, KeyedNoise, Modulation, token_key
from aim_cli.profile import Profile
from tests.conftest import assert_user_error

REPO = Path(__file__).resolve().parents[1]
DEMO_LM = REPO / "aim_cli" / "demo" / "lm"
VOCAB = 64


@pytest.fixture(scope="module")
def tokenizer():
    """The demo LM's character tokenizer, loaded as `aim generate` loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_LM)


@pytest.fixture
def tiers() -> dict[str, Profile]:
    """The repository's example profiles, as a server reads them from AIM_PROFILES_DIR."""
    return serving.load_profile_dir(REPO / "profiles")


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A server-side secret for keyed tiers."""
    monkeypatch.setenv(serving.KEY_ENV, "test-secret")
    return "test-secret"


def test_profile_directory_is_read_by_file_stem(tiers):
    assert {"free-tier", "keyed-tier"} <= set(tiers)
    assert tiers["free-tier"].sigma == 4.0 and tiers["free-tier"].seed == 1234


def test_server_profiles_come_from_the_environment_variable(tmp_path):
    (tmp_path / "gold.yaml").write_text("version: 1\nutility: {sigma: 0}\n")
    assert serving.server_profiles({serving.PROFILES_ENV: str(tmp_path)})["gold"].sigma == 0
    assert serving.server_profiles({}) == {}
    with pytest.raises(ProfileError, match="no .yaml profiles"):
        serving.load_profile_dir(REPO / "tests")


def test_requests_without_aim_args_are_untouched(tiers):
    assert serving.request_profile(None, tiers) is None
    assert serving.request_profile({"other_plugin": 1}, tiers) is None


def test_explicit_args_override_the_tier_like_command_line_flags(tiers):
    profile = serving.request_profile({"aim_profile": "free-tier", "aim_sigma": 1.5, "aim_focus": "cat:down"}, tiers)
    assert profile.sigma == 1.5 and profile.seed == 1234
    assert [str(f) for f in profile.focus] == ["cat:down"]
    assert serving.request_profile({"aim_sigma": 2, "aim_seed": 7}, {}).seed == 7


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"aim_sigma": -1}, "aim_sigma: sigma must be a finite number >= 0"),
        ({"aim_sigma": "high"}, "aim_sigma: expected a number"),
        ({"aim_focus_sigma": 1e9, "aim_sigma": 1}, "aim_focus_sigma: focus sigma 1e+09 is above the maximum"),
        ({"aim_sgima": 1}, "unknown request argument 'aim_sgima'"),
        ({"aim_profile": "gold"}, "unknown tier 'gold'"),
        ({"aim_focus": "cat:sideways"}, "aim_focus 'cat:sideways': direction must be 'up' or 'down'"),
        ({"aim_focus": [":up"]}, "aim_focus ':up': expected NAME or NAME:up"),
        ({"aim_focus": 3}, "aim_focus: expected"),
        ({"aim_sigma": 1, "aim_seed": -2}, "aim_seed: expected an integer"),
        ({"aim_sigma": 1, "aim_seed": 1, "aim_keyed": True}, "exclude each other"),
        ({"aim_sigma": 1, "aim_keyed": "yes"}, "aim_keyed: expected true or false"),
        ({"aim_sigma": 1, "aim_keyed": 2}, "aim_keyed: expected true or false"),
        ({"aim_focus_sigma": 2}, "sets no modulation"),
    ],
)
def test_invalid_args_are_one_line_errors(tiers, args, fragment):
    with pytest.raises(ProfileError) as caught:
        serving.request_profile(args, tiers)
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_aim_profile_without_a_profile_directory_names_the_variable():
    with pytest.raises(ProfileError, match=serving.PROFILES_ENV):
        serving.request_profile({"aim_profile": "free-tier"}, {})


def test_keyed_request_needs_the_server_key(tiers, monkeypatch):
    monkeypatch.delenv(serving.KEY_ENV, raising=False)
    with pytest.raises(ProfileError, match=serving.KEY_ENV):
        serving.request_profile({"aim_sigma": 1, "aim_keyed": True}, tiers)
    with pytest.raises(ProfileError, match="AIM_NOISE_KEY"):
        serving.request_profile({"aim_profile": "keyed-tier"}, tiers)


def _prompts() -> list[list[int]]:
    return [[4, 5, 14, 6, 18], [7, 18], [8, 9, 10, 15, 11, 12, 18, 13]]


def test_keyed_rows_equal_aim_generate_whatever_the_batch(tiers, key, tokenizer):
    """The plugin's keyed noise is aim generate's: same token_key bytes, so the same draws."""
    plans = serving.PlanCache(lambda: tokenizer)
    plan = plans.resolve(serving.request_profile({"aim_profile": "keyed-tier"}, tiers))
    assert plan.keyed and plan is plans.resolve(serving.request_profile({"aim_profile": "keyed-tier"}, tiers))
    prompts = _prompts()
    torch.manual_seed(0)
    clean = torch.randn(len(prompts), VOCAB)
    # aim generate: left-padded batch, ModulationProcessor with the tier's key.
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    processor = ModulationProcessor(Modulation(2.0), KeyedNoise(key.encode()), keyed=True,
                                    prompt_starts=[width - len(p) for p in prompts])
    expected = processor(ids, clean.clone())
    # The server: another order, with an untouched row between.
    order = [2, 0, 1]
    batch = torch.cat([clean[order], torch.zeros(1, VOCAB)])
    batch = batch[[0, 3, 1, 2]].clone()
    rows = [(0, plan, plan.item_key(prompts[2], len(prompts[2]))),
            (2, plan, plan.item_key(prompts[0], len(prompts[0]))),
            (3, plan, plan.item_key(prompts[1], len(prompts[1])))]
    out = serving.modulate_rows(batch, rows)
    assert torch.equal(out[1], torch.zeros(VOCAB))
    assert torch.equal(out[[2, 3, 0]], expected)


def test_seeded_rows_depend_on_seed_and_step_only(tiers):
    plans = serving.PlanCache(lambda: None)
    plan = plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": 7}, tiers))
    assert not plan.keyed
    clean = torch.zeros(3, VOCAB)
    step3 = plan.item_key([1] * 8, prompt_len=5)
    assert step3 == serving.step_key(3)
    alone = serving.modulate_rows(clean[:1].clone(), [(0, plan, step3)])
    crowded = serving.modulate_rows(clean.clone(), [(2, plan, step3), (0, plan, serving.step_key(0))])
    assert torch.equal(alone[0], crowded[2])
    assert not torch.equal(crowded[0], crowded[2])
    assert torch.equal(crowded[1], torch.zeros(VOCAB))
    other = plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": 8}, tiers))
    assert not torch.equal(serving.modulate_rows(clean[:1].clone(), [(0, other, step3)])[0], alone[0])


@pytest.mark.parametrize("flag", [True, 1, "true"])
def test_keyed_flag_accepts_what_the_openai_server_sends(tiers, key, flag):
    """vllm_xargs carries JSON true as 1 (its values are str | int | float)."""
    assert serving.request_profile({"aim_sigma": 1, "aim_keyed": flag}, tiers).key_env == serving.KEY_ENV
    assert serving.request_profile({"aim_profile": "free-tier", "aim_keyed": 0}, tiers).seed == 1234


def test_requests_without_seed_get_fresh_streams(tiers):
    plans = serving.PlanCache(lambda: None)
    profile = serving.request_profile({"aim_sigma": 1.0}, tiers)
    first, second = plans.resolve(profile), plans.resolve(profile)
    assert first.seed != second.seed


def test_tiers_in_one_batch_get_their_own_sigma(tiers):
    """Rows of two tiers in one batch: utility noise has each tier's std (200 rows x 64: 1% tolerance ~ 4 SE)."""
    plans = serving.PlanCache(lambda: None)
    low = plans.resolve(serving.request_profile({"aim_sigma": 0.5, "aim_seed": 1}, tiers))
    high = plans.resolve(serving.request_profile({"aim_sigma": 3.0, "aim_seed": 1}, tiers))
    rows = [(i, low if i % 2 else high, serving.step_key(i)) for i in range(400)]
    out = serving.modulate_rows(torch.zeros(400, VOCAB), rows)
    # SE of a std estimate from n = 12,800 normals is std / sqrt(2n) = 0.6% of it.
    assert out[1::2].std().item() == pytest.approx(0.5, rel=0.03)
    assert out[0::2].std().item() == pytest.approx(3.0, rel=0.03)


def test_focus_words_resolve_to_token_sets_as_in_aim_generate(tiers, tokenizer):
    plans = serving.PlanCache(lambda: tokenizer)
    plan = plans.resolve(serving.request_profile({"aim_focus": ["7"], "aim_focus_sigma": 2.0, "aim_seed": 3}, tiers))
    assert [(t.class_id, t.direction) for t in plan.modulation.targets] == [(11, BOOST)]
    out = serving.modulate_rows(torch.zeros(50, VOCAB), [(i, plan, serving.step_key(i)) for i in range(50)])
    assert (out[:, 11] > 0).all()
    assert torch.count_nonzero(out[:, torch.arange(VOCAB) != 11]) == 0


def test_unencodable_focus_word_is_a_profile_error(tiers, tokenizer):
    plans = serving.PlanCache(lambda: tokenizer)
    with pytest.raises(ProfileError, match="cannot encode"):
        plans.resolve(serving.request_profile({"aim_focus": "☃"}, tiers))


def test_token_key_is_the_row_key():
    plan = serving.RowPlan(Modulation(1.0), KeyedNoise(b"k"), keyed=True)
    assert plan.item_key([1, 2, 3], 2) == token_key([1, 2, 3])


def test_serve_command_delegates_to_vllm_and_shows_the_client_call():
    from aim_cli.cli.serve import client_example, vllm_command

    command = vllm_command("my/model", ["--port=9001", "--tensor-parallel-size", "2"])
    assert command[1:5] == ["-m", "vllm.entrypoints.cli.main", "serve", "my/model"]
    assert "--logits-processors" not in command  # the entry point loads the plugin; twice would double the noise
    curl = client_example("my/model", ["--port=9001"], "free-tier")
    assert "http://localhost:9001/v1/completions" in curl and '"vllm_xargs": {"aim_profile": "free-tier"}' in curl


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_serve_without_vllm_is_one_line_with_the_install_hint(aim):
    result = aim("serve", str(DEMO_LM), "--profiles", str(REPO / "profiles"))
    assert_user_error(result, 2, "needs vLLM", "pip install 'aim-cli[vllm]'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_fresh_seed_is_pinned_into_the_request_at_admission(tiers):
    """Drawn once in the front end, so every worker (tensor-parallel rank) draws the same noise."""
    first, second = {"aim_sigma": 1.0}, {"aim_sigma": 1.0}
    seed = serving.pin_fresh_seed(first, serving.request_profile(first, tiers))
    assert first["aim_seed"] == seed and serving.pin_fresh_seed(second, serving.request_profile(second, tiers)) != seed
    assert serving.request_profile(first, tiers).seed == seed
    unkeyed = {"aim_sigma": 1.0, "aim_keyed": 0}  # a pinned seed must stay valid with aim_keyed: false
    serving.pin_fresh_seed(unkeyed, serving.request_profile(unkeyed, tiers))
    assert serving.request_profile(unkeyed, tiers).seed == unkeyed["aim_seed"]
    seeded = {"aim_profile": "free-tier"}
    assert serving.pin_fresh_seed(seeded, serving.request_profile(seeded, tiers)) is None and "aim_seed" not in seeded


def test_readme_documents_every_request_argument():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Serving tiers with vLLM") : readme.index("## Scaling")]
    for name in serving.REQUEST_ARGS:
        assert f"`{name}`" in section, name


def test_plan_cache_stays_bounded_under_per_request_seeds(tiers, monkeypatch):
    monkeypatch.setattr(serving.PlanCache, "MAX_ENTRIES", 4)
    plans = serving.PlanCache(lambda: None)
    first = plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": 0}, tiers))
    for seed in range(1, 10):
        plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": seed}, tiers))
    assert len(plans._plans) == 4
    assert plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": 0}, tiers)) is not first
