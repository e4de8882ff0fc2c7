"""vLLM logits-processor plugin: aim tiers per request, selected with SamplingParams.extra_args.

Registered under vLLM's entry-point group `vllm.logits_processors` (pyproject.toml), so every
vLLM server in an environment with aim-cli[vllm] loads it; requests without aim_* arguments are
untouched. A request selects a tier with `extra_args` (the OpenAI server's `vllm_xargs`):

    {"aim_profile": "free-tier"}                   a profile of the directory in AIM_PROFILES_DIR
    {"aim_sigma": 2.0, "aim_seed": 7}              explicit settings (they override aim_profile)
    {"aim_focus": ["cat:up"], "aim_focus_sigma": 2, "aim_keyed": true}

This module only adapts vLLM's batch bookkeeping; what a request means and how its rows are
modulated lives in aim_cli/serving.py (tested without vLLM).

vLLM 0.33 has two model runners with two processor interfaces that share the entry-point group:
Model Runner V2 (the default; vllm.v1.worker.gpu.sample.logits_processor) and the V1 runner
(vllm.v1.sample.logits_processor, used with VLLM_USE_V2_MODEL_RUNNER=0 or where V2 lacks a
feature). AimLogitsProcessor implements both, so the one registered class loads under either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor

from aim_cli import serving
from aim_cli.errors import AimError

try:  # Model Runner V2's interface (vLLM >= 0.32)
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext
    from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor

    _BASES: tuple[type, ...] = (V2LogitsProcessor, V1LogitsProcessor)
except ImportError:  # older vLLM: the V1 interface only
    LogitsContext = Any  # type: ignore[misc,assignment]
    _BASES = (V1LogitsProcessor,)

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


@dataclass
class _Slot:
    """A request occupying a batch slot: its tier plan and (V1 runner) its token lists."""

    plan: serving.RowPlan
    prompt_ids: list[int] | None = None
    output_ids: list[int] | None = None  # V1: a live reference, vLLM appends each new token


class AimLogitsProcessor(*_BASES):  # type: ignore[misc]
    """aim's utility/focus noise on the raw logits of the requests that ask for it."""

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        """Reject invalid aim_* arguments at admission (HTTP 400 with the message); pin a fresh seed if none."""
        try:
            profile = serving.request_profile(sampling_params.extra_args, serving.server_profiles())
        except AimError as exc:
            raise ValueError(f"aim: {exc}") from None
        if profile is not None:
            serving.pin_fresh_seed(sampling_params.extra_args, profile)

    def __init__(self, vllm_config: Any, state: Any, is_pin_memory: bool | None = None) -> None:
        # V1 runner: (vllm_config, device, is_pin_memory); V2 runner: (vllm_config, req_states).
        self._req_states = None if is_pin_memory is not None else state
        self._plans = serving.PlanCache(_tokenizer_loader(vllm_config))
        self._profiles = serving.server_profiles()
        # Tiers with focus words resolve now, so an unencodable word stops the server at start.
        for profile in self._profiles.values():
            if profile.focus:
                self._plans.resolve(profile)
        self._slots: dict[int, _Slot] = {}
        self._warned = False

    def _plan(self, sampling_params: Any) -> serving.RowPlan | None:
        """The plan of a request's aim_* arguments (None: untouched); validate_params already checked them."""
        profile = serving.request_profile(getattr(sampling_params, "extra_args", None), self._profiles)
        return None if profile is None else self._plans.resolve(profile)

    # ---- V1 runner interface -------------------------------------------------------------

    def is_argmax_invariant(self) -> bool:
        """False: noise changes which token wins, so vLLM must apply it in greedy decoding too."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Follow the persistent batch: removed, then added, then moved (vLLM's documented order)."""
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._slots.pop(index, None)
        for index, params, prompt_ids, output_ids in batch_update.added:
            plan = self._plan(params)
            if plan is None:
                self._slots.pop(index, None)  # a new request may replace an aim one at this index
            else:
                self._slots[index] = _Slot(plan, list(prompt_ids or ()), output_ids)
        for first, second, direction in batch_update.moved:
            a, b = self._slots.pop(first, None), self._slots.pop(second, None)
            if a is not None:
                self._slots[second] = a
            if direction == MoveDirectionality.SWAP and b is not None:
                self._slots[first] = b

    # ---- V2 runner interface -------------------------------------------------------------

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

    # ---- both ----------------------------------------------------------------------------

    def apply(self, logits: torch.Tensor, ctx: LogitsContext | None = None) -> torch.Tensor:
        """Modulate the rows of requests with a tier, in place (rows of other requests untouched)."""
        if not self._slots:
            return logits
        rows = self._rows_v1(logits) if ctx is None else self._rows_v2(logits, ctx)
        return serving.modulate_rows(logits, rows) if rows else logits

    def _rows_v1(self, logits: torch.Tensor) -> list[tuple[int, serving.RowPlan, bytes]]:
        """V1: row i is persistent-batch index i; tokens are the request's prompt + live output list."""
        rows = []
        for index, slot in self._slots.items():
            if index < logits.shape[0]:
                prompt = slot.prompt_ids or []
                tokens = prompt + list(slot.output_ids or ())
                if slot.plan.keyed and tokens and tokens[-1] == _PLACEHOLDER:
                    self._warn_placeholder()
                rows.append((index, slot.plan, slot.plan.item_key(tokens, len(prompt))))
        return rows

    def _warn_placeholder(self) -> None:
        """V1 runner with async scheduling: the newest token is not known yet when the processor runs."""
        if not self._warned:
            self._warned = True
            logger.warning(
                "aim: keyed rows see vLLM's async-scheduling placeholder for the newest token; their noise stays "
                "repeatable but differs from `aim generate` (start vLLM with --no-async-scheduling, or use Model Runner V2)"
            )

    def _rows_v2(self, logits: torch.Tensor, ctx: LogitsContext) -> list[tuple[int, serving.RowPlan, bytes]]:
        """V2: rows map to request slots through ctx; token history is read from req_states."""
        slots_np = ctx.idx_mapping_np
        if logits.shape[0] != len(slots_np):  # speculative decoding: several rows per request
            slots = [int(s) for s in ctx.expanded_idx_mapping.tolist()]
        else:
            slots = [int(s) for s in slots_np]
        wanted = [(row, slot) for row, slot in enumerate(slots) if slot in self._slots]
        if not wanted:
            return []
        row_index = torch.tensor([row for row, _ in wanted], device=ctx.pos.device)
        # One transfer for positions and current tokens; history only for keyed rows.
        positions = ctx.pos.index_select(0, row_index).tolist()
        current = ctx.input_ids.index_select(0, row_index).tolist()
        states = self._req_states
        prompt_lens = states.prompt_len.np
        keyed = [i for i, (_, slot) in enumerate(wanted) if self._slots[slot].plan.keyed]
        history: dict[int, list[int]] = {}
        if keyed:
            width = max(positions[i] for i in keyed)
            tokens = states.all_token_ids.gpu  # [max_num_reqs, max_model_len]; sampled ids are written here each step
            index = torch.tensor([wanted[i][1] for i in keyed], device=tokens.device)
            block = tokens[:, :width].index_select(0, index).tolist()
            history = {i: block[k][: positions[i]] for k, i in enumerate(keyed)}
        rows = []
        for i, (row, slot) in enumerate(wanted):
            plan = self._slots[slot].plan
            prompt_len = int(prompt_lens[slot])
            if plan.keyed:
                # Tokens 0..pos: committed history before this row's position, then the token fed at it.
                key = plan.item_key(history[i] + [int(current[i])], prompt_len)
            else:
                key = serving.step_key(int(positions[i]) + 1 - prompt_len)
            rows.append((row, plan, key))
        return rows


__all__ = ["AimLogitsProcessor"]
