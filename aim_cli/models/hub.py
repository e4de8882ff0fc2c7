"""Offline loading of Hugging Face checkpoints (local directories or the local cache)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from aim_cli.errors import ModelError
from aim_cli.models.local import force_offline, looks_like_path

T = TypeVar("T")


def locate(spec: str) -> tuple[str, bool]:
    """Return (where to load from, is_local_dir) for a --model value, or fail clearly."""
    force_offline()
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
    if looks_like_path(spec):
        raise ModelError(f"model directory {spec} does not exist", "check the path")
    return spec, False


def _not_cached(spec: str) -> ModelError:
    """The error for a --model that is neither an existing directory nor a cached hub id.

    `models/typo` reads as a hub id (ORG/NAME) as much as a path, so both fixes are named,
    the path first when its parent folder exists.
    """
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    download = (
        f"aim never downloads: for a hub model run `hf download {spec}` on a connected machine "
        "and copy the cache (or set HF_HOME to it)"
    )
    parent = Path(spec).expanduser().parent
    if "/" in spec and str(parent) not in ("", "."):
        path_fix = f"check the path ({parent} holds no '{Path(spec).name}')" if parent.is_dir() else "check the path"
        return ModelError(
            f"no local directory {spec} and no cached hub model '{spec}' in the local Hugging Face cache ({home})",
            f"{path_fix}; or {download}" if parent.is_dir() else f"{download}; or {path_fix}",
        )
    return ModelError(
        f"model '{spec}' is neither a local directory nor in the local Hugging Face cache ({home})",
        f"{download}, or pass a local directory",
    )


def load_pretrained(factory: Callable[..., T], spec: str, what: str, complete: bool = False, **kwargs: Any) -> T:
    """Call an Auto*.from_pretrained offline, turning loader failures into one-line errors.

    With `complete`, every weight the architecture needs must come from the checkpoint:
    transformers would otherwise initialise missing ones (a classifier head, say) at random,
    and results would change from run to run whatever the seed.
    """
    source, local = locate(spec)
    from aim_cli.models.checkpoint_files import check_checkpoint

    # The root check: every settings file of the folder is checked before transformers parses one.
    check_checkpoint(source)
    _quiet_transformers()
    if complete:
        kwargs["output_loading_info"] = True
        if local:
            refuse_config_larger_than_weights(factory, Path(source), spec, what, kwargs.get("config"))
    try:
        loaded = factory(source, local_files_only=True, trust_remote_code=False, **kwargs)
    except Exception as exc:  # every loader failure is the checkpoint's, not aim's: one line naming it
        raise _loader_error(exc, spec, what, local) from None
    if not complete:
        return loaded
    model, info = cast("tuple[T, dict[str, Any]]", loaded)  # output_loading_info=True: (model, info)
    from aim_cli.models.weights import name_some

    # Tied weights and buffers never saved (position_ids, inv_freq) are not listed by transformers.
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ModelError(
            f"{spec} lacks {len(missing)} weight(s) the {what} needs ({name_some(missing)}); they would be random",
            "use a checkpoint saved with its task head (e.g. a fine-tuned classifier, not a base model)",
        )
    return model


def _loader_error(exc: Exception, spec: str, what: str, local: bool) -> ModelError:
    """The one-line error for a transformers loader failure on checkpoint `spec`."""
    from aim_cli.models.weights import scrub_advice

    message = _first_line(exc)
    if isinstance(exc, OSError):
        return (
            _not_cached(spec) if not local else ModelError(f"cannot load {what} from {spec}: {scrub_advice(message)}")
        )
    if isinstance(exc, ValueError):
        if "Unrecognized configuration class" in message or "Unrecognized model" in message:
            return ModelError(f"{spec} is not a {what}: {message}")
        if "trust_remote_code" in str(exc) or "custom code" in message:  # auto_map in a config
            return ModelError(
                f"{spec} needs custom code to load (trust_remote_code), which aim never runs",
                "use a checkpoint of an architecture built into transformers",
            )
        return ModelError(f"cannot load {what} from {spec}: {scrub_advice(message)}")
    if isinstance(exc, pickle.UnpicklingError):
        return _code_pickle(spec, str(exc))
    if isinstance(exc, (RuntimeError, KeyError, TypeError)):
        if "weights_only" in message or "Unpickler" in message:
            return _code_pickle(spec, str(exc))
        if "mismatched_sizes" in message or "size mismatch" in message:
            message = "tensor shapes differ from those config.json describes"
        return ModelError(
            f"weights in {spec} do not fit the model's configuration: {scrub_advice(message)}",
            "the weights and config.json must come from the same save_pretrained() call",
        )
    if type(exc).__name__ == "SafetensorError":  # a truncated file, or a header that lies
        return ModelError(
            f"cannot load {what} from {spec}: its weights file is damaged ({scrub_advice(message)})",
            "copy the checkpoint again; its files may be incomplete",
        )
    return ModelError(f"cannot load {what} from {spec}: {type(exc).__name__}: {scrub_advice(message)}")


def stored_values(folder: Path) -> int | None:
    """How many values the folder's safetensors files hold, read from their headers (None: no safetensors)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 (safe_open has keys() but no __iter__)
                    shape = handle.get_slice(name).get_shape()
                    count = 1
                    for edge in shape:
                        count *= int(edge)
                    total += count
        except Exception:  # a damaged file: the loader reports it in its own words
            return None
    return total


def refuse_config_larger_than_weights(
    factory: Callable[..., Any], folder: Path, spec: str, what: str, config: Any = None
) -> None:
    """config.json may not describe a network far larger than its weights files: counts in it never size memory.

    The network is built on the meta device (no memory) and its parameters counted against the values
    the safetensors headers declare. A complete checkpoint stores at least every parameter (tied ones
    once); twice that, plus a margin, is allowed for layouts that store weights another way, so only a
    config whose sizes (vocab_size, num_labels, hidden sizes) were inflated past its weights is refused,
    before transformers allocates and initialises it.
    """
    import torch

    stored = stored_values(folder)
    auto = getattr(factory, "__self__", None)
    if stored is None or auto is None or not hasattr(auto, "from_config"):
        return
    try:
        if config is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        with torch.device("meta"):
            network = auto.from_config(config)
        needed = sum(parameter.numel() for parameter in network.parameters())
    except Exception:  # the loader itself reports a config it cannot build, in its own words
        return
    if needed > 2 * stored + 1_000_000:
        raise ModelError(
            f"{spec}: config.json describes a {what} of {needed:,} parameters, but its weights files hold "
            f"{stored:,} values",
            "the weights and config.json must come from the same save_pretrained() call",
        )


def _code_pickle(spec: str, detail: str) -> ModelError:
    """The error for a pickled checkpoint that would need arbitrary code to load."""
    from aim_cli.models.weights import refused_global

    wanted = refused_global(detail)
    return ModelError(
        f"{spec} holds a pickle that needs arbitrary code to load{f' ({wanted})' if wanted else ''}, "
        "which aim refuses to run",
        "use the checkpoint's model.safetensors, or convert it with safetensors on a machine you trust",
    )


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
