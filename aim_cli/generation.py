"""Modulated text generation pieces for transformers' generate(): the logits processor, focus
token sets, stop strings and a streamer that prints only the completion.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

from aim_cli.errors import ProfileError
from aim_cli.modulation import FocusTarget, Modulation, NoiseSource, exclude_padding_, modulate, token_key
from aim_cli.profile import FocusRequest


class ModulationProcessor(LogitsProcessor):
    """Adds utility and focus noise to the raw next-token logits of every generation step.

    Must run before temperature / top-k / top-p so that sigma means the same in greedy and
    sampling modes (DESIGN.md section 3); transformers applies custom processors before its
    sampling warpers, and tests/test_generation_processor.py checks that this still holds.
    """

    def __init__(
        self,
        modulation: Modulation,
        noise: NoiseSource,
        keyed: bool = False,
        prompt_starts: Sequence[int] | None = None,
        encoder_ids: Sequence[Sequence[int]] | None = None,
        num_tokens: int | None = None,
    ) -> None:
        self.modulation = modulation
        self.noise = noise
        self._identity = modulation.is_identity  # checked every step: computed once
        self.keyed = keyed
        # Keyed noise hashes each row's real tokens, so the left padding must be skipped.
        self.prompt_starts = list(prompt_starts) if prompt_starts is not None else None
        # An encoder-decoder's input_ids are the decoder's alone: the prompt must join the key from here.
        self.encoder_ids = encoder_ids
        # Output columns past the tokenizer (padded embedding matrices) are no tokens: noise must not pick them.
        self.num_tokens = num_tokens

    def item_keys(self, input_ids: torch.Tensor) -> list[bytes]:
        """Per-row content keys: prompt token ids plus the tokens generated so far (no padding).

        With `encoder_ids` (an encoder-decoder), a row's key covers its encoder prompt and its
        decoder tokens (see encoder_decoder_key), so it does not depend on the batch either.
        """
        rows = input_ids.detach().to("cpu", torch.int64).numpy()
        starts = self.prompt_starts or [0] * rows.shape[0]
        if len(starts) != rows.shape[0]:
            raise ValueError(f"{len(starts)} prompt starts for a batch of {rows.shape[0]} rows")
        if self.encoder_ids is None:
            return [token_key(row[start:]) for row, start in zip(rows, starts)]
        if len(self.encoder_ids) != rows.shape[0]:
            raise ValueError(f"{len(self.encoder_ids)} encoder prompts for a batch of {rows.shape[0]} rows")
        return [encoder_decoder_key(prompt, row[start:]) for prompt, row, start in zip(self.encoder_ids, rows, starts)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """Return the modulated (batch, vocab) scores; seeded mode draws once for the whole batch."""
        if self._identity:
            return scores
        keys = self.item_keys(input_ids) if self.keyed else None
        modulated = modulate(scores, self.modulation, self.noise, class_dim=-1, item_keys=keys)
        return cast(torch.FloatTensor, exclude_padding_(modulated, self.num_tokens))


# Between the encoder prompt and the decoder tokens in a key; no token id is negative, so the
# split is unambiguous ([1, 2] + [3] and [1] + [2, 3] get different keys).
KEY_SEPARATOR = -1


def encoder_decoder_key(prompt_ids: Sequence[int], decoder_ids: Sequence[int] | np.ndarray) -> bytes:
    """Content key of an encoder-decoder row: token_key(prompt ids, -1, decoder ids so far)."""
    prompt = np.asarray(prompt_ids, dtype=np.int64)
    return token_key(np.concatenate([prompt, [KEY_SEPARATOR], np.asarray(decoder_ids, dtype=np.int64)]))


# LogitsProcessorList calls inspect.signature(processor.__call__) at every step; a precomputed
# __signature__ turns that from ~12 us into ~4 us per step (it matters for small models).
ModulationProcessor.__call__.__signature__ = inspect.signature(ModulationProcessor.__call__)  # type: ignore[attr-defined]


def _variants(word: str) -> list[str]:
    """The spellings a word takes in running text: as given, lower case, capitalised, each
    with and without the leading space that most subword vocabularies fold into the token."""
    forms: list[str] = []
    for form in (word, word.lower(), word[:1].upper() + word[1:], word.capitalize()):
        for spelled in (form, " " + form):
            if spelled not in forms:
                forms.append(spelled)
    return forms


def focus_token_ids(tokenizer: Any, word: str) -> tuple[int, ...]:
    """Every token id of the word's tokenisations, minus special and whitespace-only tokens.

    A spelling that needs the unknown token does not count; if none is left the tokenizer
    cannot encode the word and a ProfileError names it.
    """
    word = word.strip()
    unk = getattr(tokenizer, "unk_token_id", None)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids: list[int] = []
    for spelled in _variants(word):
        encoded = list(tokenizer(spelled, add_special_tokens=False)["input_ids"])
        if not encoded or (unk is not None and unk in encoded):
            continue
        for token_id in encoded:
            if token_id in special or token_id in ids:
                continue
            # A lone space (or 'Ġ', '▁') is not part of the word: boosting it would change every gap.
            if not tokenizer.decode([token_id]).strip():
                continue
            ids.append(int(token_id))
    if not ids:
        raise ProfileError(
            f"--focus '{word}': the model's tokenizer cannot encode this word (only unknown or special tokens)",
            "choose a word made of characters the tokenizer knows",
        )
    return tuple(ids)


def focus_targets(tokenizer: Any, requests: Sequence[FocusRequest]) -> tuple[tuple[FocusTarget, ...], tuple[str, ...]]:
    """Resolve focus words to token-id targets (class_id = token id) and display names."""
    targets: list[FocusTarget] = []
    names: list[str] = []
    for request in requests:
        for token_id in focus_token_ids(tokenizer, request.name):
            targets.append(FocusTarget(token_id, request.direction))
        names.append(str(request))
    return tuple(targets), tuple(names)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Cut text before the earliest stop string; also say whether one was found."""
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop)
            if 0 <= at < cut:
                cut = at
    return text[:cut], cut < len(text)


class StopOnStrings(StoppingCriteria):
    """Finish a row once its completion so far contains a stop string.

    Decoding the text (instead of matching token ids) finds a stop string however the
    tokenizer splits it; the completion is cut at the string afterwards.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_width: int) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        """One flag per row: True where a stop string has appeared."""
        rows = input_ids[:, self.prompt_width :].tolist()
        done = [cut_at_stop(self.tokenizer.decode(row, skip_special_tokens=True), self.stops)[1] for row in rows]
        return cast(torch.BoolTensor, torch.tensor(done, dtype=torch.bool, device=input_ids.device))


class CompletionStreamer(BaseStreamer):
    """Write a single prompt's completion as it is generated (like TextStreamer, minus the prompt).

    Text that could still turn into a stop string, or a half-decoded multi-byte character,
    is held back until it is settled, so what is written always equals the final completion.
    """

    def __init__(self, tokenizer: Any, write: Callable[[str], None], stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.write = write
        self.stops = [s for s in stops if s]
        self._holdback = max((len(s) for s in self.stops), default=1) - 1
        self._ids: list[int] = []
        self._written = 0
        self._seen_prompt = False
        self._stopped = False
        self._eos = getattr(tokenizer, "eos_token_id", None)

    def put(self, value: torch.Tensor) -> None:
        """Receive the prompt (ignored) and then one new token per step."""
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        if self._stopped:
            return
        self._ids.extend(int(i) for i in np.asarray(value.detach().cpu()).reshape(-1))
        self._flush(final=False)

    def end(self) -> None:
        """Write whatever was held back."""
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        """Write the settled part of the completion decoded so far."""
        if self._stopped:
            return
        ids = self._ids
        if self._eos is not None and self._eos in ids:
            ids = ids[: ids.index(self._eos)]
            final = True
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut, stopped = cut_at_stop(text, self.stops)
        if stopped or final:
            settled = len(cut)
            self._stopped = True
        else:
            settled = max(0, len(cut) - self._holdback)
            while settled > 0 and cut[settled - 1] == "\ufffd":
                settled -= 1
        if settled > self._written:
            self.write(cut[self._written : settled])
            self._written = settled
