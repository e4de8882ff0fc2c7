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
from aim_cli.generation import ModulationProcessor  # noqa: E402
from aim_cli.integrations.vllm import AimLogitsProcessor  # noqa: E402
from aim_cli.modulation import KeyedNoise, Modulation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64
SLOTS = 8
FQCN = "aim_cli.integrations.vllm:AimLogitsProcessor"
CONFIG = SimpleNamespace(model_config=SimpleNamespace(tokenizer=str(REPO / "aim_cli" / "demo" / "lm")))
PROMPTS = [[4, 5, 14, 6, 18], [7, 18], [8, 9, 10, 15, 11, 12, 18, 13]]


@pytest.fixture(autouse=True)
def server_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A server started with a tiers directory (the repo's profiles plus a focus tier) and a key."""
    for path in (REPO / "profiles").glob("*.yaml"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "sevens.yaml").write_text("version: 1\nutility: {sigma: 0}\nfocus:\n  sigma: 2.0\n  targets: ['7']\nnoise: {seed: 5}\n")
    monkeypatch.setenv(serving.PROFILES_ENV, str(tmp_path))
    monkeypatch.setenv(serving.KEY_ENV, "test-secret")


def params(**aim: object) -> SamplingParams:
    """Greedy sampling params carrying aim_* extra args (none: a plain request)."""
    return SamplingParams(temperature=0.0, max_tokens=8, extra_args=dict(aim) or None)


def v1_processor() -> AimLogitsProcessor:
    """Built as the V1 model runner builds custom processors: (vllm_config, device, is_pin_memory)."""
    return AimLogitsProcessor(CONFIG, torch.device("cpu"), False)


def v1_step(proc: AimLogitsProcessor, clean: torch.Tensor, update: BatchUpdate | None = None) -> torch.Tensor:
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

    request = CompletionRequest(model="m", prompt="hi", vllm_xargs={"aim_profile": "free-tier", "aim_keyed": True})
    sampling = request.to_sampling_params(max_tokens=4)
    assert sampling.extra_args["aim_profile"] == "free-tier"
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
    generate = ModulationProcessor(Modulation(2.0), KeyedNoise(b"test-secret"), keyed=True)
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
    out = v1_step(proc, torch.zeros(1, VOCAB), BatchUpdate(1, [], [(0, params(aim_profile="sevens"), PROMPTS[0], [])], []))
    assert out[0, 11] > 0  # '7' is token 11 of the demo tokenizer
    assert torch.count_nonzero(out[0]) == 1


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
    requests = {5: (params(aim_profile="keyed-tier"), PROMPTS[0] + [11, 12]), 2: (params(), PROMPTS[1]),
                6: (params(aim_sigma=1.0, aim_seed=3), PROMPTS[2])}
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
    result = aim("serve", "my/model", "--profiles", str(REPO / "profiles"), "--dry-run", "--", "--port", "9001",
                 env={serving.KEY_ENV: "s"})
    assert result.returncode == 0, result.stderr
    assert "-m vllm.entrypoints.cli.main serve my/model --port 9001" in result.stdout
    assert f"{serving.PROFILES_ENV}={REPO / 'profiles'}" in result.stdout
    assert "free-tier: sigma 4, seed 1234" in result.stderr
    assert '"vllm_xargs": {"aim_profile": "focus-pedestrian"}' in result.stderr and "localhost:9001" in result.stderr


def test_aim_serve_refuses_keyed_tiers_without_their_key(aim, monkeypatch):
    monkeypatch.delenv(serving.KEY_ENV)
    result = aim("serve", "my/model", "--profiles", str(REPO / "profiles"), "--dry-run")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "tier 'keyed-tier' uses keyed noise, but AIM_NOISE_KEY is not set" in result.stderr


def test_validation_pins_a_fresh_seed_so_every_worker_draws_alike():
    request = params(aim_sigma=2.0)
    AimLogitsProcessor.validate_params(request)
    seed = request.extra_args["aim_seed"]
    torch.manual_seed(4)
    clean = torch.randn(1, VOCAB)
    ranks = [v1_step(v1_processor(), clean, BatchUpdate(1, [], [(0, request, PROMPTS[0], [])], [])) for _ in range(2)]
    assert isinstance(seed, int) and torch.equal(ranks[0], ranks[1])
