"""Cost of modulation in classification: modulated vs clean throughput on the same batches."""

from __future__ import annotations

import statistics
import time

import torch

from aim_cli.demo import shapes
from aim_cli.models.classifier import load_classifier
from aim_cli.modulation import FocusTarget, Modulation, SeededNoise, modulate


def _time(fn, repeats: int) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(quick: bool = False) -> dict[str, float]:
    """Measure images/s clean and modulated (utility + focus), alternating to share machine noise."""
    classifier = load_classifier(None, torch.device("cpu"))
    images = [img for img, _ in shapes.evaluation_set(256 if quick else 1024)]
    modulation = Modulation(sigma=2.0, focus_sigma=2.0, targets=(FocusTarget(0),))
    noise = SeededNoise(0)

    def clean() -> None:
        for i in range(0, len(images), 128):
            classifier.logits(images[i : i + 128]).argmax(1)

    def modulated() -> None:
        for i in range(0, len(images), 128):
            modulate(classifier.logits(images[i : i + 128]), modulation, noise).argmax(1)

    clean()  # warm-up
    ratios = []
    for _ in range(3 if quick else 7):
        t_clean = _time(clean, 1)[0]
        t_mod = _time(modulated, 1)[0]
        ratios.append(t_clean / t_mod)
    return {
        "images": len(images),
        "throughput_ratio_modulated_over_clean": statistics.median(ratios),
        "min_ratio": min(ratios),
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
