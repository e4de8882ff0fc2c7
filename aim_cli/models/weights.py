"""Weights files for torchvision architectures: safetensors or safe .pth, plus their labels."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import torch

from aim_cli.errors import InputError, ModelError
from aim_cli.io import read_text_file
from aim_cli.limits import TEXT_BYTES

# Keys under which training scripts commonly nest the state dict in a checkpoint.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
_LABEL_KEYS = ("labels", "classes", "categories", "class_names", "id2label")


# Library advice that would switch a safety check off; aim never passes it on.
_UNSAFE_ADVICE = re.compile(r"re-?run|weights_only|trust_remote_code|safe_globals|trusted source", re.IGNORECASE)


def scrub_advice(message: str) -> str:
    """Drop every sentence of a library's message that advises switching a safety check off."""
    sentences = re.split(r"(?<=[.!?])\s+", message.strip())
    kept = [sentence for sentence in sentences if not _UNSAFE_ADVICE.search(sentence)]
    return " ".join(kept) or "the loader refused the file"


def load_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """Read a weights file and any class labels stored with it, without running pickled code."""
    if not path.is_file():
        raise ModelError(f"weights file {path} not found", "check --weights")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(path)
    if suffix in (".pth", ".pt", ".bin", ".ckpt"):
        return _load_torch(path)
    raise ModelError(f"weights file {path}: unsupported type '{suffix}'", "use .safetensors or .pth")


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """Load tensors and a JSON 'labels' metadata entry from a safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"weights file {path} is not a valid safetensors file: {exc}") from None
    labels = None
    for key in _LABEL_KEYS:
        if key in metadata:
            try:
                value = json.loads(metadata[key])
            except json.JSONDecodeError:
                raise ModelError(
                    f"weights file {path}: its '{key}' metadata is not JSON",
                    "store labels as a JSON list of names, or pass --labels FILE",
                ) from None
            labels = _labels_from_value(value, str(path))
            break
    return state, labels


def _load_torch(path: Path) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """Load a .pth with weights_only=True; refuse pickles that need arbitrary code."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        wanted = refused_global(str(exc))
        raise ModelError(
            f"{path} is a pickle that needs arbitrary code to load"
            + (f" ({wanted})" if wanted else "")
            + ", which aim refuses to run",
            "on a machine you trust, save model.state_dict() with safetensors.torch.save_file and pass that",
        ) from None
    except Exception as exc:  # truncated zip, bad pickle opcodes...: the file's fault, never a crash
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelError(f"weights file {path} cannot be read: {scrub_advice(first)}") from None
    labels = None
    if isinstance(obj, dict):
        for key in _LABEL_KEYS:
            if key in obj and not isinstance(obj[key], torch.Tensor):
                labels = _labels_from_value(obj[key], str(path))
                break
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors", "save model.state_dict(), not the model")
    return {k.removeprefix("module."): v for k, v in obj.items()}, labels


def refused_global(message: str) -> str:
    """What a refused pickle asked for, from torch's message, as 'it asks for X' ('' when it does not say)."""
    found = re.search(r"(?:Unsupported global|GLOBAL):? ?(?:GLOBAL )?([\w.]+)", message)
    return f"it asks for {found.group(1)}" if found else ""


def _labels_from_value(value: Any, source: str) -> list[str]:
    """Accept a list of names or an {id: name} mapping."""
    if isinstance(value, dict):
        try:
            return [str(value[k]) for k in sorted(value, key=lambda k: int(k))]
        except (TypeError, ValueError):
            raise ModelError(f"labels in {source}: id2label keys must be integers") from None
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise ModelError(f"labels in {source}: expected a list of names or an id->name mapping")


def read_labels_file(path: Path) -> list[str]:
    """Read class names from a .txt (one per line), .json (list or mapping) or config.json."""
    text = read_text_file(path, TEXT_BYTES, InputError, "labels file")
    if path.suffix.lower() == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"labels file {path}: invalid JSON at line {exc.lineno}") from None
        if isinstance(value, dict) and "id2label" in value:
            value = value["id2label"]
        return _labels_from_value(value, str(path))
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ModelError(f"labels file {path} is empty")
    return labels


def output_width(state: dict[str, torch.Tensor], key_order: list[str]) -> int | None:
    """The number of classes: rows of the last classifier weight, in the architecture's module order.

    A file's own key order cannot be trusted (safetensors sorts keys), so the order comes
    from the architecture.
    """
    for key in reversed(key_order):
        tensor = state.get(key)
        if tensor is not None and key.endswith("weight") and tensor.dim() in (2, 4):
            return int(tensor.shape[0])
    return None


def module_key_order(build: Callable[[], torch.nn.Module]) -> list[str]:
    """State-dict keys of an architecture in module order, built on the meta device (no memory)."""
    with torch.device("meta"):
        return list(build().state_dict())


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    """Load a state dict strictly, explaining a mismatch in one line."""
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = next(
            (line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc).splitlines()[0]
        )
        raise ModelError(f"weights {path} do not fit {arch}: {first}") from None
    # strict=False so the error can name tensors; a BatchNorm step counter is not a weight.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = [
            f"{len(keys)} tensor(s) {kind} ({name_some(keys)})"
            for kind, keys in (("missing", missing), ("unexpected", result.unexpected_keys))
            if keys
        ]
        raise ModelError(
            f"weights {path} do not fit {arch}: {' and '.join(parts)}; missing ones would be random",
            "check --model torchvision:ARCH matches the architecture the weights were trained with",
        )


def name_some(keys: list[str], shown: int = 4) -> str:
    """The first few tensor names and how many more, for one-line errors."""
    more = len(keys) - shown
    return ", ".join(keys[:shown]) + (f" and {more} more" if more > 0 else "")
