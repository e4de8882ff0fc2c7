"""timm image classifiers: `timm:ARCH` with --weights, and timm checkpoints in Hugging Face layout.

Hugging Face layout checkpoints (what timm's `save_for_hf` / `push_to_hf_hub` write: `config.json`
with `architecture`, `num_classes`, `label_names`, `pretrained_cfg`, `model_args`, next to
`model.safetensors`) are loaded with timm itself rather than transformers' TimmWrapper: the
wrapper (transformers 5.x) passes `num_classes` twice when `model_args` carries it, as it does in
what timm's save_for_hf writes (checked with timm 1.0.31), and it cannot read the older flat config
layout; going through timm also keeps one set of checks and messages for both ways in.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from PIL import Image

from aim_cli.errors import ModelError
from aim_cli.models.checkpoint_files import Resize, check_checkpoint, read_json, timm_resize
from aim_cli.models.image_model import ImageModel, module_forward
from aim_cli.models.local import force_offline, looks_like_path
from aim_cli.models.torchvision_models import checked_labels
from aim_cli.models.weights import (
    check_fits,
    labels_from_value,
    load_into,
    load_state_dict,
    meta_shapes,
    module_key_order,
    output_width,
    read_labels_file,
)

TIMM_PREFIX = "timm:"
INSTALL_HINT = "pip install 'aim-cli[timm]'"
# Weights files a Hugging Face layout timm checkpoint may hold, the safe format first.
_WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.bin")
# Model arguments that aim sets itself or that would not build a model from a config.
_MANAGED_ARGS = ("num_classes", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


def require_timm(what: str) -> ModuleType:
    """Import timm, or fail with the install hint (it is an optional extra)."""
    try:
        import timm
        import timm.data
    except ImportError as exc:
        if exc.name in (None, "timm") or str(exc.name).startswith("timm."):
            raise ModelError(f"{what} needs the timm package", INSTALL_HINT) from None
        raise ModelError(f"{what} needs timm, which fails to import: {exc}", f"reinstall it: {INSTALL_HINT}") from None
    return timm


def timm_checkpoint(spec: str) -> Path | None:
    """The folder of a timm checkpoint in Hugging Face layout (local or cached hub id), else None.

    Such a config.json names an `architecture` and no transformers `model_type`; anything else
    (including a folder TimmWrapper's save_pretrained wrote) is left to the transformers path.
    """
    config = _config_file(spec)
    if config is None:
        return None
    data = read_json(config, spec)  # bounded in size; an unreadable one is named here
    if isinstance(data, dict) and isinstance(data.get("architecture"), str) and "model_type" not in data:
        return config.parent
    return None


def _config_file(spec: str) -> Path | None:
    """config.json of a local folder, or of a hub id in the local cache (never downloaded)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path / "config.json" if (path / "config.json").is_file() else None
    if path.exists() or looks_like_path(spec):
        return None
    force_offline()
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not a valid repo id: the transformers path explains what is wrong
        return None
    return Path(found) if isinstance(found, str) else None


def load_timm_checkpoint(spec: str, device: torch.device, labels_file: Path | None) -> ImageModel:
    """Load a timm checkpoint folder in Hugging Face layout, or such a cached hub id."""
    folder = timm_checkpoint(spec)
    if folder is None:
        raise ModelError(f"{spec} is not a timm checkpoint (its config.json names no 'architecture')")
    return _load_folder(folder, spec, device, labels_file)


def load_timm_arch(arch: str, device: torch.device, weights: Path | None, labels_file: Path | None) -> ImageModel:
    """timm.create_model(ARCH, pretrained=False) filled from a local weights file."""
    display = f"{TIMM_PREFIX}{arch}"
    timm = require_timm(display)
    _check_arch(timm, arch, f"unknown timm architecture '{arch}'")
    if weights is None:
        raise ModelError(f"{display} needs --weights FILE (.safetensors or .pth)", "aim never downloads weights")
    state, stored_labels = load_state_dict(weights)
    labels = read_labels_file(labels_file) if labels_file else stored_labels
    return _build(timm, arch, display, state, weights, labels, labels_file or weights, device, {}, None)


def _load_folder(folder: Path, display: str, device: torch.device, labels_file: Path | None) -> ImageModel:
    """A timm checkpoint saved in Hugging Face layout: config.json plus model.safetensors."""
    check_checkpoint(str(folder), display)  # every value below is checked before it sizes anything
    config = read_json(folder / "config.json", display)
    arch = config["architecture"]
    timm = require_timm(f"{display} (a timm checkpoint)")
    _check_arch(
        timm,
        arch,
        f"{display} names timm architecture '{arch}', which timm {timm.__version__} does not know",
        upgrade=True,
    )
    weights = next((folder / name for name in _WEIGHTS_NAMES if (folder / name).is_file()), None)
    if weights is None:
        raise ModelError(f"timm checkpoint {display} has no {' or '.join(_WEIGHTS_NAMES)}", "copy the whole checkpoint")
    state, _ = load_state_dict(weights)
    # Older hub configs are one flat dict; newer ones nest the preprocessing under pretrained_cfg.
    pretrained_cfg = config.get("pretrained_cfg") if isinstance(config.get("pretrained_cfg"), dict) else config
    stored_args = config.get("model_args") if isinstance(config.get("model_args"), dict) else {}
    model_args = {k: v for k, v in stored_args.items() if k not in _MANAGED_ARGS}
    names = config.get("label_names", pretrained_cfg.get("label_names", config.get("labels")))
    width = config.get("num_classes", pretrained_cfg.get("num_classes"))
    labels: list[str] | None
    if labels_file is not None:
        labels, source = read_labels_file(labels_file), labels_file
    else:
        labels, source = _config_labels(names, width, display), folder / "config.json"
        # Hub configs often name classes by id (ImageNet synsets) and describe them separately.
        descriptions = config.get("label_descriptions", pretrained_cfg.get("label_descriptions"))
        if labels and isinstance(descriptions, dict):
            labels = [str(descriptions.get(label, label)) for label in labels]
    return _build(timm, arch, display, state, weights, labels, source, device, model_args, pretrained_cfg)


def _config_labels(names: Any, width: Any, display: str) -> list[str] | None:
    """label_names from a timm config: a list, or an {id: name} mapping that may have gaps."""
    if names is None or names == []:
        return None
    if isinstance(names, list):
        return labels_from_value(names, f"{display}: config.json label_names")
    if isinstance(names, dict):
        try:
            by_id = {int(key): str(value) for key, value in names.items()}
        except ValueError:
            raise ModelError(f"{display}: label_names keys in config.json must be class ids") from None
        count = int(width) if isinstance(width, int) and width > 0 else max(by_id, default=-1) + 1
        return [by_id.get(i, f"class_{i}") for i in range(count)]
    raise ModelError(f"{display}: label_names in config.json must be a list or an id->name mapping")


def _build(
    timm: ModuleType,
    arch: str,
    display: str,
    state: dict[str, torch.Tensor],
    weights: Path,
    labels: list[str] | None,
    labels_source: Path,
    device: torch.device,
    model_args: dict[str, Any],
    pretrained_cfg: dict[str, Any] | None,
) -> ImageModel:
    """Create the network with as many outputs as the weights' head, load them, eval mode."""
    width = _head_width(timm, arch, state, model_args, weights)
    if labels is None:
        labels = imagenet_labels(timm, width or _default_classes(timm, arch))
    if width is not None:
        labels = checked_labels(labels, width, labels_source)
    if not labels:
        raise ModelError(f"{display} has no classes to report", "pass --labels FILE with the class names")
    try:  # names and shapes on the meta device first: the real network is allocated only for weights that fill it
        shapes = meta_shapes(lambda: timm.create_model(arch, pretrained=False, num_classes=len(labels), **model_args))
    except Exception:  # an architecture that cannot be built on meta: _create and load_into report
        shapes = None
    hint = "check that the weights were trained with this timm architecture"
    try:
        if shapes is not None:
            check_fits(shapes, state, display, weights)
    except ModelError as exc:  # same message, but the fix names the timm spelling
        raise ModelError(exc.message, hint) from None
    network = _create(timm, arch, display, num_classes=len(labels), **model_args)
    try:
        load_into(network, state, display, weights)
    except ModelError as exc:
        raise ModelError(exc.message, hint) from None
    network.eval().to(device)
    preprocess, resize = _preprocess(timm, network, pretrained_cfg)
    return ImageModel(display, labels, device, network, preprocess, module_forward, resize, task="classify")


def _check_arch(timm: ModuleType, arch: str, problem: str, upgrade: bool = False) -> None:
    """Refuse an architecture timm does not register, suggesting close names."""
    if timm.is_model(arch):
        base, _, tag = arch.partition(".")
        try:  # a pretrained tag (resnet18.a1_in1k) picks the preprocessing, so it must exist
            timm.models.get_pretrained_cfg(arch)
        except RuntimeError:
            tags = [name.partition(".")[2] for name in timm.list_pretrained(f"{base}.*")]
            shown = ", ".join(tags[:6]) or "none"
            raise ModelError(f"timm architecture {base} has no pretrained tag '{tag}'", f"its tags: {shown}") from None
        return
    close = difflib.get_close_matches(arch.split(".")[0], timm.list_models(), n=4, cutoff=0.6)
    if close:
        hint = f"did you mean {', '.join(close)}?"
    elif upgrade:
        hint = "upgrade timm (pip install -U timm), or check the checkpoint"
    else:
        hint = "see timm.list_models(), e.g. resnet18, convnext_tiny, vit_small_patch16_224"
    raise ModelError(problem, hint)


def _create(timm: ModuleType, arch: str, display: str, **kwargs: Any) -> torch.nn.Module:
    """timm.create_model without ever downloading; its failures become one-line errors."""
    try:
        return timm.create_model(arch, pretrained=False, **kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError, KeyError) as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ModelError(f"cannot build {display}: {first}") from None


def _head_width(
    timm: ModuleType, arch: str, state: dict[str, torch.Tensor], model_args: dict[str, Any], weights: Path
) -> int | None:
    """Rows of the classifier weight: the head timm's config names, else the last weight in module order."""
    heads = timm.models.get_pretrained_cfg_value(arch, "classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    width = output_width(state, [f"{head}.weight" for head in heads], weights)
    if width is not None:
        return width
    try:  # built on the meta device: key order only, no memory, no init cost
        order = module_key_order(lambda: timm.create_model(arch, pretrained=False, **model_args))
    except Exception:  # an architecture that cannot be built on meta: the load reports mismatches
        return None
    return output_width(state, order, weights)


def _default_classes(timm: ModuleType, arch: str) -> int:
    """The architecture's default number of classes (1000 for most)."""
    return int(timm.models.get_pretrained_cfg_value(arch, "num_classes") or 1000)


def imagenet_labels(timm: ModuleType, width: int) -> list[str]:
    """ImageNet class descriptions for a 1000-way (or 12k/22k) head, as timm ships them; else class_i."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset({"num_classes": width})
    if subset:
        descriptions = list(ImageNetInfo(subset).label_descriptions())
        if len(descriptions) == width:
            return descriptions
    return [f"class_{i}" for i in range(width)]


def _preprocess(
    timm: ModuleType, network: torch.nn.Module, pretrained_cfg: dict[str, Any] | None
) -> tuple[Callable[[Sequence[Image.Image]], torch.Tensor], Resize]:
    """The eval transform timm derives from the pretrained config (resize, centre crop, normalise), and its resize."""
    if pretrained_cfg is None:
        data_config = timm.data.resolve_model_data_config(network)
    else:
        # The checkpoint's settings win; any it leaves out come from the architecture's defaults.
        merged = {**dict(getattr(network, "pretrained_cfg", None) or {}), **pretrained_cfg}
        data_config = timm.data.resolve_data_config({}, pretrained_cfg=merged, model=network)
    transform = timm.data.create_transform(**data_config, is_training=False)

    def preprocess(images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([transform(image.convert("RGB")) for image in images])

    return preprocess, timm_resize(data_config)
