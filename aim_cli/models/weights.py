"""Weights files for torchvision and timm architectures: safetensors or safe .pth, plus their labels.

Every count a weights file states is checked before anything is sized by it: the labels in its
metadata against LABEL_COUNT (counted while parsing, so a list of millions is refused without
building it), its tensors against TENSOR_COUNT before any is read, and its tensors' names and
shapes against the architecture built on the meta device (`check_fits`) before the real network,
with as many outputs as there are labels, is allocated.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from aim_cli.errors import InputError, ModelError
from aim_cli.io import read_text_file
from aim_cli.limits import LABEL_COUNT, TENSOR_COUNT, TEXT_BYTES, ascii_whole

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
    """Load a JSON 'labels' metadata entry, then (their count checked first) the tensors of a safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            labels = _metadata_labels(metadata, path)  # before any tensor is read
            keys = list(handle.keys())
            _check_tensor_count(len(keys), path)
            state = {key: handle.get_tensor(key) for key in keys}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"weights file {path} is not a valid safetensors file: {_first(exc)}") from None
    return state, labels


def _metadata_labels(metadata: dict[str, str], path: Path) -> list[str] | None:
    """The class names a safetensors file's metadata stores under one of the usual keys, bounded."""
    for key in _LABEL_KEYS:
        if key in metadata:
            return labels_from_json(metadata[key], f"weights file {path}: its '{key}' metadata")
    return None


def _check_tensor_count(count: int, path: Path) -> None:
    """Refuse a weights file holding more tensors than any real network before reading one."""
    if count > TENSOR_COUNT.value():
        raise ModelError(f"weights file {path} holds {count:,} tensors, over the bound", TENSOR_COUNT.hint())


def _first(exc: BaseException) -> str:
    """The first non-empty line of a library's message (a message may be a whole page)."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:300]


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
                labels = labels_from_value(obj[key], f"weights file {path}: its '{key}' entry")
                break
        nested = next((obj[key] for key in _NESTED_KEYS if isinstance(obj.get(key), dict)), None)
        # Labels saved beside the tensors of a flat state dict are not tensors of the network.
        obj = (
            nested
            if nested is not None
            else {k: v for k, v in obj.items() if isinstance(v, torch.Tensor) or k not in _LABEL_KEYS}
        )
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors", "save model.state_dict(), not the model")
    _check_tensor_count(len(obj), path)
    return {k.removeprefix("module."): v for k, v in obj.items()}, labels


def refused_global(message: str) -> str:
    """What a refused pickle asked for, from torch's message, as 'it asks for X' ('' when it does not say)."""
    found = re.search(r"(?:Unsupported global|GLOBAL):? ?(?:GLOBAL )?([\w.]+)", message)
    return f"it asks for {found.group(1)}" if found else ""


_LABELS_FIX = "store the labels as a JSON list of class names, or pass --labels FILE"


def labels_from_json(text: str, source: str) -> list[str]:
    """Class names from JSON text (a list, or an {id: name} mapping), counted against LABEL_COUNT while parsing.

    The one reader of label lists a file stores (weights metadata, labels files): a list of millions
    is refused after counting past the bound, without building its millions of strings.
    """
    bound = LABEL_COUNT.value()
    if text.count(",") >= bound and _more_items_than(text, bound):  # enough commas for too many items
        raise ModelError(f"{source} lists more than {bound:,} classes", f"{LABEL_COUNT.hint()}; or {_LABELS_FIX}")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ModelError(f"{source} is nested too deeply to be a list of labels", _LABELS_FIX) from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{source} is not valid JSON (line {exc.lineno}: {exc.msg})", _LABELS_FIX) from None
    return labels_from_value(value, source)


def _more_items_than(text: str, bound: int) -> bool:
    """Whether the top-level JSON array or object in `text` has more than `bound` items, in constant memory."""
    decoder = json.JSONDecoder()
    index = _skip_space(text, 0)
    if index >= len(text) or text[index] not in "[{":
        return False
    closing, is_object = ("}", True) if text[index] == "{" else ("]", False)
    count, index = 0, index + 1
    try:
        while True:
            index = _skip_space(text, index)
            if text[index] == closing:
                return False
            if is_object:
                _, index = decoder.raw_decode(text, index)
                index = _skip_space(text, index)
                if text[index] != ":":
                    return False  # malformed: json.loads names the place
                index = _skip_space(text, index + 1)
            _, index = decoder.raw_decode(text, index)  # each item parsed and dropped at once
            count += 1
            if count > bound:
                return True
            index = _skip_space(text, index)
            if text[index] != ",":
                return False
            index += 1
    except (ValueError, IndexError, RecursionError):
        return False  # malformed: json.loads reports it


def _skip_space(text: str, index: int) -> int:
    """The index of the next non-whitespace character."""
    while index < len(text) and text[index] in " \t\n\r":
        index += 1
    return index


def labels_from_value(value: Any, source: str) -> list[str]:
    """Class names from a list of names or an {id: name} mapping, checked against LABEL_COUNT first.

    Ids in a mapping are integers from 0; a gap gets 'class_ID' (as transformers names an unnamed
    class), and a name must be a string: a label that is a number, a list or null is a broken file.
    """
    bound = LABEL_COUNT.value()
    if isinstance(value, dict):
        if len(value) > bound:
            raise ModelError(f"{source} maps {len(value):,} class ids", f"{LABEL_COUNT.hint()}; or {_LABELS_FIX}")
        by_id: dict[int, Any] = {}
        for key, name in value.items():
            index = key if isinstance(key, int) and not isinstance(key, bool) else _digits(key)
            if index is None or not 0 <= index < bound:
                shown = repr(key)[:40]
                raise ModelError(
                    f"{source}: class id {shown} is not an integer from 0 to {bound - 1:,}",
                    f"id -> name keys are class ids 0, 1, ...; {LABEL_COUNT.hint()}",
                )
            if index in by_id:
                raise ModelError(f"{source}: class id {index} is given twice", _LABELS_FIX)
            by_id[index] = name
        names = [by_id.get(i, f"class_{i}") for i in range(max(by_id, default=-1) + 1)]
    elif isinstance(value, (list, tuple)):
        if len(value) > bound:
            raise ModelError(f"{source} lists {len(value):,} classes", f"{LABEL_COUNT.hint()}; or {_LABELS_FIX}")
        names = list(value)
    else:
        raise ModelError(f"{source}: expected a list of class names or an id -> name mapping", _LABELS_FIX)
    if not names:
        raise ModelError(f"{source} names no classes", _LABELS_FIX)
    for index, name in enumerate(names):
        if not isinstance(name, str):
            shown = repr(name)[:40]
            raise ModelError(f"{source}: the name of class {index} is {shown}, not a string", _LABELS_FIX)
    return names


def _digits(key: Any) -> int | None:
    """A JSON object key that spells a class id ('12'), else None."""
    return ascii_whole(key, max_digits=12) if isinstance(key, str) else None


def read_labels_file(path: Path) -> list[str]:
    """Read class names from a .txt (one per line), .json (list or mapping) or config.json."""
    text = read_text_file(path, TEXT_BYTES, InputError, "labels file")
    if path.suffix.lower() == ".json":
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"labels file {path}: invalid JSON at line {exc.lineno}") from None
        except RecursionError:
            raise ModelError(f"labels file {path} is nested too deeply to be a list of labels") from None
        if isinstance(value, dict) and "id2label" in value:
            value = value["id2label"]
        return labels_from_value(value, f"labels file {path}")
    bound = LABEL_COUNT.value()
    if text.count("\n") >= bound:  # counted before splitting: a file of millions of lines is refused as is
        count = sum(1 for line in text.splitlines() if line.strip())
        if count > bound:
            raise ModelError(f"labels file {path} lists {count:,} classes", LABEL_COUNT.hint())
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ModelError(f"labels file {path} is empty")
    return labels


def output_width(state: dict[str, torch.Tensor], key_order: list[str], source: Path) -> int | None:
    """The number of classes: rows of the last classifier weight, in the architecture's module order.

    A file's own key order cannot be trusted (safetensors sorts keys), so the order comes
    from the architecture. The rows are a count the file states (an empty 10^9 x 0 tensor holds
    no bytes), so they are held to LABEL_COUNT before anything is sized by them.
    """
    for key in reversed(key_order):
        tensor = state.get(key)
        if tensor is not None and key.endswith("weight") and tensor.dim() in (2, 4):
            width = int(tensor.shape[0])
            if width > LABEL_COUNT.value():
                raise ModelError(f"weights file {source}: {key} has {width:,} output rows", LABEL_COUNT.hint())
            return width
    return None


def module_key_order(build: Callable[[], torch.nn.Module]) -> list[str]:
    """State-dict keys of an architecture in module order, built on the meta device (no memory)."""
    with torch.device("meta"):
        return list(build().state_dict())


def meta_shapes(build: Callable[[], torch.nn.Module]) -> dict[str, torch.Size]:
    """Every state-dict tensor's shape of an architecture, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        return {key: tensor.shape for key, tensor in build().state_dict().items()}


def check_fits(shapes: dict[str, torch.Size], state: dict[str, torch.Tensor], arch: str, path: Path) -> None:
    """The weights must fill the architecture exactly (names and shapes) before the real network is allocated.

    `shapes` is meta_shapes() of the network aim is about to build, with as many outputs as labels:
    a file with no tensors and a million labels is refused here, not after building that network.
    """
    for key, shape in shapes.items():
        tensor = state.get(key)
        if tensor is not None and tensor.shape != shape:
            raise ModelError(
                f"weights {path} do not fit {arch}: size mismatch for {key}: the file holds "
                f"{list(tensor.shape)}, the architecture needs {list(shape)}",
                "check the architecture, and that --labels or the weights' labels name one class per output",
            )
    missing = [key for key in shapes if key not in state and not key.endswith("num_batches_tracked")]
    unexpected = [key for key in state if key not in shapes]
    _report_mismatch(missing, unexpected, arch, path)


def _report_mismatch(missing: list[str], unexpected: list[str], arch: str, path: Path) -> None:
    """One line naming the tensors a file lacks or has too many of."""
    if missing or unexpected:
        parts = [
            f"{len(keys)} tensor(s) {kind} ({name_some(keys)})"
            for kind, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise ModelError(
            f"weights {path} do not fit {arch}: {' and '.join(parts)}; missing ones would be random",
            "check --model torchvision:ARCH matches the architecture the weights were trained with",
        )


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
    _report_mismatch(missing, list(result.unexpected_keys), arch, path)


def name_some(keys: list[str], shown: int = 4) -> str:
    """The first few tensor names and how many more, for one-line errors."""
    more = len(keys) - shown
    return ", ".join(keys[:shown]) + (f" and {more} more" if more > 0 else "")
