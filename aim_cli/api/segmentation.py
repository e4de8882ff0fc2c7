"""`aim.segment`: semantic segmentation of images with a profile, streamed, optionally scored and written to a folder.

What `aim segment` runs. The run is planned and checked when `segment()` returns (inputs,
ground truth, output names, clobbering); iterating it does the work, one batch at a time, so
a large folder never holds every mask in memory. With `output_dir` it writes what the CLI
writes (palette masks mirroring the input tree, overlays, summary.jsonl, evaluation.json),
published only when an image succeeded.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from aim_cli.api.arguments import (
    POSITIVE,
    Notice,
    PathLike,
    Progress,
    as_path,
    check_whole,
    image_inputs,
    profile_file,
    quiet,
)
from aim_cli.api.logits import ProfileLike
from aim_cli.api.logits import plan as make_plan
from aim_cli.api.models import load_model
from aim_cli.calibration.datasets import ground_truth
from aim_cli.engines.choice import check_engine, ray_items
from aim_cli.errors import AimError, FailedInput, InputError
from aim_cli.io import check_output_dir, check_output_paths, write_json_atomic
from aim_cli.masks import colour_table, save_mask, save_overlay
from aim_cli.outputs import RunOutputs, guard_outputs
from aim_cli.profile import Profile
from aim_cli.tasks import segment_outputs as files
from aim_cli.tasks.segment import SegmentationEvaluation, SegmentedImage, read_inputs, segment_inputs

if TYPE_CHECKING:
    import torch

    from aim_cli.calibration.datasets import GroundTruth
    from aim_cli.models.image_model import ImageModel
    from aim_cli.plans import ModulationPlan

EVALUATION_FILE = files.EVALUATION_FILE
SUMMARY_FILE = files.SUMMARY_FILE

__all__ = ["SegmentEvaluation", "SegmentMetrics", "SegmentRun", "SegmentedImage", "segment"]

Layout = Literal["auto", "plain", "ade20k", "cityscapes", "voc", "imagenet"]


@dataclass(frozen=True)
class SegmentMetrics:
    """One model's scores against the ground truth: evaluation.json's "clean" or "modulated", with its confusion matrix.

    pixel_accuracy and miou are None when nothing was scored; classes maps each class seen in
    truth or prediction to its iou, recall, truth_pixels and predicted_pixels; confusion has
    ground truth in rows and prediction in columns (pixel counts).
    """

    pixel_accuracy: float | None
    miou: float | None
    classes: Mapping[str, Mapping[str, Any]]
    confusion: list[list[int]] | list[list[float]]

    def summary(self) -> dict[str, object]:
        """The metrics as evaluation.json holds them (no confusion matrix)."""
        return {"pixel_accuracy": self.pixel_accuracy, "miou": self.miou, "classes": dict(self.classes)}


@dataclass(frozen=True)
class SegmentEvaluation:
    """A segmentation run scored against ground-truth masks: the clean and the modulated model (evaluation.json)."""

    images: int
    masks: str
    model: str
    labels: tuple[str, ...]
    settings: Mapping[str, object]
    clean: SegmentMetrics
    modulated: SegmentMetrics

    def to_dict(self) -> dict[str, object]:
        """The evaluation.json document, key for key."""
        return {
            "images": self.images,
            "masks": self.masks,
            "model": self.model,
            "labels": list(self.labels),
            "settings": dict(self.settings),
            "clean": self.clean.summary(),
            "modulated": self.modulated.summary(),
            "confusion": {
                "rows": "ground truth",
                "columns": "prediction",
                "clean": self.clean.confusion,
                "modulated": self.modulated.confusion,
            },
        }


def _evaluation(report: dict[str, Any]) -> SegmentEvaluation:
    """The typed record of an evaluation.json document."""
    metrics = {
        name: SegmentMetrics(
            report[name]["pixel_accuracy"], report[name]["miou"], report[name]["classes"], report["confusion"][name]
        )
        for name in ("clean", "modulated")
    }
    return SegmentEvaluation(
        report["images"],
        report["masks"],
        report["model"],
        tuple(report["labels"]),
        report["settings"],
        metrics["clean"],
        metrics["modulated"],
    )


@dataclass(frozen=True)
class _Plan:
    """What a run reads and writes, fixed before any work."""

    paths: list[Path]
    names: dict[Path, Path]
    overlays: dict[Path, Path] | None
    failures: list[FailedInput]
    truth: GroundTruth | None
    convert: Any


class SegmentRun:
    """One segmentation run: iterate it (once) for `SegmentedImage` records and `aim.FailedInput`s.

    Inputs refused before the run come first, then the images in input order (within one batch,
    those that fail come first).

    After iteration: `evaluation` (with masks), `pixels` / `clean_pixels` (class pixel totals
    over the images segmented; clean ones when the clean masks were computed: with compare,
    focus or masks), `failures`, `succeeded` and, with an output_dir, `published`.
    """

    def __init__(
        self,
        model: ImageModel,
        plan: ModulationPlan,
        planned: _Plan,
        options: dict[str, Any],
        progress: Progress | None,
        notice: Notice,
    ) -> None:
        self.model = model
        self.labels: list[str] = list(model.labels)
        self.plan = plan
        self.output_dir: Path | None = options["output_dir"]
        self.failures: list[FailedInput] = []
        self.succeeded = 0
        self.published = False
        self.resumed = 0
        self.evaluation: SegmentEvaluation | None = None
        self.pixels: np.ndarray = np.zeros(len(self.labels), dtype=np.int64)
        need_clean = options["compare"] or plan.modulation.has_focus or options["masks"] is not None
        self.clean_pixels: np.ndarray | None = np.zeros(len(self.labels), dtype=np.int64) if need_clean else None
        self._planned = planned
        self._options = options
        self._progress = progress
        self._notice = notice
        self._started = False
        self._done: dict[Path, dict[str, object]] = {}
        self._others: list[dict[str, object]] = []
        if self.output_dir is not None and options["resume"]:
            self._done, self._others = files.finished(planned.paths, planned.names, planned.overlays, self.output_dir)
            self.resumed = len(self._done)
        self.paths = [path for path in planned.paths if path not in self._done]

    @property
    def total(self) -> int:
        """Images this run segments (those skipped by resume and refused before the run left out)."""
        return len(self.paths)

    def __iter__(self) -> Iterator[SegmentedImage | FailedInput]:
        return self.stream(self._progress)

    def stream(self, progress: Progress | None = None) -> Generator[SegmentedImage | FailedInput, None, None]:
        """The run's records, `progress` advanced once per image; a run is iterated once."""
        if self._started:
            raise InputError("a segment run is iterated once", "call aim.segment again for another pass")
        self._started = True
        return self._records(progress)

    def complete(self) -> SegmentRun:
        """Run to the end without keeping the records (masks, evaluation and totals as after iteration)."""
        for _item in self:
            pass
        return self

    def _results(
        self, evaluation: SegmentationEvaluation | None, progress: Progress | None
    ) -> Iterator[SegmentedImage | FailedInput]:
        """The task's records from the chosen engine."""
        o, planned = self._options, self._planned
        if o["engine"] == "ray":
            spec = {key: o[key] for key in ("weights", "labels", "device", "batch_size", "compare")}
            return ray_items("segment", self.paths, self.plan, o["workers"], progress, model=o["model"], **spec)
        truth = planned.truth
        items = (
            read_inputs(self.paths, truth.masks, truth.mask_of, planned.convert) if truth else read_inputs(self.paths)
        )
        return segment_inputs(items, self.model, self.plan, o["batch_size"], o["compare"], evaluation, progress)

    def _records(self, progress: Progress | None) -> Generator[SegmentedImage | FailedInput, None, None]:
        """Segment, write (with an output_dir), count and score; publish at the end."""
        o, out = self._options, self.output_dir
        for failure in self._planned.failures:
            self.failures.append(failure)
            yield failure
        evaluation = SegmentationEvaluation(len(self.labels)) if o["masks"] is not None else None
        settings: dict[str, object] = {"model": self.model.name, **self.plan.describe()}
        outputs = RunOutputs()
        if out is not None and o["created"]:
            outputs.created(out)
        with outputs:
            writer = outputs.records(out / files.SUMMARY_FILE) if out is not None else None
            if writer is not None:
                for record in [*self._others, *self._done.values()]:  # a resumed summary keeps every record
                    writer.write(record)
            if out is not None and evaluation is not None:
                report = out / files.EVALUATION_FILE
                outputs.document(lambda: write_json_atomic(self._evaluate(evaluation).to_dict(), report))
            for item in self._results(evaluation, progress):
                if isinstance(item, FailedInput):
                    self.failures.append(item)
                else:
                    if out is not None and writer is not None:
                        writer.write(self._write(item, out, settings))
                    outputs.success()
                    self._count(item)
                yield item
            if out is not None and not outputs.publish() and not self.failures:
                self._notice(f"nothing to do: every image already has its outputs in {out}")
        self.published = outputs.published
        if evaluation is not None and evaluation.images and self.evaluation is None:
            self._evaluate(evaluation)  # without an output_dir (with one, publishing made it)
        if self.published:
            written = f"{self.succeeded} mask(s){' and overlays' if o['overlay'] else ''}"
            self._notice(f"wrote {written} and {files.SUMMARY_FILE} to {out}")

    def _count(self, item: SegmentedImage) -> None:
        """Add a segmented image to the run's totals."""
        self.succeeded += 1
        self.pixels += item.counts
        if self.clean_pixels is not None and item.clean_counts is not None:
            self.clean_pixels += item.clean_counts

    def _evaluate(self, evaluation: SegmentationEvaluation) -> SegmentEvaluation:
        """The typed evaluation of the images scored so far."""
        report = files.evaluation_report(
            evaluation, self.model.name, self.labels, self.plan.describe(), self._options["masks"]
        )
        self.evaluation = _evaluation(report)
        return self.evaluation

    def _write(self, item: SegmentedImage, out: Path, settings: dict[str, object]) -> dict[str, object]:
        """Write one image's mask (and overlay); its summary record."""
        colours = self._options["colours"]
        name = self._planned.names[item.path]
        written = {"mask": name.as_posix()}
        (out / name).parent.mkdir(parents=True, exist_ok=True)  # sub-folders mirror the input tree
        save_mask(item.prediction, colours, out / name)
        if self._planned.overlays is not None:
            overlay = self._planned.overlays[item.path]
            written["overlay"] = overlay.as_posix()
            (out / overlay).parent.mkdir(parents=True, exist_ok=True)
            save_overlay(item.image, item.prediction, colours, out / overlay)
        return files.summary_record(item, written, self.labels, self._options["compare"], settings)


def _check_options(options: dict[str, Any]) -> None:
    """Option combinations refused before any work (the messages name the CLI's options)."""
    masks, engine = options["masks"], options["engine"]
    if options["output_dir"] is not None:
        check_output_dir(options["output_dir"], create=False)
    check_engine(engine, options["workers"])
    if engine == "ray" and masks is not None:
        raise AimError("--engine ray does not evaluate against --masks", "evaluate with --engine local")
    if engine == "ray" and not (options["model"] is None or isinstance(options["model"], str)):
        raise InputError("engine 'ray' rebuilds the model in its workers", "pass the model as a spec string")
    if options["resume"] and masks is not None:
        raise AimError("--resume cannot be combined with --masks", "the evaluation needs every image in one run")
    if options["resume"] and options["output_dir"] is None:
        raise InputError("resume needs an output_dir", "it skips the images whose outputs are there")
    if masks is not None and not masks.is_dir():
        problem = "is not a directory" if masks.exists() else "does not exist"
        raise InputError(f"masks directory {masks} {problem}", "pass the folder of ground-truth masks")
    if masks is None and (options["layout"] != "auto" or options["split"] is not None or options["allow_outside"]):
        raise AimError("--layout, --split and --allow-outside-paths describe the --masks data", "add --masks DIR")


def _plan_files(inputs: Sequence[PathLike] | PathLike | None, options: dict[str, Any]) -> _Plan:
    """The images, their ground truth and output names; what fails before the run; clobbering refused."""
    masks, out = options["masks"], options["output_dir"]
    truth = ground_truth(bool(inputs), masks, options["layout"], options["split"], options["allow_outside"])
    paths, failures = (
        (truth.paths, []) if truth.paths else image_inputs(inputs, "segment" if options["model"] is None else None)
    )
    reads = truth.resolve(paths) if masks is not None else None  # every file the run reads, before it starts
    if reads is not None:
        failures += [FailedInput(path, why) for path, why in reads.refused.items()]
        paths = [path for path in reads.images if path not in reads.refused]
    names = files.output_names(paths)
    overlays = files.overlay_names(names) if options["overlay"] else None
    if out is not None:
        too_long = files.unwritable_names(names, overlays, out)
        failures += too_long.values()
        paths = [path for path in paths if path not in too_long]
        planned = [("mask", out / names[path]) for path in paths]
        planned += [("overlay", out / overlays[path]) for path in paths] if overlays is not None else []
        planned += [("summary", out / files.SUMMARY_FILE), ("evaluation", out / files.EVALUATION_FILE)]
        truths = [("ground-truth mask", reads.masks[path]) for path in paths] if reads is not None else []
        given = [(name, options[key]) for name, key in (("--masks", "masks"), ("--profile", "profile_file"))]
        given += [("--labels", options["labels"]), ("--weights", options["weights"])]
        spec = options["model"] if isinstance(options["model"], str) else None
        guard_outputs([("--output-dir", out), *planned], [("input", p) for p in paths] + truths + given, spec)
        check_output_paths(planned, out)  # e.g. a folder named summary.jsonl: found now, not after the work
    return _Plan(paths, names, overlays, failures, truth if masks is not None else None, None)


def _segmenter(model: ImageModel | str | None, options: dict[str, Any]) -> ImageModel:
    """The model a spec names (with engine 'ray' only to name the classes, on the CPU), or the one given."""
    if model is None or isinstance(model, str):
        device = options["device"] if options["engine"] == "local" else "cpu"
        return load_model(model, task="segment", device=device, weights=options["weights"], labels=options["labels"])
    if getattr(model, "task", None) != "segment":
        raise InputError(
            f"model must be a segmentation model from aim.load_model(..., task='segment') or a spec string,"
            f" got {type(model).__name__}"
        )
    return model


def segment(
    model: ImageModel | str | None = None,
    inputs: Sequence[PathLike] | PathLike | None = None,
    profile: ProfileLike | None = None,
    *,
    masks: PathLike | None = None,
    layout: Layout = "auto",
    split: str | None = None,
    allow_outside_paths: bool = False,
    compare: bool = False,
    batch_size: int = 8,
    device: str | torch.device = "auto",
    weights: PathLike | None = None,
    labels: PathLike | None = None,
    seed: int | None = None,
    engine: Literal["local", "ray"] = "local",
    workers: int | None = None,
    output_dir: PathLike | None = None,
    overlay: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    notice: Notice | None = None,
) -> SegmentRun:
    """Segment images with a modulated segmentation model (as `aim segment`); iterate the run for the records.

    Args:
        model: a model from aim.load_model(..., task="segment"), or a spec as --model (None: the demo segmenter).
        inputs: image files, folders or globs (None with the demo model: its sample images).
        profile: a Profile, a YAML-schema mapping or a utility sigma (None: clean).
        masks: ground truth: a folder of same-named masks, or a data set root (then inputs may be None).
        layout: how `masks` is laid out (as --layout).
        split: the data set split to read (as --split).
        allow_outside_paths: let the masks data set reach files outside its folder (as --allow-outside-paths).
        compare: also compute the clean masks (always computed with focus or masks).
        engine: "local", or "ray" (Ray Data workers; no masks; model as a spec string).
        workers: with engine "ray", worker processes.
        output_dir: write masks, overlays (with overlay), summary.jsonl and evaluation.json there.
        resume: with output_dir, skip the images whose outputs are there (every summary record kept).
        progress: called with 1 per image done; notice: called with each human-readable note.

    Errors raised here (before any work) are aim.AimError subclasses; an image that cannot be
    read or segmented is yielded as an aim.FailedInput and the run goes on.
    """
    batch_size = check_whole(batch_size, "batch_size", span=POSITIVE)
    options: dict[str, Any] = dict(
        model=model, masks=as_path(masks, "masks"), layout=layout, split=split, allow_outside=allow_outside_paths,
        compare=compare, batch_size=batch_size, device=device, weights=as_path(weights, "weights"),
        labels=as_path(labels, "labels"), engine=engine, workers=workers, output_dir=as_path(output_dir, "output_dir"),
        overlay=overlay, resume=resume, profile_file=profile_file(profile),
    )  # fmt: skip
    _check_options(options)
    planned = _plan_files(inputs, options)
    segmenter = _segmenter(model, options)
    plan = make_plan(Profile() if profile is None else profile, segmenter.labels, seed=seed)
    if planned.truth is not None:
        planned = replace(planned, convert=planned.truth.prepare(planned.paths, segmenter))
    options["colours"] = colour_table(segmenter.labels)
    out = options["output_dir"]
    options["created"] = out is not None and not out.is_dir()
    if out is not None:
        check_output_dir(out)
    say = notice or quiet
    run = SegmentRun(segmenter, plan, planned, options, progress, say)
    if run.resumed:
        say(f"resuming: {run.resumed} image(s) already have their outputs in {out} and are skipped")
    where = f" | output {out}" if out is not None else ""
    say(f"model: {segmenter.name} ({len(segmenter.labels)} classes) | {plan.summary()}{where}")
    return run
