"""Train the tiny embedded demo image classifier on synthetic shapes.

Usage: python -m aim_cli.demo.train_classifier [--out-dir DIR] [--epochs N]

Writes a transformers ResNet (model.safetensors + config.json) plus a
ViTImageProcessor (preprocessor_config.json) loadable with the Auto* classes,
and a handful of sample PNGs for `aim` demos. Fully offline and CPU-only.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    BaseImageProcessor,
    ResNetConfig,
    ResNetForImageClassification,
    ViTImageProcessor,
)

from aim_cli.demo.shapes import IMAGE_SIZE, LABELS, evaluation_set, make_dataset
from aim_cli.modulation import LentGlobalStream

DEMO_DIR = Path(__file__).resolve().parent
DEFAULT_OUT_DIR = DEMO_DIR / "classifier"
SAMPLES_DIR = DEMO_DIR / "samples" / "classify"

SEED = 0
TRAIN_SIZE = 20_000
N_SAMPLES = 12
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
# Label smoothing caps the top-1/top-2 logit margin (~ln(0.91/0.01) = 4.5),
# so logit noise in aim's tiers degrades accuracy gradually, not as a cliff.
LABEL_SMOOTHING = 0.1
WEIGHT_DECAY = 1e-4


def build_model() -> ResNetForImageClassification:
    """A randomly initialised, deliberately tiny ResNet for 32x32 inputs."""
    config = ResNetConfig(  # type: ignore[call-arg]  # num_labels: a PretrainedConfig kwarg the stub omits
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        layer_type="basic",
        hidden_act="relu",
        # The stem already reduces 32x32 to 8x8; a stride-1 first stage keeps detail.
        downsample_in_first_stage=False,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    return ResNetForImageClassification(config)


def build_processor() -> ViTImageProcessor:
    """The image processor shipped with the model: resize, rescale 1/255, normalise."""
    return ViTImageProcessor(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=Image.Resampling.BILINEAR,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def to_tensors(
    processor: BaseImageProcessor, examples: list[tuple[Image.Image, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the processor over examples, returning (pixel_values, labels)."""
    pixels = processor([image for image, _ in examples], return_tensors="pt")["pixel_values"]
    labels = torch.tensor([label for _, label in examples], dtype=torch.long)
    return pixels, labels


@torch.no_grad()
def accuracy(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Top-1 accuracy and mean top-1 minus top-2 logit margin."""
    model.eval()
    logits = torch.cat([model(pixel_values=chunk).logits for chunk in pixels.split(500)])
    top2 = logits.topk(2, dim=-1).values
    acc = (logits.argmax(-1) == labels).float().mean().item()
    return acc, (top2[:, 0] - top2[:, 1]).mean().item()


def train(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, epochs: int) -> None:
    """Adam with a one-cycle schedule and label smoothing, in place on model."""
    generator = torch.Generator().manual_seed(SEED)
    steps_per_epoch = math.ceil(len(labels) / BATCH_SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, total_steps=epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        total = 0.0
        for batch in order.split(BATCH_SIZE):
            logits = model(pixel_values=pixels[batch]).logits
            loss = loss_fn(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}/{epochs}  loss {total / len(labels):.4f}", flush=True)


def write_samples(directory: Path) -> None:
    """Save N_SAMPLES images from the 'samples' split as <label>_<k>.png."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    counts: dict[str, int] = {}
    for image, label_id in make_dataset("samples", N_SAMPLES):
        label = LABELS[label_id]
        k = counts.get(label, 0)
        counts[label] = k + 1
        image.save(directory / f"{label}_{k}.png")


def main(argv: list[str] | None = None) -> None:
    """Train, save model + processor + samples, and report held-out accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)

    # The demo must train on small shared CPUs and be reproducible.
    torch.set_num_threads(1)
    # Initialisers draw from torch's global generator (they take none): it draws the demo's seeded
    # stream for the run and is given back unchanged, so a caller's generator is never reseeded.
    with LentGlobalStream(SEED).lent():
        start = time.perf_counter()

        args.out_dir.mkdir(parents=True, exist_ok=True)
        build_processor().save_pretrained(args.out_dir)
        # Train on tensors from the processor exactly as reloaded, so train and inference agree.
        processor = AutoImageProcessor.from_pretrained(args.out_dir)
        pixels, labels = to_tensors(processor, make_dataset("train", TRAIN_SIZE))
        print(f"generated {len(labels)} training images in {time.perf_counter() - start:.1f}s", flush=True)

        model = build_model()
        print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)
        train(model, pixels, labels, args.epochs)
        model.eval()
        model.save_pretrained(args.out_dir)
        write_samples(SAMPLES_DIR)

        # Evaluate the artefacts as users will load them, not the in-memory model.
        reloaded = AutoModelForImageClassification.from_pretrained(args.out_dir)
        eval_pixels, eval_labels = to_tensors(AutoImageProcessor.from_pretrained(args.out_dir), evaluation_set(1000))
        acc, margin = accuracy(reloaded, eval_pixels, eval_labels)
        print(f"held-out accuracy {acc:.4f}  mean top1-top2 logit margin {margin:.2f}")
        print(f"total time {time.perf_counter() - start:.1f}s; saved to {args.out_dir}")


if __name__ == "__main__":
    main()
