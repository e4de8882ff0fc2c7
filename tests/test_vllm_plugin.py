"""The vLLM adapter against vLLM's real interface classes (both model runners), on CPU.

Skipped unless vLLM is importable: `make test-vllm` installs aim-cli[vllm] into .venv-vllm and
runs this file. The per-row logic itself is tested without vLLM in tests/test_serving.py; the
GPU end-to-end check (a served model, the OpenAI endpoint) is scripts/vllm_gpu_check.py.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

vllm = pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import (  # noqa: E402
    LOGITSPROCS_GROUP,
    BatchUpdate,
    MoveDirectionality,
    validate_logits_processors_parameters,
)
from vllm.v1.worker.gpu.sample.logits_processor import (  # noqa: E402
    LogitsContext,
    LogitsProcRequestState,
    build_custom_logits_processors_params_validator,
)

from aim_cli import serving  # noqa: E402
from aim_cli.errors import AimError  # noqa: E402
from aim_cli.generation import ModulationProcessor  # noqa: E402
from aim_cli.integrations.vllm import AimLogitsProcessor, AimV1LogitsProcessor, AimV2LogitsProcessor  # noqa: E402
from aim_cli.modulation import KeyedNoise, Modulation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64
SLOTS = 8
FQCN = "aim_cli.integrations.vllm:AimLogitsProcessor"
DEMO_LM = REPO / "aim_cli" / "demo" / "lm"
TOKENS = 52  # the demo tokenizer's size: logits columns 52..63 are padding (no token), as in T5 or Qwen2.5


def config(vocab: int = VOCAB, speculative: object = None, v2: bool = True) -> SimpleNamespace:
    """The parts of vLLM's VllmConfig the processor reads (v2: the runner, Model Runner V2 by default)."""
    model = SimpleNamespace(tokenizer=str(DEMO_LM), get_vocab_size=lambda: vocab)
    return SimpleNamespace(model_config=model, speculative_config=speculative, use_v2_model_runner=v2)


CONFIG = config()
V1_CONFIG = config(v2=False)
PROMPTS = [[4, 5, 14, 6, 18], [7, 18], [8, 9, 10, 15, 11, 12, 18, 13]]


@pytest.fixture(autouse=True)
def server_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A server started with a tiers directory (the repo's profiles plus a focus tier) and a key."""
    for path in (REPO / "profiles").glob("*.yaml"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "sevens.yaml").write_text(
        "version: 1\nutility: {sigma: 0}\nfocus:\n  sigma: 2.0\n  targets: ['7']\nnoise: {seed: 5}\n"
    )
    monkeypatch.setenv(serving.PROFILES_ENV, str(tmp_path))
    monkeypatch.setenv(serving.KEY_ENV, "test-secret")
    # These tests drive the processor with ad-hoc and plain requests: the operator's opt-ins are on.
    # What the defaults refuse is tested in test_vllm_tier_policy.py.
    monkeypatch.setenv("AIM_ALLOW_AD_HOC_TIERS", "1")
    monkeypatch.setenv("AIM_ALLOW_CLEAN", "1")


def params(**aim: object) -> SamplingParams:
    """Greedy sampling params carrying aim_* extra args (none: a plain request)."""
    return SamplingParams(temperature=0.0, max_tokens=8, extra_args=dict(aim) or None)


def v1_processor() -> AimV1LogitsProcessor:
    """Built as the V1 model runner builds custom processors: (vllm_config, device, is_pin_memory)."""
    return AimLogitsProcessor(V1_CONFIG, torch.device("cpu"), False)


def v1_step(proc: AimV1LogitsProcessor, clean: torch.Tensor, update: BatchUpdate | None = None) -> torch.Tensor:
    """One V1 engine step: state update, then apply on a copy of the clean logits."""
    proc.update_state(update)
    return proc.apply(clean.clone())


def test_registered_under_vllms_entry_point_group():
    found = {ep.name: ep.value for ep in entry_points(group=LOGITSPROCS_GROUP)}
    assert found.get("aim") == FQCN, "reinstall aim-cli (pip install -e '.[vllm]') to refresh its entry points"


def test_both_model_runners_load_the_class():
    from vllm.v1.sample.logits_processor import _load_logitsprocs_by_fqcns
    from vllm.v1.worker.gpu.sample.logits_processor.loader import _load_v2_logitsprocs_by_fqcns

    assert _load_v2_logitsprocs_by_fqcns([FQCN]) == [AimLogitsProcessor]  # checks the V2 subclass
    assert _load_logitsprocs_by_fqcns([FQCN]) == [AimLogitsProcessor]
    assert v1_processor().is_argmax_invariant() is False  # so V1 applies it in greedy decoding too


def test_the_registered_class_builds_the_processor_of_the_runner_in_use():
    """The engine config names the runner; each gets a processor of its own interface only."""
    v1 = v1_processor()
    v2, _ = v2_setup()
    assert type(v1) is AimV1LogitsProcessor and not isinstance(v1, AimV2LogitsProcessor)
    assert isinstance(v2, AimV2LogitsProcessor) and not hasattr(v2, "update_state")
    assert not hasattr(v1, "add_request")


@pytest.mark.parametrize(
    ("aim", "fragment"),
    [
        ({"aim_sigma": -1.0}, "finite number >= 0"),
        ({"aim_profile": "gold"}, "unknown tier 'gold'"),
        ({"aim_sigmaa": 1.0}, "unknown request argument"),
        ({"aim_focus": "cat:sideways"}, "direction must be"),
    ],
)
def test_invalid_args_are_rejected_by_both_runners_validators(aim, fragment):
    from vllm.exceptions import VLLMValidationError

    request = params(**aim)
    with pytest.raises(VLLMValidationError, match=fragment):  # V2: HTTP 400 for the OpenAI server
        build_custom_logits_processors_params_validator([AimLogitsProcessor])(request)
    with pytest.raises(VLLMValidationError, match=fragment):  # V1 runner
        validate_logits_processors_parameters([AimLogitsProcessor], request)
    build_custom_logits_processors_params_validator([AimLogitsProcessor])(params())  # plain requests pass


def test_openai_vllm_xargs_reach_the_processor_as_extra_args():
    """JSON true arrives as 1 through vllm_xargs; the processor accepts it."""
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    request = CompletionRequest(model="m", prompt="hi", vllm_xargs={"aim_sigma": 2.0, "aim_keyed": True})
    sampling = request.to_sampling_params(max_tokens=4)
    assert sampling.extra_args["aim_keyed"] == 1
    AimLogitsProcessor.validate_params(sampling)


def test_v1_batch_updates_add_remove_and_move_requests():
    proc = v1_processor()
    torch.manual_seed(0)
    clean = torch.randn(3, VOCAB)
    outputs: list[list[int]] = [[], [], []]
    added = [
        (0, params(aim_profile="keyed-tier"), PROMPTS[0], outputs[0]),
        (1, params(), PROMPTS[1], outputs[1]),  # no aim args: untouched
        (2, params(aim_sigma=1.0, aim_seed=3), PROMPTS[2], outputs[2]),
    ]
    first = v1_step(proc, clean, BatchUpdate(3, [], added, []))
    assert torch.equal(first[1], clean[1])
    assert not torch.equal(first[0], clean[0]) and not torch.equal(first[2], clean[2])
    # vLLM appends each new token to the live output list: the keyed row's key follows it.
    outputs[0].append(11)
    second = v1_step(proc, clean)
    assert not torch.equal(second[0], first[0])
    outputs[0].pop()
    # Swap rows 0 and 2; then the seeded request finishes and vLLM condenses row 2 into its hole.
    swapped = v1_step(proc, clean[[2, 1, 0]], BatchUpdate(3, [], [], [(0, 2, MoveDirectionality.SWAP)]))
    assert torch.equal(swapped[2], first[0]) and torch.equal(swapped[0], first[2])
    moved = v1_step(proc, clean[:2], BatchUpdate(2, [0], [], [(2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    assert torch.equal(moved[0], first[0]) and torch.equal(moved[1], clean[1])
    # The keyed request finishes; the plain one moves to row 0 and stays untouched.
    gone = v1_step(proc, clean[1:2], BatchUpdate(1, [0], [], [(1, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    assert torch.equal(gone, clean[1:2])


def test_keyed_repeat_is_identical_across_batch_layouts_and_equals_aim_generate():
    torch.manual_seed(1)
    clean = torch.randn(3, VOCAB)
    alone = v1_processor()
    one = v1_step(alone, clean[2:], BatchUpdate(1, [], [(0, params(aim_profile="keyed-tier"), PROMPTS[2], [])], []))
    crowd = v1_processor()
    added = [(i, params(aim_profile="keyed-tier") if i else params(aim_sigma=3.0), PROMPTS[i], []) for i in range(3)]
    many = v1_step(crowd, clean, BatchUpdate(3, [], added, []))
    assert torch.equal(one[0], many[2])
    generate = ModulationProcessor(Modulation(2.0), KeyedNoise(b"test-secret"), keyed=True, num_tokens=TOKENS)
    assert torch.equal(generate(torch.tensor([PROMPTS[2]]), clean[2:].clone())[0], one[0])


def test_seeded_requests_are_reproducible_and_batch_independent():
    torch.manual_seed(2)
    clean = torch.randn(2, VOCAB)
    runs = []
    for layout in ([0, 1], [1, 0]):
        proc = v1_processor()
        added = [(row, params(aim_sigma=2.0, aim_seed=9), PROMPTS[req], []) for row, req in enumerate(layout)]
        out = v1_step(proc, clean[layout], BatchUpdate(2, [], added, []))
        runs.append(out[layout.index(0)])
    assert torch.equal(runs[0], runs[1])  # same seed, same step: same noise wherever the row sits


def test_focus_tier_boosts_only_the_words_tokens():
    proc = v1_processor()
    out = v1_step(
        proc, torch.zeros(1, VOCAB), BatchUpdate(1, [], [(0, params(aim_profile="sevens"), PROMPTS[0], [])], [])
    )
    assert out[0, 11] > 0  # '7' is token 11 of the demo tokenizer
    assert torch.count_nonzero(out[0, :TOKENS]) == 1


class _Buffer(SimpleNamespace):
    """Stands in for vLLM's UVA-backed buffers (which need a GPU): .gpu and .np views."""


def v2_setup() -> tuple[AimLogitsProcessor, LogitsProcRequestState]:
    """A V2 processor over request state shaped like the V2 model runner's."""
    prompt_len = np.zeros(SLOTS, dtype=np.int32)
    state = LogitsProcRequestState(
        device=torch.device("cpu"),
        max_num_reqs=SLOTS,
        vocab_size=VOCAB,
        all_token_ids=_Buffer(gpu=torch.zeros(SLOTS, 32, dtype=torch.int32)),
        prompt_len=_Buffer(np=prompt_len),
        prefill_len=_Buffer(np=prompt_len.copy()),
        total_len=_Buffer(gpu=torch.zeros(SLOTS, dtype=torch.int32)),
    )
    return AimLogitsProcessor(CONFIG, state), state


def v2_context(state: LogitsProcRequestState, slots: list[int], lengths: list[int]) -> LogitsContext:
    """One decode step: row i is the request in `slots[i]` with `lengths[i]` tokens so far."""
    tokens = state.all_token_ids.gpu
    return LogitsContext(
        expanded_idx_mapping=torch.tensor(slots),
        idx_mapping=torch.tensor(slots),
        idx_mapping_np=np.array(slots),
        expanded_local_pos=torch.zeros(len(slots), dtype=torch.int32),
        input_ids=torch.stack([tokens[s, n - 1] for s, n in zip(slots, lengths)]),
        pos=torch.tensor([n - 1 for n in lengths]),
        seq_lens_upper_bound_np=np.array(lengths),
    )


def test_v2_runner_rows_match_the_v1_runner():
    """Model Runner V2: slots via add_request, rows via LogitsContext; same noise as under V1."""
    proc, state = v2_setup()
    requests = {
        5: (params(aim_profile="keyed-tier"), PROMPTS[0] + [11, 12]),
        2: (params(), PROMPTS[1]),
        6: (params(aim_sigma=1.0, aim_seed=3), PROMPTS[2]),
    }
    for slot, (sampling, tokens) in requests.items():
        state.all_token_ids.gpu[slot, : len(tokens)] = torch.tensor(tokens)
        state.prompt_len.np[slot] = len(tokens) if slot != 5 else len(PROMPTS[0])
        assert proc.add_request(slot, sampling) is (slot != 2)
    torch.manual_seed(3)
    clean = torch.randn(3, VOCAB)
    slots = [6, 2, 5]
    out = proc.apply(clean.clone(), v2_context(state, slots, [len(requests[s][1]) for s in slots]))
    assert torch.equal(out[1], clean[1])
    v1 = v1_processor()
    added = [(0, requests[6][0], PROMPTS[2], []), (2, requests[5][0], PROMPTS[0], [11, 12])]
    expected = v1_step(v1, clean, BatchUpdate(3, [], added, []))
    assert torch.equal(out[0], expected[0]) and torch.equal(out[2], expected[2])
    # A recycled slot: a plain request replaces the keyed one, whose state must not leak.
    assert proc.add_request(5, params()) is False
    again = proc.apply(clean.clone(), v2_context(state, slots, [len(requests[s][1]) for s in slots]))
    assert torch.equal(again[2], clean[2])


def test_aim_serve_dry_run_prints_the_vllm_command_and_the_tier_choice(aim, tmp_path):
    result = aim(
        "serve",
        "my/model",
        "--profiles",
        str(REPO / "profiles"),
        "--dry-run",
        "--",
        "--port",
        "9001",
        env={serving.KEY_ENV: "s"},
    )
    assert result.returncode == 0, result.stderr
    assert "-m vllm.entrypoints.cli.main serve my/model --port 9001" in result.stdout
    assert f"{serving.PROFILES_ENV}={REPO / 'profiles'}" in result.stdout
    assert "free-tier: sigma 4, seed 1234" in result.stderr
    assert '"vllm_xargs": {"aim_profile": "focus-pedestrian"}' in result.stderr and "localhost:9001" in result.stderr


def test_aim_serve_refuses_keyed_tiers_without_their_key(aim, monkeypatch):
    monkeypatch.delenv(serving.KEY_ENV)
    result = aim("serve", "my/model", "--profiles", str(REPO / "profiles"), "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "tier 'keyed-tier': keyed noise needs the environment variable AIM_NOISE_KEY" in result.stderr


def test_validation_pins_a_fresh_seed_so_every_worker_draws_alike():
    request = params(aim_sigma=2.0)
    AimLogitsProcessor.validate_params(request)
    seed = request.extra_args["aim_seed"]
    torch.manual_seed(4)
    clean = torch.randn(1, VOCAB)
    ranks = [v1_step(v1_processor(), clean, BatchUpdate(1, [], [(0, request, PROMPTS[0], [])], [])) for _ in range(2)]
    assert isinstance(seed, int) and torch.equal(ranks[0], ranks[1])


def test_v2_seeded_row_in_chunked_prefill_does_not_stop_the_engine():
    """V2 computes logits for rows still in chunked prefill (their samples are discarded): pos + 1 < prompt_len."""
    proc, state = v2_setup()
    prompt = list(range(1, 21))
    state.all_token_ids.gpu[0, :20] = torch.tensor(prompt)
    state.prompt_len.np[0] = 20
    proc.add_request(0, params(aim_sigma=1.0, aim_seed=3))
    ctx = LogitsContext(
        expanded_idx_mapping=torch.tensor([0]),
        idx_mapping=torch.tensor([0]),
        idx_mapping_np=np.array([0]),
        expanded_local_pos=torch.zeros(1, dtype=torch.int32),
        input_ids=torch.tensor([prompt[7]]),
        pos=torch.tensor([7]),
        seq_lens_upper_bound_np=np.array([8]),
    )
    out = proc.apply(torch.zeros(1, VOCAB), ctx)  # the first chunk covers 8 of the 20 prompt tokens
    assert torch.isfinite(out[0, :TOKENS]).all() and out[0, :TOKENS].std() > 0


def test_v2_keyed_rows_hash_only_new_tokens_and_equal_token_key_over_many_steps():
    """Each step's key equals token_key(prompt + generated) while only new tokens are read and hashed."""
    proc, state = v2_setup()
    tokens = state.all_token_ids.gpu
    tokens[3, :5] = torch.tensor(PROMPTS[0])
    state.prompt_len.np[3] = 5
    proc.add_request(3, params(aim_profile="keyed-tier"))
    torch.manual_seed(5)
    clean = torch.randn(1, VOCAB)
    noise = KeyedNoise(b"test-secret")
    for length in range(5, 30):  # the token fed at pos = length - 1 is the last sampled one
        tokens[3, length - 1] = (7 * length) % TOKENS if length > 5 else tokens[3, 4]
        out = proc.apply(clean.clone(), v2_context(state, [3], [length]))
        history = tokens[3, :length].tolist()
        expected = ModulationProcessor(Modulation(2.0), noise, keyed=True, num_tokens=TOKENS)(
            torch.tensor([history]), clean.clone()
        )
        assert torch.equal(out, expected), length
    assert proc._slots[3].hasher.resume_at == 27  # all but the newest token hashed, once each
    # A recycled slot: another keyed request with another history starts from scratch.
    tokens[3, :8] = torch.tensor(PROMPTS[2])
    state.prompt_len.np[3] = 8
    proc.add_request(3, params(aim_profile="keyed-tier"))
    out = proc.apply(clean.clone(), v2_context(state, [3], [8]))
    expected = ModulationProcessor(Modulation(2.0), noise, keyed=True, num_tokens=TOKENS)(
        torch.tensor([PROMPTS[2]]), clean.clone()
    )
    assert torch.equal(out, expected)


def test_padding_columns_never_win_under_either_runner():
    """Logits wider than the tokenizer: columns past it are -inf in modulated rows (sigma 50 would pick them)."""
    proc = v1_processor()
    added = [(i, params(aim_sigma=50.0, aim_seed=i), PROMPTS[0], []) for i in range(8)]
    out = v1_step(proc, torch.zeros(8, VOCAB), BatchUpdate(8, [], added, []))
    assert torch.isneginf(out[:, TOKENS:]).all() and (out.argmax(dim=1) < TOKENS).all()
    proc2, state = v2_setup()
    proc2.add_request(0, params(aim_sigma=50.0, aim_seed=1))
    state.prompt_len.np[0] = 2
    out2 = proc2.apply(torch.zeros(1, VOCAB), v2_context(state, [0], [2]))
    assert torch.isneginf(out2[0, TOKENS:]).all()


@pytest.mark.parametrize(
    ("aim", "fragment"),
    [
        ({"aim_profile": "free-tier", "aim_sigma": 0}, "aim_sigma: tier 'free-tier' fixes its own sigma"),
        ({"aim_profile": "keyed-tier", "aim_seed": 1}, "aim_seed: tier 'keyed-tier' fixes its own noise"),
        ({"aim_profile": "keyed-tier", "aim_keyed": 0}, "aim_keyed: tier 'keyed-tier' fixes its own noise"),
    ],
)
def test_a_request_cannot_weaken_its_tier_http_400(aim, fragment, monkeypatch):
    from vllm.exceptions import VLLMValidationError

    monkeypatch.setenv("AIM_ALLOW_AD_HOC_TIERS", "0")  # the defaults: a tier's fixed fields are refused outright

    with pytest.raises(VLLMValidationError, match=fragment):
        build_custom_logits_processors_params_validator([AimLogitsProcessor])(params(**aim))


def test_default_profile_reaches_requests_without_aim_args(monkeypatch):
    monkeypatch.setenv(serving.DEFAULT_ENV, "free-tier")
    monkeypatch.setenv("AIM_ALLOW_CLEAN", "0")  # a default tier is a floor: no clean model beside it
    request = params()
    AimLogitsProcessor.validate_params(request)
    assert request.extra_args == {"aim_profile": "free-tier"}
    proc = v1_processor()
    clean = torch.zeros(1, VOCAB)
    out = v1_step(proc, clean, BatchUpdate(1, [], [(0, params(), PROMPTS[0], [])], []))  # the workers apply it too
    assert out[0, :TOKENS].std() > 1.0


def test_speculative_decoding_is_refused_at_start():
    """V1 silently skips entry-point plugins under speculative decoding; V2 would build it with unkeyable draft rows."""
    with pytest.raises(AimError, match="do not support speculative decoding"):
        AimLogitsProcessor(config(speculative=SimpleNamespace(num_speculative_tokens=2)), v2_setup()[1])


def test_aim_serve_refuses_speculative_decoding(aim):
    result = aim(
        "serve",
        "my/model",
        "--profiles",
        str(REPO / "profiles"),
        "--dry-run",
        "--",
        "--speculative_config={}",
        env={serving.KEY_ENV: "s"},
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "--speculative-config: aim's tiers do not support speculative decoding" in result.stderr


def test_focus_word_past_the_output_layer_stops_the_server_at_start(tmp_path, monkeypatch):
    """A tokenizer larger than the logits: a tier's focus token with no column is refused when the server starts."""
    for name in ("focus-pedestrian", "full-example"):  # tiers whose focus words need wider logits
        (tmp_path / f"{name}.yaml").unlink()
    with pytest.raises(AimError, match="focus 7:up: token id 11 is past the model's 11 output columns"):
        AimLogitsProcessor(config(vocab=11, v2=False), torch.device("cpu"), False)  # the 'sevens' tier focuses token 11
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    (narrow / "free-tier.yaml").write_bytes((tmp_path / "free-tier.yaml").read_bytes())
    monkeypatch.setenv(serving.PROFILES_ENV, str(narrow))
    proc = AimLogitsProcessor(config(vocab=11, v2=False), torch.device("cpu"), False)
    # A request's own focus word can only be checked in the worker: dropped there (never an engine crash).
    out = v1_step(
        proc,
        torch.zeros(1, 11),
        BatchUpdate(1, [], [(0, params(aim_focus="7", aim_sigma=1.0, aim_seed=1), PROMPTS[0], [])], []),
    )
    assert torch.isfinite(out).all() and out.std() > 0


def test_aim_serve_default_profile_is_checked_and_passed_to_vllm(aim):
    ok = aim(
        "serve",
        "my/model",
        "--profiles",
        str(REPO / "profiles"),
        "--default-profile",
        "free-tier",
        "--dry-run",
        env={serving.KEY_ENV: "s"},
    )
    assert ok.returncode == 0, ok.stderr
    assert f"{serving.DEFAULT_ENV}=free-tier" in ok.stdout and "name no tier get tier 'free-tier'" in ok.stderr
    bad = aim(
        "serve",
        "my/model",
        "--profiles",
        str(REPO / "profiles"),
        "--default-profile",
        "gold",
        "--dry-run",
        env={serving.KEY_ENV: "s"},
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "AIM_DEFAULT_PROFILE=gold: no such tier" in bad.stderr


def test_v2_keys_of_requests_at_different_lengths_equal_token_key_each_step():
    """Per-row windows: a long and a short request in one batch, each keyed on its own full history."""
    from aim_cli.modulation import token_key

    proc, state = v2_setup()
    tokens = state.all_token_ids.gpu
    tokens[1] = torch.arange(32) % TOKENS
    tokens[4] = (torch.arange(32) * 5) % TOKENS
    for slot in (1, 4):
        state.prompt_len.np[slot] = 3
        proc.add_request(slot, params(aim_profile="keyed-tier"))
    for step in range(12):
        lengths = [20 + step, 4 + step]
        rows = proc._rows(torch.zeros(2, VOCAB), v2_context(state, [1, 4], lengths))
        assert [key for _, _, key in rows] == [token_key(tokens[s, :n].tolist()) for s, n in zip((1, 4), lengths)], step


# ---- the speculative-decoding guard on the final engine config (both runners) ---------------------


@pytest.fixture
def no_speculative_state(monkeypatch):
    """A fresh process's view: no engine config has turned speculative decoding on yet."""
    from aim_cli.integrations import vllm as plugin

    monkeypatch.setattr(plugin, "_speculative_engine", [])
    monkeypatch.delenv(serving.PROFILES_ENV, raising=False)
    monkeypatch.delenv(serving.DEFAULT_ENV, raising=False)
    return plugin


def test_general_plugin_is_registered_and_guards_every_vllm_config(no_speculative_state):
    """vLLM runs `vllm.general_plugins` in every process before it builds its config."""
    from vllm.config import DeviceConfig, VllmConfig

    names = {ep.name: ep.value for ep in entry_points(group="vllm.general_plugins")}
    assert names.get("aim") == "aim_cli.integrations.vllm:register"
    no_speculative_state.register()
    no_speculative_state.register()  # vLLM may load plugins twice: one wrapper, not two
    assert getattr(VllmConfig.__post_init__, "_aim_guard", False)
    seen = []
    original = no_speculative_state.check_engine_config
    no_speculative_state.check_engine_config = lambda config: seen.append(config) or original(config)
    try:
        VllmConfig(device_config=DeviceConfig(device="cpu"))  # a real config: the guard runs on it, once
    finally:
        no_speculative_state.check_engine_config = original
    assert len(seen) == 1 and not no_speculative_state._speculative_engine


@pytest.mark.parametrize("env", ["AIM_PROFILES_DIR", "AIM_DEFAULT_PROFILE"])
def test_speculative_engine_with_aim_tiers_refuses_to_start(no_speculative_state, monkeypatch, env):
    """However it was set (--speculative-config.method, --speculative_config=, --config), the final config decides."""
    monkeypatch.setenv(env, "x")
    with pytest.raises(ValueError, match="do not support speculative decoding"):
        no_speculative_state.check_engine_config(config(speculative=SimpleNamespace(method="ngram")))


def test_speculative_engine_without_tiers_serves_but_refuses_aim_requests(no_speculative_state):
    """The V1 runner builds no processor under speculative decoding: aim requests get 400, not the clean model."""
    no_speculative_state.check_engine_config(config(speculative=SimpleNamespace(method="ngram")))
    with pytest.raises(ValueError, match="this server runs speculative decoding"):
        AimLogitsProcessor.validate_params(SamplingParams(extra_args={"aim_sigma": 1.0}))
    AimLogitsProcessor.validate_params(SamplingParams(extra_args={"other": 1}))  # other requests are untouched
    AimLogitsProcessor.validate_params(SamplingParams())
