"""The noise a tier's examples are drawn with, made repeatable for the report."""

from __future__ import annotations

import os
from dataclasses import replace

from aim_cli.profile import Profile


def example_profile(profile: Profile, seed: int) -> tuple[Profile, str]:
    """The tier with noise the report can repeat, and a line saying how its examples were drawn.

    A seeded tier keeps its seed; a tier without one gets `seed` (it would draw a fresh one per
    run); a keyed tier keeps its key when the variable is set, else gets `seed`: the same
    distribution of noise, other draws.
    """
    if profile.key_env:
        if os.environ.get(profile.key_env):
            return profile, f"keyed noise ({profile.key_env})"
        return replace(profile, key_env=None, seed=seed), f"{profile.key_env} not set: seed {seed} shown instead"
    if profile.seed is None:
        return replace(profile, seed=seed), f"seed {seed} (the tier draws a fresh seed per run)"
    return profile, f"seed {profile.seed}"
