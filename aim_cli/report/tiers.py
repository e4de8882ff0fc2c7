"""A folder of tier profiles with their certificates, read for the report.

The certificate block (docs/profiles.md) is read from the raw YAML mapping, defensively: a
tier without one, or with one this module cannot read, is shown as uncertified.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from aim_cli import plain_yaml
from aim_cli.errors import ProfileError
from aim_cli.io import read_text_file
from aim_cli.profile import MAX_PROFILE_BYTES, Profile

PROFILE_SUFFIXES = (".yaml", ".yml")
CERTIFICATE_KEY = "certificate"


@dataclass(frozen=True)
class CertificateView:
    """What the report shows of a tier's certificate: the promise and how it was made."""

    metric: str | None
    predicted: float | None
    low: float | None
    high: float | None
    confidence: float | None
    method: str | None = None
    items: int | None = None
    meaning: str | None = None

    @property
    def has_interval(self) -> bool:
        """Whether both ends of the interval are numbers."""
        return self.low is not None and self.high is not None


@dataclass(frozen=True)
class Tier:
    """One profile of the folder: its name (the file stem), settings and certificate, if any."""

    name: str
    profile: Profile
    certificate: CertificateView | None
    path: Path


def _number(value: Any) -> float | None:
    """A finite real number, else None (bools and text are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _text(value: Any) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def certificate_view(raw: Any) -> CertificateView | None:
    """Read a certificate mapping defensively: anything missing or malformed reads as absent."""
    if not isinstance(raw, Mapping):
        return None
    interval = raw.get("interval")
    interval = interval if isinstance(interval, Mapping) else {}
    data = raw.get("data")
    items = data.get("items") if isinstance(data, Mapping) else None
    view = CertificateView(
        metric=_text(raw.get("metric")),
        predicted=_number(raw.get("predicted")),
        low=_number(interval.get("low")),
        high=_number(interval.get("high")),
        confidence=_number(interval.get("confidence")),
        method=_text(raw.get("method")),
        items=int(items) if isinstance(items, int) and not isinstance(items, bool) else None,
        meaning=_text(interval.get("meaning")),
    )
    return view if view.predicted is not None or view.has_interval else None


def load_certified_profile(path: Path) -> tuple[Profile, Any]:
    """The profile of a file and its raw certificate mapping (None when absent).

    The one adapter between certified files and today's profile parser, which knows no
    certificate key: the key is taken out before validation. Swap this for the certificate
    module's loader once profiles validate their certificates themselves.
    """
    source = str(path)
    text = read_text_file(path, MAX_PROFILE_BYTES, ProfileError, "profile")
    try:
        data, _lines = plain_yaml.load(text)
    except plain_yaml.PlainYAMLError as exc:
        where = f"{source}, line {exc.line}" if exc.line else source
        raise ProfileError(f"{where}: {exc}", "profiles are plain YAML: write each value out") from None
    certificate = None
    if isinstance(data, dict) and CERTIFICATE_KEY in data:
        data = dict(data)
        certificate = data.pop(CERTIFICATE_KEY)
    return Profile.from_dict({} if data is None else data, source), certificate


def load_tiers(folder: Path) -> list[Tier]:
    """Every *.yaml / *.yml profile of a folder, by file stem, in name order; one-line errors."""
    if not folder.is_dir():
        raise ProfileError(f"tiers folder {folder}: not a directory", "give a folder of tier profiles (*.yaml)")
    tiers: dict[str, Tier] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in PROFILE_SUFFIXES or not path.is_file():
            continue
        if path.stem in tiers:
            raise ProfileError(f"{path}: a second profile named '{path.stem}'", "keep one file per tier name")
        profile, raw = load_certified_profile(path)
        tiers[path.stem] = Tier(path.stem, profile, certificate_view(raw), path)
    if not tiers:
        raise ProfileError(
            f"tiers folder {folder}: no .yaml profiles found", "add one file per tier, e.g. free-tier.yaml"
        )
    return list(tiers.values())
