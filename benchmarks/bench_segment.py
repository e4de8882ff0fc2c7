"""Benchmark: segmentation at real scale (modulation overhead, clean path, calibration speed).

Models. "B0-size" is a SegFormer with SegFormer-B0's sizes (hidden sizes 32/64/160/256, depths
2/2/2/2, decoder 256) and 150 classes (ADE20K's count), built with random weights (nothing
downloads). Random weights give FLAT logits (every class within ~0.1 of the top at every pixel):
the worst case, where every class contends. "peaked" is the same network with its classifier
head scaled by PEAK_SCALE, so the top class leads by a few units, as in a trained model. Ground
truth is the model's own clean prediction (so the clean mIoU is 1 and an mIoU target of 0.5
is reachable); images are smooth random colour fields.

Rows (benchmark convention: `run(quick) -> list[dict]`, ratios are medians of interleaved
repetitions A, B, A, B, ... in one process, single thread):

- modulated / plain: aim's task path (`segment_inputs`: forward, upsample, per-pixel noise,
  argmax, counts) with utility noise (and with 3 focus targets on top) against the plain
  Hugging Face path a user would otherwise run on the same model, images and thread: forward +
  SegformerImageProcessor.post_process_semantic_segmentation (per image: full-size bilinear
  F.interpolate of the logits, argmax over dim 0). A second row compares against a tuned plain
  path: one batched F.interpolate + argmax(dim=1). All share `ImageModel.logits`
  (preprocessing + forward).
- aim clean / plain: the same with no modulation.
- calibrate vs sweep: `calibrate_segmenter` (mIoU target 0.5, Monte Carlo confirmation
  included) against the reference sweep over 101 sigmas (0, 0.2, ..., 20), which per sigma
  runs the forward pass over all images, upsamples, adds noise, takes the argmax and builds
  the confusion matrix. Every sigma > 0 costs the same (same tensors, same operations), so the
  sweep is timed on a few sigmas spread over 0.2..20 (2 for the 150-class model, 20 for the
  demo; quick mode fewer) and scaled linearly to 101; the detail says how many.

Full mode takes about 5 minutes (most of it the timed sweep sigmas); quick mode about 12 s.

    python benchmarks/bench_segment.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from timing import interleaved

CLASSES = 150
PEAK_SCALE = 100.0  # classifier-head scale for the "peaked" model: top-class leads of a few units
SWEEP_SIGMAS = [round(0.2 * k, 1) for k in range(101)]  # the reference sweep: 0, 0.2, ..., 20
FOCUS_IDS = (3, 12, 40)


def _b0(peaked: bool, seed: int = 0):  # type: ignore[no-untyped-def]
    """A SegFormer-B0-size segmenter with random weights, wrapped as aim's ImageModel."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    from aim_cli.models.image_model import ImageModel, transformers_forward

    config = SegformerConfig(
        hidden_sizes=[32, 64, 160, 256],
        depths=[2, 2, 2, 2],
        decoder_hidden_size=256,
        num_attention_heads=[1, 2, 5, 8],
        num_labels=CLASSES,
    )
    torch.manual_seed(seed)
    network = SegformerForSemanticSegmentation(config).eval()
    if peaked:
        with torch.no_grad():
            network.decode_head.classifier.weight.mul_(PEAK_SCALE)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def preprocess(images):  # type: ignore[no-untyped-def]
        pixels = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images])).permute(0, 3, 1, 2)
        return (pixels / 255.0 - mean) / std

    labels = [f"class_{i}" for i in range(CLASSES)]
    name = "segformer-b0-size" + (" (peaked)" if peaked else "")
    return ImageModel(name, labels, torch.device("cpu"), network, preprocess, transformers_forward, task="segment")


def _images(count: int, size: int, seed: int = 0) -> list[Image.Image]:
    """Smooth random colour fields (upsampled noise), deterministic."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((count, 3, 8, 8), generator=generator)
    fields = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return [Image.fromarray((f.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) for f in fields]


def _plain(segmenter, images: list[Image.Image]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The plain Hugging Face path: forward, then the processor's post_process_semantic_segmentation
    (per image: full-size bilinear F.interpolate of the logits, argmax over classes)."""
    from transformers import SegformerImageProcessor

    with torch.inference_mode():
        logits = segmenter.logits(images)
        sizes = [(im.height, im.width) for im in images]
        maps = SegformerImageProcessor().post_process_semantic_segmentation(
            SimpleNamespace(logits=logits), target_sizes=sizes
        )
        return torch.stack(maps).numpy()


def _interleaved(runs: list[Callable[[], object]], reps: int, warm: bool = True) -> list[float]:
    """Median time of each callable over interleaved repetitions (A, B, C, A, B, C, ...)."""
    return [statistics.median(t) for t in interleaved(runs, reps, warm)]


def _ratio(times: list[float], numerator: int, denominator: int) -> float:
    """A ratio of two median times."""
    return times[numerator] / times[denominator]


def _row(name: str, measured: float, goal: str, met: bool, detail: str) -> dict:
    """One table row in the shared benchmark convention."""
    return {"name": name, "measured": measured, "goal": goal, "met": met, "detail": detail}


def _one_call(segmenter, images: list[Image.Image]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A tuned plain path: forward, ONE batched F.interpolate, argmax over dim 1."""
    with torch.inference_mode():
        logits = segmenter.logits(images)
        up = F.interpolate(logits, size=(images[0].height, images[0].width), mode="bilinear", align_corners=False)
        return up.argmax(dim=1).numpy()


def _modulation_rows(quick: bool) -> list[dict]:
    """aim modulated (utility, +3 focus) and aim clean against the plain Hugging Face path (and a tuned one)."""
    from aim_cli.modulation import FocusTarget, Modulation, SeededNoise
    from aim_cli.plans import ModulationPlan
    from aim_cli.tasks.segment import input_from_image, segment_inputs

    size, count, reps = (256, 1, 3) if quick else (512, 2, 5)
    segmenter = _b0(peaked=False)
    images = _images(count, size)
    items = [input_from_image(f"img{i}.png", im) for i, im in enumerate(images)]

    def aim(modulation: Modulation) -> Callable[[], object]:
        plan = ModulationPlan(modulation, SeededNoise(0), None, ())
        return lambda: list(segment_inputs(items, segmenter, plan, batch_size=count))

    cases = [
        ("modulated (utility)", Modulation(sigma=1.0), 1.05),
        (
            "modulated (+3 focus)",
            Modulation(sigma=1.0, focus_sigma=2.0, targets=tuple(FocusTarget(i) for i in FOCUS_IDS)),
            1.05,
        ),
        ("aim clean", Modulation(), 1.0),
    ]
    rows = []
    for label, modulation, bound in cases:
        t_aim, t_hf, t_one = _interleaved(
            [aim(modulation), lambda: _plain(segmenter, images), lambda: _one_call(segmenter, images)], reps
        )
        common = (
            f"per batch of {count} image(s) {size}x{size}, median of {reps} interleaved reps, 1 thread; random "
            "weights (flat logits: every class contends; aim's noise is dense, so the logits do not change its cost)"
        )
        focus_note = (
            "; with focus aim also computes the clean mask (to report the targets' change)"
            if modulation.has_focus
            else ""
        )
        rows.append(
            _row(
                f"segment {CLASSES} cls {size}px {label} / HF post_process_semantic_segmentation",
                t_aim / t_hf,
                f"<= {bound:g}",
                t_aim / t_hf <= bound,
                f"aim {t_aim:.3f} s vs forward + SegformerImageProcessor.post_process_semantic_segmentation "
                f"{t_hf:.3f} s {common}{focus_note}",
            )
        )
        rows.append(
            _row(
                f"segment {CLASSES} cls {size}px {label} / one-call interpolate + argmax",
                t_aim / t_one,
                f"<= {bound:g}",
                t_aim / t_one <= bound,
                f"aim {t_aim:.3f} s vs forward + one batched F.interpolate + argmax(dim=1) {t_one:.3f} s "
                f"{common}{focus_note}"
                + (
                    ""
                    if not modulation.sigma
                    else "; aim draws C x H x W normals per image (randn: ~0.1 s per 512x512x150)"
                ),
            )
        )
    return rows


def _sweep(segmenter, images: list[Image.Image], truth: torch.Tensor, sigmas: list[float], batch: int) -> list[float]:  # type: ignore[no-untyped-def]
    """The reference: per sigma, forward over all images, upsample, noise, argmax, confusion, mIoU."""
    from aim_cli.calibration.segment import present_miou
    from aim_cli.metrics import ConfusionMatrix

    generator = torch.Generator().manual_seed(0)
    curve = []
    with torch.inference_mode():
        for sigma in sigmas:
            matrix = ConfusionMatrix(len(segmenter.labels))
            for first in range(0, len(images), batch):
                chunk = images[first : first + batch]
                logits = segmenter.logits(chunk)
                up = F.interpolate(logits, size=(chunk[0].height, chunk[0].width), mode="bilinear", align_corners=False)
                up = up + sigma * torch.randn(up.shape, generator=generator)
                matrix.update(up.argmax(dim=1), truth[first : first + batch])
            curve.append(present_miou(matrix.matrix))
    return curve


def _calibrate_row(
    name: str,
    segmenter,
    images: list[Image.Image],
    truth: np.ndarray,  # type: ignore[no-untyped-def]
    timed: int,
    reps: int,
    batch: int,
    caveat: str,
    quick: bool = False,
) -> dict:
    """calibrate_segmenter (mIoU 0.5) against the 101-sigma sweep, timed on `timed` sigmas and scaled."""
    from aim_cli.calibration.datasets import SegmentationDataset
    from aim_cli.calibration.runner import CalibrationRequest, calibrate_segmenter

    scenes = [(f"img{i}.png", im, m) for i, (im, m) in enumerate(zip(images, truth))]
    truth_t = torch.from_numpy(truth.astype(np.int64))
    sigmas = [s for s in SWEEP_SIGMAS if s > 0][:: max(1, 100 // timed)][:timed]
    results = []

    def calibrate() -> None:
        dataset = SegmentationDataset("bench", scenes=scenes)
        results.append(
            calibrate_segmenter(segmenter, dataset, CalibrationRequest("miou", 0.5, seed=1, batch_size=batch))[0]
        )

    def sweep() -> None:
        _sweep(segmenter, images, truth_t, sigmas, batch)

    segmenter.logits(images[:1])  # warm-up of the model only: a full extra run of both would double the cost
    t_sweep, t_cal = _interleaved([sweep, calibrate], reps, warm=False)
    ratio = t_sweep / t_cal
    scale = len(SWEEP_SIGMAS) / len(sigmas)
    last = results[-1]
    return _row(
        name,
        ratio * scale,
        ">= 30",
        ratio * scale >= 30,
        f"calibrate {t_cal:.2f} s (sigma {last.value:.4g}, Monte Carlo mIoU {last.check.mean:.4f} over "
        f"{last.check.draws} draws, target 0.5) vs sweep {t_sweep * scale:.1f} s = {t_sweep:.2f} s for "
        f"{len(sigmas)} of the 101 sigmas (every sigma > 0 costs the same) x {scale:.1f}; {len(images)} images "
        f"{images[0].width}x{images[0].height}, {len(segmenter.labels)} classes, median of {reps} interleaved "
        f"reps; {caveat}"
        + ("; QUICK mode: tiny data (few pixels per class: more check draws), not the measurement" if quick else ""),
    )


def _calibration_rows(quick: bool) -> list[dict]:
    """calibrate vs sweep on the B0-size model (flat and peaked logits) and on the demo segmenter."""
    from aim_cli.calibration.datasets import demo_segmentation_set
    from aim_cli.models.registry import load_model

    size, count, timed, reps = (128, 2, 2, 1) if quick else (512, 8, 2, 2)
    rows = []
    for peaked in (False, True):
        segmenter = _b0(peaked)
        images = _images(count, size, seed=1)
        truth = np.concatenate([_plain(segmenter, images[i : i + 4]) for i in range(0, count, 4)]).astype(np.uint8)
        caveat = (
            "classifier head x100: peaked logits, as a trained model"
            if peaked
            else "random weights: flat logits, worst case (every class contends)"
        )
        label = "peaked" if peaked else "random"
        rows.append(
            _calibrate_row(
                f"calibrate segment {CLASSES} cls ({label}) vs 101-sigma sweep",
                segmenter,
                images,
                truth,
                timed,
                reps,
                4,
                caveat,
                quick,
            )
        )
    demo = load_model("segment", None, device=torch.device("cpu"))
    scenes = demo_segmentation_set(20).scenes
    rows.append(
        _calibrate_row(
            "calibrate demo segmenter vs 101-sigma sweep",
            demo,
            [im for _, im, _ in scenes],
            np.stack([m for _, _, m in scenes]),
            5 if quick else 20,
            3 if quick else 5,
            8,
            "demo segmenter (7 classes), 20 scenes of 64x64; ground truth: the scenes' own masks",
        )
    )
    return rows


def run(quick: bool) -> list[dict]:
    """All rows of the segmentation benchmark (single thread)."""
    torch.set_num_threads(1)
    return _modulation_rows(quick) + _calibration_rows(quick)


def main() -> None:
    """Script entry: print the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small images, fewer repetitions")
    args = parser.parse_args()
    for row in run(args.quick):
        print(
            f"{row['name']}: {row['measured']:.3f} (goal {row['goal']}, {'met' if row['met'] else 'NOT met'}) "
            f"- {row['detail']}"
        )


if __name__ == "__main__":
    main()
