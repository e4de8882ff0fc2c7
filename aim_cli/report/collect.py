"""One clean pass over labelled data, then the curve, every tier's metrics and examples from it.

Classification: the accuracy curve and each tier's accuracy and per-class recall are exact
(aim_cli.theory on the cached logits); a tier with several focus targets, which no formula
covers, is measured over seeded draws. Segmentation: the curves are the exact expected
confusion on a random sample of scored pixels; each tier is measured under its own noise on
every pixel of the data (the segment task's path).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from aim_cli import theory
from aim_cli.calibration.classify import (
    COMMON_NOISE_SE,
    accuracy_metric,
    collect_logits,
    common_noise_accuracy_metric,
    common_noise_draws,
    dataset_label_ids,
    exact_is_affordable,
    expected_correct,
)
from aim_cli.calibration.datasets import ImageDataset, SegmentationDataset, TextDataset
from aim_cli.calibration.segment import expected_class_probabilities, present_miou
from aim_cli.certificates import language_model_fingerprint, model_fingerprint
from aim_cli.errors import AimError, FailedInput, InputError
from aim_cli.images import LoadedImage
from aim_cli.masks import colour_table, overlay_image
from aim_cli.metrics import IGNORE_INDEX, ConfusionMatrix, pixel_accuracy, recall
from aim_cli.models.image_model import ImageModel
from aim_cli.models.language import LanguageModel
from aim_cli.modulation import Modulation, NoiseSource, SeededNoise, modulate
from aim_cli.plans import ModulationPlan, plan_modulation
from aim_cli.profile import Profile
from aim_cli.report.model import Cell, Example, ReportData, TierResult
from aim_cli.report.noise import example_profile
from aim_cli.report.tiers import Tier
from aim_cli.tasks.batches import ProgressCallback, check_model_logits
from aim_cli.tasks.segment import SegmentInput, decide, truth_problem, upsample_at

# Curve points between where the metric starts to fall and where it reaches chance, and the
# coarse grid (1e-3 to 1e3) that finds that range.
CURVE_POINTS = 48
COARSE_POINTS = 19
# A tier with several focus targets (no closed form): seeded draws over the cached logits.
FOCUS_DRAWS = 64
# Scored pixels whose exact expected confusion draws the segmentation curves: a sampling standard
# error of at most 0.004 on pixel accuracy (0.5 / sqrt(n)), at ~0.1 s per sigma for 7 classes.
CURVE_PIXELS = 1 << 14
# Example thumbnails are drawn at least this wide (small inputs are enlarged, pixels kept sharp).
THUMBNAIL = 128


def _display_grid(metric: Callable[[float], float], clean: float, chance: float, keep: Sequence[float]) -> list[float]:
    """Sigmas from just before the metric leaves its clean value to where it is near chance (and every tier's)."""
    coarse = theory.sigma_grid(1e-3, 1e3, COARSE_POINTS)[1:]
    values = [metric(s) for s in coarse]
    span = max(clean - chance, 1e-9)
    start = next((s for s, v in zip(coarse, values) if clean - v > 0.005 * span), coarse[0])
    stop = next((s for s, v in zip(coarse, values) if v - chance < 0.02 * span), coarse[-1])
    low = min([start / 3, *(s / 1.5 for s in keep if s > 0)])
    high = max([stop * 1.5, *(s * 1.5 for s in keep if s > 0)])
    return [float(s) for s in np.geomspace(low, high, CURVE_POINTS)]


def _fingerprint(tiers: Sequence[Tier], compute: Callable[[], str | None]) -> str | None:
    """The model's fingerprint when some tier is certified (hashing the weights is for them alone), else None."""
    if all(tier.certificate is None for tier in tiers):
        return None
    try:
        return compute()
    except (OSError, ValueError):  # e.g. a language model whose files are not found offline: no comparison
        return None


def _thumbnail(image: Image.Image) -> Image.Image:
    """The image enlarged (nearest neighbour) when it is smaller than a thumbnail."""
    if image.width >= THUMBNAIL:
        return image
    factor = math.ceil(THUMBNAIL / image.width)
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _plans(
    tiers: Sequence[Tier], labels: Sequence[str] | Callable[[Profile], ModulationPlan], seed: int
) -> list[tuple[TierResult, ModulationPlan | None]]:
    """Each tier resolved against the model's classes (or by `labels` itself, e.g. a tokenizer's planner).

    A tier that cannot be resolved is kept, with its reason.
    """
    out: list[tuple[TierResult, ModulationPlan | None]] = []
    for tier in tiers:
        profile, noise = example_profile(tier.profile, seed)
        try:
            plan = labels(profile) if callable(labels) else plan_modulation(profile, labels)
        except AimError as exc:
            # The page names the file by its name only: no path of this machine in a page that travels.
            out.append((TierResult(tier, problem=exc.message.replace(str(tier.path), tier.path.name)), None))
            continue
        out.append((TierResult(tier, noise=noise, focus_labels=list(plan.target_names)), plan))
    return out


def _class_means(values: torch.Tensor, labels: torch.Tensor, classes: int) -> list[float]:
    """Mean of `values` over the rows of each class (NaN for a class without rows)."""
    sums = torch.zeros(classes, dtype=torch.float64).index_add_(0, labels.cpu(), values.double().cpu())
    counts = torch.bincount(labels.cpu(), minlength=classes).double()
    return [float(s / c) if c > 0 else math.nan for s, c in zip(sums, counts)]


def _expected_correct(
    logits: torch.Tensor, labels: torch.Tensor, modulation: Modulation, seed: int
) -> tuple[torch.Tensor, bool]:
    """Per-row P(prediction == label) under a tier: exact where a formula applies, else seeded draws."""
    if not modulation.has_focus:
        return expected_correct(logits, labels, modulation.sigma), True
    if len(modulation.targets) == 1:
        target = modulation.targets[0]
        if modulation.sigma > 0:
            rows = theory.win_probability_with_focus(
                logits, labels, modulation.sigma, target.class_id, modulation.focus_sigma, target.direction
            )
        else:  # focus alone: the target or the clean runner-up wins, in closed form
            probabilities = theory.focus_class_probabilities(
                logits, target.class_id, modulation.focus_sigma, target.direction
            )
            rows = probabilities.gather(1, labels[:, None]).squeeze(1)
        return rows, True
    noise = SeededNoise(seed)
    hits = torch.zeros(logits.shape[0], dtype=torch.float64, device=logits.device)
    for _ in range(FOCUS_DRAWS):
        hits += (modulate(logits, modulation, noise).argmax(dim=1) == labels).double()
    return hits / FOCUS_DRAWS, False


def _accuracy_curve(
    logits: torch.Tensor, labels: torch.Tensor, seed: int, unit: str
) -> tuple[Callable[[float], float], str]:
    """Expected accuracy against sigma from cached logits (exact when affordable, as calibration does) and how."""
    if exact_is_affordable(logits):
        return accuracy_metric(
            logits, labels
        ), f"exact: the expected accuracy over {logits.shape[0]} {unit}, from one clean pass"
    draws = common_noise_draws(logits.shape[0])
    method = (
        f"common random numbers ({draws} draw(s) per item, standard error <= {COMMON_NOISE_SE}): "
        f"the exact formula would cost {logits.shape[0]:,} x {logits.shape[1]:,} quadratures per sigma"
    )
    return common_noise_accuracy_metric(logits, labels, draws, seed=seed + 7919), method


def collect_classification(
    classifier: ImageModel,
    dataset: ImageDataset,
    tiers: Sequence[Tier],
    examples: int = 6,
    seed: int = 0,
    batch_size: int = 64,
    progress: ProgressCallback | None = None,
) -> tuple[ReportData, list[FailedInput]]:
    """Cache the logits once; the exact accuracy curve, each tier's accuracy and recall, and examples."""
    started = time.perf_counter()
    labels_text = list(classifier.labels)
    classes = len(labels_text)
    label_ids = dataset_label_ids(dataset, labels_text)
    cached = collect_logits(classifier, dataset.items, label_ids, batch_size, progress)
    logits, labels = cached.logits, cached.labels
    forward = time.perf_counter() - started
    notes: list[str] = []
    metric, method = _accuracy_curve(logits, labels, seed, "images")
    clean_rows = (logits.argmax(dim=1) == labels).double()
    clean = float(clean_rows.mean())
    plans = _plans(tiers, labels_text, seed)
    grid = _display_grid(metric, clean, 1.0 / classes, [t.tier.profile.sigma for t, _ in plans])
    curve = [(0.0, clean), *((s, metric(s)) for s in grid)]
    for result, plan in plans:
        if plan is None:
            continue
        rows, result.exact = _expected_correct(logits, labels, plan.modulation, seed)
        result.metrics = {"accuracy": float(rows.mean())}
        result.recall = _class_means(rows, labels, classes)
    shown = _classification_examples(classifier, dataset, label_ids, plans, examples)
    data = ReportData(
        task="classify",
        model=classifier.name,
        data=dataset.description,
        items=int(logits.shape[0]),
        labels=labels_text,
        curves={"accuracy": curve},
        curve_method=method,
        clean={"accuracy": clean},
        clean_recall=_class_means(clean_rows, labels, classes),
        support=torch.bincount(labels.cpu(), minlength=classes).tolist(),
        tiers=[result for result, _ in plans],
        examples=shown,
        notes=notes,
        seconds={"forward": forward, "total": time.perf_counter() - started},
        model_fingerprint=_fingerprint(tiers, lambda: model_fingerprint(classifier)),
    )
    return data, [*dataset.failures, *cached.failures]


def _classification_examples(
    classifier: ImageModel,
    dataset: ImageDataset,
    label_ids: Sequence[int],
    plans: Sequence[tuple[TierResult, ModulationPlan | None]],
    count: int,
) -> list[Example]:
    """The first readable images, predicted clean and under every tier's noise."""
    loaded: list[LoadedImage] = []
    truths: list[int] = []
    for item, label in zip(dataset.items, label_ids):
        if len(loaded) == count:
            break
        try:
            loaded.append(item.load())
        except InputError:
            continue  # listed among the failures by the clean pass
        truths.append(label)
    if not loaded:
        return []
    clean = classifier.logits([item.image for item in loaded])
    check_model_logits(clean, [item.path for item in loaded])
    columns = [clean.argmax(dim=1)]
    for _result, plan in plans:
        if plan is None:
            continue  # a tier that does not apply gets no column
        keys = [item.key for item in loaded] if plan.keyed else None
        columns.append(plan.apply(clean.clone(), class_dim=1, keys=keys).argmax(dim=1))
    examples = []
    for index, (image, truth) in enumerate(zip(loaded, truths)):
        thumb = _thumbnail(image.image)
        example = Example(name=image.path.name, truth=classifier.labels[truth])
        for column in columns:
            predicted = int(column[index])
            example.cells.append(Cell(thumb, classifier.labels[predicted], predicted == truth))
        examples.append(example)
    return examples


def _segment_metrics(matrix: torch.Tensor) -> dict[str, float]:
    """The segmentation curves' metrics read off a confusion matrix."""
    return {"miou": present_miou(matrix), "pixel_accuracy": pixel_accuracy(matrix)}


def _scored_inputs(
    segmenter: ImageModel, dataset: SegmentationDataset, failures: list[FailedInput], progress: ProgressCallback | None
) -> list[tuple[SegmentInput, torch.Tensor]]:
    """Every input with a usable mask and its low-resolution logits (one forward pass each)."""
    classes = len(segmenter.labels)
    kept: list[tuple[SegmentInput, torch.Tensor]] = []
    for item in dataset.inputs():
        if progress:
            progress(1)
        if not isinstance(item, SegmentInput):  # the data set's reader yields a FailedInput instead
            if isinstance(item, FailedInput):
                failures.append(item)
            continue
        path = item.path
        problem = truth_problem(item, classes)
        if item.truth is None or problem:
            failures.append(FailedInput(path, problem or "no ground-truth mask"))
            continue
        low = segmenter.logits([item.image])
        check_model_logits(low, [path])
        kept.append((item, low))
    if not kept:
        first = f" (first: {failures[0].reason})" if failures else ""
        raise InputError(
            f"no image of the data could be scored{first}", "fix or remove the failing images and run again"
        )
    return kept


def _pixel_sample(
    kept: Sequence[tuple[SegmentInput, torch.Tensor]], seed: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Up to CURVE_PIXELS scored pixels drawn evenly from every image: logits (P, C), truth (P,), and all scored."""
    generator = torch.Generator().manual_seed(seed)
    share = max(1, CURVE_PIXELS // len(kept))
    pixels, truths, total = [], [], 0
    for item, low in kept:
        truth = torch.as_tensor(np.asarray(item.truth)).reshape(-1).long()
        scored = (truth != IGNORE_INDEX).nonzero().squeeze(1)
        total += scored.numel()
        if scored.numel() > share:
            scored = scored[torch.randperm(scored.numel(), generator=generator)[:share]]
        height, width = np.asarray(item.truth).shape
        pixels.append(upsample_at(low, (height, width), scored.to(low.device)).float().cpu())
        truths.append(truth[scored])
    return torch.cat(pixels), torch.cat(truths), total


def _decide_all(
    kept: Sequence[tuple[SegmentInput, torch.Tensor]],
    classes: int,
    modulation: Modulation,
    noise: NoiseSource,
    keyed: bool,
    examples: int,
) -> tuple[ConfusionMatrix, list[np.ndarray]]:
    """Every image decided as the segment task decides it (one draw of the noise): the confusion and the first masks."""
    matrix = ConfusionMatrix(classes)
    shown = []
    for index, (item, low) in enumerate(kept):
        truth = np.asarray(item.truth)
        prediction, _ = decide(low, truth.shape, modulation, noise, [item.key] if keyed else None)
        matrix.update(torch.from_numpy(prediction[0].astype(np.int64)), torch.as_tensor(truth))
        if index < examples:
            shown.append(prediction[0])
    return matrix, shown


def collect_segmentation(
    segmenter: ImageModel,
    dataset: SegmentationDataset,
    tiers: Sequence[Tier],
    examples: int = 4,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> tuple[ReportData, list[FailedInput]]:
    """Logits once per image; exact expected curves on a pixel sample, each tier measured on every pixel."""
    started = time.perf_counter()
    labels_text = list(segmenter.labels)
    classes = len(labels_text)
    failures: list[FailedInput] = []
    kept = _scored_inputs(segmenter, dataset, failures, progress)
    forward = time.perf_counter() - started
    pixels, truth, scored = _pixel_sample(kept, seed)

    def expected(sigma: float) -> dict[str, float]:
        matrix = ConfusionMatrix(classes)
        matrix.update_expected(expected_class_probabilities(pixels, sigma), truth)
        return _segment_metrics(matrix.matrix)

    plans = _plans(tiers, labels_text, seed)
    clean_matrix, clean_masks = _decide_all(kept, classes, Modulation(), SeededNoise(seed), False, examples)
    masks = [clean_masks]  # per column (clean, then every tier that applies), the first images' masks
    clean = _segment_metrics(clean_matrix.matrix)
    for result, plan in plans:
        if plan is None:
            continue  # a tier that does not apply gets no column
        matrix, shown = _decide_all(kept, classes, plan.modulation, plan.noise, plan.keyed, examples)
        result.metrics = _segment_metrics(matrix.matrix)
        result.recall = [float(v) for v in recall(matrix.matrix)]
        masks.append(shown)

    sample = pixels.shape[0]
    grid_metric = lambda sigma: expected(sigma)["miou"]  # noqa: E731  (the grid follows mIoU)
    chance = expected(1e4)["miou"]
    sample_clean = expected(0.0)
    grid = _display_grid(grid_metric, sample_clean["miou"], chance, [t.tier.profile.sigma for t, _ in plans])
    points = [(s, expected(s)) for s in grid]
    curves = {
        name: [(0.0, clean[name]), *((s, values[name]) for s, values in points)] for name in ("miou", "pixel_accuracy")
    }
    colours = colour_table(labels_text)
    shown_examples = []
    for index, (item, _low) in enumerate(kept[:examples]):
        image = item.image
        truth_mask = np.asarray(item.truth)
        visible = np.where(truth_mask == IGNORE_INDEX, 0, truth_mask)
        example = Example(
            name=item.path.name,
            truth="",
            reference=[
                ("input", _thumbnail(image)),
                ("ground truth", _thumbnail(overlay_image(image, visible, colours, 0.7))),
            ],
        )
        for column in masks:
            mask = column[index]
            valid = truth_mask != IGNORE_INDEX
            accuracy = float((mask[valid] == truth_mask[valid]).mean()) if valid.any() else math.nan
            example.cells.append(
                Cell(_thumbnail(overlay_image(image, mask, colours)), f"pixel accuracy {accuracy:.0%}")
            )
        shown_examples.append(example)
    support = clean_matrix.matrix.sum(dim=1)
    method = (
        f"exact expected confusion (per-pixel formula) on {sample:,} scored pixels drawn evenly from "
        f"{len(kept)} images ({scored:,} scored pixels in all); each tier measured under its own noise on every pixel"
    )
    data = ReportData(
        task="segment",
        model=segmenter.name,
        data=dataset.description,
        items=len(kept),
        labels=labels_text,
        curves=curves,
        curve_method=method,
        clean=clean,
        clean_recall=[float(v) for v in recall(clean_matrix.matrix)],
        support=[int(v) for v in support.tolist()],
        tiers=[result for result, _ in plans],
        examples=shown_examples,
        colours=[tuple(int(c) for c in row) for row in colours],  # type: ignore[misc]
        seconds={"forward": forward, "total": time.perf_counter() - started},
        model_fingerprint=_fingerprint(tiers, lambda: model_fingerprint(segmenter)),
    )
    return data, failures


def collect_text(
    lm: LanguageModel,
    dataset: TextDataset,
    tiers: Sequence[Tier],
    examples: int = 6,
    seed: int = 0,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
) -> tuple[ReportData, list[FailedInput]]:
    """Multiple choice: next-token logits once; the exact accuracy curve, each tier's accuracy, answers shown."""
    from aim_cli.calibration.text import collect_next_token_logits
    from aim_cli.tasks.generate import encode_prompts, plan_generation

    if not dataset.multiple_choice:
        raise InputError(
            "aim report --task generate reads multiple-choice data ({prompt, choices, answer} lines)",
            "free-form answers have no exact curve: aim calibrate --task generate measures them by Monte Carlo",
        )
    started = time.perf_counter()
    cached = collect_next_token_logits(lm, dataset.items, batch_size, progress)
    logits, answers = cached.logits, cached.answers
    metric, method = _accuracy_curve(logits, answers, seed, "prompts")
    clean = float((logits.argmax(dim=1) == answers).double().mean())
    plans = _plans(tiers, lambda profile: plan_generation(profile, lm), seed)
    grid = _display_grid(metric, clean, 1.0 / logits.shape[1], [t.tier.profile.sigma for t, _ in plans])
    for result, plan in plans:
        if plan is not None:
            rows, result.exact = _expected_correct(logits, answers, plan.modulation, seed)
            result.metrics = {"accuracy": float(rows.mean())}
    shown = dataset.items[:examples]
    prompts = encode_prompts(lm, [str(item["prompt"]) for item in shown])
    columns = [logits[: len(shown)].argmax(dim=1)]
    for _result, plan in plans:
        if plan is not None:
            keys = [list(prompt.ids) for prompt in prompts] if plan.keyed else None
            columns.append(plan.apply(logits[: len(shown)].clone(), class_dim=1, keys=keys).argmax(dim=1))
    cells = []
    for index, item in enumerate(shown):
        choices = [str(choice) for choice in item["choices"]]  # type: ignore[attr-defined]
        example = Example(name=str(item["prompt"]), truth=choices[int(item["answer"])])  # type: ignore[call-overload]
        for column in columns:
            token = int(column[index])
            text = lm.tokenizer.decode([token])
            example.cells.append(Cell(None, text, token == int(answers[index])))
        cells.append(example)
    data = ReportData(
        task="generate",
        model=lm.name,
        data=dataset.description,
        items=int(logits.shape[0]),
        labels=[],
        curves={"accuracy": [(0.0, clean), *((s, metric(s)) for s in grid)]},
        curve_method=method
        + "; a prompt counts as right when the next token (argmax over the vocabulary) is the right choice's",
        clean={"accuracy": clean},
        clean_recall=[],
        support=[],
        tiers=[result for result, _ in plans],
        examples=cells,
        seconds={"forward": cached.seconds, "total": time.perf_counter() - started},
        # As aim verify does: the files the language model was loaded from.
        model_fingerprint=_fingerprint(
            tiers, lambda: language_model_fingerprint(str(getattr(lm.model, "name_or_path", "") or lm.name))
        ),
    )
    return data, []
