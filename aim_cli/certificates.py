"""Certificates of calibrated tiers: what a tier promises, for which model and data, and the checks on it.

A certified profile carries a `certificate:` mapping (docs/profiles.md, "Certificates"): the
model's and the data's fingerprints, the metric, the predicted value at the profile's settings
with a prediction interval, and a hash of the settings it was computed for. This module holds
the schema (strictly validated), the settings hash, the fingerprints and the serving check. It
sits below aim_cli.profile (which validates the key), so it knows profiles only as mappings.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aim_cli.errors import AimError, ProfileError

if TYPE_CHECKING:  # torch loads only when a model is fingerprinted, so `aim --help` stays fast
    import torch

CERTIFICATE_METRICS = ("accuracy", "pixel_accuracy", "miou", "recall")
METHODS = ("exact", "monte-carlo")
# The profile keys a certificate covers: the tier's own settings (name and description are prose).
SETTINGS_KEYS = ("utility", "focus", "noise")
FINGERPRINT_PREFIX = "sha256:"
DEFAULT_CONFIDENCE = 0.95
ALLOW_FLAG = "--allow-uncertified-model"
# Files of a model folder that decide its outputs (weights, architecture, labels, tokenizer).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_CONFIG_NAMES = (
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
)
# transformers config entries that record where or how a model was loaded, not what it computes.
_VOLATILE_CONFIG_KEYS = ("transformers_version", "torch_dtype", "dtype", "use_cache")


class CertificateWarning(UserWarning):
    """A certificate that no longer describes its profile (shown as one `aim: warning:` line)."""


@dataclass(frozen=True)
class Interval:
    """A prediction interval for the tier's metric on a fresh sample of `sample_size` units."""

    low: float
    high: float
    confidence: float
    sample_size: int
    meaning: str = ""


@dataclass(frozen=True)
class Certificate:
    """What a calibrated tier promises, and for which model, data and settings (see module docstring)."""

    aim_version: str
    created: str
    task: str
    model_spec: str
    model_fingerprint: str
    data_spec: str
    data_fingerprint: str
    items: int
    metric: str
    target: float
    method: str
    predicted: float
    interval: Interval
    settings_hash: str
    # Variances behind the interval: of the estimate (Var(w_i) / n_cal) and of one fresh unit, so
    # an interval for another sample size n is predicted +- z sqrt(estimate + unit / n).
    estimate_variance: float = 0.0
    unit_variance: float = 0.0
    focus_class: str | None = None
    focus_direction: str | None = None
    units: str = "items"
    source: str = field(default="", compare=False)

    @property
    def id(self) -> str:
        """A short stable name of the certificate: the first 12 hex digits of its content hash."""
        body = {k: v for k, v in self.to_mapping().items() if k != "created"}
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:12]

    def interval_for(self, sample_size: int) -> tuple[float, float]:
        """The interval at the certificate's confidence for a fresh sample of another size."""
        z = normal_quantile(self.interval.confidence)
        half = z * math.sqrt(self.estimate_variance + self.unit_variance / max(1, sample_size))
        return max(0.0, self.predicted - half), min(1.0, self.predicted + half)

    def to_mapping(self) -> dict[str, Any]:
        """The YAML mapping of docs/profiles.md (Certificate.from_mapping(c.to_mapping()) == c)."""
        data: dict[str, Any] = {
            "aim_version": self.aim_version,
            "created": self.created,
            "task": self.task,
            "model": {"spec": self.model_spec, "fingerprint": self.model_fingerprint},
            "data": {"spec": self.data_spec, "fingerprint": self.data_fingerprint, "items": self.items},
            "metric": self.metric,
        }
        if self.focus_class is not None:
            data["focus"] = {"class": self.focus_class, "direction": self.focus_direction or "up"}
        data.update(
            {
                "target": self.target,
                "method": self.method,
                "predicted": self.predicted,
                "interval": {
                    "low": self.interval.low,
                    "high": self.interval.high,
                    "confidence": self.interval.confidence,
                    "sample_size": self.interval.sample_size,
                    "meaning": self.interval.meaning,
                },
                "variance": {"estimate": self.estimate_variance, "unit": self.unit_variance},
                "units": self.units,
                "settings_hash": self.settings_hash,
            }
        )
        return data

    @classmethod
    def from_mapping(
        cls, data: Any, source: str = "certificate", lines: Mapping[str, int] | None = None
    ) -> Certificate:
        """Validate a `certificate:` mapping strictly: unknown keys, wrong types and bad ranges are errors."""
        reader = _Reader(source, lines or {})
        top = reader.mapping(data, "certificate", _SCHEMA)
        model = reader.mapping(top["model"], "certificate.model", _SCHEMA["model"])
        dataset = reader.mapping(top["data"], "certificate.data", _SCHEMA["data"])
        interval = reader.mapping(top["interval"], "certificate.interval", _SCHEMA["interval"])
        variance = reader.mapping(top.get("variance", {}), "certificate.variance", _SCHEMA["variance"])
        focus = reader.mapping(top["focus"], "certificate.focus", _SCHEMA["focus"]) if "focus" in top else {}
        metric = reader.choice(top["metric"], "certificate.metric", CERTIFICATE_METRICS)
        if (metric == "recall") != ("class" in focus):
            reader.fail("certificate.focus", "a recall certificate names its focus class, other metrics none")
        low = reader.fraction(interval["low"], "certificate.interval.low")
        high = reader.fraction(interval["high"], "certificate.interval.high")
        predicted = reader.fraction(top["predicted"], "certificate.predicted")
        if not low <= predicted <= high:
            reader.fail("certificate.interval", f"low {low:g} <= predicted {predicted:g} <= high {high:g} fails")
        confidence = reader.fraction(interval["confidence"], "certificate.interval.confidence")
        if not 0 < confidence < 1:
            reader.fail(
                "certificate.interval.confidence", f"expected a fraction strictly between 0 and 1, got {confidence:g}"
            )
        return cls(
            aim_version=reader.text(top["aim_version"], "certificate.aim_version"),
            created=reader.text(top["created"], "certificate.created"),
            task=reader.choice(top["task"], "certificate.task", ("classify", "segment", "generate")),
            model_spec=reader.text(model["spec"], "certificate.model.spec"),
            model_fingerprint=reader.fingerprint(model["fingerprint"], "certificate.model.fingerprint"),
            data_spec=reader.text(dataset["spec"], "certificate.data.spec"),
            data_fingerprint=reader.fingerprint(dataset["fingerprint"], "certificate.data.fingerprint"),
            items=reader.count(dataset["items"], "certificate.data.items"),
            metric=metric,
            target=reader.fraction(top["target"], "certificate.target"),
            method=reader.choice(top["method"], "certificate.method", METHODS),
            predicted=predicted,
            interval=Interval(
                low,
                high,
                confidence,
                reader.count(interval["sample_size"], "certificate.interval.sample_size"),
                reader.text(interval.get("meaning", ""), "certificate.interval.meaning", empty=True),
            ),
            settings_hash=reader.fingerprint(top["settings_hash"], "certificate.settings_hash"),
            estimate_variance=reader.variance(variance.get("estimate", 0.0), "certificate.variance.estimate"),
            unit_variance=reader.variance(variance.get("unit", 0.0), "certificate.variance.unit"),
            focus_class=None if "class" not in focus else reader.text(focus["class"], "certificate.focus.class"),
            focus_direction=(
                None
                if "class" not in focus
                else reader.choice(focus.get("direction", "up"), "certificate.focus.direction", ("up", "down"))
            ),
            units=reader.choice(top.get("units", "items"), "certificate.units", ("items", "images")),
            source=source,
        )


# Keys of the certificate mapping: True marks a required one; nested dicts are sub-mappings.
_SCHEMA: dict[str, Any] = {
    "aim_version": True,
    "created": True,
    "task": True,
    "model": {"spec": True, "fingerprint": True},
    "data": {"spec": True, "fingerprint": True, "items": True},
    "metric": True,
    "focus": {"class": True, "direction": False},
    "target": True,
    "method": True,
    "predicted": True,
    "interval": {"low": True, "high": True, "confidence": True, "sample_size": True, "meaning": False},
    "variance": {"estimate": False, "unit": False},
    "units": False,
    "settings_hash": True,
}
_OPTIONAL_MAPPINGS = ("focus", "variance")


@dataclass(frozen=True)
class _Reader:
    """Typed reads of a certificate mapping; every error names the file, the key and its line."""

    source: str
    lines: Mapping[str, int]

    def fail(self, key: str, problem: str) -> None:
        """Raise the one-line error for `key`."""
        line = self.lines.get(key)
        where = f"{self.source}, line {line}, key '{key}'" if line else f"{self.source}, key '{key}'"
        raise ProfileError(
            f"{where}: {problem}",
            "a certificate is written by aim calibrate --write-profile; re-run it rather than edit the certificate",
        )

    def mapping(self, value: Any, key: str, schema: Mapping[str, Any]) -> dict[str, Any]:
        """A mapping with exactly the schema's keys (the required ones present, no others)."""
        if not isinstance(value, Mapping):
            self.fail(key, "expected a mapping")
        for sub in value:
            if sub not in schema:
                self.fail(f"{key}.{sub}", f"unknown key (allowed: {', '.join(schema)})")
        for sub, required in schema.items():
            if (
                required is True or (isinstance(required, dict) and sub not in _OPTIONAL_MAPPINGS)
            ) and sub not in value:
                self.fail(f"{key}.{sub}", "missing")
        return dict(value)

    def text(self, value: Any, key: str, empty: bool = False) -> str:
        """A string (non-empty unless `empty`)."""
        if not isinstance(value, str) or (not empty and not value.strip()):
            self.fail(key, f"expected text, got {value!r}")
        return str(value)

    def choice(self, value: Any, key: str, allowed: Iterable[str]) -> str:
        """One of the allowed strings."""
        allowed = tuple(allowed)
        if value not in allowed:
            self.fail(key, f"expected one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    def number(self, value: Any, key: str) -> float:
        """A finite real number (not a bool)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            self.fail(key, f"expected a finite number, got {value!r}")
        return float(value)

    def fraction(self, value: Any, key: str) -> float:
        """A number in [0, 1] (metrics and confidences)."""
        number = self.number(value, key)
        if not 0 <= number <= 1:
            self.fail(key, f"expected a fraction from 0 to 1, got {number:g}")
        return number

    def variance(self, value: Any, key: str) -> float:
        """A variance of a fraction: in [0, 0.25]."""
        number = self.number(value, key)
        if not 0 <= number <= 0.25:
            self.fail(key, f"expected a variance from 0 to 0.25, got {number:g}")
        return number

    def count(self, value: Any, key: str) -> int:
        """A positive integer."""
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            self.fail(key, f"expected a positive integer, got {value!r}")
        return int(value)

    def fingerprint(self, value: Any, key: str) -> str:
        """'sha256:' and 64 hex digits."""
        text = value if isinstance(value, str) else ""
        digits = text.removeprefix(FINGERPRINT_PREFIX)
        if (
            not text.startswith(FINGERPRINT_PREFIX)
            or len(digits) != 64
            or any(c not in "0123456789abcdef" for c in digits)
        ):
            self.fail(key, f"expected 'sha256:' and 64 lower-case hex digits, got {value!r}")
        return text


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same settings always hash the same."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def settings_hash(profile: Mapping[str, Any]) -> str:
    """Hash of a profile mapping's own settings (utility, focus, noise; the key's value never, only its name).

    Take the mapping from Profile.to_dict(), so writing 2.5 as 2.50 or reordering keys is no edit.
    """
    settings = {key: profile[key] for key in SETTINGS_KEYS if key in profile}
    return FINGERPRINT_PREFIX + hashlib.sha256(canonical_json(settings).encode()).hexdigest()


def certificate_problem(profile: Mapping[str, Any], certificate: Certificate) -> str | None:
    """Why a certificate does not describe the profile it sits in (edited settings), or None."""
    if settings_hash(profile) != certificate.settings_hash:
        return (
            "edited after certification: its settings (utility, focus, noise) no longer match the certificate's "
            "settings_hash, so the certificate does not describe this tier"
        )
    return None


def edited_hint() -> str:
    """What to do about an edited certified profile."""
    return "re-run aim calibrate --write-profile for a new certificate, or restore the certified settings"


def normal_quantile(confidence: float) -> float:
    """z of a two-sided interval at `confidence` (1.96 at 0.95)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def check_confidence(value: Any, option: str = "--confidence") -> float:
    """A confidence level strictly between 0 and 1 (0.95 is the usual one)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) < 1:
        raise AimError(f"{option} {value!r}: expected a fraction strictly between 0 and 1", "e.g. 0.95")
    return float(value)


def _digest_update_tensor(digest: Any, name: str, tensor: torch.Tensor) -> None:
    """Feed one named tensor (dtype, shape and bytes) into a running hash."""
    import torch

    value = tensor.detach().to("cpu").contiguous()
    digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
    if value.numel():
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())


def network_fingerprint(
    network: torch.nn.Module, labels: Iterable[str], config: Mapping[str, Any] | None = None
) -> str:
    """Content hash of a loaded network: its class, every parameter and buffer, its labels and config.

    Hashes the tensors already in memory (no second read of the weights files); the same
    weights give the same fingerprint whatever the file format or folder they came from.
    """
    digest = hashlib.sha256()
    digest.update(f"{type(network).__module__}.{type(network).__qualname__}\n".encode())
    for name, tensor in sorted(network.state_dict(keep_vars=False).items()):
        _digest_update_tensor(digest, name, tensor)
    digest.update(canonical_json(list(labels)).encode())
    if config:
        kept = {k: v for k, v in config.items() if not k.startswith("_") and k not in _VOLATILE_CONFIG_KEYS}
        digest.update(canonical_json(kept).encode())
    return FINGERPRINT_PREFIX + digest.hexdigest()


def model_fingerprint(model: Any) -> str | None:
    """Fingerprint of a loaded image model (aim's ImageModel), or None when it exposes no torch network."""
    import torch

    network = getattr(model, "network", None)
    if not isinstance(network, torch.nn.Module):
        return None
    config = getattr(network, "config", None)
    mapping = config.to_dict() if config is not None and hasattr(config, "to_dict") else None
    return network_fingerprint(network, getattr(model, "labels", []), _jsonable(mapping))


def _jsonable(value: Any) -> Any:
    """A config mapping reduced to what JSON holds (anything else by its repr)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value if not isinstance(value, float) or math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return repr(value)


def directory_fingerprint(path: Path) -> str:
    """Content hash of a model folder's weights, config and tokenizer files (language models served by vLLM).

    Reads the files' bytes (vLLM loads the weights itself, so there is nothing in memory to hash).
    """
    digest = hashlib.sha256()
    files = sorted(
        p for p in Path(path).iterdir() if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name in _CONFIG_NAMES)
    )
    for file in files:
        digest.update(f"{file.name}\n".encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 24), b""):
                digest.update(block)
    return FINGERPRINT_PREFIX + digest.hexdigest()


def language_model_fingerprint(location: str) -> str:
    """Fingerprint of a language model folder, or of a cached hub id's snapshot (found offline): what vLLM loads."""
    path = Path(location).expanduser()
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(location, local_files_only=True))
    return directory_fingerprint(path)


def check_served_tiers(
    certificates: Mapping[str, Certificate | None], fingerprint: str | None, allow_other_model: bool, model: str
) -> list[str]:
    """Refuse certified tiers whose model fingerprint differs from the served model's (the serve start-up check).

    Returns the warning lines to print on every start when `allow_other_model` overrides the
    refusal; raises AimError (one line naming the tiers) otherwise.
    """
    mismatched = sorted(
        name for name, cert in certificates.items() if cert is not None and cert.model_fingerprint != fingerprint
    )
    if not mismatched:
        return []
    what = f"{model}'s fingerprint {short(fingerprint)}" if fingerprint else f"{model} (which has no fingerprint)"
    listed = ", ".join(
        f"{name} (certified for {short(certificates[name].model_fingerprint)})"  # type: ignore[union-attr]
        for name in mismatched
    )
    if allow_other_model:
        return [
            f"serving certified tier(s) {listed} on another model, {what}: their certificates do not hold "
            f"({ALLOW_FLAG})"
        ]
    raise AimError(
        f"certified tier(s) {listed} were certified on another model than {what}",
        f"serve the certified model, re-certify with aim calibrate --write-profile, or pass {ALLOW_FLAG}",
    )


def short(fingerprint: str | None) -> str:
    """A fingerprint shortened for messages: 'sha256:' and 12 hex digits."""
    if not fingerprint:
        return "none"
    return fingerprint[: len(FINGERPRINT_PREFIX) + 12]


def tier_certificates(profiles: Mapping[str, Any]) -> dict[str, Certificate | None]:
    """Each tier's certificate (None: uncertified), from loaded profiles (anything with a `certificate`)."""
    return {name: getattr(profile, "certificate", None) for name, profile in profiles.items()}


def certificate_id(profiles: Mapping[str, Any], tier: str | None) -> str | None:
    """The id of a served tier's certificate, or None (the clean model, an uncertified tier)."""
    certificate = getattr(profiles.get(tier), "certificate", None) if tier is not None else None
    return certificate.id if isinstance(certificate, Certificate) else None


def name_certificate(answer: dict[str, Any], profiles: Mapping[str, Any], tier: str | None) -> dict[str, Any]:
    """An answer with the certificate of its tier named beside the tier (a JSON field; None: uncertified)."""
    answer["certificate"] = certificate_id(profiles, tier)
    return answer


def answer_headers(answer: Mapping[str, Any]) -> dict[str, str]:
    """HTTP headers that name an answer's tier and certificate ('none' where there is none)."""
    return {
        "X-Aim-Tier": str(answer.get("tier") or "none"),
        "X-Aim-Certificate": str(answer.get("certificate") or "none"),
    }
