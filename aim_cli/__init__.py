"""aim: offline AI model modulation by logits redistribution.

`import aim_cli as aim` gives the Python API (aim_cli.api): models from any source
(aim.load_model, aim.list_models), the tasks, aim.Profile, aim.modulate, aim.plan,
aim.logits_processor, the exact expectations, aim.calibrate_logits, the error classes, and
image tiers on Ray (aim.vision_app, aim.vision_job; with the ray extra), lm-eval tasks over tiers
(aim.evaluate; with the eval extra) and tiers behind a server (aim.serve_plan, aim.start_server).
Its names load on first use, so `import aim_cli` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Not typing.TYPE_CHECKING: importing typing would double the cost of `import aim_cli`.
TYPE_CHECKING = False
if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads the names
    from typing import Any

    from aim_cli.api import (
        AimError,
        Calibration,
        ClassificationRun,
        ClassifiedImage,
        Completion,
        CurveRow,
        EvalReport,
        EvalRow,
        FailedInput,
        FocusRequest,
        Generation,
        ImageServeOptions,
        InputError,
        ModelError,
        ModelRequest,
        ModelSource,
        ModelSourceInfo,
        ModulationPlan,
        MonteCarloCheck,
        Prediction,
        Profile,
        ProfileError,
        ProfileLike,
        ReportSummary,
        ReportTier,
        SegmentedImage,
        SegmentEvaluation,
        SegmentMetrics,
        SegmentRun,
        ServePlan,
        ServeSettings,
        Verification,
        accuracy_curve,
        calibrate,
        calibrate_logits,
        classify,
        evaluate,
        expected_accuracy,
        expected_recall,
        generate,
        item_key,
        list_models,
        load_model,
        logits_processor,
        modulate,
        plan,
        segment,
        serve_plan,
        start_server,
        verify,
        vision_app,
        vision_job,
        win_probability,
        write_report,
    )

# The public API, listed once: aim_cli.api.__all__ is this list (the import above is for type checkers).
__all__ = [
    "AimError",
    "Calibration",
    "ClassificationRun",
    "ClassifiedImage",
    "Completion",
    "CurveRow",
    "EvalReport",
    "EvalRow",
    "FailedInput",
    "FocusRequest",
    "Generation",
    "ImageServeOptions",
    "InputError",
    "ModelError",
    "ModelRequest",
    "ModelSource",
    "ModelSourceInfo",
    "ModulationPlan",
    "MonteCarloCheck",
    "Prediction",
    "Profile",
    "ProfileError",
    "ProfileLike",
    "ReportSummary",
    "ReportTier",
    "SegmentEvaluation",
    "SegmentMetrics",
    "SegmentRun",
    "SegmentedImage",
    "ServePlan",
    "ServeSettings",
    "Verification",
    "accuracy_curve",
    "calibrate",
    "calibrate_logits",
    "classify",
    "evaluate",
    "expected_accuracy",
    "expected_recall",
    "generate",
    "item_key",
    "list_models",
    "load_model",
    "logits_processor",
    "modulate",
    "plan",
    "segment",
    "serve_plan",
    "start_server",
    "verify",
    "vision_app",
    "vision_job",
    "win_probability",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """Load API names lazily: torch and the rest are imported only when the API is used."""
    if name in __all__:
        value = getattr(importlib.import_module("aim_cli.api"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'aim_cli' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Module attributes including the lazily loaded API names."""
    return sorted({*globals(), *__all__})
