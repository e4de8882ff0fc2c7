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


class Vocabulary:
    """A tokenizer as far as tiers without focus words need one: its size (no padding columns)."""

    def __len__(self) -> int:
        return VOCAB


def adhoc(tiers) -> serving.TierPolicy:
    """A tier server whose operator opted into ad-hoc modulation and the clean model (no default tier)."""
    return serving.TierPolicy(tiers, allow_ad_hoc=True, allow_clean=True)


def plan_cache(tokenizer=None, vocab_size=None) -> serving.PlanCache:
    """A PlanCache over a tokenizer (default: VOCAB tokens, no focus words needed)."""
    return serving.PlanCache(lambda: tokenizer if tokenizer is not None else Vocabulary(), vocab_size)


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
    with pytest.raises(ProfileError, match=r"no \.yaml profiles"):
        serving.load_profile_dir(REPO / "tests")


def test_requests_without_aim_args_are_untouched_where_the_clean_model_is_allowed(tiers):
    assert serving.request_profile(None, adhoc(tiers)) is None
    assert serving.request_profile({"other_plugin": 1}, adhoc(tiers)) is None


def test_explicit_args_set_the_modulation_without_a_tier(tiers):
    profile = serving.request_profile({"aim_sigma": 2, "aim_seed": 7, "aim_focus": "cat:down"}, adhoc({}))
    assert profile.sigma == 2 and profile.seed == 7 and [str(f) for f in profile.focus] == ["cat:down"]


def test_a_tier_without_focus_takes_the_requests_focus_words(tiers):
    profile = serving.request_profile(
        {"aim_profile": "free-tier", "aim_focus": "cat:down", "aim_focus_sigma": 1}, serving.TierPolicy(tiers)
    )
    assert profile.sigma == 4.0 and profile.seed == 1234
    assert [str(f) for f in profile.focus] == ["cat:down"] and profile.focus_sigma == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"aim_profile": "free-tier", "aim_sigma": 0}, "aim_sigma: tier 'free-tier' fixes its own sigma"),
        ({"aim_profile": "keyed-tier", "aim_seed": 1}, "aim_seed: tier 'keyed-tier' fixes its own noise"),
        ({"aim_profile": "free-tier", "aim_seed": 1}, "aim_seed: tier 'free-tier' fixes its own noise"),
        ({"aim_profile": "keyed-tier", "aim_keyed": 0}, "aim_keyed: tier 'keyed-tier' fixes its own noise"),
        ({"aim_profile": "free-tier", "aim_keyed": True}, "aim_keyed: tier 'free-tier' fixes its own noise"),
        (
            {"aim_profile": "focus-pedestrian", "aim_focus_sigma": 0},
            "aim_focus_sigma: tier 'focus-pedestrian' fixes its own focus",
        ),
        (
            {"aim_profile": "focus-pedestrian", "aim_focus": "car"},
            "aim_focus: tier 'focus-pedestrian' fixes its own focus",
        ),
    ],
)
def test_a_request_cannot_weaken_its_tier(tiers, key, args, message):
    """A tier's sigma, noise mode and focus are what a gateway sells: no request argument lowers them."""
    assert_one_line_profile_error(lambda: serving.request_profile(args, serving.TierPolicy(tiers)), message)


def test_a_fresh_seed_tier_takes_the_pinned_seed(tmp_path):
    """No seed, no key: the tier draws any seed per request, so the seed admission pins is allowed."""
    (tmp_path / "fresh.yaml").write_text("version: 1\nutility: {sigma: 2}\n")
    fresh = serving.load_profile_dir(tmp_path)
    args = serving.admit({"aim_profile": "fresh"}, serving.TierPolicy(fresh))
    assert (
        isinstance(args["aim_seed"], int)
        and serving.request_profile(args, serving.TierPolicy(fresh)).seed == args["aim_seed"]
    )
    assert_one_line_profile_error(
        lambda: serving.request_profile({"aim_profile": "fresh", "aim_sigma": 1}, serving.TierPolicy(fresh)),
        "fixes its own sigma",
    )


def test_default_tier_applies_to_requests_without_aim_args(tiers):
    default = serving.default_tier(tiers, {serving.DEFAULT_ENV: "free-tier"})
    assert default == "free-tier" and serving.default_tier(tiers, {}) is None
    policy = serving.TierPolicy(tiers, default)
    assert serving.request_profile(None, policy) == tiers["free-tier"]
    assert serving.request_profile({"other_plugin": 1}, policy).sigma == 4.0
    assert serving.admit(None, policy) == {"aim_profile": "free-tier"}  # written in for the workers
    assert serving.admit(None, adhoc(tiers)) is None  # clean model allowed, no default: untouched
    # The default is a floor: a request naming its own settings cannot get less noise than it.
    assert_one_line_profile_error(
        lambda: serving.request_profile({"aim_sigma": 0}, policy),
        "aim_sigma: tier 'free-tier' (this server's default) fixes its own sigma",
    )
    assert_one_line_profile_error(
        lambda: serving.default_tier(tiers, {serving.DEFAULT_ENV: "gold"}), "AIM_DEFAULT_PROFILE=gold: no such tier"
    )


def test_server_policy_comes_from_the_environment(tmp_path):
    """aim serve's environment: the folder, the default tier and the two opt-ins; no folder is no tier server."""
    (tmp_path / "gold.yaml").write_text("version: 1\nutility: {sigma: 1}\n")
    folder = {serving.PROFILES_ENV: str(tmp_path)}
    assert serving.server_policy({}).enforced is False
    strict = serving.server_policy(folder)
    assert strict.enforced and not strict.allow_ad_hoc and not strict.allow_clean and strict.default is None
    opted = serving.server_policy({**folder, "AIM_ALLOW_AD_HOC_TIERS": "1", "AIM_ALLOW_CLEAN": "true"})
    assert opted.allow_ad_hoc and opted.allow_clean
    assert_one_line_profile_error(
        lambda: serving.server_policy({**folder, "AIM_ALLOW_CLEAN": "maybe"}),
        "AIM_ALLOW_CLEAN='maybe': expected 1 or 0",
    )


def assert_one_line_profile_error(call, fragment: str) -> None:
    """call() raises a one-line ProfileError containing fragment."""
    with pytest.raises(ProfileError) as caught:
        call()
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


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
        serving.request_profile(args, adhoc(tiers))
    message = str(caught.value)
    assert fragment in message and "\n" not in message


def test_aim_profile_without_a_profile_directory_names_the_variable():
    with pytest.raises(ProfileError, match=serving.PROFILES_ENV):
        serving.request_profile({"aim_profile": "free-tier"}, serving.TierPolicy.open())


def test_keyed_request_needs_the_server_key(tiers, monkeypatch):
    monkeypatch.delenv(serving.KEY_ENV, raising=False)
    with pytest.raises(ProfileError, match=serving.KEY_ENV):
        serving.request_profile({"aim_sigma": 1, "aim_keyed": True}, adhoc(tiers))
    with pytest.raises(ProfileError, match="AIM_NOISE_KEY"):
        serving.request_profile({"aim_profile": "keyed-tier"}, adhoc(tiers))


def _prompts() -> list[list[int]]:
    return [[4, 5, 14, 6, 18], [7, 18], [8, 9, 10, 15, 11, 12, 18, 13]]


def test_keyed_rows_equal_aim_generate_whatever_the_batch(tiers, key, tokenizer):
    """The plugin's keyed noise is aim generate's: same token_key bytes, so the same draws."""
    plans = plan_cache(tokenizer)
    plan = plans.resolve(serving.request_profile({"aim_profile": "keyed-tier"}, adhoc(tiers)))
    assert plan.keyed and plan is plans.resolve(serving.request_profile({"aim_profile": "keyed-tier"}, adhoc(tiers)))
    prompts = _prompts()
    torch.manual_seed(0)
    clean = torch.randn(len(prompts), VOCAB)
    # aim generate: left-padded batch, ModulationProcessor with the tier's key.
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    processor = ModulationProcessor(
        Modulation(2.0),
        KeyedNoise(key.encode()),
        keyed=True,
        prompt_starts=[width - len(p) for p in prompts],
        num_tokens=len(tokenizer),
    )
    expected = processor(ids, clean.clone())
    # The server: another order, with an untouched row between.
    order = [2, 0, 1]
    batch = torch.cat([clean[order], torch.zeros(1, VOCAB)])
    batch = batch[[0, 3, 1, 2]].clone()
    rows = [
        (0, plan, plan.item_key(prompts[2], len(prompts[2]))),
        (2, plan, plan.item_key(prompts[0], len(prompts[0]))),
        (3, plan, plan.item_key(prompts[1], len(prompts[1]))),
    ]
    out = serving.modulate_rows(batch, rows)
    assert torch.equal(out[1], torch.zeros(VOCAB))
    assert torch.equal(out[[2, 3, 0]], expected)


def test_seeded_rows_depend_on_seed_and_step_only(tiers):
    plans = plan_cache()
    plan = plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": 7}, adhoc(tiers)))
    assert not plan.keyed
    clean = torch.zeros(3, VOCAB)
    step3 = plan.item_key([1] * 8, prompt_len=5)
    assert step3 == serving.step_key(3)
    alone = serving.modulate_rows(clean[:1].clone(), [(0, plan, step3)])
    crowded = serving.modulate_rows(clean.clone(), [(2, plan, step3), (0, plan, serving.step_key(0))])
    assert torch.equal(alone[0], crowded[2])
    assert not torch.equal(crowded[0], crowded[2])
    assert torch.equal(crowded[1], torch.zeros(VOCAB))
    other = plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": 8}, adhoc(tiers)))
    assert not torch.equal(serving.modulate_rows(clean[:1].clone(), [(0, other, step3)])[0], alone[0])


@pytest.mark.parametrize("flag", [True, 1, "true"])
def test_keyed_flag_accepts_what_the_openai_server_sends(tiers, key, flag):
    """vllm_xargs carries JSON true as 1 (its values are str | int | float)."""
    assert serving.request_profile({"aim_sigma": 1, "aim_keyed": flag}, adhoc(tiers)).key_env == serving.KEY_ENV
    assert serving.request_profile({"aim_sigma": 1, "aim_seed": 3, "aim_keyed": 0}, adhoc(tiers)).seed == 3


def test_requests_without_seed_get_fresh_streams(tiers):
    plans = plan_cache()
    profile = serving.request_profile({"aim_sigma": 1.0}, adhoc(tiers))
    first, second = plans.resolve(profile), plans.resolve(profile)
    assert first.seed != second.seed


def test_tiers_in_one_batch_get_their_own_sigma(tiers):
    """Rows of two tiers in one batch: utility noise has each tier's std (200 rows x 64: 1% tolerance ~ 4 SE)."""
    plans = plan_cache()
    low = plans.resolve(serving.request_profile({"aim_sigma": 0.5, "aim_seed": 1}, adhoc(tiers)))
    high = plans.resolve(serving.request_profile({"aim_sigma": 3.0, "aim_seed": 1}, adhoc(tiers)))
    rows = [(i, low if i % 2 else high, serving.step_key(i)) for i in range(400)]
    out = serving.modulate_rows(torch.zeros(400, VOCAB), rows)
    # SE of a std estimate from n = 12,800 normals is std / sqrt(2n) = 0.6% of it.
    assert out[1::2].std().item() == pytest.approx(0.5, rel=0.03)
    assert out[0::2].std().item() == pytest.approx(3.0, rel=0.03)


def test_focus_words_resolve_to_token_sets_as_in_aim_generate(tiers, tokenizer):
    plans = plan_cache(tokenizer)
    plan = plans.resolve(
        serving.request_profile({"aim_focus": ["7"], "aim_focus_sigma": 2.0, "aim_seed": 3}, adhoc(tiers))
    )
    assert [(t.class_id, t.direction) for t in plan.modulation.targets] == [(11, BOOST)]
    width = len(tokenizer)
    out = serving.modulate_rows(torch.zeros(50, width), [(i, plan, serving.step_key(i)) for i in range(50)])
    assert (out[:, 11] > 0).all()
    assert torch.count_nonzero(out[:, torch.arange(width) != 11]) == 0


def test_unencodable_focus_word_is_a_profile_error(tiers, tokenizer):
    plans = plan_cache(tokenizer)
    with pytest.raises(ProfileError, match="cannot encode"):
        plans.resolve(serving.request_profile({"aim_focus": "☃"}, adhoc(tiers)))


def test_token_key_is_the_row_key():
    plan = serving.RowPlan(Modulation(1.0), KeyedNoise(b"k"), keyed=True)
    assert plan.item_key([1, 2, 3], 2) == token_key([1, 2, 3])


def test_serve_command_delegates_to_vllm_and_shows_the_client_call():
    from aim_cli.api.serve import client_example, vllm_command

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
    seed = serving.pin_fresh_seed(first, serving.request_profile(first, adhoc(tiers)))
    assert (
        first["aim_seed"] == seed
        and serving.pin_fresh_seed(second, serving.request_profile(second, adhoc(tiers))) != seed
    )
    assert serving.request_profile(first, adhoc(tiers)).seed == seed
    unkeyed = {"aim_sigma": 1.0, "aim_keyed": 0}  # a pinned seed must stay valid with aim_keyed: false
    serving.pin_fresh_seed(unkeyed, serving.request_profile(unkeyed, adhoc(tiers)))
    assert serving.request_profile(unkeyed, adhoc(tiers)).seed == unkeyed["aim_seed"]
    seeded = {"aim_profile": "free-tier"}
    assert (
        serving.pin_fresh_seed(seeded, serving.request_profile(seeded, adhoc(tiers))) is None
        and "aim_seed" not in seeded
    )


def test_docs_document_every_request_argument():
    section = (REPO / "docs" / "serving.md").read_text(encoding="utf-8")  # the page "Serving tiers with vLLM"
    for name in serving.REQUEST_ARGS:
        assert f"`{name}`" in section, name


def test_plan_cache_stays_bounded_under_per_request_seeds(tiers, monkeypatch):
    monkeypatch.setattr(serving.PlanCache, "MAX_ENTRIES", 4)
    plans = plan_cache()
    first = plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": 0}, adhoc(tiers)))
    for seed in range(1, 10):
        plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": seed}, adhoc(tiers)))
    assert len(plans._plans) == 4
    assert plans.resolve(serving.request_profile({"aim_sigma": 1.0, "aim_seed": 0}, adhoc(tiers))) is not first


def test_token_hasher_keys_equal_token_key_step_by_step_and_after_a_reset():
    """Incremental hashing (new tokens only) gives token_key(full history) whatever the history does."""
    rng = torch.Generator().manual_seed(0)
    history = torch.randint(0, 50_000, (40,), generator=rng).tolist()
    hasher = serving.TokenHasher()
    calls = []

    def full(tokens):
        return lambda: calls.append(len(tokens)) or tokens

    def key(tokens):  # as the adapters call it: the history from the hasher's resume point
        start = hasher.resume_at
        return hasher.key(tokens[start:], start, full(tokens))

    for n in range(1, 300):
        history.append(n * 7919 % 50_000)
        assert key(history) == token_key(history)
    assert calls == []  # each step fed only its new token; the history was never read in full
    # Preemption / a recycled slot: the history no longer extends what was hashed (it shrank, then changed).
    shorter = history[:100]
    assert key(shorter) == token_key(shorter)
    changed = [*shorter[:-2], 1, 2, 3]
    assert key(changed) == token_key(changed)
    assert calls == [100, 101]
    # A placeholder (vLLM's async scheduling) hashed at the last position, then replaced, is noticed too.
    key([*changed, -1, 5])
    fixed = [*changed, 9, 5, 6]
    assert key(fixed) == token_key(fixed) and calls[-1] == len(fixed)
    assert hasher.key([], 0, full([])) == token_key([])


def test_seeded_rows_in_chunked_prefill_get_a_valid_key():
    """A row still in prefill has step pos + 1 - prompt_len < 0; its sample is discarded, but it must not crash."""
    assert serving.step_key(-12) == serving.step_key(0)
    plan = plan_cache().resolve(Profile(sigma=1.0, seed=3))
    serving.modulate_rows(torch.zeros(1, VOCAB), [(0, plan, serving.step_key(-12))])


def test_noise_never_picks_a_padding_column():
    """Logits wider than the tokenizer (T5, Qwen2.5): columns past it are -inf in modulated rows, even at sigma 50."""
    tokens = VOCAB // 2  # half the columns padding: noise alone would pick one about half the time
    plan = plan_cache(tokenizer=type("Tokenizer", (), {"__len__": lambda self: tokens})()).resolve(
        Profile(sigma=50.0, seed=1)
    )
    out = serving.modulate_rows(torch.zeros(200, VOCAB), [(i, plan, serving.step_key(i)) for i in range(200)])
    assert (out.argmax(dim=1) < tokens).all()
    assert torch.isneginf(out[:, tokens:]).all() and torch.isfinite(out[:, :tokens]).all()


def test_focus_word_past_the_output_layer_is_a_one_line_error(tiers, tokenizer):
    """A tokenizer larger than the model's logits: a focus token without a column is refused at plan time."""
    plans = plan_cache(tokenizer, vocab_size=11)  # '7' is token 11 of the demo tokenizer
    assert_one_line_profile_error(
        lambda: plans.resolve(Profile(focus=("7",), seed=1)), "token id 11 is past the model's 11 output columns"
    )
    assert plan_cache(tokenizer, vocab_size=12).resolve(Profile(focus=("7",), seed=1)).modulation.targets


@pytest.mark.parametrize(
    "option",
    [
        "--speculative-config",
        '--speculative_config={"method": "ngram"}',
        "-sc",
        "--spec-method=ngram",
        "--speculative-config.method",
        "--speculative_config.method=ngram",
    ],
)
def test_serve_refuses_speculative_decoding_options(option):
    """Under speculative decoding vLLM's V1 runner skips the plugin silently: `aim serve` refuses the options."""
    from aim_cli.api.serve import refuse_speculative
    from aim_cli.errors import AimError

    with pytest.raises(AimError, match="do not support speculative decoding"):
        refuse_speculative(["--port", "9000", option, "x"])
    refuse_speculative(["--port", "9000", "--max-model-len", "64"])  # other options pass
