"""The HTML report of a folder of tiers: `aim.write_report` (what `aim report` runs), returning a typed summary.

One clean pass of a model over labelled data, then what every tier of the folder does to it: the
metric-vs-sigma curve, each tier's metrics and certificate, per-class effects of focus tiers and
the same examples under every tier, written as one self-contained page. The collecting lives in
aim_cli.report; this module reads the arguments as the command line does and writes the page.
(The function is not called `report`: aim_cli.report is the package that draws the page.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aim_cli.api import _tier_inputs as inputs
from aim_cli.api import arguments
from aim_cli.devices import resolve_device
from aim_cli.errors import AimError, FailedInput, InputError
from aim_cli.outputs import RunOutputs, guard_outputs

if TYPE_CHECKING:
    from aim_cli.models.image_model import ImageModel
    from aim_cli.models.language import LanguageModel
    from aim_cli.report.model import ReportData
    from aim_cli.report.tiers import Tier

__all__ = ["ReportSummary", "ReportTier", "write_report"]

REPORT_SUFFIXES = (".html", ".htm")
# What --data is for each task, said when a model comes without it.
DATA_HINTS = {
    "classify": "an ImageFolder directory or a .csv/.jsonl manifest of path,label",
    "segment": "a directory with images/ and masks/ sub-folders",
    "generate": "a .jsonl file of {prompt, choices, answer}",
}


@dataclass(frozen=True)
class ReportTier:
    """One tier of the folder as the report measured it.

    `metrics` are on the report's data (e.g. {'accuracy': 0.61}), `exact` when from the formula
    rather than measured under the tier's noise; `problem` says why the tier does not apply to
    this model (then `metrics` is empty). `certificate` is the tier's certificate id (None:
    uncertified), `certificate_problem` why it is void (edited after certification), and
    `same_model` whether it was certified on this very model (None: no certificate).
    """

    name: str
    path: Path
    sigma: float
    metrics: dict[str, float]
    exact: bool
    problem: str | None
    certificate: str | None
    certificate_problem: str | None
    same_model: bool | None


@dataclass(frozen=True)
class ReportSummary:
    """What `aim.write_report` wrote and measured: the page, the model, the data and every tier.

    `clean` holds the clean model's metrics, `items` the inputs scored, `seconds` the time of
    model and analysis; `published` is False when no input succeeded (nothing was written);
    `failures` are the inputs that could not be used.
    """

    output: Path
    task: str
    model: str
    data: str
    items: int
    clean: dict[str, float]
    tiers: tuple[ReportTier, ...]
    notes: tuple[str, ...]
    seconds: float
    published: bool
    failures: tuple[FailedInput, ...] = ()


def write_report(
    tiers: str | Path,
    model: str | ImageModel | LanguageModel | None = None,
    data: str | Path | None = None,
    *,
    output: str | Path,
    task: str = "classify",
    weights: str | Path | None = None,
    labels: str | Path | None = None,
    layout: str = "auto",
    split: str | None = None,
    limit: int | None = None,
    examples: int = 6,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    allow_outside_paths: bool = False,
    progress: arguments.Progress | None = None,
    notice: arguments.Notice | None = None,
) -> ReportSummary:
    """Write one self-contained HTML page of what every tier of a folder does to a model, as `aim report`.

    Args:
        tiers: a folder of tier profiles (*.yaml), certified or not.
        model: a spec (as --model) or a model from aim.load_model; None is the task's demo
            model. Another model needs `data`: the default evaluation set belongs to the demo model.
        data: labelled data as --data; None is the demo evaluation set.
        output: the page to write (.html or .htm).
        task: 'classify', 'segment' or 'generate' (multiple-choice prompts).
        weights: weights for a `torchvision:` / `timm:` spec (as --weights).
        labels: a class-names file for an image model (as --labels).
        layout: how `data` is laid out: auto, plain, imagenet, ade20k, cityscapes or voc.
        split: the split of an ADE20K, Cityscapes or VOC root.
        limit: use only the first N items of the data.
        examples: inputs shown side by side under every tier (1 to 32).
        seed: the examples' noise for tiers without their own.
        batch_size: inputs per forward pass.
        device: auto, cpu, cuda[:N], mps or a torch.device.
        allow_outside_paths: let `data` name images outside its folder.
        progress: called with the number of items done.
        notice: called with human notes (the model and data used).

    Errors (aim.AimError, one line): a bad tiers folder or profile, bad data, options that do not
    apply to the task; nothing is written then.
    """
    tiers_path, data_path = arguments.as_path(tiers, "tiers"), arguments.as_path(data, "data")
    output_path = arguments.as_path(output, "output")
    if tiers_path is None or output_path is None:
        raise InputError("write_report needs a tiers folder and an output file")
    request = _Request(
        arguments.check_choice(task, "task", inputs.TASKS),
        model,
        data_path,
        arguments.as_path(weights, "weights"),
        arguments.as_path(labels, "labels"),
        output_path,
        bool(allow_outside_paths),
        arguments.check_choice(layout, "layout", inputs.LAYOUTS),
        split,
        None if limit is None else arguments.check_whole(limit, "limit", 1),
        arguments.check_whole(examples, "examples", 1, 32),
        arguments.check_whole(seed, "seed", 0),
        arguments.check_whole(batch_size, "batch_size", 1),
        progress or arguments.no_progress,
        notice or arguments.quiet,
    )
    request.check(tiers_path)
    from aim_cli.report.tiers import load_tiers

    tier_list = load_tiers(tiers_path)
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    collected, failures = _COLLECT[request.task](request, tier_list, torch_device)
    return _publish(collected, failures, output_path)


@dataclass(frozen=True)
class _Request:
    """The checked arguments of one report, beside the tiers and the device."""

    task: str
    model: Any
    data: Path | None
    weights: Path | None
    labels: Path | None
    output: Path
    allow_outside: bool
    layout: str
    split: str | None
    limit: int | None
    examples: int
    seed: int
    batch_size: int
    progress: arguments.Progress
    notice: arguments.Notice

    def check(self, tiers: Path) -> None:
        """Before any work: the output file, what it must not replace, and options that need --data."""
        from aim_cli.io import check_output_file

        check_output_file(self.output, REPORT_SUFFIXES)
        guard_outputs(
            [("--output", self.output)],
            [("--data", self.data), ("--labels", self.labels), ("--weights", self.weights), ("--tiers", tiers)],
            arguments.model_spec(self.model),
        )
        if self.model is not None and self.data is None:
            raise AimError(
                "--model needs --data: the default evaluation set belongs to the demo model", DATA_HINTS[self.task]
            )
        if (self.layout != "auto" or self.split is not None) and self.data is None:
            raise AimError("--layout and --split describe --data")


Collected = tuple["ReportData", list[FailedInput]]


def _classify(request: _Request, tiers: Sequence[Tier], device: torch.device) -> Collected:
    """The classifier over its labelled images."""
    from aim_cli.report.collect import collect_classification

    dataset = inputs.classification_set(request.data, request.allow_outside, request.layout, request.limit)
    read = [("--data image", item.path) for item in dataset.items if item.path is not None]
    guard_outputs([("--output", request.output)], read)
    classifier = inputs.image_model("classify", request.model, device, request.weights, request.labels)
    request.notice(f"model: {classifier.name} ({len(classifier.labels)} classes) | data: {dataset.description}")
    return collect_classification(
        classifier, dataset, tiers, request.examples, request.seed, request.batch_size, request.progress
    )


def _generate(request: _Request, tiers: Sequence[Tier], device: torch.device) -> Collected:
    """The language model over multiple-choice prompts."""
    from aim_cli.report.collect import collect_text

    image_options = request.weights is not None or request.labels is not None
    if request.layout != "auto" or request.split is not None or image_options:
        raise AimError("--layout, --split, --weights and --labels apply to --task classify and segment")
    dataset = inputs.text_set(request.data, request.limit)
    lm = inputs.language_model(request.model, device)
    request.notice(f"model: {lm.name} | data: {dataset.description}")
    return collect_text(lm, dataset, tiers, request.examples, request.seed, request.batch_size, request.progress)


def _segment(request: _Request, tiers: Sequence[Tier], device: torch.device) -> Collected:
    """The segmenter over images with masks (at most 6 examples: each shows several images)."""
    from aim_cli.report.collect import collect_segmentation

    dataset = inputs.segmentation_set(request.data, request.allow_outside, request.layout, request.split, request.limit)
    segmenter = inputs.image_model("segment", request.model, device, request.weights, request.labels)
    dataset.prepare(len(segmenter.labels), segmenter.do_reduce_labels)
    request.notice(f"model: {segmenter.name} ({len(segmenter.labels)} classes) | data: {dataset.description}")
    return collect_segmentation(segmenter, dataset, tiers, min(request.examples, 6), request.seed, request.progress)


_COLLECT = {"classify": _classify, "generate": _generate, "segment": _segment}


def _publish(collected: ReportData, failures: list[FailedInput], output: Path) -> ReportSummary:
    """Write the page when an input succeeded (else nothing), and summarise it."""
    from aim_cli.calibration.certify import aim_version  # the package metadata: aim_cli/__init__ imports the API
    from aim_cli.report.page import write_html_report

    with RunOutputs() as run:
        run.success(collected.items)
        run.document(lambda: write_html_report(collected, output, aim_version()))
    published = run.publish()
    fingerprint = collected.model_fingerprint
    tiers = tuple(
        ReportTier(
            result.tier.name,
            result.tier.path,
            result.tier.profile.sigma,
            dict(result.metrics),
            result.exact,
            result.problem,
            None if result.tier.certificate is None else result.tier.certificate.id,
            result.tier.certificate_problem,
            None if result.tier.certificate is None else result.tier.certificate.model_fingerprint == fingerprint,
        )
        for result in collected.tiers
    )
    return ReportSummary(
        output,
        collected.task,
        collected.model,
        collected.data,
        collected.items,
        dict(collected.clean),
        tiers,
        tuple(collected.notes),
        collected.seconds.get("total", 0.0),
        published,
        tuple(failures),
    )
