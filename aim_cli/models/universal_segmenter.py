"""Universal (query-mask) segmenters in semantic mode: Mask2Former, MaskFormer, OneFormer.

These models output, per query q, class logits over K classes plus a "no object" class and a
mask logit per pixel. Their own `post_process_semantic_segmentation` scores class c at a pixel
as sum_q softmax(class)_qc * sigmoid(mask)_q. aim modulates the log of that score, computed at
the processed image's resolution, so a pixel's decision is the same argmax and noise of std
sigma multiplies the scores by exp(eps) (docs/design.md, "Universal segmenters: decision logits").
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from aim_cli.errors import ModelError
from aim_cli.models.checkpoint_files import Resize, hf_resize
from aim_cli.models.hub import load_pretrained

# model_type -> architecture: the families whose semantic post-processing is the query sum above.
UNIVERSAL_FAMILIES = {
    "mask2former": "Mask2FormerForUniversalSegmentation",
    "maskformer": "MaskFormerForInstanceSegmentation",
    "oneformer": "OneFormerForUniversalSegmentation",
}
ONEFORMER_TASK = "semantic"
# Scores below this (every query all but rules the class out) share one finite log-score.
_TINY = torch.finfo(torch.float32).tiny


def is_universal(config: object) -> bool:
    """Whether a checkpoint's configuration is one of the supported query-mask families."""
    return getattr(config, "model_type", None) in UNIVERSAL_FAMILIES


def log_semantic_scores(class_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """log(sum_q softmax(class)[..., :-1]_qc * sigmoid(mask)_q): (B, Q, K+1), (B, Q, h, w) -> (B, K, h, w).

    Computed with a per-pixel shift by the largest log mask probability, so confident "not
    here" masks (sigmoid ~ 1e-40) do not underflow the scores of the classes they carry.
    """
    probs = class_logits.float().softmax(dim=-1)[..., :-1]
    log_masks = F.logsigmoid(mask_logits.float())
    shift = log_masks.amax(dim=1, keepdim=True)
    scores = torch.einsum("bqc,bqhw->bchw", probs, (log_masks - shift).exp())
    return scores.clamp_min(_TINY).log() + shift


def log_scores_at(class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Log semantic scores (B, K, *size), the mask logits upsampled to `size` before combining.

    Mask2Former's own post-processing combines after upsampling too (docs/design.md); one image
    at a time bounds the (queries, H, W) intermediate.
    """
    return torch.cat(
        [
            log_semantic_scores(
                class_logits[i : i + 1],
                F.interpolate(mask_logits[i : i + 1].float(), size=size, mode="bilinear", align_corners=False),
            )
            for i in range(class_logits.shape[0])
        ]
    )


class SemanticScores(torch.nn.Module):
    """Wraps a universal segmenter so that forward(pixel_values) returns `.logits` = log-scores."""

    model: Any  # a transformers Mask2Former or OneFormer: .dtype, .config and its own call signature
    task_inputs: torch.Tensor | None  # a buffer: nn.Module's __getattr__ would type it Tensor | Module

    def __init__(self, model: torch.nn.Module, task_inputs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model = model
        # OneFormer reads the tokenised task prompt; one row, repeated for every image of a batch.
        self.register_buffer("task_inputs", task_inputs, persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        """The wrapped model's parameter dtype (Segmenter casts pixels to it)."""
        return self.model.dtype

    @property
    def config(self) -> Any:
        """The wrapped model's configuration."""
        return self.model.config

    def forward(self, pixel_values: torch.Tensor) -> Any:
        """Run the model and return an output whose `.logits` are (B, K, H, W) log-scores at the input size."""
        from transformers.modeling_outputs import SemanticSegmenterOutput

        kwargs: dict[str, torch.Tensor] = {}
        if self.task_inputs is not None:
            kwargs["task_inputs"] = self.task_inputs.expand(pixel_values.shape[0], -1)
        out = self.model(pixel_values=pixel_values, **kwargs)
        size = (pixel_values.shape[-2], pixel_values.shape[-1])
        logits = log_scores_at(out.class_queries_logits, out.masks_queries_logits, size)
        return SemanticSegmenterOutput(logits=logits)


def _scipy_available() -> bool:
    """Whether scipy can be imported (looked up, not imported: it is slow to import)."""
    return importlib.util.find_spec("scipy") is not None


def _require_scipy(architecture: str) -> None:
    """transformers builds these models' training loss (Hungarian matching, scipy) even to infer."""
    if not _scipy_available():
        raise ModelError(
            f"loading a {architecture} needs scipy (transformers builds its training loss on load)",
            "pip install 'aim-cli[universal]' (or pip install scipy)",
        )


def load_universal(
    spec: str, config: object, device: torch.device, display: str
) -> tuple[torch.nn.Module, Callable[[Sequence[Image.Image]], torch.Tensor], list[str], Resize | None]:
    """Load a universal segmenter offline: (network returning log-scores, preprocess, labels, its resize)."""
    from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation

    model_type = getattr(config, "model_type", "")
    _require_scipy(UNIVERSAL_FAMILIES[model_type])
    model = load_pretrained(
        AutoModelForUniversalSegmentation.from_pretrained, spec, "universal segmentation model", complete=True
    )
    task_inputs = None
    if model_type == "oneformer":
        processor, task_inputs = _oneformer_processor(spec, model.config, display)
    else:
        processor = load_pretrained(AutoImageProcessor.from_pretrained, spec, "image processor")

    def preprocess(images: Sequence[Image.Image]) -> torch.Tensor:
        return processor(images=list(images), return_tensors="pt")["pixel_values"]

    id2label = getattr(model.config, "id2label", None) or {}
    labels = [str(id2label.get(i, f"class_{i}")) for i in range(model.config.num_labels)]
    network = SemanticScores(model.eval(), task_inputs).to(device)
    return network, preprocess, labels, hf_resize(processor)


def _oneformer_processor(spec: str, config: object, display: str) -> tuple[Any, torch.Tensor]:
    """OneFormer's image processor and its tokenised "the task is semantic" row (1, task_seq_len)."""
    from transformers import AutoProcessor

    processor = load_pretrained(AutoProcessor.from_pretrained, spec, "OneFormer processor")
    prompt = f"the task is {ONEFORMER_TASK}"
    if not hasattr(processor, "image_processor") or not _tokenizes(getattr(processor, "tokenizer", None), prompt):
        raise ModelError(
            f"{display} has no tokenizer for OneFormer's task prompt ('the task is {ONEFORMER_TASK}'), "
            "which the model reads as token ids",
            "save the model's OneFormerProcessor (image processor and tokenizer) into the same folder",
        )
    # The processor pads the prompt to its own task_seq_length; the model's task MLP fixes the width.
    length = int(getattr(processor, "task_seq_length", 77))
    encoded = processor.tokenizer(
        [prompt], padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    )
    # As OneFormerProcessor does: padding positions become id 0.
    tokens = encoded["input_ids"] * encoded["attention_mask"]
    width = getattr(config, "task_seq_len", tokens.shape[-1])
    if tokens.shape[-1] != width:
        raise ModelError(
            f"{display}: the processor pads the task prompt to {tokens.shape[-1]} tokens but the model reads {width}",
            "save the processor and the model from the same checkpoint",
        )
    return processor.image_processor, tokens


def _tokenizes(tokenizer: Any, prompt: str) -> bool:
    """Whether `tokenizer` knows the prompt's words.

    Without tokenizer files transformers builds an empty CLIP vocabulary that maps every word to
    the unknown token, so the model would silently read a wrong task.
    """
    if tokenizer is None:
        return False
    ids = list(tokenizer(prompt)["input_ids"])
    content = [i for i in ids if i not in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)]
    return bool(content) and tokenizer.unk_token_id not in content
