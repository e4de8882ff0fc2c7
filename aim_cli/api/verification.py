"""Verify a certified tier: `aim.verify` (what `aim verify` runs), returning a typed `Verification`.

A tier certified by `aim calibrate --write-profile` carries its own evidence: the metric it was
calibrated for, the interval it promises and the model and data it was measured on. `verify`
re-measures that metric on a model and labelled data (the demo model and its evaluation set by
default) and says whether the value lies inside the certified interval. The re-measuring lives in
aim_cli.calibration.verify; this module reads the arguments as the command line does.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aim_cli.api import _tier_inputs as inputs
from aim_cli.api import arguments
from aim_cli.calibration.verify import DEFAULT_DRAWS, Verification, certified
from aim_cli.devices import resolve_device
from aim_cli.errors import AimError, ProfileError
from aim_cli.outputs import guard_outputs
from aim_cli.profile import Profile

if TYPE_CHECKING:
    from aim_cli.models.image_model import ImageModel
    from aim_cli.models.language import LanguageModel

__all__ = ["Verification", "verify"]

# A certified tier: a Profile, a YAML-schema mapping, or the path of a profile file.
TierLike = Profile | Mapping[str, Any] | str | Path


def _tier(tier: TierLike) -> Profile:
    """The tier as a Profile; an edited certificate is verify's error (below), not a warning here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(tier, Profile):
            return tier
        if isinstance(tier, (str, Path)):
            return Profile.load(Path(tier))
        if isinstance(tier, Mapping):
            return Profile.from_dict(tier)
    raise ProfileError(
        f"tier must be a certified Profile, a profile dict or a profile file, got {type(tier).__name__}",
        "e.g. aim.verify('tier.yaml') with a profile written by aim calibrate --write-profile",
    )


def verify(
    tier: TierLike,
    model: str | ImageModel | LanguageModel | None = None,
    data: str | Path | None = None,
    *,
    weights: str | Path | None = None,
    labels: str | Path | None = None,
    layout: str = "auto",
    split: str | None = None,
    limit: int | None = None,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    allow_outside_paths: bool = False,
    output: str | Path | None = None,
    progress: arguments.Progress | None = None,
    notice: arguments.Notice | None = None,
) -> Verification:
    """Re-measure a certified tier on a model and labelled data; `.holds` says whether its certificate holds.

    As `aim verify`. The task and metric are the certificate's.

    Args:
        tier: a certified profile (aim.Profile, its dict, or the path of the YAML file).
        model: a spec (as --model) or a model from aim.load_model; None is the demo model.
        data: labelled data as --data (an ImageFolder or manifest, a segmentation folder or
            layout root, a .jsonl of multiple-choice prompts); None is the demo evaluation set.
        weights: weights for a `torchvision:` / `timm:` spec (as --weights).
        labels: a class-names file for an image model (as --labels).
        layout: how `data` is laid out: auto, plain, imagenet, ade20k, cityscapes or voc.
        split: the split of an ADE20K, Cityscapes or VOC root.
        limit: use only the first N items of the data.
        draws: Monte Carlo draws confirming the exact value (2 to 1000).
        seed: the seed of those draws.
        batch_size: inputs per forward pass.
        device: auto, cpu, cuda[:N], mps or a torch.device.
        allow_outside_paths: let `data` name images outside its folder.
        output: also write the result as JSON (.json), as -o.
        progress: called with the number of items (or passes) done.
        notice: called with human notes (the model and data used).

    Errors (aim.AimError, one line): an uncertified or edited profile, bad data, a model of
    another task. The metric outside the interval is not an error: `holds` is False.
    """
    data_path, output_path = arguments.as_path(data, "data"), arguments.as_path(output, "output")
    weights_path, labels_path = arguments.as_path(weights, "weights"), arguments.as_path(labels, "labels")
    request = _Request(
        model,
        data_path,
        weights_path,
        labels_path,
        bool(allow_outside_paths),
        arguments.check_choice(layout, "layout", inputs.LAYOUTS),
        split,
        None if limit is None else arguments.check_whole(limit, "limit", 1),
        arguments.check_whole(draws, "draws", 2, 1000),
        arguments.check_whole(seed, "seed", 0),
        arguments.check_whole(batch_size, "batch_size", 1),
        progress or arguments.no_progress,
        notice or arguments.quiet,
    )
    if output_path is not None:
        from aim_cli.calibration.report import REPORT_SUFFIXES
        from aim_cli.io import check_output_file

        check_output_file(output_path, REPORT_SUFFIXES)
    inputs_read = [("--data", data_path), ("--labels", labels_path), ("--weights", weights_path)]
    guard_outputs([("--output", output_path)], inputs_read, arguments.model_spec(model))
    profile = _tier(tier)
    task = certified(profile).task
    request.check(task)
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    result = _MEASURE[task](profile, request, torch_device)
    if output_path is not None:
        from aim_cli.io import write_json_atomic

        write_json_atomic(result.to_dict(), output_path)
    return result


@dataclass(frozen=True)
class _Request:
    """The checked arguments of one verify run, beside the tier and the device."""

    model: Any
    data: Path | None
    weights: Path | None
    labels: Path | None
    allow_outside: bool
    layout: str
    split: str | None
    limit: int | None
    draws: int
    seed: int
    batch_size: int
    progress: arguments.Progress
    notice: arguments.Notice

    def check(self, task: str) -> None:
        """Options that do not apply to the tier's task, or describe data that was not given."""
        image_options = self.weights is not None or self.labels is not None or self.layout != "auto" or self.split
        if task == "generate" and image_options:
            raise AimError("--weights, --labels, --layout and --split apply to image tiers, not a text tier")
        if (self.layout != "auto" or self.split is not None) and self.data is None:
            raise AimError("--layout and --split describe --data")


def _classify(profile: Profile, request: _Request, device: torch.device) -> Verification:
    """Load the classifier and the data as aim calibrate does, then verify."""
    from aim_cli.calibration.verify import verify_classifier

    dataset = inputs.classification_set(request.data, request.allow_outside, request.layout, request.limit)
    classifier = inputs.image_model("classify", request.model, device, request.weights, request.labels)
    request.notice(f"model: {classifier.name} | data: {dataset.description}")
    return verify_classifier(
        profile, classifier, dataset, request.draws, request.seed, request.batch_size, request.progress
    )


def _segment(profile: Profile, request: _Request, device: torch.device) -> Verification:
    """Load the segmenter and the data as aim calibrate does, then verify."""
    from aim_cli.calibration.verify import verify_segmenter

    dataset = inputs.segmentation_set(request.data, request.allow_outside, request.layout, request.split, request.limit)
    segmenter = inputs.image_model("segment", request.model, device, request.weights, request.labels)
    dataset.prepare(len(segmenter.labels), segmenter.do_reduce_labels)
    request.notice(f"model: {segmenter.name} | data: {dataset.description}")
    return verify_segmenter(
        profile, segmenter, dataset, request.draws, request.seed, request.batch_size, request.progress
    )


def _generate(profile: Profile, request: _Request, device: torch.device) -> Verification:
    """Load the language model and its multiple-choice prompts as aim calibrate does, then verify."""
    from aim_cli.calibration.verify import verify_language_model

    dataset = inputs.text_set(request.data, request.limit)
    lm = inputs.language_model(request.model, device)
    request.notice(f"model: {lm.name} | data: {dataset.description}")
    return verify_language_model(
        profile, lm, dataset, request.draws, request.seed, request.batch_size, request.progress
    )


_MEASURE = {"classify": _classify, "segment": _segment, "generate": _generate}
