"""Offline loading of Hugging Face checkpoints (local directories or the local cache)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, TypeVar

from aim_cli.errors import ModelError

T = TypeVar("T")


def _looks_like_path(spec: str) -> bool:
    """Hub ids are NAME or ORG/NAME; anything else is meant as a filesystem path."""
    return spec.startswith((".", "~", "/")) or spec.count("/") > 1 or "\\" in spec


def locate(spec: str) -> tuple[str, bool]:
    """Return (where to load from, is_local_dir) for a --model value, or fail clearly."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"model directory {spec} has no config.json, so it is not a Hugging Face model",
                "point --model at the folder save_pretrained() wrote, or use torchvision:ARCH --weights FILE",
            )
        return str(path), True
    if path.exists():
        raise ModelError(
            f"--model {spec} is a file, not a model directory",
            "for a weights file use --model torchvision:ARCH --weights FILE",
        )
    if _looks_like_path(spec):
        raise ModelError(f"model directory {spec} does not exist", "check the path")
    return spec, False


def _not_cached(spec: str) -> ModelError:
    """The error for a hub id that the offline cache does not hold."""
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return ModelError(
        f"model '{spec}' is neither a local directory nor in the local Hugging Face cache ({home})",
        f"aim never downloads: on a connected machine run `hf download {spec}` and copy the cache "
        "(or set HF_HOME to it), or pass a local directory",
    )


def load_pretrained(factory: Callable[..., T], spec: str, what: str, **kwargs: Any) -> T:
    """Call an Auto*.from_pretrained offline, turning loader failures into one-line errors."""
    source, local = locate(spec)
    _quiet_transformers()
    try:
        return factory(source, local_files_only=True, trust_remote_code=False, **kwargs)
    except OSError as exc:
        if not local:
            raise _not_cached(spec) from None
        raise ModelError(f"cannot load {what} from {spec}: {_first_line(exc)}") from None
    except ValueError as exc:
        message = _first_line(exc)
        if "Unrecognized configuration class" in message or "Unrecognized model" in message:
            raise ModelError(f"{spec} is not a {what}: {message}") from None
        if "trust_remote_code" in message:
            raise ModelError(
                f"{spec} needs custom code to load (trust_remote_code), which aim never runs",
                "use a checkpoint of an architecture built into transformers",
            ) from None
        raise ModelError(f"cannot load {what} from {spec}: {message}") from None
    except (RuntimeError, KeyError, TypeError) as exc:
        message = _first_line(exc)
        if "mismatched_sizes" in message or "size mismatch" in message:
            message = "tensor shapes differ from those config.json describes"
        raise ModelError(
            f"weights in {spec} do not fit the model's configuration: {message}",
            "the weights and config.json must come from the same save_pretrained() call",
        ) from None


def _quiet_transformers() -> None:
    """Silence transformers' own bars and warnings: aim reports progress and errors itself."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message, for one-line errors."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
