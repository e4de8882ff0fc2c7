"""The generation LogitsProcessor, focus token sets, stop strings and the streamer (fast, in-process)."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from aim_cli import demo
from aim_cli.errors import ProfileError
from aim_cli.generation import (
    CompletionStreamer,
    ModulationProcessor,
    StopOnStrings,
    cut_at_stop,
    focus_targets,
    focus_token_ids,
)
from aim_cli.modulation import BOOST, SUPPRESS, FocusTarget, KeyedNoise, Modulation, SeededNoise
from aim_cli.profile import FocusRequest
from tests.test_generate_cli import build_tiny_llama


@pytest.fixture(scope="module")
def tiny():
    """An in-memory random tiny Llama and its byte-level BPE tokenizer."""
    return build_tiny_llama()


@pytest.fixture(scope="module")
def demo_tokenizer():
    """The demo LM's character-level tokenizer (lower-cases, has <unk>)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo.model_dir("generate"))


class Recording(ModulationProcessor):
    """Keeps what the processor received and returned at every step."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[torch.Tensor] = []
        self.returned: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):
        self.received.append(scores.clone())
        out = super().__call__(input_ids, scores)
        self.returned.append(out.clone())
        return out


class CountingNoise(SeededNoise):
    """SeededNoise that counts its draws."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.shapes: list[tuple[int, ...]] = []

    def standard_normal(self, shape, like, item_keys=None):
        self.shapes.append(tuple(shape))
        return super().standard_normal(shape, like, item_keys)


def test_noise_is_added_to_raw_logits_before_temperature_top_k_top_p(tiny):
    model, tokenizer = tiny
    batch = tokenizer(["Hello world", "Paris"], return_tensors="pt", padding=True, padding_side="left")
    processor = Recording(Modulation(sigma=1.0, focus_sigma=2.0, targets=(FocusTarget(7, BOOST),)), SeededNoise(0))
    torch.manual_seed(0)
    out = model.generate(
        **batch,
        max_new_tokens=3,
        do_sample=True,
        temperature=0.7,
        top_k=20,
        top_p=0.9,
        logits_processor=LogitsProcessorList([processor]),
        pad_token_id=tokenizer.pad_token_id,
        output_logits=True,
        output_scores=True,
        return_dict_in_generate=True,
    )
    warpers = [TemperatureLogitsWarper(0.7), TopKLogitsWarper(20), TopPLogitsWarper(0.9)]
    assert len(processor.received) == len(out.logits) == 3
    for step, (raw, final) in enumerate(zip(out.logits, out.scores)):
        # Ours sees the model's raw next-token logits (nothing ran before it) ...
        assert torch.equal(processor.received[step], raw)
        assert not torch.equal(processor.returned[step], raw)
        # ... and temperature, top-k and top-p are applied afterwards, to our modulated logits.
        expected = processor.returned[step]
        for warper in warpers:
            expected = warper(None, expected)
        assert torch.equal(final, expected)


def test_identity_modulation_returns_scores_untouched():
    scores = torch.randn(3, 50)
    processor = ModulationProcessor(Modulation(), SeededNoise(0))
    assert processor(torch.zeros(3, 4, dtype=torch.long), scores) is scores


def test_seeded_mode_draws_once_per_step_for_the_whole_batch():
    noise = CountingNoise(0)
    targets = (FocusTarget(3, BOOST), FocusTarget(9, SUPPRESS))
    processor = ModulationProcessor(Modulation(1.0, 2.0, targets), noise)
    scores = torch.zeros(4, 50, dtype=torch.bfloat16)
    out = processor(torch.zeros(4, 6, dtype=torch.long), scores)
    assert noise.shapes == [(4, 52)]  # vocab + one half-normal draw per focus token
    assert out.dtype == torch.bfloat16 and out.shape == scores.shape


def test_keyed_noise_depends_on_real_tokens_only():
    modulation = Modulation(sigma=1.0)
    noise = KeyedNoise(b"secret")
    scores = torch.randn(1, 30).repeat(2, 1)
    # The same content (5, 6, 7) once behind two pads and once unpadded, next to another prompt.
    padded = ModulationProcessor(modulation, noise, keyed=True, prompt_starts=[2])
    plain = ModulationProcessor(modulation, noise, keyed=True, prompt_starts=[0, 0])
    a = padded(torch.tensor([[0, 0, 5, 6, 7]]), scores[:1])
    b = plain(torch.tensor([[5, 6, 7], [1, 2, 3]]), scores)
    assert torch.equal(a[0], b[0])
    assert not torch.equal(b[0], b[1])
    # One more generated token is new content, hence new noise.
    c = padded(torch.tensor([[0, 0, 5, 6, 7, 8]]), scores[:1])
    assert not torch.equal(a, c)
    assert (
        padded.item_keys(torch.tensor([[0, 0, 5, 6, 7]])) == plain.item_keys(torch.tensor([[5, 6, 7], [1, 2, 3]]))[:1]
    )


def test_focus_word_covers_spellings_but_not_bare_spaces(tiny):
    _model, tokenizer = tiny
    ids = focus_token_ids(tokenizer, "paris")
    tokens = set(tokenizer.convert_ids_to_tokens(list(ids)))
    assert {"paris", "Paris", "ĠParis"} <= tokens
    assert "Ġ" not in tokens and not tokens & set(tokenizer.all_special_tokens)
    targets, names = focus_targets(tokenizer, [FocusRequest("Paris", SUPPRESS)])
    assert names == ("Paris:down",)
    assert {t.class_id for t in targets} == set(focus_token_ids(tokenizer, "Paris"))
    assert all(t.direction == SUPPRESS for t in targets)


def test_focus_word_on_character_tokenizer(demo_tokenizer):
    ids = focus_token_ids(demo_tokenizer, "Hello")
    assert demo_tokenizer.convert_ids_to_tokens(list(ids)) == ["h", "e", "l", "o"]
    assert focus_token_ids(demo_tokenizer, "12") == tuple(demo_tokenizer.convert_tokens_to_ids(["1", "2"]))
    with pytest.raises(ProfileError, match="cannot encode"):
        focus_token_ids(demo_tokenizer, "€")


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("abc. def\nghi", ["\n", "."]) == ("abc", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    assert cut_at_stop("abc", [""]) == ("abc", False)


def test_stop_criteria_per_row(demo_tokenizer):
    rows = [
        demo_tokenizer("1+1=2", add_special_tokens=False)["input_ids"],
        demo_tokenizer("1+1=3", add_special_tokens=False)["input_ids"],
    ]
    criteria = StopOnStrings(demo_tokenizer, ["=2"], prompt_width=2)
    assert criteria(torch.tensor(rows), None).tolist() == [True, False]


def test_streamer_writes_exactly_the_cut_completion(demo_tokenizer):
    ids = demo_tokenizer("19+3x", add_special_tokens=False)["input_ids"]
    pieces: list[str] = []
    streamer = CompletionStreamer(demo_tokenizer, pieces.append, stops=["+3"])
    streamer.put(torch.tensor([[1, 5, 6]]))  # the prompt: not written
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert "".join(pieces) == "19"
    pieces.clear()
    streamer = CompletionStreamer(demo_tokenizer, pieces.append)
    streamer.put(torch.tensor([[1]]))
    for token in [*ids[:2], demo_tokenizer.eos_token_id, *ids[2:]]:
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert pieces == ["1", "9"]  # token by token, nothing after </s>
