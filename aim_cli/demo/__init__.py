"""Embedded demo models and samples, each trained by a script in this folder."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
_MODEL_DIRS = {"classify": "classifier", "segment": "segmenter", "generate": "lm"}


def model_dir(task: str) -> Path:
    """The directory of the demo checkpoint for a task (a Hugging Face model folder)."""
    return DEMO_DIR / _MODEL_DIRS[task]


def samples_dir(task: str) -> Path:
    """The directory of the demo's sample inputs for a task."""
    return DEMO_DIR / "samples" / task
