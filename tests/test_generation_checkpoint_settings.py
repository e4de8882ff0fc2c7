"""What a checkpoint brings beyond its weights: padded output layers and its own decoding settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aim_cli.models.registry import load_model
from aim_cli.profile import Profile
from aim_cli.tasks.generate import GenerationSettings, encode_prompts, generate_completions, plan_generation
from tests.conftest import run_aim
from tests.test_generate_cli import build_tiny_tokenizer

PADDING = 300  # as many padding columns as tokens
PROMPTS = ["12+7=", "Hello", "Paris is"]


def build_llama(directory: Path, padding: int = 0, **generation: object) -> int:
    """A random tiny Llama whose output layer has `padding` columns past its tokenizer; returns the tokenizer size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer) + padding,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    for name, value in generation.items():
        setattr(model.generation_config, name, value)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return len(tokenizer)


def generated_ids(lm, profile: Profile, max_new_tokens: int = 16) -> list[tuple[int, ...]]:
    """Token ids of each prompt's completion under a profile."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=4)
    plan = plan_generation(profile, lm)
    return [c.token_ids for c in generate_completions(lm, encode_prompts(lm, PROMPTS), plan, settings)]


@pytest.mark.parametrize("noise", ["seeded", "keyed"])
def test_noise_never_picks_padding_columns_past_the_tokenizer(tmp_path, monkeypatch, noise):
    # Half of the 600 columns are padding: at sigma 50 (every column about equally likely) half the
    # steps would pick one; the chance that none of 48 steps does is about 0.5^48 < 1e-14.
    size = build_llama(tmp_path, padding=PADDING)
    lm = load_model("generate", str(tmp_path), device=torch.device("cpu"))
    monkeypatch.setenv("AIM_TEST_KEY", "secret")
    profile = Profile(sigma=50.0, seed=0) if noise == "seeded" else Profile(sigma=50.0, key_env="AIM_TEST_KEY")
    ids = [i for row in generated_ids(lm, profile) for i in row]
    assert len(ids) >= 3 and max(ids) < size


def test_calibration_scores_only_the_tokenizers_columns(tmp_path):
    size = build_llama(tmp_path, padding=PADDING)
    lm = load_model("generate", str(tmp_path), device=torch.device("cpu"))
    ids = torch.tensor([lm.encode("12+7=", chat=False)])
    assert lm.first_token_logits(ids).shape == (1, size)


def test_checkpoint_decoding_settings_are_dropped_and_named(tmp_path):
    # transformers runs these before any custom processor: aim's noise would land on penalised logits.
    build_llama(tmp_path, repetition_penalty=3.0, no_repeat_ngram_size=1, min_new_tokens=6)
    lm = load_model("generate", str(tmp_path), device=torch.device("cpu"))
    assert lm.dropped_settings == ("repetition_penalty=3.0", "no_repeat_ngram_size=1", "min_new_tokens=6")
    clean = generated_ids(lm, Profile(sigma=0.0, seed=0), max_new_tokens=6)
    # A fresh copy: raw greedy, settings neutral.
    plain = load_model("generate", str(tmp_path), device=torch.device("cpu")).model
    for prompt, ids in zip(PROMPTS, clean):
        encoded = torch.tensor([lm.encode(prompt, chat=False)])
        raw = plain.generate(
            input_ids=encoded,
            max_new_tokens=6,
            do_sample=False,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_new_tokens=0,
            pad_token_id=lm.tokenizer.pad_token_id,
        )
        expected = raw[0, encoded.shape[1] :].tolist()
        assert list(ids) == expected[: len(ids)] and len(ids) >= 1
    result = run_aim(
        "generate", "--model", str(tmp_path), "--prompt", "12+7=", "-n", "4", "--sigma", "1", "--seed", "0"
    )
    assert result.returncode == 0, result.stderr
    assert (
        "not applying the checkpoint's repetition_penalty=3.0, no_repeat_ngram_size=1, min_new_tokens=6"
        in result.stderr
    )
