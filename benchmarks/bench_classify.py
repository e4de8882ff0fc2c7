"""Cost of modulation in classification: a ResNet-50-size model, modulated vs clean, same batches.

Random weights (timing only) at 224x224, batch 32, one thread. The clean path is what a user
would otherwise run: forward + argmax. Modulated adds utility noise (and 3 focus classes) on
the 1000 logits before the argmax. Interleaved repetitions; the ratio is median time modulated
/ median time clean.
"""

from __future__ import annotations

import statistics

import torch
import torchvision
from timing import interleaved

from aim_cli.modulation import FocusTarget, Modulation, SeededNoise, modulate

GOAL = 1.02


def run(quick: bool = False) -> list[dict]:
    """Rows: modulated/clean time for utility and utility + 3 focus classes."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    batch = 8 if quick else 32
    images = torch.randn(batch, 3, 224, 224)
    noise = SeededNoise(0)
    utility = Modulation(sigma=2.0)
    focus = Modulation(sigma=2.0, focus_sigma=2.0, targets=tuple(FocusTarget(k) for k in (1, 7, 42)))

    @torch.inference_mode()
    def clean() -> None:
        model(images).argmax(1)

    @torch.inference_mode()
    def with_utility() -> None:
        modulate(model(images), utility, noise).argmax(1)

    @torch.inference_mode()
    def with_focus() -> None:
        modulate(model(images), focus, noise).argmax(1)

    clean()  # warm-up
    times = interleaved([clean, with_utility, with_focus], 5 if quick else 7)
    base = statistics.median(times[0])
    detail = (
        f"resnet50 random weights, 224px, batch {batch}, {len(times[0])} interleaved reps, clean {base:.2f} s/batch"
    )
    rows = []
    for name, measured in (("utility", times[1]), ("utility + 3 focus", times[2])):
        ratio = statistics.median(measured) / base
        rows.append(
            {
                "name": f"classify ResNet-50 b{batch} modulated/clean time ({name})",
                "measured": ratio,
                "goal": f"<= {GOAL}",
                "met": ratio <= GOAL,
                "detail": detail,
            }
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
