"""A folder of tier profiles with their certificates, read for the report.

Each file loads with aim_cli.profile.load_profile, which validates a `certificate:` mapping
strictly (a malformed one is a one-line profile error). A certificate whose settings were
edited after certification is kept, with the reason it is void, so the page can say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aim_cli.certificates import Certificate
from aim_cli.errors import ProfileError
from aim_cli.profile import Profile, load_profile

PROFILE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Tier:
    """One profile of the folder: its name (the file stem), settings and certificate, if any."""

    name: str
    profile: Profile
    path: Path

    @property
    def certificate(self) -> Certificate | None:
        """The tier's certificate, valid or void (None: uncertified)."""
        return self.profile.certificate

    @property
    def certificate_problem(self) -> str | None:
        """Why the certificate no longer describes the tier (edited settings), or None."""
        return self.profile.certificate_problem


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
        tiers[path.stem] = Tier(path.stem, load_profile(path), path)
    if not tiers:
        raise ProfileError(
            f"tiers folder {folder}: no .yaml profiles found", "add one file per tier, e.g. free-tier.yaml"
        )
    return list(tiers.values())
