"""Focus and utility modulation of the demo segmenter, measured against the exact theory.

Everything runs through the real task (aim_cli.tasks.segment) and metrics (aim_cli.metrics)
code: upsample to the image size, per-pixel noise from aim_cli.modulation, argmax, streamed
confusion matrices. Only the analytic prediction comes from aim_cli.theory.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from aim_cli.demo import streets
from aim_cli.metrics import mean_iou, pixel_accuracy, recall
from aim_cli.models.registry import load_model
from aim_cli.modulation import KeyedNoise, Modulation, SeededNoise
from aim_cli.plans import ModulationPlan, plan_modulation
from aim_cli.profile import resolve_profile
from aim_cli.tasks import segment as segment_task
from aim_cli.tasks.segment import (
    SegmentationEvaluation,
    decide,
    decision_logits,
    input_from_image,
    segment_inputs,
)
from aim_cli.theory import focus_win_probability, utility_win_probability

# 48 scenes of 64x64 = 196,608 pixels, ~3,000 of them person: enough for tight bounds, ~1 s a pass.
N_IMAGES = 48
SEED = 20250
# Standard errors allowed between a Monte Carlo metric and its exact expectation (see below).
K_SE = 4.0
FOCUS_SIGMAS = (0.0, 1.0, 2.0, 4.0)
UTILITY_SIGMAS = (0.0, 1.0, 2.0, 4.0, 8.0)


@pytest.fixture(scope="module")
def demo():
    """The demo segmenter, the evaluation scenes as task inputs, and their decision logits."""
    torch.manual_seed(0)
    segmenter = load_model("segment", None, device=torch.device("cpu"))
    scenes = streets.evaluation_set(N_IMAGES)
    items = [input_from_image(f"eval_{i}.png", image, mask) for i, (image, mask) in enumerate(scenes)]
    # Per-pixel clean logits at the output resolution (N*H*W, C) with ground truth, for the theory.
    logits = torch.cat(
        [decision_logits(segmenter, [image for image, _ in scenes[i : i + 16]]) for i in range(0, N_IMAGES, 16)]
    )
    pixels = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    truth = torch.from_numpy(np.stack([mask for _, mask in scenes]).reshape(-1)).long()
    return segmenter, items, pixels, truth


def _evaluate(segmenter, items, plan: ModulationPlan) -> SegmentationEvaluation:
    """Run the task over the evaluation inputs and return its streamed confusion matrices."""
    evaluation = SegmentationEvaluation(len(segmenter.labels))
    for result in segment_inputs(items, segmenter, plan, batch_size=16, evaluation=evaluation):
        assert not hasattr(result, "reason"), result
    assert evaluation.images == len(items)
    return evaluation


def _focus_plan(segmenter, focus_sigma: float) -> ModulationPlan:
    """`--focus pedestrian --focus-sigma S --seed SEED`, resolved the way the CLI does it."""
    profile = resolve_profile(None, focus=["pedestrian"], focus_sigma=focus_sigma, seed=SEED)
    return plan_modulation(profile, segmenter.labels)


def test_person_recall_rises_with_focus_sigma_as_the_theory_predicts(demo):
    """Measured person recall under `--focus pedestrian` matches mean 2*Phi(-g/sigma_f) over person pixels.

    Tolerance: given the clean logits, GT-person pixel i is recalled with probability p_i
    (focus_win_probability: 2*Phi(-g_i/sigma_f), 1 where person already wins), independently of
    every other pixel because each output pixel gets its own draw. The measured recall
    R = (1/n) sum X_i, X_i ~ Bernoulli(p_i), so E[R] = mean(p_i) (the prediction) and
    SD[R] = sqrt(sum p_i (1 - p_i)) / n <= 0.5 / sqrt(n). Allowing K_SE = 4 standard deviations
    fails a correct implementation with probability < 1e-4 (normal approximation, n ~ 3,000);
    the seed is fixed, so the test is deterministic. The bound is also checked to be narrower
    than the gaps between sigmas, so it could catch a wrong focus_sigma or a missing |.|.
    """
    segmenter, items, pixels, truth = demo
    person = segmenter.labels.index("person")
    person_pixels = pixels[truth == person]
    n = person_pixels.shape[0]
    assert n > 2000, "the evaluation scenes should hold a few thousand person pixels"
    measured, predicted, bounds, clean = [], [], [], []
    for focus_sigma in FOCUS_SIGMAS:
        plan = _focus_plan(segmenter, focus_sigma)
        assert plan.target_names == ("person:up",)  # 'pedestrian' resolved through the alias table
        evaluation = _evaluate(segmenter, items, plan)
        measured.append(float(recall(evaluation.modulated.matrix)[person]))
        clean.append(float(recall(evaluation.clean.matrix)[person]))
        p = focus_win_probability(person_pixels, person, focus_sigma, direction=1)
        predicted.append(float(p.mean()))
        bounds.append(K_SE * math.sqrt(float((p * (1 - p)).sum())) / n + 1e-9)
    print("\nfocus sigma | person recall measured | predicted | bound")
    for s, m, p, b in zip(FOCUS_SIGMAS, measured, predicted, bounds):
        print(f"{s:11g} | {m:22.4f} | {p:9.4f} | {b:.4f}")
    assert all(a < b for a, b in itertools.pairwise(measured)), measured
    for m, p, b in zip(measured, predicted, bounds):
        assert abs(m - p) <= b, (m, p, b)
    assert measured[0] == pytest.approx(predicted[0], abs=1e-12)  # sigma 0: the clean model exactly
    assert all(c == measured[0] for c in clean)  # the clean pass is the same in every run
    assert max(bounds) < min(b - a for a, b in itertools.pairwise(predicted))


def test_utility_noise_lowers_miou_monotonically_and_accuracy_matches_theory(demo):
    """mIoU falls at every step of the sigma grid; pixel accuracy matches the exact expectation.

    Expected pixel accuracy is mean_i P(argmax(y_i + eps) = t_i) (theory.utility_win_probability);
    pixels are independent Bernoulli outcomes given the logits, so the same K_SE standard
    deviations sqrt(sum p(1-p)) / N bound the Monte Carlo error (N ~ 200,000 pixels).
    """
    segmenter, items, pixels, truth = demo
    mious, accuracies, expected, bounds = [], [], [], []
    for sigma in UTILITY_SIGMAS:
        plan = plan_modulation(resolve_profile(None, sigma=sigma, seed=SEED), segmenter.labels)
        evaluation = _evaluate(segmenter, items, plan)
        mious.append(mean_iou(evaluation.modulated.matrix))
        accuracies.append(pixel_accuracy(evaluation.modulated.matrix))
        p = utility_win_probability(pixels, truth, sigma)
        expected.append(float(p.mean()))
        bounds.append(K_SE * math.sqrt(float((p * (1 - p)).sum())) / p.numel() + 1e-9)
    print("\nsigma | mIoU | pixel accuracy measured | expected | bound")
    for s, m, a, e, b in zip(UTILITY_SIGMAS, mious, accuracies, expected, bounds):
        print(f"{s:5g} | {m:.4f} | {a:23.4f} | {e:8.4f} | {b:.4f}")
    assert all(a > b for a, b in itertools.pairwise(mious)), mious
    for a, e, b in zip(accuracies, expected, bounds):
        assert abs(a - e) <= b, (a, e, b)


def test_strips_give_the_same_masks_as_whole_images(demo, monkeypatch):
    """Large images are processed in strips of rows; the clean decision must not change."""
    segmenter, items, _, _ = demo
    images = [item.image for item in items[:3]]
    low = segmenter.logits(images)
    identity = Modulation()
    whole, _ = decide(low, (64, 64), identity, SeededNoise(0))
    monkeypatch.setattr(segment_task, "STRIP_ELEMENTS", 7 * 64 * 5)  # 5-row strips
    assert segment_task.strip_rows(7, 64, segment_task.STRIP_ELEMENTS) == 5
    strips, _ = decide(low, (64, 64), identity, SeededNoise(0))
    assert np.array_equal(whole, strips)
    # With focus on, strips still give every pixel its own draw: recall stays in the same range.
    focus = _focus_plan(segmenter, 2.0).modulation
    noisy, clean = decide(low, (64, 64), focus, SeededNoise(1), need_clean=True)
    assert np.array_equal(clean, whole)
    assert (noisy == 6).sum() > (clean == 6).sum()


def test_keyed_noise_does_not_depend_on_batching(demo):
    """The same image gets the same mask under keyed noise whatever it is batched with."""
    segmenter, items, _, _ = demo
    noise = KeyedNoise(b"secret")
    plan = ModulationPlan(Modulation(sigma=3.0), noise, None, ())
    alone = next(iter(segment_inputs(items[:1], segmenter, plan, batch_size=1)))
    batched = list(segment_inputs(items[:4], segmenter, plan, batch_size=4))
    again = list(segment_inputs(items[:4], segmenter, plan, batch_size=2))
    assert np.array_equal(alone.prediction, batched[0].prediction)
    assert all(np.array_equal(a.prediction, b.prediction) for a, b in zip(batched, again))
    clean, _ = decide(segmenter.logits([items[0].image]), (64, 64), Modulation(), noise)
    assert not np.array_equal(alone.prediction, clean[0])  # and the noise did act


def test_inputs_are_streamed_batch_by_batch(demo):
    """Results come out before later inputs are read, so memory does not grow with the input count."""
    segmenter, items, _, _ = demo
    consumed = []

    def endless():
        index = 0
        while True:  # an unbounded input stream: only streaming can handle it
            consumed.append(index)
            yield items[index % len(items)]
            index += 1

    plan = plan_modulation(resolve_profile(None, sigma=1.0, seed=SEED), segmenter.labels)
    results = segment_inputs(endless(), segmenter, plan, batch_size=4)
    first = [next(results) for _ in range(6)]
    assert len(first) == 6 and len(consumed) <= 8  # two batches read, nothing more
