"""Calibration outputs: a ready-to-use YAML profile and a JSON report, both written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from aim_cli.calibration.core import Calibration
from aim_cli.directions import direction_name
from aim_cli.io import atomic_open, write_json_atomic
from aim_cli.profile import PROFILE_VERSION

PROFILE_SUFFIXES = (".yaml", ".yml")
REPORT_SUFFIXES = (".json",)
PLOT_SUFFIXES = (".png",)


def _round(value: float) -> float:
    """Five significant digits: the rounding moves the metric by well under 0.001."""
    return float(f"{value:.5g}")


def profile_document(calibration: Calibration, name: str) -> dict[str, Any]:
    """The profile mapping (schema of aim_cli.profile, version 1) that applies the calibrated value."""
    target = calibration.target
    measured = calibration.check
    description = (
        f"Calibrated by aim calibrate for {target.label} {target.value:g} with {calibration.model or 'the model'} "
        f"on {calibration.data or 'the data'}: predicted {calibration.predicted:.3f}, "
        f"measured {measured.mean:.3f} (95% CI {measured.low:.3f}-{measured.high:.3f}, {measured.draws} draws)."
    )
    document: dict[str, Any] = {"version": PROFILE_VERSION, "name": name, "description": description}
    if target.metric == "recall":
        if calibration.utility_sigma > 0:
            document["utility"] = {"sigma": _round(calibration.utility_sigma)}
        document["focus"] = {
            "sigma": _round(calibration.value),
            "targets": [{"class": target.focus_class, "direction": direction_name(target.focus_direction)}],
        }
    else:
        document["utility"] = {"sigma": _round(calibration.value)}
    return document


def write_profile(calibration: Calibration, path: Path, name: str | None = None) -> None:
    """Write the calibrated profile as YAML (temp file + rename)."""
    document = profile_document(calibration, name or path.stem)
    with atomic_open(path, "w") as handle:
        yaml.safe_dump(document, handle, sort_keys=False, allow_unicode=True, width=100)


def write_report(calibration: Calibration, path: Path) -> None:
    """Write the full JSON report (curve, chosen value, Monte Carlo check, timing)."""
    write_json_atomic(calibration.to_dict(), path)
