"""Text generation with modulated next-token logits, from causal and encoder-decoder LMs.

An encoder-decoder reads the prompt with its encoder; the completion is what its decoder
generates after its start token, so the same processor, stop strings and records apply.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from aim_cli.errors import FailedInput, InputError
from aim_cli.generation import ModulationProcessor, StopOnStrings, cut_at_stop
from aim_cli.models.language import LanguageModel, check_prompt_fits
from aim_cli.modulation import KeyedNoise, LentGlobalStream, content_key, nonfinite_items
from aim_cli.plans import ModulationPlan, plan_tokens
from aim_cli.profile import Profile
from aim_cli.tasks.batches import ProgressCallback, batched, nonfinite_error


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; temperature 0 means greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    batch_size: int = 8

    @property
    def sampling(self) -> bool:
        """True when tokens are sampled rather than chosen greedily."""
        return self.temperature > 0


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt as given and as token ids (after the chat template, if any)."""

    index: int
    text: str
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Completion:
    """The modulated (and optionally clean) completion of one prompt."""

    index: int
    prompt: str
    completion: str
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...]
    clean_completion: str | None = None
    clean_token_ids: tuple[int, ...] | None = None


class FiniteScores(LogitsProcessor):
    """Finds the rows whose next-token scores the model computed as NaN/inf: the model-output boundary of generation.

    It runs first among aim's processors: after transformers' own masks (whose -inf is
    intended, so the masked form of modulation.nonfinite_items: a row must keep a finite
    score and hold no NaN or +inf) and before any noise or padding exclusion. A broken row is
    recorded and ended (its end-of-sequence token forced), so sampling never sees NaN and the
    other rows of the batch go on. One reduction per step.
    """

    def __init__(self, eos_id: int | None = None) -> None:
        self.eos_id = eos_id
        self.failed: set[int] = set()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """The scores unchanged, or with broken rows replaced by a forced end of sequence."""
        bad = nonfinite_items(scores, masked=True)
        if not bad:
            return scores
        self.failed.update(bad)
        rows = torch.tensor(bad, device=scores.device)
        fixed = scores.index_fill(0, rows, 0.0 if self.eos_id is None else float("-inf"))
        if self.eos_id is not None:
            fixed[rows, self.eos_id] = 0.0
        return cast(torch.FloatTensor, fixed)


# As for ModulationProcessor: LogitsProcessorList inspects the signature at every step.
FiniteScores.__call__.__signature__ = inspect.signature(FiniteScores.__call__)  # type: ignore[attr-defined]


def plan_generation(profile: Profile, lm: LanguageModel) -> ModulationPlan:
    """Resolve focus words to token sets and build the noise source for a language model."""
    return plan_tokens(profile, lm.tokenizer)


def encode_prompts(lm: LanguageModel, prompts: Sequence[str], chat: bool = False) -> list[EncodedPrompt]:
    """Tokenize and check every prompt before anything is generated (so nothing is half-written)."""
    encoded = []
    for index, text in enumerate(prompts):
        if not text.strip():
            raise InputError(f"prompt {index + 1} is empty", "give some text to complete")
        ids = lm.encode(text, chat)
        if not ids:
            raise InputError(f"prompt {index + 1} encodes to no tokens", "give some text to complete")
        check_prompt_fits(lm, index, len(ids))
        encoded.append(EncodedPrompt(index, text, tuple(ids)))
    return encoded


def fitting_max_new_tokens(lm: LanguageModel, prompts: Sequence[EncodedPrompt], requested: int) -> int:
    """The largest max_new_tokens <= requested that keeps the longest prompt inside the context.

    An encoder-decoder's completion only has to fit the decoder: the decoder reads its start token
    and every new token but the last, max_new_tokens positions in all.
    """
    if lm.encoder_decoder:
        return requested if lm.decoder_context_length is None else max(1, min(requested, lm.decoder_context_length))
    if lm.context_length is None or not prompts:
        return requested
    longest = max(len(p.ids) for p in prompts)
    return max(1, min(requested, lm.context_length - longest))


def length_note(lm: LanguageModel, fitted: int) -> str:
    """Why fewer tokens than asked are generated: which context limit the completion must fit."""
    if lm.encoder_decoder:
        return (
            f"note: generating at most {fitted} tokens, "
            f"as many as the decoder's {lm.decoder_context_length} positions allow"
        )
    return (
        f"note: generating at most {fitted} tokens so prompt and completion fit the {lm.context_length}-token context"
    )


def _padded(
    batch: Sequence[EncodedPrompt], pad_id: int, device: torch.device, left: bool = True
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Input ids and attention mask, padded on the left (or right), plus where each row's real tokens start."""
    width = max(len(p.ids) for p in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    starts = []
    for row, prompt in enumerate(batch):
        start = width - len(prompt.ids) if left else 0
        ids[row, start : start + len(prompt.ids)] = prompt.ids
        mask[row, start : start + len(prompt.ids)] = 1
        starts.append(start)
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device), starts


def _completion_ids(row: Sequence[int], eos_ids: set[int], pad_id: int | None) -> list[int]:
    """Generated ids up to and including the first end-of-sequence token, without trailing padding."""
    out: list[int] = []
    for token in row:
        out.append(token)
        if token in eos_ids:
            return out
    while out and pad_id is not None and out[-1] == pad_id:
        out.pop()
    return out


def _eos_ids(lm: LanguageModel) -> set[int]:
    """All end-of-sequence ids of the generation config and tokenizer."""
    ids: set[int] = set()
    configured = getattr(lm.model.generation_config, "eos_token_id", None)
    for value in (configured, lm.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


@torch.inference_mode()
def generate_ids(
    lm: LanguageModel,
    batch: Sequence[EncodedPrompt],
    settings: GenerationSettings,
    processor: ModulationProcessor | None,
    streamer: BaseStreamer | None = None,
    guard: FiniteScores | None = None,
) -> list[list[int]]:
    """Run model.generate on one padded batch; return each row's generated token ids (raw).

    `guard` (first among the processors) records the rows whose logits are not finite.
    """
    tokenizer = lm.tokenizer
    input_ids, mask, starts = _padded(batch, tokenizer.pad_token_id, lm.device, left=not lm.encoder_decoder)
    # generate() returns the prompt (causal) or the decoder's start token (encoder-decoder) before the new tokens.
    prefix = 1 if lm.encoder_decoder else input_ids.shape[1]
    if processor is not None:
        # Decoder rows are never padded; the key of an encoder-decoder row takes its prompt from encoder_ids.
        processor.prompt_starts = [0] * len(batch) if lm.encoder_decoder else starts
        processor.encoder_ids = [p.ids for p in batch] if lm.encoder_decoder else None
    kwargs: dict[str, object] = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": settings.sampling,
        "pad_token_id": tokenizer.pad_token_id,
        # aim decodes greedily or by sampling, one row per prompt: a checkpoint's beam-search default
        # (summarisation models ship num_beams=4) would change that and multiply the rows keys are made for.
        "num_beams": 1,
        "num_return_sequences": 1,
    }
    if settings.sampling:
        # Explicit values: transformers would otherwise fill in top_k=50 when a flag is unset.
        kwargs.update(temperature=settings.temperature, top_k=settings.top_k or 0, top_p=settings.top_p or 1.0)
    if getattr(lm.model.generation_config, "eos_token_id", None) is None and tokenizer.eos_token_id is not None:
        kwargs["eos_token_id"] = tokenizer.eos_token_id
    stopping = StoppingCriteriaList([StopOnStrings(tokenizer, settings.stop, prefix)]) if settings.stop else None
    # Ours are the only custom processors (the finite check first); generate() appends its
    # temperature/top-k/top-p warpers after them.
    ours = [p for p in (guard, processor) if p is not None]
    processors = LogitsProcessorList(ours) if ours else None
    output = lm.model.generate(
        input_ids=input_ids,
        attention_mask=mask,
        logits_processor=processors,
        stopping_criteria=stopping,
        streamer=streamer,
        **kwargs,
    )
    return output[:, prefix:].tolist()


def _sampling_stream(
    plan: ModulationPlan, batch: Sequence[EncodedPrompt], run: LentGlobalStream, device: torch.device
) -> LentGlobalStream:
    """The stream a batch samples from: the run's (seeded or random), or one keyed on the batch's content.

    Keyed plans derive the seed from the key and the batch's content, so repeating a question
    repeats the answer in sampling mode too.
    """
    if plan.seed is None and isinstance(plan.noise, KeyedNoise):
        digest = content_key(b"".join(np.asarray(p.ids, dtype="<i8").tobytes() + b"\xff" * 8 for p in batch))
        return LentGlobalStream(plan.noise.item_seed(digest), device)
    return run


def generate_completions(
    lm: LanguageModel,
    prompts: Sequence[EncodedPrompt],
    plan: ModulationPlan,
    settings: GenerationSettings,
    compare: bool = False,
    progress: ProgressCallback | None = None,
    streamer: BaseStreamer | None = None,
    failures: list[FailedInput] | None = None,
) -> Iterator[Completion]:
    """Generate modulated (and, with compare, clean) completions batch by batch, in prompt order.

    A prompt the model computes non-finite logits for raises nonfinite_error; with a
    `failures` list it is recorded there instead and the other prompts go on.
    """
    # transformers samples from torch's global generator (it takes none): each generate() call gets
    # it lent with aim's own state (LentGlobalStream), so the caller's generator never changes and
    # a seed repeats a run; our noise has its own SeededNoise or keyed stream.
    run = LentGlobalStream(plan.seed if plan.seed is not None else secrets.randbits(63), lm.device)
    processor = None
    if not plan.modulation.is_identity:
        processor = plan.logits_processor()
    eos_ids = _eos_ids(lm)
    pad_id = lm.tokenizer.pad_token_id
    stop_id = lm.tokenizer.eos_token_id if lm.tokenizer.eos_token_id is not None else min(eos_ids, default=None)
    for batch in batched(prompts, settings.batch_size):
        guard = FiniteScores(stop_id)
        with _sampling_stream(plan, batch, run, lm.device).lent() if settings.sampling else nullcontext():
            rows = generate_ids(lm, batch, settings, processor, streamer, guard)
        clean_rows: list[list[int]] | list[None] = [None] * len(batch)
        if compare:
            with _sampling_stream(plan, batch, run, lm.device).lent() if settings.sampling else nullcontext():
                clean_rows = generate_ids(lm, batch, settings, None, guard=guard)
        broken = _broken_prompts(batch, guard, failures)
        for prompt, row, clean_row in zip(batch, rows, clean_rows):
            if prompt.index in broken:
                continue
            text, ids = _finish(lm, row, eos_ids, pad_id, settings.stop)
            clean_text, clean_ids = (None, None)
            if clean_row is not None:
                clean_text, clean_ids = _finish(lm, clean_row, eos_ids, pad_id, settings.stop)
            yield Completion(
                prompt.index,
                prompt.text,
                text,
                len(prompt.ids),
                len(ids),
                tuple(ids),
                clean_text,
                tuple(clean_ids) if clean_ids is not None else None,
            )
        if progress:
            progress(len(batch))


def _broken_prompts(
    batch: Sequence[EncodedPrompt], guard: FiniteScores, failures: list[FailedInput] | None
) -> set[int]:
    """The batch's prompts (indices) whose logits the model computed non-finite; raises without a failures list."""
    broken = set()
    for row in sorted(guard.failed):
        prompt = batch[row]
        what = f"prompt {prompt.index + 1} ({prompt.text[:40]!r}{'...' if len(prompt.text) > 40 else ''})"
        if failures is None:
            raise nonfinite_error(what)
        failures.append(FailedInput(Path(f"prompt {prompt.index + 1}"), str(nonfinite_error(what))))
        broken.add(prompt.index)
    return broken


def _finish(
    lm: LanguageModel, row: Sequence[int], eos_ids: set[int], pad_id: int | None, stops: Sequence[str]
) -> tuple[str, list[int]]:
    """Decode one generated row and cut it at the first stop string.

    With a stop string the kept ids are those up to the token that completed it, so the token
    count reflects what the model generated before stopping.
    """
    ids = _completion_ids(row, eos_ids, pad_id)
    text = lm.tokenizer.decode(ids, skip_special_tokens=True)
    cut, stopped = cut_at_stop(text, stops)
    if stopped:
        for end in range(1, len(ids) + 1):
            if cut_at_stop(lm.tokenizer.decode(ids[:end], skip_special_tokens=True), stops)[1]:
                ids = ids[:end]
                break
    return cut, ids
