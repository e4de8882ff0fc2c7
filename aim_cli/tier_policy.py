"""Which modulation a request to a tier server gets: the one admission rule of every serving engine.

Engine-neutral and torch-free: the vLLM path (aim_cli.serving, aim_cli.integrations.vllm) and the
Ray path (aim_cli.engines.vision_tiers) both call `resolve` with a request's fields and the
server's `TierPolicy`, so the two servers refuse and serve exactly the same requests.

What a server guarantees by default (no opt-in):
- a request gets a tier of the server's folder, with only the options that tier leaves open
  (focus words on a tier without any, a seed on a fresh-seed tier);
- a request that names no tier gets the default tier under the same rule, so with a default tier
  no request gets less noise than it;
- no ad-hoc modulation (aim_sigma, aim_keyed, ... beyond a tier's open options) and never the
  clean model, unless the operator opted in (`allow_ad_hoc`, `allow_clean`); even then an ad-hoc
  request built on a tier (named, or the default) may only add noise to it, never take any away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from aim_cli.errors import ProfileError
from aim_cli.profile import REQUEST_NAMES, Profile, apply_overrides, check_focus_count, noise_key

# The per-request arguments (SamplingParams.extra_args, the OpenAI server's vllm_xargs, an image
# endpoint's query, form or JSON fields).
ARG_PREFIX = "aim_"
REQUEST_ARGS = ("aim_profile", "aim_sigma", "aim_focus", "aim_focus_sigma", "aim_seed", "aim_keyed")
# The secret of `aim_keyed: true` requests.
KEY_ENV = "AIM_NOISE_KEY"
# The operator's opt-ins, as `aim serve` hands them to the engine's processes.
ALLOW_AD_HOC_ENV = "AIM_ALLOW_AD_HOC_TIERS"
ALLOW_CLEAN_ENV = "AIM_ALLOW_CLEAN"
AD_HOC_FLAG = "--allow-ad-hoc-tiers"
CLEAN_FLAG = "--allow-clean"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _preview(value: Any, limit: int = 60) -> str:
    """A request value for an error message, cut short: a client may send megabytes."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def env_flag(environ: Mapping[str, str], name: str) -> bool:
    """An opt-in from the environment: 1/true/yes/on or 0/false/no/off (unset: off); anything else is an error."""
    raw = environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ProfileError(f"{name}={_preview(environ.get(name))}: expected 1 or 0", "unset it, or set it to 1 to opt in")


def is_clean(profile: Profile | None) -> bool:
    """True when a profile changes no logit: no utility noise and no focus noise."""
    return profile is None or (profile.sigma == 0 and (not profile.focus or profile.effective_focus_sigma == 0))


@dataclass(frozen=True)
class TierPolicy:
    """What a server serves: its folder's tiers, the default tier and the operator's opt-ins.

    `enforced` False is a vLLM process without a tiers folder (a plain `vllm serve` or an offline
    vllm.LLM where aim is installed): nothing to protect, so requests choose freely.
    """

    tiers: Mapping[str, Profile] = field(default_factory=dict)
    default: str | None = None
    allow_ad_hoc: bool = False
    allow_clean: bool = False
    enforced: bool = True

    def __post_init__(self) -> None:
        if self.default is not None and self.default not in self.tiers:
            where = f"available: {', '.join(sorted(self.tiers))}" if self.tiers else "give a folder of tiers"
            raise ProfileError(f"default tier '{self.default}': no such tier", where)
        if self.default is not None and self.allow_clean:
            # A default tier is a floor: a clean model beside it would be the one way under it.
            raise ProfileError(
                f"{CLEAN_FLAG} and a default tier ('{self.default}') exclude each other",
                "drop one; to serve the clean model to some requests, add a tier with sigma 0 to the folder",
            )

    @classmethod
    def open(cls, tiers: Mapping[str, Profile] | None = None) -> TierPolicy:
        """No tier server: any tier of `tiers`, ad-hoc modulation and the clean model, for whoever asks."""
        return cls(dict(tiers or {}), None, allow_ad_hoc=True, allow_clean=True, enforced=False)

    def guarantees(self) -> list[str]:
        """The start-up lines that say what the server serves (its defaults and the opt-ins that are on)."""
        if not self.enforced:
            return ["any request may choose any modulation, or none (no tier folder)"]
        lines = []
        if self.default is not None:
            lines.append(f"requests that name no tier get tier '{self.default}', and never less noise than it")
        elif self.allow_clean:
            lines.append(f"requests that name no tier get the clean model ({CLEAN_FLAG} is on)")
        else:
            lines.append(f"requests that name no tier are refused (no --default-profile; {CLEAN_FLAG} is off)")
        if self.allow_ad_hoc:
            floor = (
                f"never below tier '{self.default}'"
                if self.default
                else "any sigma, none included only with " + CLEAN_FLAG
            )
            lines.append(f"ad-hoc tiers: on ({AD_HOC_FLAG}; a request may add noise to a tier; {floor})")
        else:
            lines.append(
                f"ad-hoc tiers: off (aim_sigma, aim_keyed, ... beyond a tier's open options are refused; {AD_HOC_FLAG})"
            )
        if self.allow_clean:
            lines.append(f"clean model: on ({CLEAN_FLAG})")
        else:
            lines.append(f"clean model: off (only a tier of the folder with sigma 0 serves it; {CLEAN_FLAG})")
        return lines


@dataclass(frozen=True)
class Resolution:
    """What a request is served: the profile (None: the clean model) and the folder tier it comes from.

    `tier` is the tier the answer names: the folder tier with only its open options applied, None
    for ad-hoc modulation and the clean model. A field for what a tier carries (e.g. its
    certificate) belongs here, next to `tier`.
    """

    profile: Profile | None
    tier: str | None = None
    ad_hoc: bool = False


def aim_fields(fields: Mapping[Any, Any] | None) -> dict[str, Any]:
    """The aim_* fields of a request, checked: names in lower case and known, or a one-line error."""
    args: dict[str, Any] = {}
    for key, value in (fields or {}).items():
        name = str(key)
        if name[: len(ARG_PREFIX)].lower() != ARG_PREFIX:
            continue
        if name not in REQUEST_ARGS:
            lowered = name.lower()
            hint = f"write it {lowered}" if lowered in REQUEST_ARGS else f"allowed: {', '.join(REQUEST_ARGS)}"
            raise ProfileError(f"unknown request argument {_preview(name)}", hint)
        args[name] = value
    return args


def has_aim_args(fields: Mapping[Any, Any] | None) -> bool:
    """True when a request carries any aim_* field (in any case: AIM_SIGMA is refused, not ignored)."""
    return bool(fields) and any(str(key)[: len(ARG_PREFIX)].lower() == ARG_PREFIX for key in fields or {})


def _focus_words(value: Any) -> list[str]:
    """aim_focus: one 'WORD[:up|down]' string or a list of them."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ProfileError(f"aim_focus: expected 'WORD[:up|down]' or a list of them, got {_preview(value)}")
    check_focus_count(len(items), "aim_focus")  # before looking at each item: a client may send millions
    if not all(isinstance(item, str) for item in items):
        raise ProfileError(f"aim_focus: expected 'WORD[:up|down]' or a list of them, got {_preview(value)}")
    return list(items)


def fixed_by(tier: Profile) -> dict[str, str]:
    """The request arguments a tier fixes (argument -> what it fixes): the rest are its open options.

    A tier fixes its sigma and noise mode; its seed unless it draws a fresh one per request (then
    a request's seed changes nothing a client could not get by asking again); its focus if it has one.
    """
    fixed = {"aim_sigma": "sigma", "aim_keyed": "noise"}
    if tier.seed is not None or tier.key_env is not None:
        fixed["aim_seed"] = "noise"
    if tier.focus:
        fixed.update(aim_focus="focus", aim_focus_sigma="focus")
    return fixed


def weakening(profile: Profile, floor: Profile) -> str | None:
    """Why `profile` is less noise than `floor` (one phrase), or None when it is at least as much.

    Less noise: a lower sigma; other focus words or focus sigma than a tier with focus; or noise a
    client could vary and average over (a seed where the floor is keyed, another seed than its own).
    """
    if not profile.sigma >= floor.sigma:  # written so that a NaN could never pass
        return f"sigma {profile.sigma:g} is below its sigma {floor.sigma:g}"
    if floor.focus and (profile.focus != floor.focus or profile.focus_sigma != floor.focus_sigma):
        return "it fixes its focus"
    if floor.key_env is not None and profile.key_env is None:
        return "its noise is keyed"
    if floor.seed is not None and profile.key_env is None and profile.seed != floor.seed:
        return "it fixes its seed"
    return None


def _tier_name(name: str, named: bool) -> str:
    """How messages name the base tier: 'free-tier', or 'free-tier' (this server's default)."""
    return f"tier '{name}'" if named else f"tier '{name}' (this server's default)"


def _build(base: Profile, args: Mapping[str, Any], where: str) -> Profile:
    """The base profile with the request's arguments applied: the one merge and range checks of the flags."""
    if "aim_seed" in args and args.get("aim_keyed") in (True, "true"):
        raise ProfileError("aim_seed and aim_keyed exclude each other", "keep one")
    for name in ("aim_sigma", "aim_focus_sigma", "aim_seed"):
        if name in args and args[name] is None:  # null is no value, and not "leave it as it is"
            raise ProfileError(f"{name}: expected a number, got None")
    profile = apply_overrides(
        base,
        sigma=args.get("aim_sigma"),
        focus=_focus_words(args["aim_focus"]) if "aim_focus" in args else None,
        focus_sigma=args.get("aim_focus_sigma"),
        seed=args.get("aim_seed"),
        names=REQUEST_NAMES,
    )
    keyed = args.get("aim_keyed")
    if keyed is not None:
        # vLLM's OpenAI server turns JSON true/false in vllm_xargs into 1/0 (its values are str | int | float).
        if keyed not in (True, False, "true", "false") or isinstance(keyed, float):
            raise ProfileError(f"aim_keyed: expected true or false, got {_preview(keyed)}")
        if keyed in (True, "true"):
            profile = replace(profile, seed=None, key_env=KEY_ENV)
    if profile.key_env is not None:
        # Checked at admission, not mid-batch; noise_key is the one reader of a keyed profile's secret.
        noise_key(profile, where)
    return profile


def resolve(fields: Mapping[Any, Any] | None, policy: TierPolicy) -> Resolution:
    """The modulation a request gets under the server's policy, or ProfileError (one line) when it may not get one.

    `fields` are the request's fields (only aim_* ones are read). A request naming no tier is a
    request for the default tier; without one, for the clean model. Fields beyond the base tier's
    open options make an ad-hoc tier: refused unless the policy allows them, and then only when
    they add noise to the base tier.
    """
    args = aim_fields(fields)
    if "aim_profile" in args:
        name = args["aim_profile"]
        if not policy.tiers:
            raise ProfileError(
                "aim_profile: this server has no tiers",
                "start it with a folder of tiers (aim serve --profiles DIR: AIM_PROFILES_DIR)",
            )
        if not isinstance(name, str) or name not in policy.tiers:
            raise ProfileError(
                f"aim_profile: unknown tier {_preview(name)}", f"available: {', '.join(sorted(policy.tiers))}"
            )
        base_name: str | None = name
        named = True
    else:
        base_name, named = policy.default, False
    options = {key: value for key, value in args.items() if key != "aim_profile"}
    if base_name is None:
        if not options:
            if policy.allow_clean:
                return Resolution(None)
            raise ProfileError(
                "the request names no tier, and this server has no default tier and serves no clean model",
                f"give aim_profile (one of: {', '.join(sorted(policy.tiers))})",
            )
        if not policy.allow_ad_hoc:
            raise ProfileError(
                f"{sorted(options)[0]}: this server serves only its tiers",
                f"give aim_profile (one of: {', '.join(sorted(policy.tiers)) or 'none'}); "
                f"ad-hoc modulation needs the server started with {AD_HOC_FLAG}",
            )
        if not ({"aim_sigma", "aim_focus"} & set(options)):
            raise ProfileError("the request sets no modulation", "give aim_profile, aim_sigma or aim_focus")
        profile = _build(Profile(source="request"), options, "aim_keyed")
        if is_clean(profile) and not policy.allow_clean:
            raise ProfileError(
                "the request asks for no noise, and this server serves no clean model",
                f"give a sigma > 0, or aim_profile; the clean model needs the server started with {CLEAN_FLAG}",
            )
        return Resolution(profile, None, ad_hoc=True)
    base = policy.tiers[base_name]
    which = _tier_name(base_name, named)
    closed = [key for key in options if key in fixed_by(base)]
    if closed and not policy.allow_ad_hoc:
        what = fixed_by(base)[closed[0]]
        raise ProfileError(
            f"{closed[0]}: {which} fixes its own {what}",
            f"drop {closed[0]}, or ask for another tier" if named else f"drop {closed[0]}, or give aim_profile",
        )
    profile = _build(base, options, which)
    if closed:
        reason = weakening(profile, base)
        if reason is None and base.key_env is not None and options.get("aim_keyed") in (False, "false"):
            reason = "its noise is keyed"  # served keyed anyway, but the request asked for less: say so
        if reason is not None:
            raise ProfileError(
                f"{closed[0]}: less noise than {which}: {reason}", "a request may only add noise to a tier"
            )
    return Resolution(profile, None if closed else base_name, ad_hoc=bool(closed))


__all__ = [
    "AD_HOC_FLAG",
    "ALLOW_AD_HOC_ENV",
    "ALLOW_CLEAN_ENV",
    "ARG_PREFIX",
    "CLEAN_FLAG",
    "KEY_ENV",
    "REQUEST_ARGS",
    "Resolution",
    "TierPolicy",
    "aim_fields",
    "env_flag",
    "fixed_by",
    "has_aim_args",
    "is_clean",
    "resolve",
    "weakening",
]
