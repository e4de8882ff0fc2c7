"""Benchmark: `aim calibrate` (one pass + analytic curve) against re-running the model per sigma.

The reference approach (the paper's code) evaluates a 101-sigma sweep by running the full
evaluation - forward pass over the data, noise, metric - once per sigma, and reads the
target off that measured curve. `aim calibrate` runs the model once, computes the expected
metric at every sigma analytically (aim_cli.theory), root-finds, and confirms with a
20-draw Monte Carlo check on the cached logits. Both run in-process on the same model, data,
device and thread count; the ratio is reference wall-clock / calibrate wall-clock.

Quick mode times the reference on 11 of the 101 sigmas and scales by 101/11 (each sigma
costs the same: a full pass); full mode runs all 101. Segmentation is included in full mode
(mIoU target, demo segmenter, 20 scenes; the reference computes the confusion matrix from a
noisy forward pass per sigma).

    python benchmarks/bench_calibrate.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIGMAS = [float(s) for s in np.linspace(0.0, 10.0, 101)]  # the reference sweep: 101 sigmas


def _reference_classify(classifier, images, labels, sigmas, batch_size) -> list[float]:  # type: ignore[no-untyped-def]
    """Re-run the whole evaluation for every sigma: forward pass, noise, accuracy."""
    from aim_cli.modulation import Modulation, SeededNoise, modulate

    curve = []
    noise = SeededNoise(0)
    for sigma in sigmas:
        right = 0
        for start in range(0, len(images), batch_size):
            logits = classifier.logits(images[start : start + batch_size])
            noisy = modulate(logits, Modulation(sigma=sigma), noise)
            right += int((noisy.argmax(dim=1).cpu() == labels[start : start + batch_size]).sum())
        curve.append(right / len(images))
    return curve


def bench_classify(quick: bool, batch_size: int = 100) -> dict[str, object]:
    """Demo classifier on its evaluation set: reference sweep vs aim calibrate --target-acc 0.6."""
    from aim_cli.calibration.datasets import demo_classification_set
    from aim_cli.models.classifier import load_classifier
    from aim_cli.tasks.calibrate import CalibrationRequest, calibrate_classifier

    count = 200 if quick else 1000
    dataset = demo_classification_set(count)
    classifier = load_classifier(None, torch.device("cpu"))
    images = [item.image for item in dataset.items]
    labels = torch.tensor([classifier.labels.index(item.label) for item in dataset.items])
    classifier.logits(images[:8])  # warm-up outside both timings

    start = time.perf_counter()
    calibration, _ = calibrate_classifier(classifier, dataset, CalibrationRequest("accuracy", 0.6, batch_size=batch_size))
    calibrate_s = time.perf_counter() - start

    timed = SIGMAS[::10] if quick else SIGMAS
    start = time.perf_counter()
    measured = _reference_classify(classifier, images, labels, timed, batch_size)
    reference_s = (time.perf_counter() - start) * len(SIGMAS) / len(timed)
    step = max(1, len(timed) // 6)
    return {
        **_result("classify", count, len(timed), reference_s, calibrate_s, calibration),
        "reference_curve_sample": list(zip(timed[::step], measured[::step])),
    }


def _result(task: str, images: int, timed: int, reference_s: float, calibrate_s: float, calibration) -> dict[str, object]:
    """The fields every benchmark case reports: both timings, their ratio and the chosen value."""
    return {
        "task": task,
        "images": images,
        "reference_sigmas_timed": timed,
        "reference_s": reference_s,
        "calibrate_s": calibrate_s,
        "ratio": reference_s / calibrate_s,
        "chosen_sigma": calibration.value,
        "measured_at_sigma": calibration.check.mean,
        "calibrate_timing_s": calibration.timing,
    }


def bench_segment(quick: bool) -> dict[str, object]:
    """Demo segmenter: reference mIoU sweep vs aim calibrate --task segment --target-miou 0.5."""
    from aim_cli.calibration.datasets import demo_segmentation_set
    from aim_cli.calibration.segment import present_miou
    from aim_cli.metrics import ConfusionMatrix
    from aim_cli.models.segmenter import load_segmenter
    from aim_cli.modulation import Modulation, SeededNoise, modulate
    from aim_cli.tasks.calibrate import CalibrationRequest, calibrate_segmenter
    from aim_cli.tasks.segment import decision_logits

    count = 20
    dataset = demo_segmentation_set(count)
    segmenter = load_segmenter(None, torch.device("cpu"))
    start = time.perf_counter()
    calibration, _ = calibrate_segmenter(segmenter, dataset, CalibrationRequest("miou", 0.5))
    calibrate_s = time.perf_counter() - start

    images = [image for _, image, _ in dataset.scenes]
    truth = torch.from_numpy(np.stack([mask for _, _, mask in dataset.scenes]).astype(np.int64))
    timed = SIGMAS[::10] if quick else SIGMAS
    noise = SeededNoise(0)
    start = time.perf_counter()
    for sigma in timed:
        matrix = ConfusionMatrix(len(segmenter.labels))
        for first in range(0, count, 8):
            logits = decision_logits(segmenter, images[first : first + 8])
            matrix.update(modulate(logits, Modulation(sigma=sigma), noise).argmax(dim=1), truth[first : first + 8])
        present_miou(matrix.matrix)
    reference_s = (time.perf_counter() - start) * len(SIGMAS) / len(timed)
    return _result("segment", count, len(timed), reference_s, calibrate_s, calibration)


def run(quick: bool) -> dict:
    """Measure the wall-clock ratio (reference 101-sigma sweep / aim calibrate); returns a JSON-ready dict."""
    results = {"classify": bench_classify(quick)}
    if not quick:
        results["segment"] = bench_segment(quick)
    return {
        "quick": quick,
        "torch_threads": torch.get_num_threads(),
        "reference_sweep_sigmas": len(SIGMAS),
        "results": results,
    }


def main() -> None:
    """Script entry: print the ratios (and optionally write the JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images; reference timed on 11 sigmas and scaled")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: stable on shared CPUs)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = run(args.quick)
    for name, result in report["results"].items():
        print(
            f"{name}: reference 101-sigma sweep {result['reference_s']:.1f} s "
            f"(timed {result['reference_sigmas_timed']} sigmas) vs aim calibrate {result['calibrate_s']:.2f} s "
            f"-> {result['ratio']:.1f}x faster ({result['images']} images, {report['torch_threads']} thread(s))"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
