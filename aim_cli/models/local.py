"""Where a --model value points on this machine: a path or a hub id, and the offline switch."""

from __future__ import annotations

import os


def looks_like_path(spec: str) -> bool:
    """Hub ids are NAME or ORG/NAME; anything else is meant as a filesystem path."""
    return spec.startswith((".", "~", "/")) or spec.count("/") > 1 or "\\" in spec


def force_offline() -> None:
    """Make every Hugging Face hub call in this process resolve from the local cache only.

    huggingface_hub reads HF_HUB_OFFLINE once, at import, into a constant that transformers
    consults on each call: set both, so it holds whether or not the hub was imported already.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True
