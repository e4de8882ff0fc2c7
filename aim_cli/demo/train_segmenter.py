"""Train the tiny embedded demo SegFormer on synthetic street scenes and write its files.

Run ``python -m aim_cli.demo.train_segmenter [--out-dir DIR]``. It writes a
``from_pretrained``-loadable model and image processor (offline, safetensors) plus four
sample scenes with ground-truth masks. The model is deliberately small and briefly
trained, with a moderate ``person`` loss weight, so that person stays the
under-segmented class that a focus boost visibly improves.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

from aim_cli.demo import streets
from aim_cli.modulation import LentGlobalStream

DEMO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT_DIR = DEMO_DIR / "segmenter"
DEFAULT_SAMPLES_DIR = DEMO_DIR / "samples"

# Loss weight of person relative to the other classes: tuned so person is learnt at
# all (it is ~2% of pixels) yet stays the under-segmented class (recall ~0.4-0.75).
PERSON_WEIGHT = 2.5


def build_processor(mean: list[float], std: list[float]) -> SegformerImageProcessor:
    """Return the image processor used for both training and inference."""
    return SegformerImageProcessor(
        do_resize=True,
        size={"height": streets.IMAGE_SIZE, "width": streets.IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=mean,
        image_std=std,
        do_reduce_labels=False,
    )


def build_model() -> SegformerForSemanticSegmentation:
    """Return an untrained tiny SegFormer (four one-block stages, logits at 1/4 resolution)."""
    id2label = dict(enumerate(streets.LABELS))
    config = SegformerConfig(  # type: ignore[call-arg]  # num_labels: a PretrainedConfig kwarg the stub omits
        num_labels=len(streets.LABELS),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        hidden_sizes=[16, 32, 48, 64],
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 2, 2],
        sr_ratios=[4, 2, 1, 1],
        decoder_hidden_size=64,
        drop_path_rate=0.0,
        classifier_dropout_prob=0.0,
    )
    return SegformerForSemanticSegmentation(config)


def channel_stats(images: list[Image.Image]) -> tuple[list[float], list[float]]:
    """Return per-channel mean and std of ``images`` in [0, 1], rounded for a tidy config."""
    pixels = np.stack([np.asarray(image, dtype=np.float64) / 255 for image in images]).reshape(-1, 3)
    return [round(float(v), 3) for v in pixels.mean(0)], [round(float(v), 3) for v in pixels.std(0)]


def preprocess(processor: SegformerImageProcessor, images: list[Image.Image]) -> torch.Tensor:
    """Run the processor in chunks and return one float tensor N x 3 x H x W."""
    chunks = [
        processor(images=images[i : i + 256], return_tensors="pt")["pixel_values"] for i in range(0, len(images), 256)
    ]
    return torch.cat(chunks).float()


def upsampled_logits(model: SegformerForSemanticSegmentation, pixels: torch.Tensor) -> torch.Tensor:
    """Return logits bilinearly upsampled (align_corners=False) to the input size, as at inference."""
    logits = model(pixel_values=pixels).logits
    return F.interpolate(logits, size=pixels.shape[-2:], mode="bilinear", align_corners=False)


class Metrics(TypedDict):
    """What evaluate() measures on the held-out images."""

    pixel_accuracy: float
    miou: float
    iou: dict[str, float]
    recall: dict[str, float]
    median_margin: float


@torch.no_grad()
def evaluate(model: SegformerForSemanticSegmentation, pixels: torch.Tensor, masks: torch.Tensor) -> Metrics:
    """Return pixel accuracy, mIoU, per-class IoU and recall, and the median top-1/top-2 margin."""
    model.eval()
    logits = torch.cat([upsampled_logits(model, pixels[i : i + 100]) for i in range(0, len(pixels), 100)])
    pred = logits.argmax(1)
    top2 = logits.topk(2, dim=1).values
    iou: dict[str, float] = {}
    recall: dict[str, float] = {}
    for k, name in enumerate(streets.LABELS):
        truth, guess = masks == k, pred == k
        iou[name] = float((truth & guess).sum() / (truth | guess).sum().clamp(min=1))
        recall[name] = float((truth & guess).sum() / truth.sum().clamp(min=1))
    return {
        "pixel_accuracy": float((pred == masks).float().mean()),
        "miou": float(np.mean(list(iou.values()))),
        "iou": iou,
        "recall": recall,
        "median_margin": float((top2[:, 0] - top2[:, 1]).median()),
    }


def train(
    model: SegformerForSemanticSegmentation,
    pixels: torch.Tensor,
    masks: torch.Tensor,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    person_weight: float,
) -> None:
    """Train with AdamW and a cosine schedule on cross-entropy of upsampled logits."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.tensor([person_weight if name == "person" else 1.0 for name in streets.LABELS])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    model.train()
    started = time.time()
    for step in range(steps):
        index = torch.randint(len(pixels), (batch_size,), generator=generator)
        batch, target = pixels[index], masks[index]
        # Horizontal flips double the scenes; the processor is per-pixel, so flipping its
        # output equals processing the flipped image.
        flip = torch.rand(batch_size, generator=generator) < 0.5
        batch[flip], target[flip] = batch[flip].flip(-1), target[flip].flip(-1)
        loss = F.cross_entropy(upsampled_logits(model, batch), target, weight=weights)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - started:6.1f}s", flush=True)


def write_samples(samples_dir: Path, count: int = 4) -> None:
    """Write ``count`` sample scenes that contain persons, with same-named ground-truth masks."""
    image_dir, mask_dir = samples_dir / "segment", samples_dir / "segment_masks"
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    # Only keep scenes with plenty of person pixels so a person focus has something to show.
    chosen = [(im, m) for im, m in streets.make_dataset("samples", 40) if (m == streets.PERSON).sum() >= 60]
    for k, (image, mask) in enumerate(chosen[:count]):
        image.save(image_dir / f"scene_{k}.png")
        Image.fromarray(mask).save(mask_dir / f"scene_{k}.png")


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, train the demo segmenter, save it, and report its metrics."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where to save model and processor")
    parser.add_argument("--samples-dir", type=Path, default=DEFAULT_SAMPLES_DIR, help="where to write sample scenes")
    parser.add_argument("--train-size", type=int, default=3000, help="number of generated training scenes")
    parser.add_argument("--steps", type=int, default=2500, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--person-weight", type=float, default=PERSON_WEIGHT, help="loss weight of person")
    args = parser.parse_args(argv)

    # The demo must train on a small shared CPU; one thread keeps it polite and reproducible.
    torch.set_num_threads(1)
    # Initialisers draw from torch's global generator (they take none): it draws the demo's seeded
    # stream for the run and is given back unchanged, so a caller's generator is never reseeded.
    with LentGlobalStream(args.seed).lent():
        started = time.time()

        train_set = streets.make_dataset("train", args.train_size)
        mean, std = channel_stats([image for image, _ in train_set])
        processor = build_processor(mean, std)
        pixels = preprocess(processor, [image for image, _ in train_set])
        masks = torch.from_numpy(np.stack([mask for _, mask in train_set])).long()

        model = build_model()
        train(model, pixels, masks, args.steps, args.batch_size, args.lr, args.seed, args.person_weight)

        args.out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out_dir, safe_serialization=True)
        processor.save_pretrained(args.out_dir)
        # safetensors writes its file owner-only; shipped package data must be world-readable.
        (args.out_dir / "model.safetensors").chmod(0o644)
        write_samples(args.samples_dir)

        eval_set = streets.evaluation_set(200)
        eval_pixels = preprocess(processor, [image for image, _ in eval_set])
        eval_masks = torch.from_numpy(np.stack([mask for _, mask in eval_set])).long()
        metrics = evaluate(model, eval_pixels, eval_masks)
        print(f"trained in {time.time() - started:.0f}s; saved to {args.out_dir}")
        print(
            f"pixel accuracy {metrics['pixel_accuracy']:.4f}  mIoU {metrics['miou']:.4f}  "
            f"median top-1/top-2 margin {metrics['median_margin']:.2f}"
        )
        for name in streets.LABELS:
            print(f"  {name:<11} IoU {metrics['iou'][name]:.3f}  recall {metrics['recall'][name]:.3f}")


if __name__ == "__main__":
    main()
