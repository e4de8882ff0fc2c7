"""vLLM logits-processor plugin: aim tiers per request, selected with SamplingParams.extra_args.

Registered under vLLM's entry-point group `vllm.logits_processors` (pyproject.toml), so every
vLLM server in an environment with aim-cli[vllm] loads it; requests without aim_* arguments are
untouched. A request selects a tier with `extra_args` (the OpenAI server's `vllm_xargs`):

    {"aim_profile": "free-tier"}                   a profile of the directory in AIM_PROFILES_DIR
    {"aim_sigma": 2.0, "aim_seed": 7}              explicit settings (no tier)
    {"aim_focus": ["cat:up"], "aim_focus_sigma": 2, "aim_keyed": true}

On a tier server (AIM_PROFILES_DIR set, as `aim serve` does) a request gets a tier of the folder
and only the options it leaves open; requests naming no tier get AIM_DEFAULT_PROFILE, and ad-hoc
modulation and the clean model only where the operator opted in (aim_cli/tier_policy.py).

This module only adapts vLLM's batch bookkeeping; what a request means and how its rows are
modulated lives in aim_cli/serving.py (tested without vLLM).

vLLM 0.33 has two model runners with two processor interfaces that share the entry-point group,
so there is one thin class per runner over serving's engine-neutral core:

- AimV2LogitsProcessor, Model Runner V2 (the default; vllm.v1.worker.gpu.sample.logits_processor):
  the noise runs after the grammar bitmask (model runner) and the sampler's logit bias,
  penalties and bad-words stages, before thinking-budget forcing, temperature, min_p and top-k/top-p.
- AimV1LogitsProcessor, the V1 runner (vllm.v1.sample.logits_processor; VLLM_USE_V2_MODEL_RUNNER=0):
  the noise runs after the grammar bitmask, allowed_token_ids, bad words, min_tokens and
  logit_bias, and BEFORE the presence/frequency/repetition penalties (which V1 applies after
  every non-argmax-invariant processor), thinking-budget forcing, temperature, min_p and top-k/top-p.

The group holds one class, AimLogitsProcessor: the V2 loader requires a V2 subclass and the V1
runner calls it with its own arguments, so it returns the processor of the runner that
vllm_config.use_v2_model_runner names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, process_dict_updates
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor

from aim_cli import serving
from aim_cli.errors import AimError

logger = logging.getLogger("aim.vllm")
# The V1 runner's stand-in for a sampled token not yet copied back under async scheduling.
_PLACEHOLDER = -1


def _tokenizer_loader(vllm_config: Any) -> Callable[[], Any]:
    """Load the served model's tokenizer the way `aim generate` does (transformers), on first use."""
    cache: list[Any] = []

    def load() -> Any:
        if not cache:
            from transformers import AutoTokenizer

            model_config = vllm_config.model_config
            cache.append(
                AutoTokenizer.from_pretrained(
                    model_config.tokenizer,
                    revision=getattr(model_config, "tokenizer_revision", None),
                    trust_remote_code=bool(getattr(model_config, "trust_remote_code", False)),
                )
            )
        return cache[0]

    return load


def _vocab_size(vllm_config: Any) -> int | None:
    """The width of the served model's logits (its output layer), when vLLM says."""
    model_config = getattr(vllm_config, "model_config", None)
    size = getattr(model_config, "get_vocab_size", None)
    return int(size()) if callable(size) else None


@dataclass
class _Slot:
    """A request occupying a batch slot: its tier plan, its key hasher and (V1 runner) its token lists."""

    plan: serving.RowPlan
    prompt_ids: list[int] | None = None
    output_ids: list[int] | None = None  # V1: a live reference, vLLM appends each new token
    hasher: serving.TokenHasher = field(default_factory=serving.TokenHasher)


SPECULATIVE_REFUSED = "aim's tiers do not support speculative decoding"
# Set in a process whose final engine config turned speculative decoding on: the V1 runner then
# never builds this processor, so admission must refuse aim requests rather than serve them clean.
_speculative_engine: list[bool] = []


def check_engine_config(vllm_config: Any) -> None:
    """The speculative-decoding guard, on the final engine config (after every CLI form and --config file).

    With aim tiers configured for this server (AIM_PROFILES_DIR or AIM_DEFAULT_PROFILE), the engine
    refuses to start; otherwise vLLM serves as usual and requests that ask for aim are refused.
    """
    if not getattr(vllm_config, "speculative_config", None):
        return
    if os.environ.get(serving.PROFILES_ENV) or os.environ.get(serving.DEFAULT_ENV):
        raise ValueError(f"aim: {SPECULATIVE_REFUSED}: serve without a speculative config, or without aim tiers")
    if not _speculative_engine:
        logger.warning("aim: speculative decoding is on, so requests with aim_* arguments will be refused")
    _speculative_engine.append(True)


def register() -> None:
    """vLLM general plugin (entry point `vllm.general_plugins`): run check_engine_config on every VllmConfig built.

    vLLM loads general plugins in every process before it builds its config, and a VllmConfig is
    final once its own __post_init__ has run; idempotent, as vLLM may load plugins more than once.
    """
    from vllm.config import VllmConfig

    original = VllmConfig.__post_init__
    if getattr(original, "_aim_guard", False):
        return

    def post_init(self: Any) -> None:
        original(self)
        check_engine_config(self)

    post_init._aim_guard = True  # type: ignore[attr-defined]
    # method-assign where vLLM is installed; unused-ignore where it is not (its imports are Any).
    VllmConfig.__post_init__ = post_init  # type: ignore[method-assign,unused-ignore]


class _AimRequests:
    """What both runners' processors share: admission checks, the server's tiers, each request's plan."""

    _slots: dict[int, _Slot]

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Reject invalid aim_* arguments at admission (HTTP 400 with the message); pin a fresh seed if none."""
        if _speculative_engine and serving.has_aim_args(getattr(sampling_params, "extra_args", None)):
            raise ValueError(f"aim: {SPECULATIVE_REFUSED}: this server runs speculative decoding")
        try:
            args = serving.admit(sampling_params.extra_args, serving.server_policy())
        except AimError as exc:
            raise ValueError(f"aim: {exc}") from None
        if args is not None:
            sampling_params.extra_args = args

    def _setup(self, vllm_config: Any) -> None:
        """Load the tiers and resolve each one, so a bad tier stops the server at start."""
        # The V1 runner never builds entry-point processors under speculative decoding; V2 would,
        # with draft rows aim cannot key yet: refuse, rather than serve tiers it cannot honour.
        if getattr(vllm_config, "speculative_config", None):
            raise AimError(
                SPECULATIVE_REFUSED, "serve without a speculative config, or from an environment without aim-cli"
            )
        self._plans = serving.PlanCache(_tokenizer_loader(vllm_config), _vocab_size(vllm_config))
        self._policy = serving.server_policy()
        # Every tier resolves now: an unencodable focus word, or one past the output layer, stops the server at start.
        for profile in self._policy.tiers.values():
            self._plans.resolve(profile)
        self._slots = {}

    def _plan(self, sampling_params: Any) -> serving.RowPlan | None:
        """The plan of a request's aim_* arguments (None: untouched); validate_params already checked them."""
        profile = serving.request_profile(getattr(sampling_params, "extra_args", None), self._policy)
        if profile is None:
            return None
        try:
            return self._plans.resolve(profile)
        except AimError as exc:
            # Only the model knows its output width, and admission runs without it: a request's own
            # focus word past the output layer is dropped here (raising would stop the engine); the
            # tier's sigma and noise still apply.
            logger.warning("aim: %s; the request runs without its focus words", exc)
            return self._plans.resolve(replace(profile, focus=()))


class AimV1LogitsProcessor(_AimRequests, V1LogitsProcessor):
    """The V1 runner's processor: slots follow vLLM's persistent batch; row i is batch index i.

    Runs in Sampler.apply_logits_processors among the non-argmax-invariant processors, after
    the grammar bitmask, allowed_token_ids, bad words, min_tokens and logit_bias, and before
    the presence/frequency/repetition penalties, temperature, min_p and top-k/top-p.
    """

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self._setup(vllm_config)
        self._warned = False

    def is_argmax_invariant(self) -> bool:
        """False: noise changes which token wins, so vLLM must apply it in greedy decoding too."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Follow the persistent batch (added, removed, moved) with vLLM's own dict bookkeeping."""
        process_dict_updates(self._slots, batch_update, self._new_slot)

    def _new_slot(self, params: Any, prompt_ids: list[int] | None, output_ids: list[int]) -> _Slot | None:
        """A request entering the batch: its plan and token lists, or None when it has no aim_* arguments."""
        plan = self._plan(params)
        return None if plan is None else _Slot(plan, list(prompt_ids or ()), output_ids)

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Modulate the rows of requests with a tier, in place (rows of other requests untouched)."""
        rows = self._rows(logits) if self._slots else []
        return serving.modulate_rows(logits, rows) if rows else logits

    def _rows(self, logits: torch.Tensor) -> list[tuple[int, serving.RowPlan, bytes]]:
        """Row i is persistent-batch index i; tokens are the request's prompt + live output list."""
        rows = []
        for index, slot in self._slots.items():
            if index < logits.shape[0]:
                prompt, output = slot.prompt_ids or [], slot.output_ids or []
                if slot.plan.keyed:
                    if output and output[-1] == _PLACEHOLDER:
                        self._warn_placeholder()
                    window = _window(prompt, output, slot.hasher.resume_at)
                    key = slot.hasher.key(*window, lambda: prompt + list(output))  # noqa: B023 - called at once
                else:
                    key = serving.step_key(len(output))
                rows.append((index, slot.plan, key))
        return rows

    def _warn_placeholder(self) -> None:
        """Async scheduling: the newest token is not known yet when the processor runs."""
        if not self._warned:
            self._warned = True
            logger.warning(
                "aim: keyed rows see vLLM's async-scheduling placeholder for the newest token; their noise stays "
                "repeatable but differs from `aim generate` (start vLLM with --no-async-scheduling, or use "
                "Model Runner V2)"
            )


class AimV2LogitsProcessor(_AimRequests, V2LogitsProcessor):
    """Model Runner V2's processor: slots set by add_request; rows map to slots through the step's LogitsContext.

    Runs in the sampler's processor list after the grammar bitmask, logit bias, penalties and bad
    words, and before thinking-budget forcing, temperature, min_p and top-k/top-p.
    """

    def __init__(self, vllm_config: Any, req_states: LogitsProcRequestState) -> None:
        self._setup(vllm_config)
        self._req_states = req_states

    def add_request(self, req_idx: int, sampling_params: Any) -> bool:
        """A request enters slot req_idx (the slot may hold an old request's state: overwrite it)."""
        plan = self._plan(sampling_params)
        if plan is None:
            self._slots.pop(req_idx, None)
            return False
        self._slots[req_idx] = _Slot(plan)
        return True

    def apply_staged_writes(self) -> None:
        """Nothing staged: aim keeps its per-request state on the host."""

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        """Modulate the rows of requests with a tier, in place (rows of other requests untouched)."""
        rows = self._rows(logits, ctx) if self._slots else []
        return serving.modulate_rows(logits, rows) if rows else logits

    def _rows(self, logits: torch.Tensor, ctx: LogitsContext) -> list[tuple[int, serving.RowPlan, bytes]]:
        """Rows map to request slots through ctx; token history is read from req_states."""
        slots_np = ctx.idx_mapping_np
        if logits.shape[0] != len(slots_np):  # several rows per request (speculative decoding, refused at start)
            slots = [int(s) for s in ctx.expanded_idx_mapping.tolist()]
        else:
            slots = [int(s) for s in slots_np]  # one row per request: the host copy, no device sync
        wanted = [(row, slot) for row, slot in enumerate(slots) if slot in self._slots]
        if not wanted:
            return []
        row_index = torch.tensor([row for row, _ in wanted], device=ctx.pos.device)
        # One transfer for positions and current tokens; history only for keyed rows.
        positions = ctx.pos.index_select(0, row_index).tolist()
        current = ctx.input_ids.index_select(0, row_index).tolist()
        prompt_lens = self._req_states.prompt_len.np
        keyed = [i for i, (_, slot) in enumerate(wanted) if self._slots[slot].plan.keyed]
        keys = self._keys(wanted, keyed, positions, current) if keyed else {}
        rows = []
        for i, (row, slot) in enumerate(wanted):
            plan = self._slots[slot].plan
            # An unkeyed step is negative in chunked prefill (the row's sample is discarded): step_key clamps it.
            key = keys[i] if plan.keyed else serving.step_key(int(positions[i]) + 1 - int(prompt_lens[slot]))
            rows.append((row, plan, key))
        return rows

    def _keys(
        self, wanted: list[tuple[int, int]], keyed: list[int], positions: list[int], current: list[int]
    ) -> dict[int, bytes]:
        """Keys of keyed rows: tokens 0..pos-1 from the slot's committed history, then the token fed at pos.

        Each row copies from the device only history[resume_at:pos], the tokens its hasher has
        not seen (plus the last one it has, to check), gathered per row, so a step costs O(new
        tokens) whatever the context lengths. Requests new to their hasher are gathered apart:
        their whole history would otherwise widen every other row's window.
        """
        tokens = self._req_states.all_token_ids.gpu  # [max_num_reqs, max_model_len]; sampled ids land here
        keys: dict[int, bytes] = {}
        fresh = {i for i in keyed if self._slots[wanted[i][1]].hasher.resume_at == 0}
        for group in ([i for i in keyed if i in fresh], [i for i in keyed if i not in fresh]):
            if not group:
                continue
            hashers = [self._slots[wanted[i][1]].hasher for i in group]
            starts = [min(h.resume_at, positions[i]) for h, i in zip(hashers, group)]
            windows = _gather_windows(tokens, [wanted[i][1] for i in group], starts, [positions[i] for i in group])
            for k, i in enumerate(group):
                slot, pos, fed = wanted[i][1], positions[i], current[i]

                def full(slot: int = slot, pos: int = pos, fed: int = fed) -> list[int]:
                    return [*tokens[slot, :pos].tolist(), fed]

                # A history shorter than what was hashed (pos < resume_at) does not extend it:
                # the hasher rehashes in full.
                keys[i] = hashers[k].key(windows[k] + [fed], starts[k], full)
        return keys


class AimLogitsProcessor(AimV2LogitsProcessor):
    """The class registered under `vllm.logits_processors`: builds the processor of the runner in use.

    vLLM loads one class from the group for both runners. The V2 loader accepts only V2
    subclasses (this is one); the V1 runner calls it as (vllm_config, device, is_pin_memory)
    without a type check, and gets an AimV1LogitsProcessor, chosen by the engine's own
    vllm_config.use_v2_model_runner rather than by the shape of the arguments.
    """

    def __new__(cls, vllm_config: Any, *args: Any, **kwargs: Any) -> Any:
        if not getattr(vllm_config, "use_v2_model_runner", True):
            return AimV1LogitsProcessor(vllm_config, *args, **kwargs)
        return super().__new__(cls)


# A virtual V1 subclass too (no V1 method is inherited), so vLLM's V1 FQCN loader
# (--logits-processors aim_cli.integrations.vllm:AimLogitsProcessor) accepts the same name.
V1LogitsProcessor.register(AimLogitsProcessor)


def _gather_windows(tokens: torch.Tensor, slots: list[int], starts: list[int], stops: list[int]) -> list[list[int]]:
    """tokens[slot, start:stop] for each row, in one gather and one device-to-host copy."""
    width = max(stop - start for start, stop in zip(starts, stops))
    if width <= 0:
        return [[] for _ in slots]
    device = tokens.device
    columns = torch.tensor(starts, device=device)[:, None] + torch.arange(width, device=device)[None, :]
    rows = torch.tensor(slots, device=device)[:, None]
    block = tokens[rows, columns.clamp_(max=tokens.shape[1] - 1)].tolist()
    return [row[: stop - start] for row, start, stop in zip(block, starts, stops)]


def _window(prompt: list[int], output: list[int], start: int) -> tuple[list[int], int]:
    """V1: history[start:] of prompt + output without building the whole list; (window, start)."""
    if start >= len(prompt):
        return output[start - len(prompt) :], start
    return prompt[start:] + list(output), start


__all__ = ["AimLogitsProcessor", "AimV1LogitsProcessor", "AimV2LogitsProcessor"]
