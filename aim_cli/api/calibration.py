"""`aim.calibrate`: the sigma (or focus sigma) that reaches a target metric on a model and its labelled data.

What `aim calibrate` runs, without Typer: the options' checks, the data (the demo set, a folder or
manifest, an ADE20K / Cityscapes / VOC / ImageNet root as it ships, prompts, or lm-eval tasks),
the model, one pass (or a Monte Carlo search), and the profile, report and plot files, written
only when some item was scored and never over an input. Errors name the CLI's options, as the
command's do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import torch

from aim_cli.api.arguments import Notice, PathLike, Progress, as_path, check_choice, check_whole
from aim_cli.calibration.core import Calibration
from aim_cli.devices import resolve_device
from aim_cli.errors import AimError, InputError
from aim_cli.outputs import RunOutputs, guard_outputs

if TYPE_CHECKING:
    from aim_cli.calibration.datasets import ImageDataset, SegmentationDataset
    from aim_cli.calibration.runner import CalibrationRequest
    from aim_cli.models.image_model import ImageModel
    from aim_cli.models.language import LanguageModel

__all__ = ["calibrate"]

Task = Literal["classify", "segment", "generate", "lm-eval"]
Layout = Literal["auto", "plain", "imagenet", "ade20k", "cityscapes", "voc"]

TASKS = ("classify", "segment", "generate", "lm-eval")
LAYOUTS = ("auto", "plain", "imagenet", "ade20k", "cityscapes", "voc")
# The words of the count checks' messages (as the command's own option checks say them).
AT_LEAST_ONE = "an integer of at least 1"
# What --data is for each task, when --model comes without it.
DATA_HINTS = {
    "classify": "an ImageFolder directory or a .csv/.jsonl manifest of path,label",
    "segment": "a directory with images/ and masks/ sub-folders",
    "generate": "a .jsonl file of {prompt, answer} or {prompt, choices, answer}",
}


def calibrate(
    model: str | ImageModel | LanguageModel | None = None,
    data: PathLike | None = None,
    *,
    task: Task = "classify",
    target_acc: float | None = None,
    target_miou: float | None = None,
    target_recall: float | None = None,
    focus: str | None = None,
    sigma: float | None = None,
    weights: PathLike | None = None,
    labels: PathLike | None = None,
    layout: Layout = "auto",
    split: str | None = None,
    limit: int | None = None,
    allow_outside_paths: bool = False,
    lm_tasks: str | Sequence[str] | None = None,
    include_path: PathLike | None = None,
    trust_task_code: bool = False,
    draws: int = 20,
    seed: int = 0,
    profile_out: PathLike | None = None,
    name: str | None = None,
    confidence: float = 0.95,
    report_out: PathLike | None = None,
    plot_out: PathLike | None = None,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    progress: Progress | None = None,
    notice: Notice | None = None,
) -> Calibration:
    """The sigma (or, with `focus` and `target_recall`, the focus sigma) that reaches one target metric.

    As `aim calibrate`: an exact curve from one pass where the task allows (else a seeded Monte
    Carlo search), the root, and a seeded Monte Carlo check at it.

    Args:
        model: a model from aim.load_model, or a spec as `--model` (None: the task's demo model).
        data: labelled data as `--data` (None with the demo model: its own evaluation set).
        task: 'classify', 'segment', 'generate' or 'lm-eval' (which takes `lm_tasks`, not `data`).
        target_acc: target accuracy (pixel accuracy for segment); or `target_miou` (segment), or
            `target_recall` of the `focus` class ('NAME[:up|down]') with the utility `sigma` fixed.
        layout: how `data` is laid out ('auto' detects; segment and classify), with `split`.
        limit: use only the first N items (lm-eval: documents per task).
        profile_out: write the calibrated YAML profile (named `name`, certified at `confidence`
            where the task allows); `report_out` the JSON report; `plot_out` the curve as a PNG.
        progress: called with the count of items (or passes) done; notice: called with human notes.

    Returns the Calibration (.sigma, .focus_sigma, .predicted, .check, .rows(), .failures). Nothing
    is written when no item was scored. Errors are aim.AimError subclasses with one-line messages.
    """
    from aim_cli.calibration.runner import calibration_request
    from aim_cli.certificates import check_confidence

    task = cast(Task, check_choice(task, "task", TASKS))
    layout = cast(Layout, check_choice(layout, "layout", LAYOUTS))
    confidence = check_confidence(confidence)
    limit = None if limit is None else check_whole(limit, "limit", span=AT_LEAST_ONE)
    batch_size = check_whole(batch_size, "batch_size", span=AT_LEAST_ONE)
    request = calibration_request(task, target_acc, target_miou, target_recall, focus, sigma, draws, seed, batch_size)
    paths = {key: as_path(value, key) for key, value in (("data", data), ("weights", weights), ("labels", labels))}
    outputs = _outputs(profile_out, report_out, plot_out)
    names = lm_tasks if lm_tasks is None or isinstance(lm_tasks, str) else ",".join(lm_tasks)
    folder = as_path(include_path, "include_path")
    _check_options(model, task, paths, outputs, folder, trust_task_code, allow_outside_paths, names is not None)
    if (layout != "auto" or split is not None) and (data is None or task == "generate"):
        raise AimError("--layout and --split describe --data of --task classify or segment")
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    data_path, weights_path, labels_path = paths["data"], paths["weights"], paths["labels"]
    options = _DataOptions(data_path, weights_path, labels_path, layout, split, limit, allow_outside_paths, outputs)
    if task == "lm-eval":
        from aim_cli.calibration.lm_eval import calibrate_named_tasks

        spec = _spec(model, "--task lm-eval takes a model spec (str), not a loaded model")
        calibration = calibrate_named_tasks(
            request, spec, names or "", folder, limit, str(torch_device), trust_task_code, notice, progress
        )
    else:
        calibration = _run(task, model, request, options, torch_device, notice, progress)
    _publish(calibration, outputs, name, confidence)
    return calibration


@dataclass(frozen=True)
class _DataOptions:
    """Where the labelled data and the model's files come from, and which outputs they may not be."""

    data: Path | None
    weights: Path | None
    labels: Path | None
    layout: str
    split: str | None
    limit: int | None
    allow_outside: bool
    outputs: list[tuple[str, Path | None]]


def _spec(model: object, message: str) -> str | None:
    """The model spec string (None: the demo model); a loaded model where a spec is needed is an error."""
    if model is None or isinstance(model, str):
        return model
    raise InputError(message, "pass the model's folder or hub id")


def _outputs(
    profile_out: PathLike | None, report_out: PathLike | None, plot_out: PathLike | None
) -> list[tuple[str, Path | None]]:
    """The files this run may write, by the option that names each, their suffixes checked."""
    from aim_cli.calibration.report import PLOT_SUFFIXES, PROFILE_SUFFIXES, REPORT_SUFFIXES
    from aim_cli.io import check_output_file

    outputs = [
        ("--write-profile", as_path(profile_out, "profile_out")),
        ("--json", as_path(report_out, "report_out")),
        ("--plot", as_path(plot_out, "plot_out")),
    ]
    for (_, path), suffixes in zip(outputs, (PROFILE_SUFFIXES, REPORT_SUFFIXES, PLOT_SUFFIXES)):
        if path is not None:
            check_output_file(path, suffixes)
    return outputs


def _check_options(
    model: object,
    task: str,
    paths: dict[str, Path | None],
    outputs: list[tuple[str, Path | None]],
    include_path: Path | None,
    trust_code: bool,
    allow_outside: bool,
    has_tasks: bool,
) -> None:
    """Refuse, before any work, options that do not fit together and outputs that would replace an input."""
    if trust_code and include_path is None:
        raise AimError("--trust-task-code applies to the task files of --include-path (--task lm-eval)")
    reads: list[tuple[str, Path | None]] = [("--data", paths["data"]), ("--labels", paths["labels"])]
    reads.append(("--weights", paths["weights"]))
    if include_path is not None:
        from aim_cli.tasks.task_folder import scan_task_folder

        reads += scan_task_folder(include_path, trust_code, allow_outside).inputs()
    guard_outputs(outputs, reads, model if isinstance(model, str) else None)
    if outputs[2][1] is not None:
        from aim_cli.calibration.plot import require_matplotlib

        require_matplotlib()
    if (paths["weights"] is not None or paths["labels"] is not None) and task == "generate":
        raise AimError("--weights and --labels apply to --task classify and segment")
    if (has_tasks or include_path is not None) != (task == "lm-eval") or (
        task == "lm-eval" and paths["data"] is not None
    ):
        raise AimError("--task lm-eval takes --tasks (and --include-path), not --data; the other tasks take --data")
    if model is not None and paths["data"] is None and task != "lm-eval":
        raise AimError("--model needs --data: the default evaluation set belongs to the demo model", DATA_HINTS[task])


def _run(
    task: str,
    model: object,
    request: CalibrationRequest,
    options: _DataOptions,
    device: torch.device,
    notice: Notice | None,
    progress: Progress | None,
) -> Calibration:
    """Read the data, load (or take) the model, and calibrate: classify, segment or generate."""
    from aim_cli.calibration import runner

    if task == "classify":
        dataset = _classification_data(options)
        classifier = _image_model("classify", model, options, device)
        _say(notice, f"model: {classifier.name} ({len(classifier.labels)} classes) | data: {dataset.description}")
        calibration, failures = runner.calibrate_classifier(classifier, dataset, request, progress)
    elif task == "segment":
        segments = _segmentation_data(options)
        segmenter = _image_model("segment", model, options, device)
        segments.prepare(len(segmenter.labels), segmenter.do_reduce_labels)
        _say(notice, f"model: {segmenter.name} ({len(segmenter.labels)} classes) | data: {segments.description}")
        calibration, failures = runner.calibrate_segmenter(segmenter, segments, request, progress)
    else:
        from aim_cli.calibration.datasets import demo_text_set, read_text_data
        from aim_cli.models.language import LanguageModel
        from aim_cli.models.registry import load_model

        texts = read_text_data(options.data) if options.data is not None else demo_text_set(options.limit or 200)
        texts.items = texts.items[: options.limit] if options.limit else texts.items
        if not isinstance(model, LanguageModel):
            spec = _spec(model, "model must be a spec (str) or a model aim.load_model(task='generate') loaded")
            model = load_model("generate", spec, device=device)
        lm = model
        _say(notice, f"model: {lm.name} | data: {texts.description}")
        calibration, failures = runner.calibrate_language_model(lm, texts, request, progress)
    calibration.failures = failures
    return calibration


def _classification_data(options: _DataOptions) -> ImageDataset:
    """The labelled images: --data as read, or the demo set; none of them may be an output."""
    from aim_cli.calibration.datasets import demo_classification_set, read_classification_data

    limit = options.limit
    if options.data is not None:
        dataset = read_classification_data(options.data, options.allow_outside, options.layout)
    else:
        dataset = demo_classification_set(limit or 1000)
    dataset.items = dataset.items[:limit] if limit else dataset.items
    # A manifest may list images anywhere: none of them may be an output (e.g. --plot).
    guard_outputs(options.outputs, [("--data image", item.path) for item in dataset.items if item.path is not None])
    return dataset


def _segmentation_data(options: _DataOptions) -> SegmentationDataset:
    """The images and their masks: --data as read (any layout), or the demo set; no file it reaches is an output."""
    from aim_cli.calibration.datasets import demo_segmentation_set, read_segmentation_data

    if options.data is not None:
        dataset = read_segmentation_data(options.data, options.allow_outside, options.layout, options.split)
    else:
        dataset = demo_segmentation_set(options.limit or 50)
    dataset.limit(options.limit)
    guard_outputs(options.outputs, dataset.files())  # a file the data set reaches (a symlink out) is never an output
    return dataset


def _image_model(
    task: Literal["classify", "segment"], model: object, options: _DataOptions, device: torch.device
) -> ImageModel:
    """The loaded image model given, or the one its spec names (with --weights and --labels) loaded on `device`."""
    from aim_cli.models.image_model import ImageModel
    from aim_cli.models.registry import load_model

    if isinstance(model, ImageModel):
        if options.weights is not None or options.labels is not None:
            raise InputError("weights and labels fill a model aim loads", "pass the model's spec instead")
        return model
    spec = _spec(model, f"model must be a spec (str) or a model aim.load_model(task={task!r}) loaded")
    return load_model(task, spec, device=device, weights=options.weights, labels=options.labels)


def _say(notice: Notice | None, message: str) -> None:
    """A human note, to the caller's callback if any."""
    if notice is not None:
        notice(message)


def _publish(
    calibration: Calibration, outputs: list[tuple[str, Path | None]], name: str | None, confidence: float
) -> None:
    """Write the profile, report and plot asked for, all or none: none when no item was scored."""
    from aim_cli.calibration.plot import plot_calibration
    from aim_cli.calibration.report import write_profile, write_report

    (_, profile_out), (_, report_out), (_, plot_out) = outputs
    with RunOutputs() as run:
        run.success(calibration.items)  # a calibration exists only if some items were scored
        if profile_out is not None:
            run.document(lambda: write_profile(calibration, profile_out, name, confidence))
        if report_out is not None:
            run.document(lambda: write_report(calibration, report_out))
        if plot_out is not None:
            run.document(lambda: plot_calibration(calibration, plot_out))
    run.publish()
