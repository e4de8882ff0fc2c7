"""Modulation profiles: YAML schema, validation with file/key/line, command-line overrides."""

from __future__ import annotations

import math
import numbers
import os
import secrets
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from aim_cli import limits, plain_yaml
from aim_cli.certificates import Certificate, CertificateWarning, certificate_problem, edited_hint
from aim_cli.directions import BOOST, SUPPRESS, direction_name
from aim_cli.errors import AimError, ProfileError
from aim_cli.io import read_text_file

if TYPE_CHECKING:  # modulation imports torch: loaded only when noise is made, so `aim --help` stays fast
    from aim_cli.modulation import NoiseSource

PROFILE_VERSION = 1
# Used when targets are named but no focus sigma is given: a moderate boost (DESIGN.md example).
DEFAULT_FOCUS_SIGMA = 2.0
_DIRECTIONS = {"up": BOOST, "boost": BOOST, "+": BOOST, "down": SUPPRESS, "suppress": SUPPRESS, "-": SUPPRESS}
_SCHEMA: dict[str, Any] = {
    "version": int,
    "name": str,
    "description": str,
    "utility": {"sigma": float},
    "focus": {"sigma": float, "targets": list},
    "noise": {"seed": int, "key_env": str},
    "certificate": dict,  # validated by aim_cli.certificates.Certificate.from_mapping
}
_TARGET_KEYS = {"class": str, "direction": str}
# A profile must say something about modulation; an empty one would silently serve the clean model.
MODULATION_KEYS = ("utility", "focus")
MAX_PROFILE_BYTES = 1024 * 1024
MAX_FOCUS_CHARS = 256
# Noise reaches ~6 sigma over many draws; 6 * 1e4 stays below float16's 65504, and at sigma 1e4
# every model's ranking is random (logit spreads are tens, not thousands).
MAX_SIGMA = 1e4
# Seeds feed torch generators (which take 64 bits) and get small offsets added: keep headroom.
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class FocusRequest:
    """A focus target as the user named it, before it is resolved against a model's labels."""

    name: str
    direction: int = BOOST
    # Where the request came from (a file, line and key, or a flag), for errors about the name.
    origin: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.name}:{direction_name(self.direction)}"


@dataclass(frozen=True)
class Profile:
    """A validated modulation profile (all fields optional, defaults mean no modulation)."""

    name: str | None = None
    description: str | None = None
    sigma: float = 0.0
    focus_sigma: float | None = None
    focus: tuple[FocusRequest, ...] = ()
    seed: int | None = None
    key_env: str | None = None
    source: str | None = field(default=None, compare=False)
    # What `aim calibrate --write-profile` certified for these settings (None: an uncertified tier).
    certificate: Certificate | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Direct construction (the Python API) gets the same range checks as files and flags;
        # focus may be given as 'NAME[:up|down]' strings, like --focus.
        object.__setattr__(self, "sigma", check_sigma(self.sigma, "sigma", "Profile(sigma=...)"))
        if self.focus_sigma is not None:
            object.__setattr__(
                self, "focus_sigma", check_sigma(self.focus_sigma, "focus sigma", "Profile(focus_sigma=...)")
            )
        if self.seed is not None:
            check_seed(self.seed, "Profile(seed=...)")
        if self.seed is not None and self.key_env is not None:
            raise ProfileError("Profile(seed=..., key_env=...): seed and key_env exclude each other", "keep one")
        focus = one_or_many(self.focus, "Profile(focus=...)")
        check_focus_count(len(focus), "Profile(focus=...)")
        object.__setattr__(self, "focus", tuple(_focus_request(item) for item in focus))
        _refuse_opposite_directions(self.focus)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read and validate a YAML profile file (errors name the file, key and line)."""
        path = Path(path)
        source = str(path)
        text = read_text_file(path, MAX_PROFILE_BYTES, ProfileError, "profile")
        try:
            data, lines = plain_yaml.load(text)
        except plain_yaml.PlainYAMLError as exc:
            where = f"{source}, line {exc.line}" if exc.line else source
            raise ProfileError(f"{where}: {exc}", "profiles are plain YAML: write each value out") from None
        return _from_mapping({} if data is None else data, lines, source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "profile dict") -> Profile:
        """Validate a mapping with the YAML schema (same checks and messages as Profile.load)."""
        return _from_mapping(data, {}, source)

    def with_overrides(
        self,
        sigma: float | None = None,
        focus: str | Iterable[str] | None = None,
        focus_sigma: float | None = None,
        seed: int | None = None,
    ) -> Profile:
        """This profile with the given values taking precedence (as flags do); a str focus is one target."""
        targets = None if focus is None else [_focus_text(item) for item in one_or_many(focus, "focus")]
        return apply_overrides(self, sigma, targets, focus_sigma, seed)

    def to_dict(self) -> dict[str, Any]:
        """The profile as a YAML-schema mapping: Profile.from_dict(p.to_dict()) == p."""
        data: dict[str, Any] = {"version": PROFILE_VERSION}
        data.update(
            {key: value for key, value in (("name", self.name), ("description", self.description)) if value is not None}
        )
        data["utility"] = {"sigma": self.sigma}
        if self.focus or self.focus_sigma is not None:
            focus: dict[str, Any] = {} if self.focus_sigma is None else {"sigma": self.focus_sigma}
            if self.focus:
                focus["targets"] = [{"class": f.name, "direction": direction_name(f.direction)} for f in self.focus]
            data["focus"] = focus
        if self.seed is not None:
            data["noise"] = {"seed": self.seed}
        elif self.key_env is not None:
            data["noise"] = {"key_env": self.key_env}
        if self.certificate is not None:
            data["certificate"] = self.certificate.to_mapping()
        return data

    @property
    def certificate_problem(self) -> str | None:
        """Why the certificate does not describe these settings (edited or overridden), or None."""
        if self.certificate is None:
            return None
        return certificate_problem(self.to_dict(), self.certificate)

    @property
    def effective_focus_sigma(self) -> float:
        """The focus std in force: the given one, or the default when targets are named."""
        if self.focus_sigma is not None:
            return self.focus_sigma
        return DEFAULT_FOCUS_SIGMA if self.focus else 0.0


def _where(source: str, key: str, line: int | None) -> str:
    """Format the location of a profile problem."""
    return f"{source}, line {line}, key '{key}'" if line else f"{source}, key '{key}'"


def _is_bool(value: Any) -> bool:
    """Python's bool or numpy's (numpy is looked up, not imported: `aim --help` must stay fast)."""
    numpy = sys.modules.get("numpy")
    return isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_))


def is_real_number(value: Any) -> bool:
    """A real number other than a bool: Python int/float and numpy scalars alike (numbers.Real)."""
    return isinstance(value, numbers.Real) and not _is_bool(value)


def is_integer_number(value: Any) -> bool:
    """An integer other than a bool: Python int and numpy integer scalars alike (numbers.Integral)."""
    return isinstance(value, numbers.Integral) and not _is_bool(value)


def one_or_many(value: Any, what: str, error: type[AimError] = ProfileError) -> Sequence[Any]:
    """An argument that takes one item or many, as a sequence: the one normalisation of the API.

    Text, bytes, numbers, mappings, images and 0-d arrays are ONE item (a str is never split
    into characters); lists, tuples, arrays and tensors (along dim 0) and other ordered
    iterables are many. Sets are refused: their order, which fixes each item's noise, varies.
    """
    if value is None:
        return ()
    if isinstance(value, (set, frozenset)):
        raise error(f"{what}: a set has no order", "give a list or tuple (the order fixes each item's noise)")
    if isinstance(value, (str, bytes, bytearray, Mapping)) or getattr(value, "ndim", None) == 0:
        return (value,)  # (a 0-d tensor or array is one value, and cannot be iterated)
    if isinstance(value, Sequence) or hasattr(value, "ndim") or _indexable(value):
        return cast(Sequence[Any], value)  # indexable with a length already: no copy of a long list
    return tuple(value) if isinstance(value, Iterable) else (value,)


def _indexable(value: Any) -> bool:
    """A sequence by protocol (length and indexing) that does not register as collections.abc.Sequence."""
    return hasattr(value, "__len__") and hasattr(value, "__getitem__")


def check_sigma(value: Any, key: str, where: str) -> float:
    """A sigma must be a number in [0, MAX_SIGMA] (the one range check for flags and YAML)."""
    if not is_real_number(value):
        raise ProfileError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise ProfileError(f"{where}: {key} must be a finite number >= 0, got {value}")
    if number > MAX_SIGMA:
        raise ProfileError(
            f"{where}: {key} {number:g} is above the maximum {MAX_SIGMA:g}",
            "every ranking is random long before that, and larger noise overflows half-precision logits",
        )
    return number


def check_seed(value: Any, where: str) -> int:
    """A seed must be a non-negative integer (the one range check for flags and YAML)."""
    if not is_integer_number(value) or not 0 <= value <= MAX_SEED:
        raise ProfileError(f"{where}: expected an integer from 0 to {MAX_SEED} (2^63 - 1), got {value!r}")
    return int(value)


def parse_direction(text: str, where: str) -> int:
    """Turn 'up'/'down' (or boost/suppress, +/-) into +1/-1."""
    direction = _DIRECTIONS.get(str(text).strip().lower())
    if direction is None:
        raise ProfileError(f"{where}: direction must be 'up' or 'down', got {text!r}")
    return direction


def _focus_request(item: Any) -> FocusRequest:
    """A focus target given to Profile(): a FocusRequest, 'NAME[:up|down]' or a class id."""
    if isinstance(item, FocusRequest):
        return item
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise ProfileError(f"Profile(focus=...): expected 'NAME[:up|down]' or a class id, got {item!r}")
    return replace(parse_focus(str(item)), origin="Profile(focus=...)")


def check_focus_count(count: int, where: str) -> None:
    """At most limits.FOCUS_TARGETS focus targets: each costs a draw per decision (and a lookup per word)."""
    bound = limits.FOCUS_TARGETS
    if count > bound.value():
        raise ProfileError(f"{where}: {count:,} focus targets", bound.hint())


def _refuse_opposite_directions(requests: Sequence[FocusRequest]) -> None:
    """One name both up and down (`ring:up` with `ring:down`) is refused before any model loads."""
    seen: dict[str, FocusRequest] = {}
    for request in requests:
        first = seen.setdefault(request.name.strip().lower(), request)
        if first.direction != request.direction:
            where = " and ".join(r.origin or str(r) for r in (first, request))
            raise ProfileError(f"{where}: focus class '{request.name}' is both up and down", "give it one direction")


def _focus_text(item: Any) -> str:
    """A focus override as --focus text: 'NAME[:up|down]', a class id or a FocusRequest."""
    if isinstance(item, FocusRequest):
        return str(item)
    if isinstance(item, bool) or not isinstance(item, (str, int)):
        raise ProfileError(f"focus: expected 'NAME[:up|down]' or a class id, got {item!r}")
    return str(item)


def parse_focus(text: str, option: str = "--focus") -> FocusRequest:
    """Parse a `NAME[:up|down]` value of the --focus flag (or of `option`, e.g. a request argument)."""
    if len(text) > MAX_FOCUS_CHARS:  # a class name or a word, never a document
        raise ProfileError(
            f"{option}: a focus target of {len(text):,} characters", f"name a class or word (at most {MAX_FOCUS_CHARS})"
        )
    name, _, direction = text.partition(":")
    where = f"{option} {text!r}"
    if not name.strip():
        raise ProfileError(f"{where}: expected NAME or NAME:up or NAME:down")
    return FocusRequest(name.strip(), parse_direction(direction or "up", where), origin=where)


def _validate(data: dict[str, Any], lines: dict[str, int], source: str) -> Profile:
    """Check a loaded YAML mapping against the schema and build a Profile."""
    _check_keys(data, lines, source)
    _check_header(data, lines, source)
    utility = data.get("utility") or {}
    focus = data.get("focus") or {}
    sigma = 0.0
    if "sigma" in utility:
        sigma = check_sigma(utility["sigma"], "sigma", _where(source, "utility.sigma", lines.get("utility.sigma")))
    focus_sigma = None
    if "sigma" in focus:
        focus_sigma = check_sigma(focus["sigma"], "sigma", _where(source, "focus.sigma", lines.get("focus.sigma")))
    targets = _focus_targets(focus.get("targets", []), lines, source)
    seed, key_env = _noise_settings(data.get("noise") or {}, lines, source)
    certificate = None
    if "certificate" in data:
        certificate = Certificate.from_mapping(data["certificate"], source, lines)
    return Profile(
        name=data.get("name"),
        description=data.get("description"),
        sigma=sigma,
        focus_sigma=focus_sigma,
        focus=targets,
        seed=seed,
        key_env=key_env,
        source=source,
        certificate=certificate,
    )


def _check_keys(data: dict[str, Any], lines: dict[str, int], source: str) -> None:
    """Every top-level key, and every key of a section, is one the schema names."""
    for key, value in data.items():
        if key not in _SCHEMA:
            raise ProfileError(
                f"{_where(source, key, lines.get(key))}: unknown key",
                f"allowed: {', '.join(_SCHEMA)}",
            )
        expected = _SCHEMA[key]
        if isinstance(expected, dict) and key != "certificate":
            if not isinstance(value, dict):
                raise ProfileError(f"{_where(source, key, lines.get(key))}: expected a mapping")
            for sub in value:
                if sub not in expected:
                    path = f"{key}.{sub}"
                    raise ProfileError(
                        f"{_where(source, path, lines.get(path))}: unknown key",
                        f"allowed under '{key}': {', '.join(expected)}",
                    )


def _check_header(data: dict[str, Any], lines: dict[str, int], source: str) -> None:
    """The version, some modulation (a profile without one would serve the clean model), text name and description."""
    version = data.get("version", PROFILE_VERSION)
    if isinstance(version, bool) or version != PROFILE_VERSION:
        found = f"the text {version!r}" if isinstance(version, str) else repr(version)
        raise ProfileError(
            f"{_where(source, 'version', lines.get('version'))}: unsupported version {found}",
            f"write version: {PROFILE_VERSION} (the number, unquoted)",
        )
    if not any(key in data for key in MODULATION_KEYS):
        raise ProfileError(
            f"{source}: the profile sets no modulation, so it would serve the clean model",
            "add utility: {sigma: ...} (sigma 0 for a deliberate clean tier) or focus targets",
        )
    for key in ("name", "description"):
        if key in data and not isinstance(data[key], str):
            raise ProfileError(f"{_where(source, key, lines.get(key))}: expected text")


def _focus_targets(raw_targets: Any, lines: dict[str, int], source: str) -> tuple[FocusRequest, ...]:
    """focus.targets: each a `NAME[:up|down]` string or a {class, direction} mapping."""
    if not isinstance(raw_targets, list):
        raise ProfileError(f"{_where(source, 'focus.targets', lines.get('focus.targets'))}: expected a list")
    targets = []
    for i, item in enumerate(raw_targets):
        path = f"focus.targets[{i}]"
        where = _where(source, path, lines.get(path))
        if isinstance(item, str):
            targets.append(replace(parse_focus(item), origin=where))
            continue
        if not isinstance(item, dict) or "class" not in item:
            raise ProfileError(f"{where}: expected {{class: NAME, direction: up|down}}")
        for sub in item:
            if sub not in _TARGET_KEYS:
                raise ProfileError(f"{where}: unknown key '{sub}'", "allowed: class, direction")
        class_where = _where(source, f"{path}.class", lines.get(f"{path}.class"))
        name = item["class"]
        # A name or a class id; null, lists or floats would otherwise become names like 'None'.
        if isinstance(name, bool) or not isinstance(name, (str, int)) or not str(name).strip():
            raise ProfileError(f"{class_where}: expected a class name or id, got {name!r}")
        direction = parse_direction(item.get("direction", "up"), where)
        targets.append(FocusRequest(str(name).strip(), direction, class_where))
    return tuple(targets)


def _noise_settings(noise: dict[str, Any], lines: dict[str, int], source: str) -> tuple[int | None, str | None]:
    """noise.seed and noise.key_env, at most one of them."""
    seed = noise.get("seed")
    if seed is not None:
        seed = check_seed(seed, _where(source, "noise.seed", lines.get("noise.seed")))
    key_env = noise.get("key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env):
        raise ProfileError(f"{_where(source, 'noise.key_env', lines.get('noise.key_env'))}: expected a variable name")
    if seed is not None and key_env is not None:
        raise ProfileError(f"{source}: noise.seed and noise.key_env exclude each other", "keep one")
    return seed, key_env


def _warn_if_edited(profile: Profile) -> Profile:
    """A certified profile whose settings changed since certification gets one warning line wherever it loads."""
    problem = profile.certificate_problem
    if problem is not None:
        warnings.warn(CertificateWarning(f"{profile.source}: {problem} ({edited_hint()})"), stacklevel=3)
    return profile


def _from_mapping(data: Any, lines: dict[str, int], source: str) -> Profile:
    """Validate a loaded mapping (from YAML or from Python): the one validation path."""
    if isinstance(data, Mapping) and not isinstance(data, dict):
        data = dict(data)
    if not isinstance(data, dict):
        raise ProfileError(f"{source}: a profile must be a mapping (YAML key: value lines, or a dict)")
    return _warn_if_edited(_validate(data, lines, source))


def load_profile(path: str | Path) -> Profile:
    """Read and validate a YAML profile file (Profile.load)."""
    return Profile.load(path)


@dataclass(frozen=True)
class OverrideNames:
    """How the overriding settings are spelled in messages: the command's flags, or a serving request's arguments."""

    sigma: str = "--sigma"
    focus: str = "--focus"
    focus_sigma: str = "--focus-sigma"
    seed: str = "--seed"


FLAG_NAMES = OverrideNames()
REQUEST_NAMES = OverrideNames("aim_sigma", "aim_focus", "aim_focus_sigma", "aim_seed")


def apply_overrides(
    profile: Profile,
    sigma: float | None = None,
    focus: Sequence[str] | None = None,
    focus_sigma: float | None = None,
    seed: int | None = None,
    names: OverrideNames = FLAG_NAMES,
) -> Profile:
    """Return the profile with the given values (command-line flags, request arguments) taking precedence.

    The one merge of overrides into a profile; None (and an empty focus) leaves a value as it is.
    A seed replaces a key, since the two exclude each other.
    """
    changes: dict[str, Any] = {}
    if sigma is not None:
        changes["sigma"] = check_sigma(sigma, "sigma", names.sigma)
    if focus_sigma is not None:
        changes["focus_sigma"] = check_sigma(focus_sigma, "focus sigma", names.focus_sigma)
    if focus:
        check_focus_count(len(focus), names.focus)
        changes["focus"] = tuple(parse_focus(item, names.focus) for item in focus)
    if seed is not None:
        changes["seed"], changes["key_env"] = check_seed(seed, names.seed), None
    overridden = replace(profile, **changes)
    if changes and profile.certificate is not None and overridden.to_dict() != profile.to_dict():
        # Other settings than the certified ones: the result is not the certified tier.
        overridden = replace(overridden, certificate=None)
    return overridden


def resolve_profile(
    path: str | Path | None,
    sigma: float | None = None,
    focus: list[str] | None = None,
    focus_sigma: float | None = None,
    seed: int | None = None,
) -> Profile:
    """Load the profile file if given, then apply command-line overrides."""
    base = Profile.load(path) if path else Profile()
    profile = base.with_overrides(sigma=sigma, focus=focus, focus_sigma=focus_sigma, seed=seed)
    if focus_sigma is not None and not profile.focus:
        raise ProfileError(
            "--focus-sigma has no effect without focus targets", "add --focus NAME (or targets in the profile)"
        )
    return profile


def noise_key(profile: Profile, what: str | None = None) -> bytes:
    """The secret of a keyed profile, from its environment variable; one-line error when unset.

    `what` names the profile in the message (default: its source file).
    """
    key = os.environ.get(profile.key_env or "")
    if not key:
        raise ProfileError(
            f"{what or profile.source or 'profile'}: keyed noise needs the environment variable {profile.key_env}",
            f"export {profile.key_env}=<secret>",
        )
    return key.encode("utf-8")


def noise_source(profile: Profile) -> tuple[NoiseSource, int | None]:
    """Build the noise source a profile asks for; returns it with the seed actually used.

    Without a seed or key a fresh seed is drawn and reported, so any run can be repeated.
    """
    from aim_cli.modulation import KeyedNoise, SeededNoise

    if profile.key_env:
        return KeyedNoise(noise_key(profile)), None
    seed = profile.seed if profile.seed is not None else secrets.randbits(31)
    return SeededNoise(seed), seed
