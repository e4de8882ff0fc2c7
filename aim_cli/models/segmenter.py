"""Semantic segmenters from transformers checkpoints and torchvision architectures: (N, C, h, w) logits out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from aim_cli.errors import ModelError
from aim_cli.models.checkpoint_files import hf_resize
from aim_cli.models.hub import load_pretrained
from aim_cli.models.image_model import ImageModel, module_forward, transformers_forward
from aim_cli.models.torchvision_models import checked_labels, default_labels, standard_preprocess, standard_resize
from aim_cli.models.universal_segmenter import is_universal, load_universal
from aim_cli.models.weights import (
    check_fits,
    load_into,
    load_state_dict,
    meta_shapes,
    module_key_order,
    output_width,
    read_labels_file,
)

# How a Hugging Face segmenter yields per-pixel logits: its own `.logits`, or query-mask log-scores.
SEMANTIC, UNIVERSAL = "semantic", "universal"


# A segmenter is an ImageModel whose task is "segment"; the name stays for the tasks' type hints.
Segmenter = ImageModel


def load_hf_segmenter(spec: str, device: torch.device, labels_file: Path | None, display: str) -> ImageModel:
    """Load a semantic (AutoModelForSemanticSegmentation) or universal segmenter offline."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation

    config = load_pretrained(AutoConfig.from_pretrained, spec, "model configuration")
    reduce_labels = None
    if _check_segmentation_config(config, display) == UNIVERSAL:
        model, preprocess, labels, resize = load_universal(spec, config, device, display)
    else:
        model = load_pretrained(
            AutoModelForSemanticSegmentation.from_pretrained, spec, "semantic segmentation model", complete=True
        )
        processor = load_pretrained(AutoImageProcessor.from_pretrained, spec, "image processor")
        id2label = getattr(model.config, "id2label", None) or {}
        labels = [str(id2label.get(i, f"class_{i}")) for i in range(model.config.num_labels)]
        resize = hf_resize(processor)
        reduce_labels = getattr(processor, "do_reduce_labels", None)

        def preprocess(images: Sequence[Image.Image]) -> torch.Tensor:
            return processor(images=list(images), return_tensors="pt")["pixel_values"]

    if labels_file is not None:
        labels = checked_labels(read_labels_file(labels_file), len(labels), labels_file)
    model.eval().to(device)
    reduce = reduce_labels if isinstance(reduce_labels, bool) else None
    return ImageModel(
        display,
        labels,
        device,
        model,
        preprocess,
        transformers_forward,
        resize,
        task="segment",
        do_reduce_labels=reduce,
    )


def _check_segmentation_config(config: object, display: str) -> str:
    """SEMANTIC or UNIVERSAL; any other checkpoint is named, instead of transformers' long mapping error."""
    if is_universal(config):
        return UNIVERSAL
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES as known
    except ImportError:  # internal name moved: the loader's own error still applies
        return SEMANTIC
    model_type = getattr(config, "model_type", None)
    if model_type in known:
        return SEMANTIC
    architecture = (getattr(config, "architectures", None) or [model_type or "unknown"])[0]
    # Instance/panoptic heads (DETR panoptic, RF-DETR, EoMT) have no semantic reading aim implements.
    why = (
        "instance/panoptic outputs, which aim does not read as per-pixel class scores"
        if str(architecture).endswith(("InstanceSegmentation", "UniversalSegmentation", "ForSegmentation"))
        else "no per-pixel class logits"
    )
    raise ModelError(
        f"{display} is a {architecture}, not a semantic segmentation model ({why})",
        "aim segment needs a checkpoint such as SegFormer, BEiT, DPT, UperNet, Mask2Former, MaskFormer or OneFormer; "
        "for image classifiers use aim classify",
    )


def segmentation_architectures() -> list[str]:
    """The torchvision segmentation architectures (deeplabv3_*, fcn_*, lraspp_*)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models.segmentation))


def _build(arch: str, num_classes: int) -> torch.nn.Module:
    """A torchvision segmentation network without any pretrained weights (nothing downloads)."""
    import torchvision

    # weights_backbone defaults to ImageNet weights, which would download: always None here.
    return torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=num_classes)


def load_torchvision_segmenter(
    arch: str, device: torch.device, weights: Path | None, labels_file: Path | None
) -> ImageModel:
    """Build a torchvision segmentation model and load a local weights file into it."""
    known = segmentation_architectures()
    if arch not in known:
        raise ModelError(f"unknown torchvision segmentation architecture '{arch}'", f"one of: {', '.join(known)}")
    if weights is None:
        raise ModelError(
            f"torchvision:{arch} needs --weights FILE (.safetensors or .pth)", "aim never downloads weights"
        )
    state, stored_labels = load_state_dict(weights)
    # The auxiliary head only helps training; inference reads 'out', so its tensors are dropped.
    state = {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}
    width = output_width(state, module_key_order(lambda: _build(arch, 2)), weights)
    labels = read_labels_file(labels_file) if labels_file else stored_labels
    if labels is None:
        labels = default_labels(arch, width)
    if width is not None:
        labels = checked_labels(labels, width, labels_file or weights)
    if not labels:
        raise ModelError(f"cannot tell how many classes {weights} has", "pass --labels FILE")
    try:
        # Checked on the meta device before the real network, sized by the labels, is allocated.
        check_fits(meta_shapes(lambda: _build(arch, len(labels))), state, f"torchvision:{arch}", weights)
        network = _build(arch, len(labels))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"cannot build torchvision:{arch}: {exc}") from None
    load_into(network, state, f"torchvision:{arch}", weights)
    network.eval().to(device)
    return ImageModel(
        f"torchvision:{arch}",
        labels,
        device,
        network,
        standard_preprocess(arch),
        module_forward,
        standard_resize(arch),
        task="segment",
    )
