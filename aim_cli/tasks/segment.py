"""Semantic segmentation with modulated per-pixel logits, streamed batch by batch.

Noise goes where the decision is made: the model's low-resolution logits are first
upsampled (bilinear, align_corners=False) to the original image size, then every output
pixel gets its own utility / focus draw, then argmax. Images are handled one at a time, in
class-last layout (fast argmax, noise added in place); only images larger than a fixed budget
are split into strips of rows, so memory stays bounded by the strip, never by the image count.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from aim_cli.errors import FailedInput, InputError
from aim_cli.images import load_image, loaded_from_image
from aim_cli.io import IMAGE_SUFFIXES
from aim_cli.masks import read_mask
from aim_cli.metrics import IGNORE_INDEX, ConfusionMatrix
from aim_cli.models.checkpoint_files import check_model_input
from aim_cli.models.segmenter import Segmenter
from aim_cli.modulation import Modulation, NoiseSource, add_noise_, check_focus_classes, noise_width
from aim_cli.plans import ModulationPlan
from aim_cli.tasks.batches import ProgressCallback, batched, drop_nonfinite

# Upsampled-logit elements (classes x rows x width) of one image held at once: 256 MiB of
# float32, so a 512x512 image with 150 classes is interpolated whole (one call, as fast as the
# plain Hugging Face path); a 4000x3000 image with 150 classes takes ~28 strips.
STRIP_ELEMENTS = 1 << 26
# Noise elements drawn per call (16 MiB of float32): the draws never cost a second strip of memory.
NOISE_ELEMENTS = 1 << 22


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
    """The modulated (and, when asked, clean) class-id mask of one image, with class pixel counts.

    prediction / clean_prediction: (H, W) class ids at the image's own size; counts /
    clean_counts: pixels per class id; pixel_accuracy / clean_pixel_accuracy: against the
    image's ground-truth mask, when one was given (None otherwise, or when no pixel is scored).
    """

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


def upsample_at(low: torch.Tensor, size: tuple[int, int], index: torch.Tensor) -> torch.Tensor:
    """Logits (N, C, h, w) upsampled bilinearly (align_corners=False) to `size`, at flat (N*H*W) pixel indices: (P, C).

    The same source-index rule as F.interpolate (equal up to float32 rounding), but only the
    four source pixels under each requested pixel are read: calibration reads its pilot pixels
    and a focus target's pixels without upsampling whole images.
    """
    count, classes, in_height, in_width = low.shape
    height, width = size

    def axis(dst: torch.Tensor, n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = ((dst.to(torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
        first = src.long().clamp(max=n_in - 1)
        second = (first + 1).clamp(max=n_in - 1)
        return first, second, (src - first.to(torch.float32)).clamp(0, 1)[:, None].to(low.dtype)

    image = torch.div(index, height * width, rounding_mode="floor")
    within = index - image * (height * width)
    y0, y1, wy = axis(torch.div(within, width, rounding_mode="floor"), in_height, height)
    x0, x1, wx = axis(within % width, in_width, width)
    flat = low.permute(0, 2, 3, 1).reshape(count * in_height * in_width, classes)
    base = image * (in_height * in_width)
    top = flat[base + y0 * in_width + x0] * (1 - wx) + flat[base + y0 * in_width + x1] * wx
    bottom = flat[base + y1 * in_width + x0] * (1 - wx) + flat[base + y1 * in_width + x1] * wx
    return top * (1 - wy) + bottom * wy


def decision_logits(segmenter: Segmenter, images: Sequence[Image.Image]) -> torch.Tensor:
    """Clean logits of same-size images upsampled to their own size (N, C, H, W): what noise is added to.

    For analysis of small image sets (the theory's per-pixel probabilities); the task itself
    streams strips instead of holding whole-image logits.
    """
    low = segmenter.logits(images)
    width, height = images[0].size
    return upsample_rows(low, (height, width), 0, height)


def upsampled_pixels(low: torch.Tensor, size: tuple[int, int], start: int, stop: int) -> torch.Tensor:
    """Rows [start, stop) of ONE image's logits (1, C, h, w) upsampled to `size`, as (rows, W, C).

    Class-last layout makes the per-pixel argmax a contiguous reduction (4x faster than over
    dim 1) and lets noise be added in place. A whole image is one channels-last interpolate;
    its values equal the channels-first path's up to float32 rounding (one ulp).
    """
    if start == 0 and stop == size[0]:
        whole = F.interpolate(
            low.contiguous(memory_format=torch.channels_last), size=size, mode="bilinear", align_corners=False
        )
        return whole.permute(0, 2, 3, 1)[0].contiguous()  # already class-last in memory: no copy
    return upsample_rows(low, size, start, stop).permute(0, 2, 3, 1)[0].contiguous()


def _chunk_key(key: bytes | None, row: int, whole: bool) -> list[bytes] | None:
    """One image's noise key for the noise chunk starting at `row`: each chunk gets its own stream."""
    if key is None:
        return None
    return [key] if whole else [hashlib.sha256(key + row.to_bytes(8, "little")).digest()]


def _mask_dtype(num_classes: int) -> type:
    """The smallest integer type holding every class id."""
    return np.uint8 if num_classes <= 256 else np.int32


def add_strip_noise_(
    pixels: torch.Tensor,
    modulation: Modulation,
    noise: NoiseSource,
    key: bytes | None = None,
    first_row: int = 0,
    whole: bool = True,
) -> torch.Tensor:
    """Add utility and focus noise IN PLACE to one image's class-last logits (rows, W, C); returns them.

    modulation.add_noise_ (the kernel `modulate` uses) applied to chunks of NOISE_ELEMENTS draws,
    so the noise costs no copy of the strip. Chunk boundaries depend only on the image's width
    and the class count, never on the batch.
    """
    if modulation.is_identity:
        return pixels
    rows, width, num_classes = pixels.shape
    depth = noise_width(modulation, num_classes)
    step = max(1, NOISE_ELEMENTS // max(1, depth * width))
    for top in range(0, rows, step):
        bottom = min(rows, top + step)
        chunk_whole = whole and top == 0 and bottom == rows
        draws = noise.standard_normal(
            (1, bottom - top, width, depth), pixels, _chunk_key(key, first_row + top, chunk_whole)
        )[0]
        add_noise_(pixels[top:bottom], modulation, draws, class_dim=-1)
    return pixels


def decide(
    low: torch.Tensor,
    size: tuple[int, int],
    modulation: Modulation,
    noise: NoiseSource,
    keys: Sequence[bytes] | None = None,
    need_clean: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Modulated (and optionally clean) class-id masks (N, H, W) from low-resolution logits.

    One image at a time, in strips of STRIP_ELEMENTS (whole images up to 512x512 with 256
    classes), so memory is bounded by one strip whatever the batch. Strip and noise-chunk
    heights depend only on the image (classes x width), never on the batch, so keyed noise
    gives an image the same answer whatever it is batched with.
    """
    count, num_classes = low.shape[:2]
    check_focus_classes(modulation, num_classes)
    height, width = size
    dtype = _mask_dtype(num_classes)
    prediction: np.ndarray = np.empty((count, height, width), dtype=dtype)
    clean: np.ndarray | None = np.empty((count, height, width), dtype=dtype) if need_clean else None
    rows = strip_rows(num_classes, width, STRIP_ELEMENTS)  # read at call time: tests shrink it
    clean_ids: torch.Tensor | None
    for i in range(count):
        key = keys[i] if keys is not None else None
        for start in range(0, height, rows):
            stop = min(height, start + rows)
            strip = upsampled_pixels(low[i : i + 1], size, start, stop)
            if modulation.is_identity:
                ids = clean_ids = strip.argmax(dim=-1)
            else:
                clean_ids = strip.argmax(dim=-1) if need_clean else None  # before the noise goes in, in place
                whole = start == 0 and stop == height
                ids = add_strip_noise_(strip, modulation, noise, key, start, whole).argmax(dim=-1)
            prediction[i, start:stop] = ids.cpu().numpy()
            if clean is not None and clean_ids is not None:  # both exactly when need_clean
                clean[i, start:stop] = clean_ids.cpu().numpy()
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


def read_inputs(
    paths: Iterable[Path],
    masks_dir: Path | None = None,
    mask_of: Callable[[Path], Path | None] | None = None,
    convert: Callable[[np.ndarray, Path], np.ndarray] | None = None,
) -> Iterator[SegmentInput | FailedInput]:
    """Decode images (and their masks) lazily; a bad image or mask fails alone, with the reason.

    Masks are found by base name in `masks_dir`, or by a data set layout's `mask_of`; `convert`
    maps a layout's mask values to the model's class ids.
    """
    for path in paths:
        try:
            loaded = load_image(path)
            truth, truth_path = None, None
            if masks_dir is not None or mask_of is not None:
                truth_path = mask_of(path) if mask_of is not None else find_mask(path, masks_dir)  # type: ignore[arg-type]
                if truth_path is None:
                    named = f"named {path.stem}.png " if mask_of is None else ""
                    raise InputError(f"{path}: no ground-truth mask {named}in {masks_dir}")
                try:
                    truth = read_mask(truth_path)
                except InputError as exc:
                    raise InputError(f"{path}: {exc}") from None
                if convert is not None:
                    truth = convert(truth, truth_path)
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


def truth_problem(item: SegmentInput, num_classes: int) -> str | None:
    """Why an input's ground-truth mask cannot be scored against this model, or None when it can."""
    if item.truth is None:
        return None
    values = np.unique(item.truth)
    bad = values[(values != IGNORE_INDEX) & ((values < 0) | (values >= num_classes))]
    if bad.size == 0:
        return None
    where = f"mask {item.truth_path}" if item.truth_path else "its mask"
    return (
        f"{item.path}: {where} holds value {int(bad[0])}, not a class id of this model "
        f"(0..{num_classes - 1}, or {IGNORE_INDEX} for pixels to ignore)"
    )


def _input_problem(segmenter: Segmenter, item: SegmentInput, num_classes: int) -> str | None:
    """Why this input cannot be segmented (a processed size over the pixel bound, a bad mask), or None."""
    try:
        check_model_input(segmenter, item.image, item.path)
    except InputError as exc:  # the hint names the bound's environment variable
        return str(exc)
    return truth_problem(item, num_classes)


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
            problem = _input_problem(segmenter, item, num_classes) if isinstance(item, SegmentInput) else None
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
        results: dict[int, SegmentedImage | FailedInput] = {}
        for size, members in groups.items():
            low = segmenter.logits([good[i].image for i in members])
            # One finite check per group (on the low-resolution logits, before any upsampling).
            members, low, broken = drop_nonfinite(members, low, lambda i: good[i].path)  # noqa: B023 - called at once
            results.update(broken)
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
