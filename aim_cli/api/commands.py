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
    "parse_dtype": "aim_cli.models.language",
    "LanguageModel": "aim_cli.models.language",
    # aim generate
    "plan_generation": "aim_cli.tasks.generate",
    "encode_prompts": "aim_cli.tasks.generate",
    "fitting_max_new_tokens": "aim_cli.tasks.generate",
    "generate_completions": "aim_cli.tasks.generate",
    "length_note": "aim_cli.tasks.generate",
    "Completion": "aim_cli.tasks.generate",
    "EncodedPrompt": "aim_cli.tasks.generate",
    "GenerationSettings": "aim_cli.tasks.generate",
    "CompletionStreamer": "aim_cli.generation",
    # aim calibrate
    "demo_classification_set": "aim_cli.calibration.datasets",
    "demo_segmentation_set": "aim_cli.calibration.datasets",
    "demo_text_set": "aim_cli.calibration.datasets",
    "read_classification_data": "aim_cli.calibration.datasets",
    "read_segmentation_data": "aim_cli.calibration.datasets",
    "read_text_data": "aim_cli.calibration.datasets",
    "REPORT_SUFFIXES": "aim_cli.calibration.report",
    "require_matplotlib": "aim_cli.calibration.plot",
    # aim eval and aim calibrate --task lm-eval (lm-evaluation-harness: the eval extra)
    "check_eval_counts": "aim_cli.tasks.evaluate",
    "check_tasks": "aim_cli.tasks.evaluate",
    "scan_task_folder": "aim_cli.tasks.task_folder",
    "load_eval_model": "aim_cli.tasks.evaluate",
    "parse_task_names": "aim_cli.tasks.evaluate",
    "quiet_lm_eval": "aim_cli.tasks.evaluate",
    "require_lm_eval": "aim_cli.tasks.evaluate",
    "task_manager": "aim_cli.tasks.evaluate",
    # aim serve (images) and --engine ray: the Ray engines (ray_serve imports Ray itself)
    "JobSpec": "aim_cli.engines.ray_data",
    "require_ray": "aim_cli.engines.ray_data",
    "run_job": "aim_cli.engines.ray_data",
}

# Whole modules the CLI uses by name (importing one may raise ImportError: an extra is missing).
_MODULES: dict[str, str] = {}

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
