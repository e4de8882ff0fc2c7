"""lm-evaluation-harness model `aim`: lm-eval's own Hugging Face model with aim's noise on the logits.

Importing this module registers the model with lm-eval's registry, so after
`import aim_cli.integrations.lm_eval` any lm-eval entry point that takes a model name runs it:

    lm_eval.simple_evaluate(model="aim", model_args="pretrained=DIR,sigma=1.5,seed=0", tasks=[...])

Tokenisation, batching, truncation and scoring stay lm-eval's (the class subclasses HFLM); aim
hooks the two places HFLM gets logits from the network: `_model_call` (loglikelihood and rolling
loglikelihood: the positions lm-eval scores, before its log-softmax) and `_model_generate`
(generate_until: aim's transformers LogitsProcessor, before any sampling warper). With no
modulation (sigma 0, no focus) neither hook touches anything, so the numbers are lm-eval's own,
bit for bit.

The noise of a decision depends only on the tokens before it: position t of a sequence gets
the keyed draw of token_key(tokens[: t + 1]), in scoring and in generation alike. lm-eval sorts
and batches requests as it likes, and the choices of a multiple-choice question share their
context, so this makes every choice of a question see the same noise at every position their
rows share: at the answer position, and at each token of a prefix the choices share (lm-eval's
moved space " " where that is its own token). When the choices differ only in their last token
the decision is the argmax of the choices' noisy logits at one position, which aim's
calibration predicts exactly (aim_cli.calibration.lm_eval); and results are independent of
batch size and order. A seed is a public key
(modulation.seed_keyed_noise, as the vLLM plugin's seeded requests); a profile's key_env a secret one.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from aim_cli.errors import ModelError, ProfileError
from aim_cli.modulation import KeyedNoise, Modulation, exclude_padding_, modulate
from aim_cli.profile import Profile, noise_key, resolve_profile

try:
    from lm_eval.api.registry import register_model
    from lm_eval.models.huggingface import HFLM
except ImportError as exc:  # the extra is missing: the CLI turns this into one line
    raise ImportError(f"{exc}; aim's lm-eval model needs pip install 'aim-cli[eval]'") from exc

MODEL_NAME = "aim"
# model_args is lm-eval's "key=value,key=value" string: several focus words go in one value.
FOCUS_SEPARATOR = "|"


@dataclass(frozen=True)
class EvalPlan:
    """A profile resolved against the tokenizer: the modulation, its content-keyed noise, and the seed used."""

    modulation: Modulation
    noise: KeyedNoise
    seed: int | None  # None: keyed on a secret (the profile's key_env)
    num_tokens: int | None  # columns at and past it are padding of the output layer
    target_names: tuple[str, ...] = ()

    def describe(self) -> dict[str, object]:
        """The settings to record beside a result."""
        return {
            "sigma": self.modulation.sigma,
            "focus_sigma": self.modulation.focus_sigma if self.modulation.has_focus else 0.0,
            "focus": list(self.target_names),
            "seed": self.seed,
            "keyed": self.seed is None,
        }


def plan_for(profile: Profile, tokenizer: Any) -> EvalPlan:
    """Resolve a profile against a tokenizer (focus words to token ids, as `aim generate` does)."""
    from aim_cli.modulation import seed_keyed_noise
    from aim_cli.plans import plan_tokens

    base = plan_tokens(profile, tokenizer)
    if profile.key_env is not None:
        return EvalPlan(base.modulation, KeyedNoise(noise_key(profile)), None, base.num_tokens, base.target_names)
    seed = profile.seed if profile.seed is not None else secrets.randbits(63)
    return EvalPlan(base.modulation, seed_keyed_noise(seed), seed, base.num_tokens, base.target_names)


def eval_profile(
    profile: str | None = None,
    sigma: float | None = None,
    focus: str | Sequence[str] | None = None,
    focus_sigma: float | None = None,
    seed: int | None = None,
) -> Profile:
    """The Profile of lm-eval model arguments: a YAML file, then sigma, focus ('w1:up|w2:down'), seed."""
    words = [w for w in focus.split(FOCUS_SEPARATOR) if w.strip()] if isinstance(focus, str) else focus
    return resolve_profile(
        profile, sigma=sigma, focus=list(words) if words else None, focus_sigma=focus_sigma, seed=seed
    )


def position_keys(rows: torch.Tensor) -> list[bytes]:
    """token_key(row[: t + 1]) for every row and position of a (batch, length) tensor, row-major."""
    return [key for row in rows for key in prefix_keys(row, 0)]


def prefix_keys(row: torch.Tensor, first: int) -> list[bytes]:
    """token_key(row[: t + 1]) for t = first .. len(row) - 1: one hash of the shared prefix, then one step each.

    A running sha256 over the same bytes token_key hashes (little-endian int64 ids), so a prefix
    gets the key `aim generate`'s logits processor gives it.
    """
    ids = row.detach().to("cpu", torch.int64).numpy().astype("<i8")
    state = hashlib.sha256(ids[:first].tobytes())
    keys = []
    for token in ids[first:]:
        state.update(token.tobytes())
        keys.append(state.copy().digest())
    return keys


def scored_positions(
    inps: torch.Tensor, table: dict[tuple[int, ...], int]
) -> tuple[list[int], list[int], list[bytes]] | None:
    """(row, position, key) of every position lm-eval will score in a right-padded batch; None if a row is unknown.

    A row's real length is where its zero padding starts (or later, if the input itself ends in
    token 0): the first length whose tokens are in the table is the row's input.
    """
    rows: list[int] = []
    positions: list[int] = []
    keys: list[bytes] = []
    for index, row in enumerate(inps.detach().to("cpu", torch.int64).numpy()):
        nonzero = np.flatnonzero(row)
        shortest = int(nonzero[-1]) + 1 if len(nonzero) else 1
        for length in range(shortest, len(row) + 1):
            count = table.get(tuple(row[:length].tolist()))
            if count is not None:
                break
        else:
            return None
        first = length - count
        rows.extend([index] * count)
        positions.extend(range(first, length))
        keys.extend(prefix_keys(torch.from_numpy(row[:length]), first))
    return rows, positions, keys


def modulate_positions(logits: torch.Tensor, tokens: torch.Tensor, plan: EvalPlan) -> torch.Tensor:
    """(batch, length, vocab) logits plus each position's keyed noise; padding columns -inf."""
    batch, length, vocab = logits.shape
    flat = logits.reshape(batch * length, vocab)
    noisy = modulate(flat, plan.modulation, plan.noise, class_dim=-1, item_keys=position_keys(tokens))
    return exclude_padding_(noisy, plan.num_tokens).reshape(batch, length, vocab)


def first_real_positions(attention_mask: torch.Tensor | None, batch: int) -> list[int]:
    """Where each left-padded row's prompt starts (its first attended position)."""
    if attention_mask is None:
        return [0] * batch
    return attention_mask.to(torch.int64).argmax(dim=1).tolist()


class AimLM(HFLM):
    """lm-eval's HFLM with aim's utility and focus noise on the logits it scores and generates from."""

    def __init__(
        self,
        pretrained: Any = None,
        profile: str | None = None,
        sigma: float | None = None,
        focus: str | Sequence[str] | None = None,
        focus_sigma: float | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        wanted = eval_profile(profile, sigma, focus, focus_sigma, seed)  # bad settings fail before the model loads
        self._aim_scored: dict[tuple[int, ...], int] | None = None
        super().__init__(pretrained=pretrained, **kwargs)
        if self.backend != "causal":
            raise ModelError(
                "aim's lm-eval model supports decoder-only (causal) language models",
                "run encoder-decoder models with lm-eval's own hf model",
            )
        self.set_profile(wanted)

    def set_profile(self, profile: Profile) -> EvalPlan:
        """Switch to another tier without reloading the model (aim eval sweeps sigma this way)."""
        if not isinstance(profile, Profile):
            raise ProfileError(f"expected a Profile, got {type(profile).__name__}")
        self.aim_plan = plan_for(profile, self.tokenizer)
        return self.aim_plan

    def _loglikelihood_tokens(self, requests: Any, *args: Any, **kwargs: Any) -> Any:
        """HFLM's scoring, with a table of which positions each input row will have scored.

        Row input -> continuation length, computed as lm-eval builds its rows (context +
        continuation, left-truncated to max_length + 1, last token dropped): _model_call uses
        it to noise only the scored positions of a batch, in one draw.
        """
        if self.aim_plan.modulation.is_identity:
            return super()._loglikelihood_tokens(requests, *args, **kwargs)
        table: dict[tuple[int, ...], int] = {}
        for _, context_ids, continuation_ids in requests:
            row = tuple((list(context_ids) + list(continuation_ids))[-(self.max_length + 1) :][:-1])
            table[row] = max(table.get(row, 0), len(continuation_ids))
        self._aim_scored = table
        try:
            return super()._loglikelihood_tokens(requests, *args, **kwargs)
        finally:
            self._aim_scored = None

    def _model_call(
        self, inps: torch.Tensor, attn_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """HFLM's logits, each scored position plus the noise keyed on the tokens up to it.

        Only the positions lm-eval scores get noise (on a 128k vocabulary, drawing for every
        context position would cost more than the forward pass); they are found in the table
        _loglikelihood_tokens made. A batch that does not match it (another caller, another
        lm-eval) gets noise at every position: the same numbers, more draws.
        """
        logits = super()._model_call(inps, attn_mask, labels)
        if self.aim_plan.modulation.is_identity:
            return logits
        scored = scored_positions(inps, self._aim_scored) if self._aim_scored else None
        if scored is None:
            return modulate_positions(logits, inps, self.aim_plan)
        rows, positions, keys = scored
        plan = self.aim_plan
        index = (torch.tensor(rows, device=logits.device), torch.tensor(positions, device=logits.device))
        noisy = modulate(logits[index], plan.modulation, plan.noise, class_dim=-1, item_keys=keys)
        logits = logits.clone() if logits.requires_grad else logits
        logits[index] = exclude_padding_(noisy, plan.num_tokens)
        return logits

    def _model_generate(self, context: torch.Tensor, max_length: int, stop: list[str], **generation_kwargs: Any) -> Any:
        """HFLM's generate with aim's logits processor first in the chain (keyed on each row's tokens)."""
        if not self.aim_plan.modulation.is_identity:
            from transformers import LogitsProcessorList

            from aim_cli.generation import ModulationProcessor

            plan = self.aim_plan
            processor = ModulationProcessor(
                plan.modulation,
                plan.noise,
                keyed=True,
                prompt_starts=first_real_positions(generation_kwargs.get("attention_mask"), context.shape[0]),
                num_tokens=plan.num_tokens,
            )
            given = generation_kwargs.pop("logits_processor", None) or []
            generation_kwargs["logits_processor"] = LogitsProcessorList([processor, *given])
        return super()._model_generate(context, max_length, stop, **generation_kwargs)


def _register() -> None:
    """Register AimLM as lm-eval model `aim`; a second import of this module (a reload) keeps the first."""
    with contextlib.suppress(ValueError):  # already registered by an earlier import of this module
        register_model(MODEL_NAME)(AimLM)


_register()

__all__ = [
    "MODEL_NAME",
    "AimLM",
    "EvalPlan",
    "eval_profile",
    "modulate_positions",
    "plan_for",
    "position_keys",
    "prefix_keys",
]
