"""Per-request modulation for serving engines: request args -> tier -> noisy logits rows.

Engine-neutral (this module never imports vLLM): the vLLM adapter in aim_cli/integrations/vllm.py
only maps vLLM's batch bookkeeping onto these functions, so everything here is tested without
vLLM. Semantics are those of `aim generate`: noise on the raw next-token logits, focus words
resolved to token sets with the model's tokenizer, keyed noise keyed on prompt + generated
token ids with token_key (the same bytes, so the same draws, as `aim generate`).

Seeded requests differ from `aim generate` on one point, on purpose: a server batches requests
as they come, so a seeded request's noise at step t is drawn by the counter-based generator
from (seed, t) alone (see step_key), and never depends on the other requests in the batch.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aim_cli.errors import ProfileError
from aim_cli.modulation import KeyedNoise, Modulation, exclude_padding_, modulate, seed_keyed_noise, token_key
from aim_cli.plans import plan_tokens
from aim_cli.profile import Profile
from aim_cli.tier_policy import (
    ALLOW_AD_HOC_ENV,
    ALLOW_CLEAN_ENV,
    ARG_PREFIX,
    KEY_ENV,
    REQUEST_ARGS,
    TierPolicy,
    env_flag,
    has_aim_args,
    resolve,
)

# Server-side environment: where tier profiles live, and the secret for `aim_keyed: true`.
PROFILES_ENV = "AIM_PROFILES_DIR"
# Optional: the tier of requests that name none (unset: those are refused, or get the clean model
# where the operator allowed it with AIM_ALLOW_CLEAN).
DEFAULT_ENV = "AIM_DEFAULT_PROFILE"
PROFILE_SUFFIXES = (".yaml", ".yml")


def load_profile_dir(directory: str | Path) -> dict[str, Profile]:
    """Every *.yaml / *.yml profile of a directory, by file stem (e.g. free-tier.yaml -> 'free-tier')."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ProfileError(
            f"profiles directory {directory}: not a directory", "give a folder of tier profiles (*.yaml)"
        )
    profiles: dict[str, Profile] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in PROFILE_SUFFIXES and path.is_file():
            if path.stem in profiles:
                raise ProfileError(f"{path}: a second profile named '{path.stem}'", "keep one file per tier name")
            profiles[path.stem] = Profile.load(path)
    if not profiles:
        raise ProfileError(
            f"profiles directory {directory}: no .yaml profiles found", "add one file per tier, e.g. free-tier.yaml"
        )
    return profiles


_PROFILE_CACHE: dict[str, dict[str, Profile]] = {}


def server_profiles(environ: Mapping[str, str] | None = None) -> dict[str, Profile]:
    """The tiers of the directory named by AIM_PROFILES_DIR (read once per process); {} when unset."""
    directory = (os.environ if environ is None else environ).get(PROFILES_ENV, "")
    if not directory:
        return {}
    if directory not in _PROFILE_CACHE:
        _PROFILE_CACHE[directory] = load_profile_dir(directory)
    return _PROFILE_CACHE[directory]


def default_tier(profiles: Mapping[str, Profile], environ: Mapping[str, str] | None = None) -> str | None:
    """The tier named by AIM_DEFAULT_PROFILE (applied to requests without aim_* arguments), checked; None when unset."""
    name = (os.environ if environ is None else environ).get(DEFAULT_ENV, "")
    if not name:
        return None
    if name not in profiles:
        where = (
            f"available: {', '.join(sorted(profiles))}"
            if profiles
            else f"set {PROFILES_ENV}=DIR (aim serve --profiles DIR)"
        )
        raise ProfileError(f"{DEFAULT_ENV}={name}: no such tier", where)
    return name


def server_policy(environ: Mapping[str, str] | None = None) -> TierPolicy:
    """The admission policy of this process's server, from the environment `aim serve` sets.

    Without AIM_PROFILES_DIR there is no tier server (a plain vLLM, an offline vllm.LLM): requests
    choose freely. With it, requests get the folder's tiers only, unless AIM_ALLOW_AD_HOC_TIERS /
    AIM_ALLOW_CLEAN opt in (tier_policy says what each allows).
    """
    env = os.environ if environ is None else environ
    profiles = server_profiles(env)
    default = default_tier(profiles, env)
    if not env.get(PROFILES_ENV, ""):
        return TierPolicy.open()
    return TierPolicy(profiles, default, env_flag(env, ALLOW_AD_HOC_ENV), env_flag(env, ALLOW_CLEAN_ENV))


def request_profile(extra_args: Mapping[str, Any] | None, policy: TierPolicy) -> Profile | None:
    """The validated profile a request is served (None: the clean model, rows untouched); ProfileError if refused."""
    return resolve(extra_args, policy).profile


def pin_fresh_seed(extra_args: dict[str, Any], profile: Profile) -> int | None:
    """Give a request without seed or key its fresh seed at admission, written into its args.

    Drawn once, in the server's front end, so every worker process that applies the request's
    noise (tensor-parallel ranks each run the sampler) draws the same noise. Returns the seed.
    """
    if profile.seed is not None or profile.key_env is not None:
        return None
    seed = secrets.randbits(63)
    extra_args["aim_seed"] = seed
    return seed


def admit(extra_args: Mapping[str, Any] | None, policy: TierPolicy) -> dict[str, Any] | None:
    """Validate a request at admission; its args to keep: the default tier written in when it applies, a seed pinned.

    None for a request served the clean model (its args stay as they are).
    """
    profile = request_profile(extra_args, policy)
    if profile is None:
        return None
    args = dict(extra_args or {})
    if not has_aim_args(args):
        args["aim_profile"] = policy.default  # explicit, so the workers read the same tier
    pin_fresh_seed(args, profile)
    return args


class TokenHasher:
    """token_key of a request's growing token history, hashing each token once.

    A sha256 state covers every token but the newest (token_key is sha256 of the little-endian
    int64 bytes, so extending the state gives the same digest as hashing it all); each step feeds
    only the new tokens. The last hashed token is re-read and checked each step: a history that
    no longer extends what was hashed (preemption, a recycled slot, a placeholder replaced by its
    real token) is rehashed from the start.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        """Forget everything hashed (the next key hashes the full history)."""
        self._state = hashlib.sha256()
        self._length = 0  # tokens in the state
        self._last: int | None = None  # the last of them, checked against the next window

    @property
    def resume_at(self) -> int:
        """The first position a caller must pass next time (the last hashed token, to check it)."""
        return max(self._length - 1, 0)

    def key(self, window: Sequence[int], offset: int, full: Callable[[], Sequence[int]]) -> bytes:
        """token_key(history), given history[offset:] as `window` (offset <= resume_at); `full()` gives all of it."""
        total = offset + len(window)
        extends = (
            offset <= self.resume_at
            and self._length <= total - 1
            and (self._length == 0 or int(window[self._length - 1 - offset]) == self._last)
        )
        if not extends:
            self._reset()
            window, offset = full(), 0
            total = len(window)
        if total == 0:
            return token_key([])
        new = window[self._length - offset : total - 1 - offset]
        if len(new):
            self._state.update(np.asarray(new, dtype="<i8").tobytes())
            self._length = total - 1
            self._last = int(window[total - 2 - offset])
        digest = self._state.copy()
        digest.update(np.asarray([window[-1]], dtype="<i8").tobytes())
        return digest.digest()


@dataclass(frozen=True, eq=False)
class RowPlan:
    """How one request's rows are modulated: the Modulation, its noise, and how items are keyed.

    Compared by identity: rows share a plan (and so one modulate() call) exactly when they share
    the tier object, which PlanCache guarantees for equal profiles and keys.
    """

    modulation: Modulation
    noise: KeyedNoise
    keyed: bool  # True: keyed on prompt + generated ids; False: on (seed, step)
    seed: int | None = None
    # The tokenizer's size: output columns at and past it are padding (no token) and never win.
    num_tokens: int | None = None

    def item_key(self, token_ids: Sequence[int], prompt_len: int) -> bytes:
        """The content key of the next decision: token_key(prompt + output) or step_key(step)."""
        if self.keyed:
            return token_key(token_ids)
        return step_key(len(token_ids) - prompt_len)


def step_key(step: int) -> bytes:
    """Item key of a seeded request's step t (the number of tokens it has generated so far).

    Negative steps are rows still in (chunked) prefill, whose samples the engine discards: any key
    will do there, so they share step 0's.
    """
    return max(int(step), 0).to_bytes(8, "little", signed=False)


class PlanCache:
    """Resolves tiers against one model's tokenizer and output width, once per distinct profile."""

    # Requests bring their own seeds and sigmas: bound the cache (least recently used goes first).
    MAX_ENTRIES = 1024

    def __init__(self, tokenizer: Callable[[], Any], vocab_size: int | None = None) -> None:
        self._tokenizer = tokenizer  # loaded on first use
        self._vocab_size = vocab_size  # the logits' width; focus tokens must be columns of it
        self._plans: OrderedDict[Profile, RowPlan] = OrderedDict()

    def resolve(self, profile: Profile) -> RowPlan:
        """The RowPlan of a validated profile; a profile without seed or key gets a fresh seed each time."""
        fresh = profile.seed is None and profile.key_env is None
        if fresh:
            # Like `aim generate` without --seed: a new seed per request (not cached: each request its own stream).
            profile = replace(profile, seed=secrets.randbits(63))
        cached = self._plans.get(profile)
        if cached is not None:
            self._plans.move_to_end(profile)
            return cached
        # The same resolution as `aim generate` (focus words -> token sets, key from the environment).
        base = plan_tokens(profile, self._tokenizer())
        self._check_columns(profile, base.modulation)
        # A keyed plan's source is a KeyedNoise (profile.noise_source); a seeded one is re-keyed on (seed, step).
        noise = base.noise if isinstance(base.noise, KeyedNoise) else seed_keyed_noise(int(profile.seed or 0))
        plan = RowPlan(base.modulation, noise, keyed=base.keyed, seed=base.seed, num_tokens=base.num_tokens)
        if not fresh:
            self._plans[profile] = plan
            if len(self._plans) > self.MAX_ENTRIES:
                self._plans.popitem(last=False)
        return plan

    def _check_columns(self, profile: Profile, modulation: Modulation) -> None:
        """A focus token the output layer has no column for (tokenizer larger than the model) is a one-line error."""
        if self._vocab_size is None:
            return
        outside = sorted({t.class_id for t in modulation.targets if t.class_id >= self._vocab_size})
        if outside:
            words = ", ".join(str(f) for f in profile.focus)
            raise ProfileError(
                f"focus {words}: token id {outside[0]} is past the model's {self._vocab_size} output columns",
                "choose words the model can produce",
            )


def modulate_rows(logits: torch.Tensor, rows: Sequence[tuple[int, RowPlan, bytes]]) -> torch.Tensor:
    """Modulate the listed rows of (batch, vocab) logits in place; other rows are untouched.

    rows: (row index, plan, item key). Rows are grouped by plan (tier) and each group is one
    modulate() call; every row's draws come from its own key, so a row's noise depends only on
    its tier and key, never on which other rows share the batch or where it sits. Columns past
    the tokenizer are set to -inf in modulated rows: noise must not pick a padding column.
    """
    groups: dict[int, tuple[RowPlan, list[int], list[bytes]]] = {}
    for index, plan, key in rows:
        if plan.modulation.is_identity:
            continue
        group = groups.setdefault(id(plan), (plan, [], []))
        group[1].append(index)
        group[2].append(key)
    for plan, indices, keys in groups.values():
        at = torch.tensor(indices, device=logits.device, dtype=torch.long)
        noisy = modulate(logits.index_select(0, at), plan.modulation, plan.noise, class_dim=-1, item_keys=keys)
        logits.index_copy_(0, at, exclude_padding_(noisy, plan.num_tokens))
    return logits


def profile_summary(profiles: Mapping[str, Profile]) -> list[str]:
    """One line per tier for the server's start banner: name, sigma, focus, noise."""
    lines = []
    for name, profile in sorted(profiles.items()):
        noise = (
            f"keyed ({profile.key_env})"
            if profile.key_env
            else (f"seed {profile.seed}" if profile.seed is not None else "fresh seed")
        )
        focus = f", focus {', '.join(map(str, profile.focus))}" if profile.focus else ""
        lines.append(f"{name}: sigma {profile.sigma:g}{focus}, {noise}")
    return lines


__all__ = [
    "ARG_PREFIX",
    "DEFAULT_ENV",
    "KEY_ENV",
    "PROFILES_ENV",
    "REQUEST_ARGS",
    "PlanCache",
    "RowPlan",
    "TierPolicy",
    "TokenHasher",
    "admit",
    "default_tier",
    "has_aim_args",
    "load_profile_dir",
    "modulate_rows",
    "pin_fresh_seed",
    "profile_summary",
    "request_profile",
    "seed_keyed_noise",
    "server_policy",
    "server_profiles",
    "step_key",
]
