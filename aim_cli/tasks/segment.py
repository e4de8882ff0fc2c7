"""Semantic segmentation with modulated per-pixel logits, streamed batch by batch.

Noise goes where the decision is made: the model's low-resolution logits are first
upsampled (bilinear, align_corners=False) to the original image size, then every output
pixel gets its own utility / focus draw, then argmax. Large images are handled in strips
of rows so memory stays bounded by the strip, never by the image or the image count.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from aim_cli.errors import InputError
from aim_cli.images import load_image, loaded_from_image
from aim_cli.io import IMAGE_SUFFIXES
from aim_cli.masks import read_mask
from aim_cli.metrics import IGNORE_INDEX, ConfusionMatrix
from aim_cli.models.segmenter import Segmenter
from aim_cli.modulation import Modulation, NoiseSource, modulate
from aim_cli.tasks.common import FailedInput, ModulationPlan, ProgressCallback, batched

# Upsampled-logit elements (classes x rows x width) per image handled at once: 16 MiB of
# float32. Small images take one strip; a 4000x3000 image with 150 classes takes ~430.
STRIP_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class SegmentInput:
    """A decoded image, its content key (for keyed noise) and optional ground truth."""

    path: Path
    image: Image.Image
    key: bytes
    truth: np.ndarray | None = None
    truth_path: Path | None = None


@dataclass(frozen=True)
class SegmentedImage:
    """The modulated (and, when asked, clean) class-id mask of one image, with class pixel counts."""

    path: Path
    image: Image.Image
    prediction: np.ndarray
    counts: np.ndarray
    clean_prediction: np.ndarray | None = None
    clean_counts: np.ndarray | None = None
    pixel_accuracy: float | None = None
    clean_pixel_accuracy: float | None = None


class SegmentationEvaluation:
    """Streamed confusion matrices of the clean and the modulated model against ground truth."""

    def __init__(self, num_classes: int) -> None:
        self.clean = ConfusionMatrix(num_classes)
        self.modulated = ConfusionMatrix(num_classes)
        self.images = 0


def strip_rows(num_classes: int, width: int, budget: int = STRIP_ELEMENTS) -> int:
    """Output rows per strip so one image's strip of upsampled logits stays within the budget."""
    return max(1, budget // max(1, num_classes * width))


def upsample_rows(low: torch.Tensor, size: tuple[int, int], start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of `low` (N, C, h, w) upsampled bilinearly (align_corners=False) to `size`.

    Bilinear interpolation is separable, so a strip needs only the few source rows under it:
    widen those rows, then blend neighbouring rows with PyTorch's own source-index rule.
    """
    height, width = size
    if start == 0 and stop == height:
        return F.interpolate(low, size=(height, width), mode="bilinear", align_corners=False)
    in_height = low.shape[-2]
    scale = in_height / height
    dst = torch.arange(start, stop, device=low.device, dtype=torch.float32)
    src = ((dst + 0.5) * scale - 0.5).clamp(min=0)
    y0 = src.long().clamp(max=in_height - 1)
    y1 = (y0 + 1).clamp(max=in_height - 1)
    weight = (src - y0.to(src.dtype)).to(low.dtype).view(1, 1, -1, 1)
    first, last = int(y0[0]), int(y1[-1]) + 1
    band = F.interpolate(low[:, :, first:last], size=(last - first, width), mode="bilinear", align_corners=False)
    top = band.index_select(2, y0 - first)
    bottom = band.index_select(2, y1 - first)
    return top * (1 - weight) + bottom * weight


def decision_logits(segmenter: Segmenter, images: Sequence[Image.Image]) -> torch.Tensor:
    """Clean logits of same-size images upsampled to their own size (N, C, H, W): what noise is added to.

    For analysis of small image sets (the theory's per-pixel probabilities); the task itself
    streams strips instead of holding whole-image logits.
    """
    low = segmenter.logits(images)
    width, height = images[0].size
    return upsample_rows(low, (height, width), 0, height)


def _strip_keys(keys: Sequence[bytes] | None, start: int, whole: bool) -> list[bytes] | None:
    """Per-image noise keys for one strip: each strip of an image gets its own stream."""
    if keys is None or whole:
        return None if keys is None else list(keys)
    return [hashlib.sha256(key + start.to_bytes(8, "little")).digest() for key in keys]


def _mask_dtype(num_classes: int) -> type:
    """The smallest integer type holding every class id."""
    return np.uint8 if num_classes <= 256 else np.int32


def decide(
    low: torch.Tensor,
    size: tuple[int, int],
    modulation: Modulation,
    noise: NoiseSource,
    keys: Sequence[bytes] | None = None,
    need_clean: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Modulated (and optionally clean) class-id masks (N, H, W) from low-resolution logits.

    Strip heights depend only on the image (classes x width), never on the batch, so keyed
    noise gives an image the same answer whatever it is batched with.
    """
    count, num_classes = low.shape[:2]
    height, width = size
    dtype = _mask_dtype(num_classes)
    prediction = np.empty((count, height, width), dtype=dtype)
    clean = np.empty((count, height, width), dtype=dtype) if need_clean else None
    rows = strip_rows(num_classes, width)
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        strip = upsample_rows(low, size, start, stop)
        clean_ids = strip.argmax(dim=1) if (need_clean or modulation.is_identity) else None
        if modulation.is_identity:
            ids = clean_ids
        else:
            strip_keys = _strip_keys(keys, start, whole=(start == 0 and stop == height))
            ids = modulate(strip, modulation, noise, class_dim=1, item_keys=strip_keys).argmax(dim=1)
        prediction[:, start:stop] = ids.cpu().numpy()
        if clean is not None:
            clean[:, start:stop] = clean_ids.cpu().numpy()
    return prediction, clean


def find_mask(image_path: Path, masks_dir: Path) -> Path | None:
    """The ground-truth mask with the image's base name: NAME.png first, then NAME.<any image type>."""
    preferred = masks_dir / f"{image_path.stem}.png"
    if preferred.is_file():
        return preferred
    candidates = sorted(
        p for p in masks_dir.glob(glob.escape(image_path.stem) + ".*") if p.suffix.lower() in IMAGE_SUFFIXES
    )
    return candidates[0] if candidates else None


def read_inputs(paths: Iterable[Path], masks_dir: Path | None = None) -> Iterator[SegmentInput | FailedInput]:
    """Decode images (and their masks) lazily; a bad image or mask fails alone, with the reason."""
    for path in paths:
        try:
            loaded = load_image(path)
            truth, truth_path = None, None
            if masks_dir is not None:
                truth_path = find_mask(path, masks_dir)
                if truth_path is None:
                    raise InputError(f"{path}: no ground-truth mask named {path.stem}.png in {masks_dir}")
                try:
                    truth = read_mask(truth_path)
                except InputError as exc:
                    raise InputError(f"{path}: {exc}") from None
                width, height = loaded.image.size
                if truth.shape != (height, width):
                    raise InputError(
                        f"{path}: mask {truth_path} is {truth.shape[1]}x{truth.shape[0]} "
                        f"but the image is {width}x{height}"
                    )
        except InputError as exc:
            yield FailedInput(path, str(exc))
            continue
        yield SegmentInput(path, loaded.image, loaded.key, truth, truth_path)


def input_from_image(name: str | Path, image: Image.Image, truth: np.ndarray | None = None) -> SegmentInput:
    """An in-memory image (and mask) as a task input; its pixels key its noise."""
    loaded = loaded_from_image(name, image)
    return SegmentInput(loaded.path, loaded.image, loaded.key, None if truth is None else np.asarray(truth))


def _truth_problem(item: SegmentInput, num_classes: int) -> str | None:
    """Why a mask cannot be scored against this model, or None when it can."""
    if item.truth is None:
        return None
    values = np.unique(item.truth)
    bad = values[(values != IGNORE_INDEX) & ((values < 0) | (values >= num_classes))]
    if bad.size == 0:
        return None
    where = item.truth_path or "its mask"
    return (
        f"{item.path}: mask {where} holds value {int(bad[0])}, not a class id of this model "
        f"(0..{num_classes - 1}, or {IGNORE_INDEX} for pixels to ignore)"
    )


def _accuracy(prediction: np.ndarray, truth: np.ndarray) -> float | None:
    """Pixel accuracy of one image (ignored pixels left out), None when nothing is scored."""
    valid = truth != IGNORE_INDEX
    scored = int(valid.sum())
    return float((prediction[valid] == truth[valid]).sum()) / scored if scored else None


def _result(
    item: SegmentInput,
    prediction: np.ndarray,
    clean: np.ndarray | None,
    num_classes: int,
    evaluation: SegmentationEvaluation | None,
) -> SegmentedImage:
    """Counts, per-image accuracy and evaluation updates for one image's masks."""
    counts = np.bincount(prediction.ravel(), minlength=num_classes)
    clean_counts = np.bincount(clean.ravel(), minlength=num_classes) if clean is not None else None
    accuracy = clean_accuracy = None
    if item.truth is not None:
        accuracy = _accuracy(prediction, item.truth)
        clean_accuracy = _accuracy(clean, item.truth) if clean is not None else None
        if evaluation is not None:
            truth = torch.from_numpy(item.truth)
            evaluation.modulated.update(torch.from_numpy(prediction.astype(np.int64)), truth)
            if clean is not None:
                evaluation.clean.update(torch.from_numpy(clean.astype(np.int64)), truth)
            evaluation.images += 1
    return SegmentedImage(item.path, item.image, prediction, counts, clean, clean_counts, accuracy, clean_accuracy)


def segment_inputs(
    items: Iterable[SegmentInput | FailedInput],
    segmenter: Segmenter,
    plan: ModulationPlan,
    batch_size: int = 8,
    clean: bool = False,
    evaluation: SegmentationEvaluation | None = None,
    progress: ProgressCallback | None = None,
) -> Iterator[SegmentedImage | FailedInput]:
    """Segment inputs one batch at a time; failures are passed on and the rest go on.

    The clean masks are computed too when asked, when focus is on (to report how much the
    targets grew or shrank) and when evaluating (to show the trade-off).
    """
    num_classes = len(segmenter.labels)
    need_clean = clean or plan.modulation.has_focus or evaluation is not None
    for batch in batched(items, batch_size):
        good: list[SegmentInput] = []
        for item in batch:
            problem = _truth_problem(item, num_classes) if isinstance(item, SegmentInput) else None
            if isinstance(item, FailedInput) or problem is not None:
                yield item if isinstance(item, FailedInput) else FailedInput(item.path, problem or "")
                if progress:
                    progress(1)
            else:
                good.append(item)
        # Images of one size share a forward pass and one noise draw per strip.
        groups: dict[tuple[int, int], list[int]] = {}
        for index, item in enumerate(good):
            groups.setdefault((item.image.height, item.image.width), []).append(index)
        results: dict[int, SegmentedImage] = {}
        for size, members in groups.items():
            low = segmenter.logits([good[i].image for i in members])
            keys = [good[i].key for i in members] if plan.keyed else None
            predictions, cleans = decide(low, size, plan.modulation, plan.noise, keys, need_clean)
            for j, index in enumerate(members):
                results[index] = _result(
                    good[index], predictions[j], None if cleans is None else cleans[j], num_classes, evaluation
                )
        for index in range(len(good)):
            yield results.pop(index)
            if progress:
                progress(1)


def segment_files(
    paths: Sequence[Path],
    segmenter: Segmenter,
    plan: ModulationPlan,
    masks_dir: Path | None = None,
    batch_size: int = 8,
    clean: bool = False,
    evaluation: SegmentationEvaluation | None = None,
    progress: ProgressCallback | None = None,
) -> Iterator[SegmentedImage | FailedInput]:
    """Segment image files (scored against same-named masks when `masks_dir` is given)."""
    return segment_inputs(read_inputs(paths, masks_dir), segmenter, plan, batch_size, clean, evaluation, progress)
