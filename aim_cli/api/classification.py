"""`aim.classify`: a modulated image classifier over files, folders or globs, yielding typed records.

What `aim classify` runs, without Typer: the inputs expanded, checked and (with `output`)
planned before any work, `resume` keeping an earlier records file, the batches run here or on
Ray workers, and the records file published only when an input succeeded.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

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
from aim_cli.api.logits import ProfileLike, as_profile, plan
from aim_cli.api.models import load_model
from aim_cli.engines.choice import check_engine, ray_items
from aim_cli.errors import FailedInput, InputError
from aim_cli.io import check_output_file
from aim_cli.models.image_model import ImageModel, VisionModel
from aim_cli.outputs import RunOutputs, guard_outputs, resumed_records
from aim_cli.plans import ModulationPlan
from aim_cli.profile import Profile
from aim_cli.tasks.classify import ClassifiedImage, Prediction, classify_images

__all__ = ["ClassificationRun", "ClassifiedImage", "Prediction", "classify"]

# What --output may be: one record per image.
OUTPUT_SUFFIXES = (".jsonl", ".csv")


def record(item: ClassifiedImage, settings: dict[str, object]) -> dict[str, object]:
    """The flat, machine-readable record of one image (a line of `aim classify -o`); settings: plan.describe()."""
    best = item.top[0]
    result: dict[str, object] = {
        "path": str(item.path),
        "prediction": best.label,
        "class_id": best.class_id,
        "probability": round(best.probability, 6),
        "topk": [{"label": p.label, "probability": round(p.probability, 6)} for p in item.top],
    }
    if item.clean_top is not None:
        result["clean_prediction"] = item.clean_top[0].label
        result["clean_probability"] = round(item.clean_top[0].probability, 6)
    result.update(settings)
    return result


@dataclass
class _Job:
    """What a prepared run needs to compute its results (not public)."""

    spec: dict[str, Any]  # model, weights, labels, device, batch_size for Ray workers
    engine: str
    workers: int | None
    topk: int
    compare: bool
    batch_size: int
    kept: list[dict[str, Any]]
    notice: Notice
    progress: Progress | None
    started: bool = False


@dataclass
class ClassificationRun:
    """One prepared `aim.classify` run: iterate it (once) for a ClassifiedImage or aim.FailedInput per input, in order.

    The inputs were expanded and checked, `output` planned and the model loaded before it is
    returned; the images are classified while it is iterated. With `output`, the records file
    is published when iteration ends, if an input succeeded (stopping early writes nothing;
    an interrupt keeps the records finished so far, for `resume`).
    """

    model: ImageModel
    plan: ModulationPlan
    pending: list[Path]  # the images this run classifies (with resume, those not yet recorded)
    failures: list[FailedInput]  # inputs that matched nothing; then every input that failed, as iteration meets it
    output: Path | None = None
    resumed: int = 0  # records kept from an earlier output (resume=True)
    written: int = 0  # new records written to output, once published
    published: bool = False  # an input succeeded, and output (if any) was written
    _job: _Job | None = field(default=None, repr=False, compare=False)

    def __iter__(self) -> Iterator[ClassifiedImage | FailedInput]:
        return self.results()

    def results(self, progress: Progress | None = None) -> Generator[ClassifiedImage | FailedInput, None, None]:
        """The records in input order; `progress` (default: the one given to classify) gets each batch's count."""
        job = self._job
        if job is None or job.started:
            raise InputError("this classification run was already iterated", "call aim.classify again")
        job.started = True
        return self._results(job, progress or job.progress)

    def _results(self, job: _Job, progress: Progress | None) -> Generator[ClassifiedImage | FailedInput, None, None]:
        """Classify, write and publish; a failure or interrupt leaves outputs as RunOutputs' rule says."""
        yield from list(self.failures)  # inputs that matched nothing come first, as the CLI lists them
        settings = self.plan.describe()
        # The consumer may stop iterating: by a signal (finished records are kept) or by choice (nothing written).
        with RunOutputs() as outputs:
            # Only a resumed file holds the old records too: otherwise Ctrl-C keeps an older output as it was.
            writer = outputs.records(self.output, keep_on_interrupt=bool(job.kept)) if self.output else None
            for kept in job.kept:
                if writer is not None:
                    writer.write(kept)
            for item in _in_input_order(self._items(job, progress), self.pending):
                if isinstance(item, FailedInput):
                    self.failures.append(item)
                else:
                    if writer is not None:
                        writer.write(record(item, settings))
                    outputs.success()
                yield item
        self.published = outputs.publish()
        self._summarize(job, outputs.succeeded if writer else 0)

    def _items(self, job: _Job, progress: Progress | None) -> Iterator[ClassifiedImage | FailedInput]:
        """The task's results over the pending images, from this process or from Ray workers."""
        if job.engine == "ray":
            return ray_items(
                "classify",
                self.pending,
                self.plan,
                job.workers,
                progress,
                topk=job.topk,
                compare=job.compare,
                **job.spec,
            )
        return classify_images(self.pending, self.model, self.plan, job.batch_size, job.topk, job.compare, progress)

    def _summarize(self, job: _Job, written: int) -> None:
        """The closing note: what was written, or that nothing was left to do."""
        if not self.published:
            if not self.failures:
                job.notice(f"nothing to do: every image is already recorded in {self.output}")
            return
        self.written = written
        if self.output is not None:
            job.notice(
                f"wrote {written} new and {self.resumed} resumed record(s) to {self.output}"
                if self.resumed
                else f"wrote {written} record(s) to {self.output}"
            )


def _in_input_order(
    items: Iterator[ClassifiedImage | FailedInput], paths: Sequence[Path]
) -> Iterator[ClassifiedImage | FailedInput]:
    """The task's items in the order of `paths` (a batch reports the images that failed to decode first)."""
    position = {path: index for index, path in enumerate(paths)}
    waiting: dict[int, ClassifiedImage | FailedInput] = {}
    expected = 0
    for item in items:
        index = position.get(item.path)
        if index is None:  # not one of the paths as given: pass it on as it comes
            yield item
            continue
        waiting[index] = item
        while expected in waiting:
            yield waiting.pop(expected)
            expected += 1
    yield from (waiting[index] for index in sorted(waiting))


def classify(
    model: ImageModel | str | None = None,
    inputs: PathLike | Sequence[PathLike] | None = None,
    profile: ProfileLike | None = None,
    *,
    topk: int = 1,
    compare: bool = False,
    batch_size: int = 32,
    device: str | torch.device = "auto",
    weights: PathLike | None = None,
    labels: PathLike | None = None,
    seed: int | None = None,
    engine: Literal["local", "ray"] = "local",
    workers: int | None = None,
    output: PathLike | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    notice: Notice | None = None,
) -> ClassificationRun:
    """Classify images with a modulated classifier (`aim classify`); iterate the returned run for the records.

    Args:
        model: a model from aim.load_model, or a spec as `--model` (None: the demo classifier).
        inputs: image files, folders or globs (None with the demo model: its sample images).
        profile: a Profile, a YAML-schema dict or a bare sigma (None: the clean model).
        topk: classes reported per image; compare: also the clean (unmodulated) top-k.
        weights: as for aim.load_model, when `model` is a spec.
        labels: as for aim.load_model, when `model` is a spec.
        device: as for aim.load_model, when `model` is a spec.
        seed: the noise seed (overrides the profile's).
        engine: 'local' (this process) or 'ray' (Ray Data workers; `model` must be a spec).
        workers: with engine 'ray', worker processes.
        output: a .jsonl or .csv records file, written as `aim classify -o` writes it.
        resume: keep the records already in `output` and classify only the other inputs.
        progress: called with each batch's count of inputs done; notice: called with human notes.

    Errors before any work are aim.AimError subclasses; a bad image is an aim.FailedInput record.
    """
    say = notice or quiet
    resolved = as_profile(Profile() if profile is None else profile, seed)
    topk = check_whole(topk, "topk", span=POSITIVE)
    batch_size = check_whole(batch_size, "batch_size", span=POSITIVE)
    spec, loaded = _model_argument(model, engine, weights, labels)
    check_engine(engine, workers)
    output_path = as_path(output, "output")
    if output_path is not None:
        check_output_file(output_path, OUTPUT_SUFFIXES)
    paths, failures = image_inputs(inputs, "classify" if model is None else None)
    weights_path, labels_path = as_path(weights, "weights"), as_path(labels, "labels")
    guard_outputs(
        [("--output", output_path)],
        [("input", p) for p in paths]
        + [("--profile", profile_file(resolved)), ("--labels", labels_path), ("--weights", weights_path)],
        spec,
    )
    kept = resumed_records(output_path, resume, "path", [str(p) for p in paths], say)
    recorded = {str(item.get("path")) for item in kept}
    pending = [p for p in paths if str(p) not in recorded]
    # With engine 'ray' the workers run the model; here it only names the classes (for the plan), on the CPU.
    classifier = loaded or load_model(
        spec, task="classify", device=device if engine == "local" else "cpu", weights=weights_path, labels=labels_path
    )
    modulation = plan(resolved, classifier.labels)
    say(f"model: {classifier.name} ({len(classifier.labels)} classes) | {modulation.summary()}")
    ray_spec = {"model": spec, "weights": weights_path, "labels": labels_path, "device": str(device)}
    job = _Job({**ray_spec, "batch_size": batch_size}, engine, workers, topk, compare, batch_size, kept, say, progress)
    return ClassificationRun(classifier, modulation, pending, failures, output_path, len(kept), _job=job)


def _model_argument(
    model: ImageModel | str | None, engine: str, weights: PathLike | None, labels: PathLike | None
) -> tuple[str | None, ImageModel | None]:
    """(spec, None) for a spec or the demo; (None, model) for a loaded image model."""
    if model is None or isinstance(model, str):
        return model, None
    if not isinstance(model, VisionModel):
        raise InputError(f"model must be a loaded image model or a spec (str), got {type(model).__name__}")
    if engine == "ray" or weights is not None or labels is not None:
        raise InputError(
            "engine='ray', weights= and labels= need a model spec", "pass the spec (as --model), not a loaded model"
        )
    return None, model
