"""`aim verify`: re-measure a certified tier on a model and data, and say whether its certificate holds.

The tier holds when its metric on the given data, computed exactly from one clean pass where
the formulas allow (else estimated by Monte Carlo), lies inside the certificate's interval for
a fresh sample of the same number of units. A Monte Carlo run of the real modulated path
confirms the exact value. Model and data fingerprints are compared and reported, not required:
after a retrain the model differs by design, and the question is whether the tier still holds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aim_cli.calibration.certify import Estimate, bernoulli_estimate, classification_wins
from aim_cli.calibration.core import MonteCarloCheck, Target
from aim_cli.certificates import Certificate, model_fingerprint, short
from aim_cli.errors import FailedInput, ProfileError
from aim_cli.profile import Profile

if TYPE_CHECKING:
    from aim_cli.calibration.datasets import ImageDataset, SegmentationDataset, TextDataset
    from aim_cli.models.image_model import ImageModel
    from aim_cli.models.language import LanguageModel

# Monte Carlo draws of the whole data set confirming the exact value.
DEFAULT_DRAWS = 8


@dataclass(frozen=True)
class Verification:
    """The outcome of re-measuring one certified tier (`aim.verify`; `aim verify` prints it).

    `holds` is the verdict. `value` is the metric re-measured on the data (`method` exact where
    the formulas allow, else Monte Carlo), `interval` the certified interval for this many units
    (`low`, `high`), `check` the Monte Carlo run of the real modulated path confirming `value`,
    `certificate` what the profile promised. Fingerprints compare the model and data with the
    certified ones; `warnings` say where they differ; `failures` are inputs that could not be used.
    """

    profile: str
    certificate: Certificate
    model: str
    model_fingerprint: str | None
    data: str
    data_fingerprint: str
    units: int
    estimate: Estimate
    low: float
    high: float
    check: MonteCarloCheck
    seconds: float = 0.0
    warnings: tuple[str, ...] = ()
    failures: tuple[FailedInput, ...] = ()

    @property
    def holds(self) -> bool:
        """Whether the re-measured metric lies inside the certified interval (for this sample size)."""
        return self.low <= self.estimate.predicted <= self.high

    @property
    def value(self) -> float:
        """The metric re-measured on the data (exact where the formulas allow, else Monte Carlo)."""
        return self.estimate.predicted

    @property
    def method(self) -> str:
        """How `value` was computed: 'exact' or 'monte-carlo'."""
        return self.estimate.method

    @property
    def interval(self) -> tuple[float, float]:
        """The certified interval for a sample of this many units: (low, high)."""
        return self.low, self.high

    @property
    def same_model(self) -> bool:
        """Whether the model is the one certified (content fingerprints equal)."""
        return self.model_fingerprint == self.certificate.model_fingerprint

    @property
    def same_data(self) -> bool:
        """Whether the data is the certification data (content fingerprints equal)."""
        return self.data_fingerprint == self.certificate.data_fingerprint

    def to_dict(self) -> dict[str, Any]:
        """The JSON report of `aim verify -o`."""
        cert = self.certificate
        return {
            "profile": self.profile,
            "holds": self.holds,
            "certificate_id": cert.id,
            "task": cert.task,
            "metric": cert.metric,
            "focus": None
            if cert.focus_class is None
            else {"class": cert.focus_class, "direction": cert.focus_direction},
            "model": {
                "spec": self.model,
                "fingerprint": self.model_fingerprint,
                "certified_fingerprint": cert.model_fingerprint,
                "same": self.same_model,
            },
            "data": {
                "spec": self.data,
                "fingerprint": self.data_fingerprint,
                "certified_fingerprint": cert.data_fingerprint,
                "same": self.same_data,
                "units": self.units,
                "certified_units": cert.items,
            },
            "certified": {
                "predicted": cert.predicted,
                "interval": [cert.interval.low, cert.interval.high],
                "confidence": cert.interval.confidence,
                "sample_size": cert.interval.sample_size,
            },
            "interval": {"low": self.low, "high": self.high, "sample_size": self.units},
            "measured": {
                "value": self.estimate.predicted,
                "method": self.estimate.method,
                "monte_carlo": self.check.to_dict(),
            },
            "seconds": self.seconds,
            "warnings": list(self.warnings),
        }


def _label(profile: Profile) -> str:
    """How messages and results name the profile: its file, else its name (one built in Python has neither)."""
    return profile.source or profile.name or "profile"


def certified(profile: Profile) -> Certificate:
    """The profile's certificate; an error when it has none or was edited after certification."""
    if profile.certificate is None:
        raise ProfileError(
            f"{_label(profile)}: the profile has no certificate, so there is nothing to verify",
            "write a certified profile with aim calibrate --write-profile (classify or segment)",
        )
    problem = profile.certificate_problem
    if problem is not None:
        from aim_cli.certificates import edited_hint

        raise ProfileError(f"{_label(profile)}: {problem}", edited_hint())
    return profile.certificate


def _target(certificate: Certificate) -> Target:
    """The calibration target the certificate was made for."""
    direction = -1 if certificate.focus_direction == "down" else 1
    return Target(certificate.metric, certificate.target, certificate.focus_class, direction)


def _finish(
    profile: Profile,
    certificate: Certificate,
    model: Any,
    data: str,
    data_fingerprint: str,
    estimate: Estimate,
    check: MonteCarloCheck,
    start: float,
    failures: list[FailedInput],
    fingerprint: str | None = None,
) -> Verification:
    """Compare with the certificate and collect the warnings (`fingerprint`: the model's, when not an image model)."""
    low, high = certificate.interval_for(estimate.units)
    model_print = fingerprint or model_fingerprint(model)
    warnings: list[str] = []
    if model_print != certificate.model_fingerprint:
        warnings.append(
            f"the model is not the certified one (fingerprint {short(model_print)}, certified "
            f"{short(certificate.model_fingerprint)})"
        )
    if data_fingerprint != certificate.data_fingerprint:
        warnings.append("the data is not the certification data (its fingerprint differs)")
    if check.draws >= 2 and abs(check.mean - estimate.predicted) > 3 * check.half_width + 0.005:
        warnings.append(
            f"Monte Carlo {check.mean:.4f} differs from the {estimate.method} value {estimate.predicted:.4f} by more "
            "than its noise explains"
        )
    return Verification(
        _label(profile),
        certificate,
        model.name,
        model_print,
        data,
        data_fingerprint,
        estimate.units,
        estimate,
        low,
        high,
        check,
        time.perf_counter() - start,
        tuple(warnings),
        tuple(failures),
    )


def verify_classifier(
    profile: Profile,
    classifier: ImageModel,
    dataset: ImageDataset,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    batch_size: int = 64,
    progress: Any = None,
) -> Verification:
    """Re-measure a certified classification tier from one forward pass (exact), confirmed by Monte Carlo."""
    from aim_cli.calibration.certify import classification_data_fingerprint
    from aim_cli.calibration.classify import collect_logits, dataset_label_ids, monte_carlo_accuracy, monte_carlo_recall
    from aim_cli.calibration.runner import CalibrationRequest, resolve_target
    from aim_cli.profile import FocusRequest

    start = time.perf_counter()
    certificate = certified(profile)
    target = _target(certificate)
    target_id = None
    if target.metric == "recall":
        request = CalibrationRequest(
            "recall", target.value, FocusRequest(str(target.focus_class), target.focus_direction)
        )
        _, target_id = resolve_target(request, classifier.labels)
    label_ids = dataset_label_ids(dataset, classifier.labels)
    cached = collect_logits(classifier, dataset.items, label_ids, batch_size, progress)
    wins, method = classification_wins(cached.logits, cached.labels, profile, target_id, target.focus_direction, seed)
    estimate = bernoulli_estimate(wins, method)
    if target_id is None:
        check = monte_carlo_accuracy(cached.logits, cached.labels, profile.sigma, draws, seed)
    else:
        check = monte_carlo_recall(
            cached.logits,
            cached.labels,
            target_id,
            target.focus_direction,
            profile.effective_focus_sigma,
            draws,
            seed,
            profile.sigma,
        )
    fingerprint = classification_data_fingerprint(dataset)
    failures = [*dataset.failures, *cached.failures]
    return _finish(profile, certificate, classifier, dataset.description, fingerprint, estimate, check, start, failures)


def verify_segmenter(
    profile: Profile,
    segmenter: ImageModel,
    dataset: SegmentationDataset,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    batch_size: int = 8,
    progress: Any = None,
) -> Verification:
    """Re-measure a certified segmentation tier (exact per-pixel expectations), confirmed by Monte Carlo."""
    from aim_cli.calibration.certify import delta_estimate, segmentation_counts, segmentation_data_fingerprint
    from aim_cli.calibration.segment import SegmentationCalibrator
    from aim_cli.labels import resolve_class

    start = time.perf_counter()
    certificate = certified(profile)
    target = _target(certificate)
    target_id = resolve_class(str(target.focus_class), segmenter.labels) if target.metric == "recall" else None
    calibrator = SegmentationCalibrator(
        segmenter,
        dataset,
        target,
        target_id,
        profile.sigma,
        draws,
        seed,
        batch_size=min(batch_size, 16),
        progress=progress,
    )
    expected, noisy, method = segmentation_counts(calibrator, profile, seed, max(2, draws))
    estimate = delta_estimate(expected, noisy, target.metric, target_id, method)
    from aim_cli.calibration.certify import MATRIX_METRICS

    present = expected.sum(dim=(0, 2)) > 0
    function = MATRIX_METRICS[target.metric]
    values = [float(function(draw.sum(dim=0), present, target_id)) for draw in noisy]
    check = MonteCarloCheck(profile.sigma if target.metric != "recall" else profile.effective_focus_sigma, values)
    if any(math.isnan(v) for v in values):
        check = MonteCarloCheck(check.parameter, [v for v in values if not math.isnan(v)])
    fingerprint = segmentation_data_fingerprint(dataset)
    failures = list(calibrator.failures)
    return _finish(profile, certificate, segmenter, dataset.description, fingerprint, estimate, check, start, failures)


def verify_language_model(
    profile: Profile,
    lm: LanguageModel,
    dataset: TextDataset,
    draws: int = DEFAULT_DRAWS,
    seed: int = 0,
    batch_size: int = 32,
    progress: Any = None,
) -> Verification:
    """Re-measure a certified multiple-choice tier from one pass of next-token logits, confirmed by Monte Carlo."""
    from aim_cli.calibration.certify import text_data_fingerprint
    from aim_cli.calibration.classify import monte_carlo_accuracy
    from aim_cli.calibration.text import collect_next_token_logits
    from aim_cli.certificates import language_model_fingerprint
    from aim_cli.errors import InputError

    start = time.perf_counter()
    certificate = certified(profile)
    if not dataset.multiple_choice:
        raise InputError(
            f"{dataset.description}: a text tier verifies on multiple-choice items",
            "give a .jsonl of {prompt, choices, answer}",
        )
    cached = collect_next_token_logits(lm, dataset.items, batch_size, progress)
    wins, method = classification_wins(cached.logits, cached.answers, profile, None, 1, seed)
    check = monte_carlo_accuracy(cached.logits, cached.answers, profile.sigma, draws, seed)
    fingerprint = language_model_fingerprint(str(getattr(lm.model, "name_or_path", "") or lm.name))
    return _finish(
        profile,
        certificate,
        lm,
        dataset.description,
        text_data_fingerprint(dataset.items),
        bernoulli_estimate(wins, method),
        check,
        start,
        [],
        fingerprint,
    )
