"""Calibration outputs: a ready-to-use YAML profile and a JSON report, both written atomically."""

from __future__ import annotations

from pathlib import Path

import yaml

from aim_cli.calibration.core import Calibration, profile_document
from aim_cli.io import atomic_open, write_json_atomic
from aim_cli.profile import Profile

PROFILE_SUFFIXES = (".yaml", ".yml")
REPORT_SUFFIXES = (".json",)
PLOT_SUFFIXES = (".png",)


def write_profile(
    calibration: Calibration, path: Path, name: str | None = None, confidence: float | None = None
) -> None:
    """Write the calibrated profile as YAML (temp file + rename), certified at `confidence` where the task allows."""
    document = profile_document(calibration, name or path.stem)
    if confidence is not None and calibration.certifier is not None:
        profile = Profile.from_dict(document, source=str(path))
        certificate = calibration.certifier(profile, confidence)
        if certificate is not None:
            document["certificate"] = certificate.to_mapping()
    with atomic_open(path, "w") as handle:
        yaml.safe_dump(document, handle, sort_keys=False, allow_unicode=True, width=100)


def write_report(calibration: Calibration, path: Path) -> None:
    """Write the full JSON report (curve, chosen value, Monte Carlo check, timing)."""
    write_json_atomic(calibration.to_dict(), path)
