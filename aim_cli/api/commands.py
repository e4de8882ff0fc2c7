"""What each `aim` command runs: the CLI's one door to the task pipelines, calibration, serving and models.

Not part of the public API (aim_cli.api.__all__): names here may change with the CLI. Each
name loads its home module on first use, so a command pays only for what it runs (`aim
classify` never imports transformers' generation stack) and `aim --help` imports none of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what type checkers see; at run time __getattr__ loads each name from _HOMES
    pass

# Each name and the module that defines it, grouped by command.
_HOMES = {
    # models: one registry of model sources serves every task
    "load_model": "aim_cli.models.registry",
    "segmentation_architectures": "aim_cli.models.segmenter",
    "Segmenter": "aim_cli.models.segmenter",
    # aim classify
    "classify_images": "aim_cli.tasks.classify",
    "ClassifiedImage": "aim_cli.tasks.classify",
    "Prediction": "aim_cli.tasks.classify",
    # aim segment
    "segment_files": "aim_cli.tasks.segment",
    "segment_inputs": "aim_cli.tasks.segment",
    "read_inputs": "aim_cli.tasks.segment",
    "GroundTruth": "aim_cli.calibration.datasets",
    "ground_truth": "aim_cli.calibration.datasets",
    "find_mask": "aim_cli.tasks.segment",
    "SegmentationEvaluation": "aim_cli.tasks.segment",
    "SegmentedImage": "aim_cli.tasks.segment",
    # aim calibrate
    "CalibrationRequest": "aim_cli.calibration.runner",
    "calibration_request": "aim_cli.calibration.runner",
    "calibrate_classifier": "aim_cli.calibration.runner",
    "calibrate_segmenter": "aim_cli.calibration.runner",
    "calibrate_language_model": "aim_cli.calibration.runner",
    "demo_classification_set": "aim_cli.calibration.datasets",
    "demo_segmentation_set": "aim_cli.calibration.datasets",
    "demo_text_set": "aim_cli.calibration.datasets",
    "read_classification_data": "aim_cli.calibration.datasets",
    "read_segmentation_data": "aim_cli.calibration.datasets",
    "read_text_data": "aim_cli.calibration.datasets",
    "Calibration": "aim_cli.calibration.core",
    "display_rows": "aim_cli.calibration.core",
    "write_profile": "aim_cli.calibration.report",
    "write_report": "aim_cli.calibration.report",
    "PLOT_SUFFIXES": "aim_cli.calibration.report",
    "PROFILE_SUFFIXES": "aim_cli.calibration.report",
    "REPORT_SUFFIXES": "aim_cli.calibration.report",
    "plot_calibration": "aim_cli.calibration.plot",
    "plot_metric_curves": "aim_cli.calibration.plot",
    "require_matplotlib": "aim_cli.calibration.plot",
    # aim report: one HTML page of a tiers folder on a model and labelled data
    "load_tiers": "aim_cli.report.tiers",
    "collect_classification": "aim_cli.report.collect",
    "collect_segmentation": "aim_cli.report.collect",
    "collect_text": "aim_cli.report.collect",
    "write_html_report": "aim_cli.report.page",
    # aim verify
    "Verification": "aim_cli.calibration.verify",
    "certified": "aim_cli.calibration.verify",
    "verify_classifier": "aim_cli.calibration.verify",
    "verify_segmenter": "aim_cli.calibration.verify",
    "verify_language_model": "aim_cli.calibration.verify",
    # aim eval and aim calibrate --task lm-eval (lm-evaluation-harness: the eval extra)
    "EvalReport": "aim_cli.tasks.evaluate",
    "check_eval_counts": "aim_cli.tasks.evaluate",
    "check_tasks": "aim_cli.tasks.evaluate",
    "scan_task_folder": "aim_cli.tasks.task_folder",
    "load_eval_model": "aim_cli.tasks.evaluate",
    "parse_sigmas": "aim_cli.tasks.evaluate",
    "parse_task_names": "aim_cli.tasks.evaluate",
    "quiet_lm_eval": "aim_cli.tasks.evaluate",
    "require_lm_eval": "aim_cli.tasks.evaluate",
    "run_eval": "aim_cli.tasks.evaluate",
    "task_manager": "aim_cli.tasks.evaluate",
    "locate": "aim_cli.models.hub",
    "calibrate_on_tasks": "aim_cli.calibration.lm_eval",
    # aim serve
    "load_profile_dir": "aim_cli.serving",
    "default_tier": "aim_cli.serving",
    "profile_summary": "aim_cli.serving",
    "PROFILES_ENV": "aim_cli.serving",
    "DEFAULT_ENV": "aim_cli.serving",
    "KEY_ENV": "aim_cli.serving",
    "ALLOW_AD_HOC_ENV": "aim_cli.tier_policy",
    "ALLOW_CLEAN_ENV": "aim_cli.tier_policy",
    "TierPolicy": "aim_cli.tier_policy",
    "check_port_free": "aim_cli.ports",
    # aim serve (images) and --engine ray: the Ray engines (ray_serve imports Ray itself)
    "EndpointSpec": "aim_cli.engines.vision_tiers",
    "JobSpec": "aim_cli.engines.ray_data",
    "require_ray": "aim_cli.engines.ray_data",
    "check_engine": "aim_cli.engines.choice",
    "ray_items": "aim_cli.engines.choice",
    "run_job": "aim_cli.engines.ray_data",
}

# Whole modules the CLI uses by name (importing one may raise ImportError: an extra is missing).
_MODULES = {"ray_serve": "aim_cli.engines.ray_serve"}

__all__ = sorted([*_HOMES, *_MODULES])


def __getattr__(name: str) -> Any:
    """Load a command's name from its home module on first use."""
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aim_cli.api.commands' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later look-ups skip this function
    return value
