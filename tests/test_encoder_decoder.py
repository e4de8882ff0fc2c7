"""Encoder-decoder generation (T5, BART): the prompt goes to the encoder, the completion is the decoder's.

Tiny random checkpoints with the demo LM's character tokenizer (no sentencepiece, nothing
downloaded). Statistics: the focus check draws R = 4000 rows of noise on fixed logits, so a
frequency's SE is at most sqrt(0.25 / R) = 0.0079 and the 0.035 tolerance is >= 4.4 SE; the
multiple-choice check's tolerance is derived where it is made. Random weights make no target
metric meaningful, so calibration is checked as analytic prediction = Monte Carlo measurement.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from aim_cli.calibration.core import Target
from aim_cli.calibration.text import FreeFormScorer, calibrate_multiple_choice, collect_next_token_logits
from aim_cli.errors import InputError
from aim_cli.generation import ModulationProcessor, encoder_decoder_key
from aim_cli.models.language import LanguageModel
from aim_cli.models.registry import load_model
from aim_cli.modulation import BOOST, SUPPRESS, KeyedNoise, Modulation, SeededNoise, token_key
from aim_cli.plans import ModulationPlan
from aim_cli.profile import FocusRequest
from aim_cli.tasks.generate import (
    GenerationSettings,
    encode_prompts,
    fitting_max_new_tokens,
    generate_completions,
)
from tests.conftest import run_aim
from tests.test_generate_cli import KEYED_PROFILE, records, run_here

PROMPTS = ["12+7=", "3-1=", "hello world", "49-49=", "abc"]
FAMILIES = ("t5", "bart")
# BART's decoder position table: small, so the decoder limit shows before the encoder's (64).
BART_POSITIONS = 24


def char_tokenizer(template: str) -> Any:
    """The demo LM's character tokenizer with an encoder-style template (e.g. T5's '$A </s>')."""
    from tokenizers import processors

    from aim_cli.demo.train_lm import build_tokenizer

    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    specials = [(name, vocab[name]) for name in ("<s>", "</s>") if name in template]
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    return tokenizer


def build_model(family: str, directory: Path) -> None:
    """Save a tiny random T5 or BART and its tokenizer as a Hugging Face directory."""
    from transformers import BartConfig, BartForConditionalGeneration, T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    if family == "t5":
        tokenizer = char_tokenizer("$A </s>")
        config = T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_decoder_layers=2,
            num_heads=4,
            pad_token_id=0,
            eos_token_id=2,
            decoder_start_token_id=0,
            initializer_factor=8.0,
        )
        model = T5ForConditionalGeneration(config)
    else:
        tokenizer = char_tokenizer("<s> $A </s>")
        config = BartConfig(
            vocab_size=len(tokenizer),
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=BART_POSITIONS,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=2,
            init_std=0.3,
        )
        model = BartForConditionalGeneration(config)
        # As bart-large-cnn ships it: a forced <s> first, and beam search that aim must not inherit.
        model.generation_config.forced_bos_token_id = 1
        model.generation_config.num_beams = 4
        model.generation_config.length_penalty = 2.0
        model.generation_config.early_stopping = True
    model.eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """One saved tiny checkpoint per family."""
    dirs = {}
    for family in FAMILIES:
        dirs[family] = tmp_path_factory.mktemp(family)
        build_model(family, dirs[family])
    return dirs


@pytest.fixture(scope="module")
def lms(model_dirs) -> dict[str, LanguageModel]:
    """The checkpoints loaded the way `aim generate` loads them."""
    return {
        family: load_model("generate", str(path), device=torch.device("cpu")) for family, path in model_dirs.items()
    }


def plan(sigma: float, seed: int = 0, key: bytes = b"") -> ModulationPlan:
    """A utility-noise plan with seeded (or, with a key, keyed) noise."""
    return ModulationPlan(Modulation(sigma), KeyedNoise(key) if key else SeededNoise(seed), None if key else seed)


def completions(
    lm: LanguageModel,
    prompts: list[str],
    modulation: ModulationPlan,
    batch_size: int = 8,
    max_new_tokens: int = 8,
    temperature: float = 0.0,
) -> list[tuple[int, ...]]:
    """Token ids of each prompt's completion."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, batch_size=batch_size)
    return [c.token_ids for c in generate_completions(lm, encode_prompts(lm, prompts), modulation, settings)]


def plain_greedy(lm: LanguageModel, prompt: str, max_new_tokens: int = 8) -> list[int]:
    """transformers' own greedy decoding of one prompt, decoder start dropped, cut after </s>."""
    ids = torch.tensor([lm.encode(prompt, chat=False)])
    out = lm.model.generate(input_ids=ids, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)[0, 1:].tolist()
    eos = lm.tokenizer.eos_token_id
    return out[: out.index(eos) + 1] if eos in out else out


def logit_scale(lm: LanguageModel) -> float:
    """Spread (max - median) of the first-token logits: a sigma that really changes answers."""
    row = lm.first_token_logits(torch.tensor([lm.encode(PROMPTS[0], chat=False)]))[0]
    return float(row.max() - row.median())


# --- loading ------------------------------------------------------------------------------------------


def test_loads_as_seq2seq_with_encoder_and_decoder_limits(lms):
    t5, bart = lms["t5"], lms["bart"]
    assert type(t5.model).__name__ == "T5ForConditionalGeneration" and t5.encoder_decoder
    # BART's config is also in the causal mapping (BartForCausalLM, the decoder alone): it must not load so.
    assert type(bart.model).__name__ == "BartForConditionalGeneration" and bart.encoder_decoder
    assert t5.tokenizer.padding_side == bart.tokenizer.padding_side == "right"
    assert t5.decoder_context_length is None  # relative positions: no decoder limit
    assert bart.context_length == bart.decoder_context_length == BART_POSITIONS
    assert t5.decoder_prefix() == [0] and bart.decoder_prefix() == [2, 1]  # start token (+ BART's forced <s>)


# --- generation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_sigma_zero_is_plain_greedy_generate(lms, family):
    lm = lms[family]
    # One batch of prompts of different lengths (padded) against each prompt alone through transformers.
    got = completions(lm, PROMPTS, plan(0.0), batch_size=len(PROMPTS))
    assert got == [tuple(plain_greedy(lm, p)) for p in PROMPTS]
    assert len(set(got)) > 1  # the prompt reaches the decoder: different prompts, different answers


@pytest.mark.parametrize("family", FAMILIES)
def test_seeded_runs_repeat_and_seeds_differ(lms, family):
    lm = lms[family]
    sigma = logit_scale(lm)
    first = completions(lm, PROMPTS, plan(sigma, seed=1))
    assert completions(lm, PROMPTS, plan(sigma, seed=1)) == first
    assert completions(lm, PROMPTS, plan(sigma, seed=2)) != first
    assert first != completions(lm, PROMPTS, plan(0.0))


@pytest.mark.parametrize("family", FAMILIES)
def test_keyed_answer_is_the_same_alone_and_in_any_batch(lms, family):
    lm = lms[family]
    sigma = logit_scale(lm)
    repeated = PROMPTS + PROMPTS[::-1]
    batched = completions(lm, repeated, plan(sigma, key=b"secret"), batch_size=4)
    alone = [completions(lm, [p], plan(sigma, key=b"secret"))[0] for p in PROMPTS]
    assert batched == alone + alone[::-1]
    assert completions(lm, PROMPTS, plan(sigma, key=b"other")) != alone  # the key matters
    assert alone != completions(lm, PROMPTS, plan(0.0))  # and the tier is really modulated
    # Sampling with keyed noise repeats too (the sampler is seeded from the key and the batch's content).
    sampled = completions(lm, PROMPTS[:2], plan(sigma, key=b"secret"), temperature=1.0)
    assert sampled == completions(lm, PROMPTS[:2], plan(sigma, key=b"secret"), temperature=1.0)


def test_keyed_noise_of_a_decoder_row_depends_on_its_encoder_prompt():
    # Two rows whose decoders are identical (both just started) but whose prompts differ: the processor only
    # sees decoder ids, so without the prompt in the key both rows would get the same noise.
    scores = torch.zeros(2, 16)
    decoder = torch.zeros(2, 1, dtype=torch.long)
    processor = ModulationProcessor(Modulation(sigma=1.0), KeyedNoise(b"k"), keyed=True, encoder_ids=[[5, 6], [7]])
    out = processor(decoder, scores)
    assert not torch.equal(out[0], out[1])
    swapped = ModulationProcessor(Modulation(sigma=1.0), KeyedNoise(b"k"), keyed=True, encoder_ids=[[7], [5, 6]])
    assert torch.equal(swapped(decoder, scores), out.flip(0))  # a row's noise follows its prompt, not its position
    assert processor.item_keys(decoder)[0] == token_key([5, 6, -1, 0]) == encoder_decoder_key([5, 6], [0])
    # The separator keeps the prompt/decoder split unambiguous.
    assert encoder_decoder_key([5, 6], [0]) != encoder_decoder_key([5], [6, 0])


@pytest.mark.parametrize(("direction", "analytic"), [(BOOST, "gap"), (SUPPRESS, "lead")])
def test_focus_moves_the_first_token_the_predicted_way(lms, direction, analytic):
    from aim_cli.generation import focus_targets

    lm = lms["t5"]
    logits = lm.first_token_logits(torch.tensor([lm.encode(PROMPTS[0], chat=False)]))[0]
    top2 = logits.topk(2)
    leader = int(top2.indices[0])
    if direction == BOOST:  # a letter that is not the leader; the word resolves to its one token
        word = next(c for c in "qxzjkv" if lm.tokenizer.convert_tokens_to_ids(c) != leader)
    else:
        word = lm.tokenizer.convert_ids_to_tokens(leader)
    targets, _names = focus_targets(lm.tokenizer, [FocusRequest(word, direction)])
    (target,) = {t.class_id for t in targets}
    # Boost: P(target wins) = 2 Phi(-g / sigma_f), g = the leader's lead over the target;
    # suppress: P(leader still wins) = 2 Phi(g / sigma_f) - 1, g = its lead over the runner-up.
    gap = float(logits[leader] - logits[target]) if direction == BOOST else float(top2.values[0] - top2.values[1])
    focus_sigma = gap / 0.6745  # the half-normal's median: predictions near one half, where SE is largest
    draws = 4000
    processor = ModulationProcessor(Modulation(0.0, focus_sigma, targets), SeededNoise(7))
    out = processor(torch.zeros(draws, 1, dtype=torch.long), logits.expand(draws, -1).clone())
    wins = float((out.argmax(dim=1) == target).double().mean())
    phi = 0.5 * (1 + math.erf(0.6745 / math.sqrt(2)))
    predicted = 2 * (1 - phi) if direction == BOOST else 2 * phi - 1
    assert abs(wins - predicted) <= 0.035, (wins, predicted)
    clean_wins = float(logits.argmax() == target)
    assert (wins > clean_wins) if direction == BOOST else (wins < clean_wins)


# --- context limits --------------------------------------------------------------------------------------


def test_prompt_fits_the_encoder_and_completion_the_decoder(lms):
    bart, t5 = lms["bart"], lms["t5"]
    longest = "1+" * 10 + "1"  # 21 characters + <s> and </s>: 23 of BART's 24 positions
    prompts = encode_prompts(bart, [longest])
    # A causal LM would leave 1 token; an encoder-decoder's decoder has its own 24 positions.
    assert fitting_max_new_tokens(bart, prompts, 100) == BART_POSITIONS
    out = list(
        generate_completions(
            bart, prompts, plan(logit_scale(bart), seed=0), GenerationSettings(max_new_tokens=BART_POSITIONS)
        )
    )
    assert len(out[0].token_ids) <= BART_POSITIONS
    assert fitting_max_new_tokens(t5, encode_prompts(t5, ["1+" * 31]), 500) == 500  # relative positions
    with pytest.raises(InputError, match=r"prompt 2 is 25 tokens long but the encoder of .* takes at most 24"):
        encode_prompts(bart, ["1+1=", "1+" * 11 + "1"])


# --- calibration -----------------------------------------------------------------------------------------


def first_free_token(lm: LanguageModel, prompt: str) -> int:
    """The first token greedy decoding chooses freely (after BART's forced <s>; BART also forces </s> last)."""
    return plain_greedy(lm, prompt)[len(lm.decoder_prefix()) - 1]


def choice_items(lm: LanguageModel, prompts: list[str], wrong_every: int = 5) -> list[dict]:
    """Items whose choices are single characters, the right one being the model's own first token
    (except every `wrong_every`-th item, marked wrong on purpose): a known clean accuracy on random weights."""
    logits = collect_next_token_logits(lm, [{"prompt": p, "choices": ["1", "2"], "answer": 0} for p in prompts]).logits
    letters = [c for c in "0123456789abcdefghijklmnopqrstuvwxyz"]
    items = []
    for index, (prompt, row) in enumerate(zip(prompts, logits)):
        leader = lm.tokenizer.decode([int(row.argmax())])
        if leader not in letters:  # a special or whitespace token cannot be written as a choice
            continue
        others = [c for c in letters if c != leader][index % 7 :: 7][:3]
        items.append({"prompt": prompt, "choices": [leader, *others], "answer": 1 if index % wrong_every == 0 else 0})
    return items


@pytest.mark.parametrize("family", FAMILIES)
def test_multiple_choice_scores_the_decoders_first_free_token(lms, family):
    lm = lms[family]
    items = [{"prompt": p, "choices": ["1", "2"], "answer": 0} for p in PROMPTS]
    cached = collect_next_token_logits(lm, items)
    assert cached.logits.argmax(dim=1).tolist() == [first_free_token(lm, p) for p in PROMPTS]
    # A choice is a decoder continuation: tokenized alone, without BART's <s> ... </s> around it.
    assert cached.answers.tolist() == [lm.tokenizer.convert_tokens_to_ids("1")] * len(PROMPTS)


@pytest.mark.parametrize("family", FAMILIES)
def test_multiple_choice_calibration_analytic_matches_monte_carlo(lms, family):
    # Random weights, so no target metric is meaningful; what is checked is that the analytic curve on
    # the decoder's first-token logits predicts what noisy decoding measures (N items x 40 draws:
    # SE <= sqrt(0.25 / (N * 40)) <= 0.011 for N >= 50, and 0.045 is >= 4 SE).
    from aim_cli.demo import arithmetic

    lm = lms[family]
    prompts = sorted({item["prompt"] for item in arithmetic.evaluation_set(120)})
    items = choice_items(lm, prompts)
    assert len(items) >= 50
    calibration = calibrate_multiple_choice(lm, items, Target("accuracy", 0.5), draws=40, seed=3, batch_size=64)
    assert calibration.clean == pytest.approx(sum(item["answer"] == 0 for item in items) / len(items))
    assert calibration.predicted == pytest.approx(0.5, abs=1e-4)
    assert abs(calibration.check.mean - 0.5) <= 0.045, calibration.check.mean
    assert "decoder's first token" in calibration.notes[-1]


def test_free_form_scoring_generates_from_the_decoder(lms):
    lm = lms["t5"]
    scorer = FreeFormScorer(lm, [{"prompt": p, "answer": "x"} for p in PROMPTS], batch_size=8, progress=None)
    # The model's own greedy completions as answers: right at sigma 0, wrong under heavy noise.
    width = scorer.settings.max_new_tokens
    scorer.answers = [lm.tokenizer.decode(plain_greedy(lm, p, width), skip_special_tokens=True) for p in PROMPTS]
    assert scorer.accuracy(0.0, seed=0) == 1.0
    assert scorer.accuracy(20 * logit_scale(lm), seed=0) <= 0.2


# --- the CLI ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_generate_records(model_dirs, lms, family, tmp_path):
    lm = lms[family]
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(PROMPTS[:3]) + "\n")
    # transformers' greedy output, decoder start stripped, is what the clean column must hold.
    cleans = [lm.tokenizer.decode(plain_greedy(lm, p, 6), skip_special_tokens=True) for p in PROMPTS[:3]]
    # A stop string inside a clean completion (past its start if it can be), so a cut really happens.
    inside = [(i, c) for i, clean in enumerate(cleans) for c in clean[1:] if c != clean[0]]
    cut_row, stop = (inside or [(i, clean[0]) for i, clean in enumerate(cleans) if clean])[0]
    out = tmp_path / "o.jsonl"
    extra = ("--focus", "2") if family == "bart" else ()
    result = run_aim(
        "generate",
        "--model",
        str(model_dirs[family]),
        "--prompts",
        str(prompts),
        "-n",
        "6",
        "--sigma",
        f"{logit_scale(lm):.3f}",
        "--seed",
        "3",
        "--compare",
        "--stop",
        stop,
        "-o",
        str(out),
        *extra,
    )
    assert result.returncode == 0, result.stderr
    rows = records(out)
    assert [r["prompt"] for r in rows] == PROMPTS[:3]
    for row, clean in zip(rows, cleans):
        assert row["clean_completion"] == clean.split(stop)[0]  # no prompt echo, cut at the stop string
        assert row["prompt_tokens"] == len(lm.encode(row["prompt"], chat=False))
        assert 1 <= row["completion_tokens"] <= 6 and stop not in row["completion"]
    assert [r["completion"] for r in rows] != [r["clean_completion"] for r in rows]
    assert len(rows[cut_row]["clean_completion"]) < len(cleans[cut_row])
    if family == "bart":
        assert rows[0]["focus"] == ["2:up"]


def test_cli_streams_and_resumes_like_a_causal_lm(model_dirs, lms, tmp_path, capsys, monkeypatch):
    directory, lm = str(model_dirs["t5"]), lms["t5"]
    # Keyed noise: a prompt's answer does not depend on what else is in its batch.
    monkeypatch.setenv("AIM_NOISE_KEY", "secret")
    modulation = ("--profile", str(KEYED_PROFILE), "--sigma", f"{logit_scale(lm):.3f}")
    out = tmp_path / "o.jsonl"
    code, _o, err = run_here(
        "generate",
        "--model",
        directory,
        "--prompt",
        PROMPTS[0],
        "--prompt",
        PROMPTS[1],
        *modulation,
        "-n",
        "5",
        "-o",
        str(out),
        "-q",
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0, err
    full = records(out)
    # Single prompt, no -o: streamed to stdout, the same text as the record.
    code, streamed, err = run_here(
        "generate",
        "--model",
        directory,
        "--prompt",
        PROMPTS[1],
        *modulation,
        "-n",
        "5",
        "-q",
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0, err
    assert streamed == full[1]["completion"] + "\n"
    # --resume keeps the first record and generates only the second prompt again.
    out.write_text(json.dumps(full[0]) + "\n")
    code, _o, err = run_here(
        "generate",
        "--model",
        directory,
        "--prompt",
        PROMPTS[0],
        "--prompt",
        PROMPTS[1],
        *modulation,
        "-n",
        "5",
        "-o",
        str(out),
        "--resume",
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0, err
    assert "1 new and 1 resumed" in err
    assert records(out) == full


def test_a_checkpoints_beam_search_default_is_not_inherited(tmp_path):
    # Summarisation checkpoints ship num_beams > 1; aim decodes greedily or by sampling, one row per prompt
    # (before, keyed noise crashed: "4 prompt starts for a batch of 16 rows"). The same holds for causal LMs.
    from tests.test_generate_cli import build_tiny_llama

    model, _tokenizer = build_tiny_llama(tmp_path)
    model.generation_config.num_beams = 4
    model.generation_config.save_pretrained(tmp_path)
    lm = load_model("generate", str(tmp_path), device=torch.device("cpu"))
    assert lm.model.generation_config.num_beams == 4 and not lm.encoder_decoder
    prompts = ["Hello world", "Paris"]
    keyed = completions(lm, prompts, plan(1.0, key=b"secret"), batch_size=2)
    assert keyed == [completions(lm, [p], plan(1.0, key=b"secret"))[0] for p in prompts]
    clean = completions(lm, prompts, plan(0.0), max_new_tokens=4)
    for prompt, ids in zip(prompts, clean):
        encoded = torch.tensor([lm.encode(prompt, chat=False)])
        greedy = lm.model.generate(
            input_ids=encoded, max_new_tokens=4, do_sample=False, num_beams=1, pad_token_id=lm.tokenizer.pad_token_id
        )
        assert list(ids) == greedy[0, encoded.shape[1] :].tolist()
