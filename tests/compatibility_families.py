"""The model families of docs/compatibility.md: one tiny random checkpoint builder each.

Every family declares its task, how to build a tiny random checkpoint offline (1-4 layers,
widths of 8-32, 32-64 px inputs, the demo LM's 52-token character tokenizer for text) and what
aim does with it: "works", or not supported for a stated reason, refused with a line that
contains `refusal`.
`tests/test_compatibility.py` runs the real CLI on each and `tests/render_compatibility.py`
renders the docs table from the same list, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLASSIFY, SEGMENT, GENERATE = "classify", "segment", "generate"
TASK_TITLES = {CLASSIFY: "Image classification", SEGMENT: "Semantic segmentation", GENERATE: "Text generation"}
LABELS = ("cat", "dog", "bird")
IMAGE_SIZE = 32

Builder = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Family:
    """One row of the compatibility table."""

    name: str
    task: str
    checkpoint: str  # Markdown: the transformers class built, or how the CLI is pointed at it
    build: Builder  # saves a tiny random checkpoint under the given folder; returns the CLI's model args
    reason: str = ""  # non-empty: not supported, and aim's one-line refusal contains this text
    refusal: str = ""  # for an unsupported family: the words aim's one-line error must contain
    pending: str = ""  # non-empty: expected to work once this lands (the test is a non-strict xfail)
    requires: str = ""  # a module the family needs beyond aim's dependencies; the test skips without it
    install: str = ""  # what `pip install` gets it, named in the table
    slow: bool = False  # too slow for the default run (marked slow)

    @property
    def works(self) -> bool:
        """Whether aim is expected to run this family."""
        return not self.reason

    @property
    def slug(self) -> str:
        """A test id and folder name."""
        return f"{self.task}-" + "-".join(re.findall(r"[a-z0-9]+", self.name.lower()))


# --- shared pieces --------------------------------------------------------------------------------


def _seed() -> None:
    """Fix the random weights; torch is imported here so rendering the table stays light."""
    import torch

    torch.manual_seed(0)


def _labels() -> dict[str, Any]:
    """Config keywords naming the three classes."""
    return {"id2label": dict(enumerate(LABELS)), "label2id": {name: i for i, name in enumerate(LABELS)}}


def _processor(name: str, **kwargs: Any) -> Any:
    """A transformers image processor by class name, sized for the tiny inputs."""
    import transformers

    return getattr(transformers, name)(**kwargs)


def _square(**extra: Any) -> dict[str, Any]:
    """Processor keywords for a plain resize to IMAGE_SIZE x IMAGE_SIZE."""
    return {"size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, **extra}


def _pytorch_init(model: Any) -> None:
    """Re-initialise convolutions, linears and batch norms with PyTorch's own defaults.

    transformers draws some models' weights (batch-norm scales included) from N(0, 0.02), so a
    deep random stack shrinks activations to 1e-11 or less, down to exact zeros that tie every
    logit: no trained model looks like that, and calibration has no curve to find.
    """
    import torch

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm)):
            module.reset_parameters()


def _oneformer_processor() -> Any:
    """OneFormer's processor: its text encoder reads the task prompt, so a tokenizer comes with it.

    A character-level CLIP vocabulary covers the prompt ('the task is semantic') offline.
    """
    import transformers

    from tests.data.build_universal import char_clip_tokenizer

    return transformers.OneFormerProcessor(
        image_processor=_processor("OneFormerImageProcessor", **_square()),
        tokenizer=char_clip_tokenizer(),
        task_seq_length=8,
        max_seq_length=8,
    )


def _hf_vision(
    model_class: str,
    config_class: str,
    processor: tuple[str, dict[str, Any]] | Callable[[], Any],
    prepare: Callable[[Any], None] | None = None,
    **config: Any,
) -> Builder:
    """A builder saving a transformers vision model (random weights, fixed seed) and its processor.

    `processor` is (class name, keywords), or a function that makes one.
    """

    def build(directory: Path) -> list[str]:
        import transformers

        _seed()
        model = getattr(transformers, model_class)(getattr(transformers, config_class)(**_labels(), **config))
        if prepare is not None:
            prepare(model)
        model.eval().save_pretrained(directory)
        made = processor() if callable(processor) else _processor(processor[0], **processor[1])
        made.save_pretrained(directory)
        return ["--model", str(directory)]

    return build


def _torchvision_segmenter(arch: str) -> Builder:
    """A builder saving a torchvision segmentation network's state dict with its labels."""

    def build(directory: Path) -> list[str]:
        import torchvision
        from safetensors.torch import save_file

        _seed()
        network = torchvision.models.get_model(arch, weights=None, weights_backbone=None, num_classes=len(LABELS))
        state = {k: v.contiguous() for k, v in network.state_dict().items()}
        directory.mkdir(parents=True, exist_ok=True)
        weights = directory / f"{arch}.safetensors"
        save_file(state, str(weights), {"labels": json.dumps(list(LABELS))})
        return ["--model", f"torchvision:{arch}", "--weights", str(weights)]

    return build


def _timm_classifier(directory: Path) -> list[str]:
    """A timm resnet with its weights as safetensors and a labels file."""
    import timm
    from safetensors.torch import save_file

    _seed()
    network = timm.create_model("resnet18", pretrained=False, num_classes=len(LABELS))
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(weights))
    labels = directory / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
    return ["--model", "timm:resnet18", "--weights", str(weights), "--labels", str(labels)]


def _timm_hf_classifier(directory: Path) -> list[str]:
    """A timm resnet saved in the Hugging Face hub layout (config.json with `architecture`)."""
    import timm
    from timm.models import save_for_hf

    _seed()
    network = timm.create_model("resnet18", pretrained=False, num_classes=len(LABELS))
    directory.mkdir(parents=True, exist_ok=True)
    save_for_hf(network, directory, model_config={"label_names": list(LABELS)})
    return ["--model", str(directory)]


def character_tokenizer(template: str = "<s> $A") -> Any:
    """The demo LM's character tokenizer (52 tokens), with a post-processing template."""
    from tokenizers import processors

    from aim_cli.demo.train_lm import build_tokenizer

    tokenizer = build_tokenizer()
    vocab = tokenizer.get_vocab()
    specials = [(name, vocab[name]) for name in ("<s>", "</s>") if name in template]
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=specials)
    return tokenizer


def _hf_text(model_class: str, config_class: str, template: str = "<s> $A", **config: Any) -> Builder:
    """A builder saving a tiny transformers language model with the character tokenizer."""

    def build(directory: Path) -> list[str]:
        import transformers

        tokenizer = character_tokenizer(template)
        ids = {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
        _seed()
        model = getattr(transformers, model_class)(
            getattr(transformers, config_class)(vocab_size=len(tokenizer), **{**ids, **config})
        )
        model.eval().save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return ["--model", str(directory)]

    return build


# --- the families ---------------------------------------------------------------------------------

_VIT = {
    "image_size": IMAGE_SIZE,
    "patch_size": 8,
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}
_CROP = ("ConvNextImageProcessor", {"size": {"shortest_edge": IMAGE_SIZE}})
_DECODER = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 64,
}

FAMILIES: tuple[Family, ...] = (
    # image classification
    Family(
        "ViT",
        CLASSIFY,
        "`ViTForImageClassification`",
        _hf_vision("ViTForImageClassification", "ViTConfig", ("ViTImageProcessor", _square()), **_VIT),
    ),
    Family(
        "DeiT",
        CLASSIFY,
        "`DeiTForImageClassification`",
        _hf_vision(
            "DeiTForImageClassification",
            "DeiTConfig",
            ("DeiTImageProcessor", _square(crop_size=_square()["size"])),
            **_VIT,
        ),
    ),
    Family(
        "DeiT distilled",
        CLASSIFY,
        "`DeiTForImageClassificationWithTeacher`",
        _hf_vision(
            "DeiTForImageClassificationWithTeacher",
            "DeiTConfig",
            ("DeiTImageProcessor", _square(crop_size=_square()["size"])),
            **_VIT,
        ),
    ),
    Family(
        "BEiT",
        CLASSIFY,
        "`BeitForImageClassification`",
        _hf_vision(
            "BeitForImageClassification",
            "BeitConfig",
            ("BeitImageProcessor", _square(crop_size=_square()["size"])),
            **_VIT,
        ),
    ),
    Family(
        "ConvNeXt",
        CLASSIFY,
        "`ConvNextForImageClassification`",
        _hf_vision(
            "ConvNextForImageClassification", "ConvNextConfig", _CROP, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1]
        ),
    ),
    Family(
        "ConvNeXt V2",
        CLASSIFY,
        "`ConvNextV2ForImageClassification`",
        _hf_vision(
            "ConvNextV2ForImageClassification",
            "ConvNextV2Config",
            _CROP,
            num_stages=2,
            hidden_sizes=[8, 16],
            depths=[1, 1],
        ),
    ),
    Family(
        "Swin",
        CLASSIFY,
        "`SwinForImageClassification`",
        _hf_vision(
            "SwinForImageClassification",
            "SwinConfig",
            ("ViTImageProcessor", _square()),
            image_size=IMAGE_SIZE,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=4,
        ),
    ),
    Family(
        "Swin V2",
        CLASSIFY,
        "`Swinv2ForImageClassification`",
        _hf_vision(
            "Swinv2ForImageClassification",
            "Swinv2Config",
            ("ViTImageProcessor", _square()),
            image_size=IMAGE_SIZE,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1],
            num_heads=[1, 2],
            window_size=4,
        ),
    ),
    Family(
        "ResNet",
        CLASSIFY,
        "`ResNetForImageClassification`",
        _hf_vision(
            "ResNetForImageClassification",
            "ResNetConfig",
            _CROP,
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            layer_type="basic",
        ),
    ),
    Family(
        "RegNet",
        CLASSIFY,
        "`RegNetForImageClassification`",
        _hf_vision(
            "RegNetForImageClassification",
            "RegNetConfig",
            _CROP,
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            groups_width=8,
        ),
    ),
    Family(
        "EfficientNet",
        CLASSIFY,
        "`EfficientNetForImageClassification`",
        _hf_vision(
            "EfficientNetForImageClassification",
            "EfficientNetConfig",
            ("EfficientNetImageProcessor", _square()),
            prepare=_pytorch_init,
            # hidden_dim must equal the scaled top width (1280 x 0.25) or the last norm does not fit.
            image_size=IMAGE_SIZE,
            width_coefficient=0.25,
            depth_coefficient=0.25,
            hidden_dim=320,
        ),
    ),
    Family(
        "MobileNetV2",
        CLASSIFY,
        "`MobileNetV2ForImageClassification`",
        _hf_vision(
            "MobileNetV2ForImageClassification",
            "MobileNetV2Config",
            ("MobileNetV2ImageProcessor", {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": _square()["size"]}),
            prepare=_pytorch_init,
            image_size=IMAGE_SIZE,
            depth_multiplier=0.25,
        ),
    ),
    Family(
        "MobileViT",
        CLASSIFY,
        "`MobileViTForImageClassification`",
        _hf_vision(
            "MobileViTForImageClassification",
            "MobileViTConfig",
            ("MobileViTImageProcessor", {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": _square()["size"]}),
            prepare=_pytorch_init,
            image_size=IMAGE_SIZE,
            hidden_sizes=[16, 16, 16],
            neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16],
            num_attention_heads=2,
        ),
    ),
    Family(
        "DINOv2",
        CLASSIFY,
        "`Dinov2ForImageClassification`",
        _hf_vision(
            "Dinov2ForImageClassification",
            "Dinov2Config",
            ("BitImageProcessor", {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": _square()["size"]}),
            **_VIT,
        ),
    ),
    Family(
        "PoolFormer",
        CLASSIFY,
        "`PoolFormerForImageClassification`",
        _hf_vision(
            "PoolFormerForImageClassification",
            "PoolFormerConfig",
            ("PoolFormerImageProcessor", {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": _square()["size"]}),
            num_encoder_blocks=2,
            depths=[1, 1],
            hidden_sizes=[8, 16],
            patch_sizes=[7, 3],
            strides=[4, 2],
            padding=[2, 1],
        ),
    ),
    Family(
        "LeViT",
        CLASSIFY,
        "`LevitForImageClassification`",
        _hf_vision(
            "LevitForImageClassification",
            "LevitConfig",
            ("LevitImageProcessor", {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": _square()["size"]}),
            prepare=_pytorch_init,
            image_size=IMAGE_SIZE,
            hidden_sizes=[16, 16, 16],
            num_attention_heads=[1, 1, 1],
            depths=[1, 1, 1],
            key_dim=[8, 8, 8],
        ),
    ),
    Family(
        "LeViT distilled",
        CLASSIFY,
        "`LevitForImageClassificationWithTeacher`",
        _hf_vision(
            "LevitForImageClassificationWithTeacher",
            "LevitConfig",
            ("LevitImageProcessor", {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": _square()["size"]}),
            prepare=_pytorch_init,
            image_size=IMAGE_SIZE,
            hidden_sizes=[16, 16, 16],
            num_attention_heads=[1, 1, 1],
            depths=[1, 1, 1],
            key_dim=[8, 8, 8],
        ),
    ),
    Family(
        "CvT",
        CLASSIFY,
        "`CvtForImageClassification`",
        _hf_vision(
            "CvtForImageClassification",
            "CvtConfig",
            _CROP,
            # transformers indexes stage i's drop-path rates by i: each stage needs depth > i.
            embed_dim=[8, 16, 16],
            num_heads=[1, 1, 1],
            depth=[1, 2, 3],
        ),
    ),
    Family(
        "timm",
        CLASSIFY,
        "`--model timm:resnet18 --weights F.safetensors --labels F.txt`",
        _timm_classifier,
        requires="timm",
        install="'aim-cli[timm]'",
    ),
    Family(
        "timm (Hugging Face layout)",
        CLASSIFY,
        "timm resnet18 folder written by `timm.models.save_for_hf`",
        _timm_hf_classifier,
        requires="timm",
        install="'aim-cli[timm]'",
    ),
    Family(
        "CLIP (zero-shot)",
        CLASSIFY,
        "`CLIPModel` (no classification head)",
        _hf_vision(
            "CLIPModel",
            "CLIPConfig",
            ("CLIPImageProcessor", {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": _square()["size"]}),
            text_config={
                "vocab_size": 64,
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "max_position_embeddings": 16,
                "bos_token_id": 0,
                "eos_token_id": 1,
                "pad_token_id": 1,
            },
            vision_config={**_VIT, "image_size": IMAGE_SIZE},
            projection_dim=16,
        ),
        reason="no classification head (zero-shot image-text matching is not modulated); a CLIP vision "
        "model fine-tuned with a classification head works",
        refusal="weight(s) the image classification model needs",
    ),
    # semantic segmentation
    Family(
        "SegFormer",
        SEGMENT,
        "`SegformerForSemanticSegmentation`",
        _hf_vision(
            "SegformerForSemanticSegmentation",
            "SegformerConfig",
            ("SegformerImageProcessor", _square()),
            num_encoder_blocks=1,
            depths=[1],
            sr_ratios=[1],
            hidden_sizes=[8],
            patch_sizes=[3],
            strides=[2],
            num_attention_heads=[1],
            mlp_ratios=[2],
            decoder_hidden_size=8,
        ),
    ),
    Family(
        "UperNet",
        SEGMENT,
        "`UperNetForSemanticSegmentation` (ConvNeXt backbone)",
        _hf_vision(
            "UperNetForSemanticSegmentation",
            "UperNetConfig",
            ("SegformerImageProcessor", _square()),
            backbone_config={
                "model_type": "convnext",
                "num_stages": 4,
                "hidden_sizes": [8, 8, 16, 16],
                "depths": [1, 1, 1, 1],
                "out_features": ["stage1", "stage2", "stage3", "stage4"],
            },
            hidden_size=16,
            auxiliary_in_channels=16,
            auxiliary_channels=8,
            pool_scales=[1, 2],
        ),
    ),
    Family(
        "DPT",
        SEGMENT,
        "`DPTForSemanticSegmentation`",
        _hf_vision(
            "DPTForSemanticSegmentation",
            "DPTConfig",
            ("DPTImageProcessor", _square()),
            image_size=IMAGE_SIZE,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=4,
            num_attention_heads=2,
            intermediate_size=32,
            backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[8, 8, 8, 8],
            fusion_hidden_size=8,
            reassemble_factors=[4, 2, 1, 0.5],
        ),
    ),
    Family(
        "BEiT",
        SEGMENT,
        "`BeitForSemanticSegmentation`",
        _hf_vision(
            "BeitForSemanticSegmentation",
            "BeitConfig",
            ("BeitImageProcessor", _square()),
            **{**_VIT, "num_hidden_layers": 4},
            out_indices=[1, 2, 3, 4],
            pool_scales=[1, 2],
            auxiliary_channels=8,
            use_auxiliary_head=False,
        ),
    ),
    Family(
        "Data2VecVision",
        SEGMENT,
        "`Data2VecVisionForSemanticSegmentation`",
        _hf_vision(
            "Data2VecVisionForSemanticSegmentation",
            "Data2VecVisionConfig",
            ("BeitImageProcessor", _square()),
            **{**_VIT, "num_hidden_layers": 4},
            out_indices=[1, 2, 3, 4],
            pool_scales=[1, 2],
            auxiliary_channels=8,
            use_auxiliary_head=False,
        ),
    ),
    Family(
        "MobileViT",
        SEGMENT,
        "`MobileViTForSemanticSegmentation`",
        _hf_vision(
            "MobileViTForSemanticSegmentation",
            "MobileViTConfig",
            ("MobileViTImageProcessor", {"size": {"shortest_edge": IMAGE_SIZE}, "crop_size": _square()["size"]}),
            image_size=IMAGE_SIZE,
            hidden_sizes=[16, 16, 16],
            neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16],
            num_attention_heads=2,
            aspp_out_channels=8,
            atrous_rates=[1, 2, 3],
        ),
    ),
    Family(
        "MobileViT V2",
        SEGMENT,
        "`MobileViTV2ForSemanticSegmentation`",
        _hf_vision(
            "MobileViTV2ForSemanticSegmentation",
            "MobileViTV2Config",
            # 64 px: at 32 its last stage sees 1x1 maps, too small for its 2x2 patches.
            ("MobileViTImageProcessor", {"size": {"shortest_edge": 64}, "crop_size": {"height": 64, "width": 64}}),
            image_size=64,
            width_multiplier=0.25,
            aspp_out_channels=8,
            atrous_rates=[1, 2, 3],
        ),
    ),
    # scipy: transformers builds these models' training loss (Hungarian matching) even to infer.
    Family(
        "Mask2Former",
        SEGMENT,
        "`Mask2FormerForUniversalSegmentation`",
        _hf_vision(
            "Mask2FormerForUniversalSegmentation",
            "Mask2FormerConfig",
            ("Mask2FormerImageProcessor", _square()),
            backbone_config={
                "model_type": "swin",
                "image_size": IMAGE_SIZE,
                "embed_dim": 8,
                "depths": [1, 1, 1, 1],
                "num_heads": [1, 1, 1, 1],
                "window_size": 2,
                "out_features": ["stage1", "stage2", "stage3", "stage4"],
            },
            hidden_dim=32,
            mask_feature_size=32,
            feature_size=32,
            encoder_layers=1,
            decoder_layers=2,
            num_queries=4,
            encoder_feedforward_dim=32,
            dim_feedforward=32,
            num_attention_heads=2,
        ),
        requires="scipy",
        install="'aim-cli[universal]'",
    ),
    Family(
        "MaskFormer",
        SEGMENT,
        "`MaskFormerForInstanceSegmentation`",
        _hf_vision(
            "MaskFormerForInstanceSegmentation",
            "MaskFormerConfig",
            ("MaskFormerImageProcessor", _square()),
            backbone_config={
                "model_type": "swin",
                "image_size": IMAGE_SIZE,
                "embed_dim": 8,
                "depths": [1, 1, 1, 1],
                "num_heads": [1, 1, 1, 1],
                "window_size": 2,
                "out_features": ["stage1", "stage2", "stage3", "stage4"],
            },
            decoder_config={
                "model_type": "detr",
                "encoder_layers": 1,
                "decoder_layers": 1,
                "encoder_attention_heads": 2,
                "decoder_attention_heads": 2,
                "d_model": 32,
                "encoder_ffn_dim": 32,
                "decoder_ffn_dim": 32,
                "num_queries": 4,
            },
            fpn_feature_size=32,
            mask_feature_size=32,
            num_queries=4,
        ),
        requires="scipy",
        install="'aim-cli[universal]'",
    ),
    Family(
        "OneFormer",
        SEGMENT,
        "`OneFormerForUniversalSegmentation` with its `OneFormerProcessor` (tokenizer included)",
        _hf_vision(
            "OneFormerForUniversalSegmentation",
            "OneFormerConfig",
            _oneformer_processor,
            backbone_config={
                "model_type": "swin",
                "image_size": IMAGE_SIZE,
                "embed_dim": 8,
                "depths": [1, 1, 1, 1],
                "num_heads": [1, 1, 1, 1],
                "window_size": 2,
                "out_features": ["stage1", "stage2", "stage3", "stage4"],
            },
            hidden_dim=32,
            conv_dim=32,
            mask_dim=32,
            encoder_feedforward_dim=32,
            dim_feedforward=32,
            encoder_layers=1,
            decoder_layers=2,
            num_attention_heads=2,
            num_queries=4,
            text_encoder_width=32,
            text_encoder_context_length=8,
            text_encoder_num_layers=1,
            text_encoder_vocab_size=64,
            text_encoder_proj_layers=1,
            text_encoder_n_ctx=4,
            task_seq_len=8,
        ),
        requires="scipy",
        install="'aim-cli[universal]'",
    ),
    Family(
        "DETR (object detection)",
        SEGMENT,
        "`DetrForObjectDetection`",
        _hf_vision(
            "DetrForObjectDetection",
            "DetrConfig",
            ("DetrImageProcessor", _square()),
            use_timm_backbone=False,
            use_pretrained_backbone=False,
            backbone_config={
                "model_type": "resnet",
                "embedding_size": 8,
                "hidden_sizes": [8, 16],
                "depths": [1, 1],
                "out_features": ["stage2"],
            },
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            num_queries=4,
        ),
        reason="object detectors output boxes, not per-pixel class scores",
        refusal="not a semantic segmentation model",
    ),
    Family(
        "torchvision DeepLabV3",
        SEGMENT,
        "`--model torchvision:deeplabv3_mobilenet_v3_large --weights F`",
        _torchvision_segmenter("deeplabv3_mobilenet_v3_large"),
    ),
    # slow: torchvision's FCN transform resizes to 520 px and ResNet-50 runs dilated (~5-15 s a pass).
    Family(
        "torchvision FCN",
        SEGMENT,
        "`--model torchvision:fcn_resnet50 --weights F`",
        _torchvision_segmenter("fcn_resnet50"),
        slow=True,
    ),
    Family(
        "torchvision LR-ASPP",
        SEGMENT,
        "`--model torchvision:lraspp_mobilenet_v3_large --weights F`",
        _torchvision_segmenter("lraspp_mobilenet_v3_large"),
    ),
    # text generation
    Family(
        "GPT-2",
        GENERATE,
        "`GPT2LMHeadModel`",
        _hf_text("GPT2LMHeadModel", "GPT2Config", n_positions=64, n_embd=16, n_layer=1, n_head=2),
    ),
    Family(
        "Llama",
        GENERATE,
        "`LlamaForCausalLM`",
        _hf_text("LlamaForCausalLM", "LlamaConfig", num_key_value_heads=1, **_DECODER),
    ),
    Family(
        "Mistral",
        GENERATE,
        "`MistralForCausalLM`",
        _hf_text("MistralForCausalLM", "MistralConfig", num_key_value_heads=1, **_DECODER),
    ),
    Family(
        "Qwen2",
        GENERATE,
        "`Qwen2ForCausalLM`",
        _hf_text("Qwen2ForCausalLM", "Qwen2Config", num_key_value_heads=1, **_DECODER),
    ),
    Family(
        "Qwen3",
        GENERATE,
        "`Qwen3ForCausalLM`",
        _hf_text("Qwen3ForCausalLM", "Qwen3Config", num_key_value_heads=1, head_dim=8, **_DECODER),
    ),
    Family(
        "Phi-3",
        GENERATE,
        "`Phi3ForCausalLM`",
        _hf_text("Phi3ForCausalLM", "Phi3Config", num_key_value_heads=1, **_DECODER),
    ),
    Family(
        "Gemma",
        GENERATE,
        "`GemmaForCausalLM`",
        _hf_text("GemmaForCausalLM", "GemmaConfig", num_key_value_heads=1, head_dim=8, **_DECODER),
    ),
    Family("GPT-NeoX", GENERATE, "`GPTNeoXForCausalLM`", _hf_text("GPTNeoXForCausalLM", "GPTNeoXConfig", **_DECODER)),
    Family(
        "OPT",
        GENERATE,
        "`OPTForCausalLM`",
        _hf_text(
            "OPTForCausalLM",
            "OPTConfig",
            hidden_size=16,
            ffn_dim=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            word_embed_proj_dim=16,
        ),
    ),
    Family(
        "Falcon",
        GENERATE,
        "`FalconForCausalLM`",
        _hf_text("FalconForCausalLM", "FalconConfig", hidden_size=16, num_hidden_layers=1, num_attention_heads=2),
    ),
    Family(
        "BERT (masked LM)",
        GENERATE,
        "`BertForMaskedLM`",
        _hf_text(
            "BertForMaskedLM",
            "BertConfig",
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
        ),
        reason="encoder-only masked language models do not generate left to right",
        refusal="an encoder-only masked language model, not a causal language model",
    ),
    # initializer_factor 8: with T5's default scale the random decoder's first token is </s>, an empty answer.
    Family(
        "T5",
        GENERATE,
        "`T5ForConditionalGeneration`",
        _hf_text(
            "T5ForConditionalGeneration",
            "T5Config",
            template="$A </s>",
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_decoder_layers=1,
            num_heads=2,
            decoder_start_token_id=0,
            initializer_factor=8.0,
        ),
    ),
    Family(
        "BART",
        GENERATE,
        "`BartForConditionalGeneration`",
        _hf_text(
            "BartForConditionalGeneration",
            "BartConfig",
            template="<s> $A </s>",
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=64,
            decoder_start_token_id=2,
        ),
    ),
)
