"""The logits half of the public API: profiles, modulation of any logits tensor, the exact expectations.

The same code the CLI runs, without files or Typer: validated profiles, modulation of any
logits tensor, the transformers logits processor, the exact analytic functions and calibration
from logits a user already has.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from aim_cli.calibration.core import Calibration, CurveRow, MonteCarloCheck  # noqa: F401 (re-exported via __all__)
from aim_cli.errors import AimError, InputError, ModelError, ProfileError  # noqa: F401 (re-exported)
from aim_cli.plans import (  # noqa: F401 (item_key re-exported)
    ItemKey,
    ModulationPlan,
    check_logits,
    item_key,
    logits_axis,
    plan_modulation,
    plan_tokens,
    resolve_focus,
)
from aim_cli.profile import FocusRequest, Profile, check_sigma, is_integer_number, is_real_number, one_or_many

if TYPE_CHECKING:
    from aim_cli.generation import ModulationProcessor

# A Profile, a mapping in the YAML schema, or a bare utility sigma.
ProfileLike = Profile | Mapping[str, Any] | float | int


def as_profile(profile: ProfileLike, seed: int | None = None) -> Profile:
    """A validated Profile from a Profile, a YAML-schema mapping or a utility sigma; `seed` overrides."""
    if isinstance(profile, Profile):
        result = profile
    elif isinstance(profile, Mapping):
        result = Profile.from_dict(profile)
    elif is_real_number(profile):
        result = Profile(sigma=float(profile))
    else:
        raise ProfileError(
            f"expected a Profile, a profile dict or a sigma, got {type(profile).__name__}",
            "e.g. aim.Profile.load('tier.yaml'), {'utility': {'sigma': 1.5}} or 1.5",
        )
    return result if seed is None else replace(result, seed=seed, key_env=None)


def _class_names(
    class_names: Any, num_classes: Any, focus: Sequence[FocusRequest]
) -> tuple[Sequence[str] | None, int | None]:
    """The class names focus targets resolve against, and the class count.

    The names are read (as text) only when a focus target must be resolved: a plan without
    focus, or over 10^9 classes by id, builds no per-class list.
    """
    if num_classes is not None and (not is_integer_number(num_classes) or num_classes < 0):
        raise InputError(f"num_classes must be a class count (an integer >= 0), got {num_classes!r}")
    if class_names is None:
        return None, num_classes
    names = one_or_many(class_names, "class_names", InputError)
    if num_classes is not None and len(names) != num_classes:
        raise InputError(f"{len(names)} class_names for {num_classes} classes", "give one name per class")
    if focus:
        names = [str(name) for name in names]
    return names, len(names)


def plan(
    profile: ProfileLike,
    class_names: Sequence[str] | None = None,
    *,
    num_classes: int | None = None,
    seed: int | None = None,
) -> ModulationPlan:
    """Resolve a profile against a model's classes: a reusable plan whose .apply() modulates batches.

    A seeded plan continues one noise stream across .apply() calls (like the batches of one
    CLI run); .seed is the seed in force (drawn and reported when the profile sets none).
    """
    resolved = as_profile(profile, seed)
    names, count = _class_names(class_names, num_classes, resolved.focus)
    return plan_modulation(resolved, names, count)


def modulate(
    logits: torch.Tensor,
    profile: ProfileLike,
    *,
    class_dim: int = 1,
    class_names: Sequence[str] | None = None,
    seed: int | None = None,
    keys: Sequence[ItemKey] | None = None,
) -> torch.Tensor:
    """Add the profile's utility and focus noise to logits (dim 0 = items, `class_dim` = classes).

    Focus classes resolve against `class_names` (or are class ids). Seeded noise starts a fresh
    stream from the seed at every call; keyed noise (noise.key_env) needs `keys`, one per item:
    bytes, text, a tensor or array (token ids give `aim generate`'s key) or a PIL image; a
    single str, bytes or image is the one key of a one-item batch.
    """
    axis = logits_axis(logits, class_dim)
    modulation_plan = plan(profile, class_names, num_classes=logits.shape[axis], seed=seed)
    if keys is not None and not modulation_plan.keyed:
        raise InputError("keys= given, but the profile's noise is seeded", "use a profile with noise: {key_env: VAR}")
    return modulation_plan.apply(logits, axis, keys)


def logits_processor(
    profile: ProfileLike,
    tokenizer: Any,
    *,
    seed: int | None = None,
    prompt_starts: Sequence[int] | None = None,
    encoder_ids: Sequence[Sequence[int]] | None = None,
) -> ModulationProcessor:
    """The transformers LogitsProcessor for model.generate(logits_processor=[...]).

    Focus words become every token of their spellings (as in `aim generate`); noise goes on the
    raw next-token logits before temperature / top-k / top-p. Keyed profiles hash each row's
    tokens from its prompt start: give `prompt_starts` for left-padded batches, and for an
    encoder-decoder each row's encoder prompt ids (`encoder_ids`), as `aim generate` does.
    """
    return plan_tokens(as_profile(profile, seed), tokenizer).logits_processor(prompt_starts, encoder_ids)


def _logits_and_labels(logits: Any, labels: Any, class_names: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) finite float logits with N, C >= 1 and (N,) label ids in range; labels may be names with class_names."""
    check_logits(logits, 1)
    if logits.dim() != 2:
        raise InputError(
            f"logits must be (items, classes), got shape {tuple(logits.shape)}",
            "flatten other axes into items, e.g. logits.movedim(1, -1).reshape(-1, C)",
        )
    if 0 in logits.shape:
        raise InputError(
            f"logits of shape {tuple(logits.shape)} hold no items or no classes", "give at least one row and one class"
        )
    return logits, _label_ids(labels, class_names, logits.shape[0], logits.shape[1]).to(logits.device)


def _label_ids(labels: Any, class_names: Any, rows: int, classes: int) -> torch.Tensor:
    """One class id per row: ids (list, array or tensor) or names with class_names; a str or an int is one label."""
    labels = one_or_many(labels, "labels", InputError)
    if len(labels) != rows:
        raise InputError(
            f"labels must be {rows} integer class ids, one class id (or name) per row of logits; "
            f"got {len(labels)} label(s)",
            "e.g. a list, an array or a 1-d tensor of ids",
        )
    if len(labels) and isinstance(labels[0], str):
        if class_names is None:
            raise InputError("labels are names, but no class_names were given", "pass class_names=[...] or label ids")
        if not all(isinstance(label, str) for label in labels):
            raise InputError("labels mix names and ids", "give all names or all ids")
        names, _ = _class_names(class_names, classes, [FocusRequest("labels")])
        assert names is not None  # class_names were given
        from aim_cli.calibration.datasets import resolve_labels

        labels = resolve_labels(list(labels), names, "labels")
    try:
        ids = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):  # None, ragged lists, objects
        raise InputError("labels must be one class id (or name) per row of logits", "e.g. a list of ints") from None
    if ids.shape != (rows,) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise InputError(
            f"labels must be {rows} integer class ids, one class id per row of logits; "
            f"got shape {tuple(ids.shape)} of {ids.dtype}"
        )
    if not bool(((ids >= 0) & (ids < classes)).all()):
        raise InputError(f"labels must be class ids from 0 to {classes - 1}")
    return ids.long()


def _focus_class_id(focus: Any, class_names: Any, num_classes: int) -> int:
    """A focus class given as an id or a name (resolved like profile targets; names read only here)."""
    if not (isinstance(focus, str) or is_integer_number(focus)):
        raise ProfileError(f"focus: expected a class name or id, got {focus!r}")
    request = FocusRequest(str(focus).strip(), origin="focus")
    names, _ = _class_names(class_names, num_classes, [request])
    return resolve_focus(request, names, num_classes)


def _check_direction(direction: int) -> None:
    """A focus direction is +1 (boost) or -1 (suppress)."""
    if not is_integer_number(direction) or direction not in (1, -1):
        raise ProfileError(f"direction must be 1 (boost) or -1 (suppress), got {direction!r}")


def expected_accuracy(logits: torch.Tensor, labels: Any, sigma: float) -> float:
    """Exact expected top-1 accuracy under utility noise sigma (theory.expected_correct)."""
    return accuracy_curve(logits, labels, [sigma])[0]


def accuracy_curve(logits: torch.Tensor, labels: Any, sigmas: Sequence[float]) -> list[float]:
    """Exact expected accuracy at each sigma, all from the same clean logits (checked once)."""
    logits, ids = _logits_and_labels(logits, labels, None)
    checked = [check_sigma(s, "sigma", "sigma") for s in one_or_many(sigmas, "sigmas")]
    from aim_cli.theory import expected_correct

    return [float(expected_correct(logits, ids, s).mean()) for s in checked]


def win_probability(
    logits: torch.Tensor,
    classes: Any,
    sigma: float = 0.0,
    *,
    focus: int | str | None = None,
    focus_sigma: float = 0.0,
    direction: int = 1,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """Per row, exact P(argmax of the modulated logits == classes[row]), with optional focus on one class.

    Utility only: Gauss-Hermite over each row's contending classes (what calibration uses).
    Focus alone: the closed form 2 * Phi(-gap / focus_sigma). Both: one more quadrature.
    """
    logits, ids = _logits_and_labels(logits, classes, class_names)
    sigma = check_sigma(sigma, "sigma", "sigma")
    from aim_cli import theory

    if focus is None:
        return theory.expected_correct(logits, ids, sigma)
    focus_sigma = check_sigma(focus_sigma, "focus_sigma", "focus_sigma")
    _check_direction(direction)
    target = _focus_class_id(focus, class_names, logits.shape[1])
    if focus_sigma == 0:
        return theory.expected_correct(logits, ids, sigma)
    if sigma > 0:
        return theory.win_probability_with_focus(logits, ids, sigma, target, focus_sigma, direction)
    probabilities = theory.focus_class_probabilities(logits, target, focus_sigma, direction)
    return probabilities.gather(1, ids[:, None]).squeeze(1)


def expected_recall(
    logits: torch.Tensor,
    labels: Any,
    focus: int | str,
    focus_sigma: float,
    *,
    direction: int = 1,
    sigma: float = 0.0,
    class_names: Sequence[str] | None = None,
) -> float:
    """Exact expected recall of the focus class at focus_sigma (utility sigma held fixed)."""
    logits, ids = _logits_and_labels(logits, labels, class_names)
    target = _focus_class_id(focus, class_names, logits.shape[1])
    _check_direction(direction)
    if not bool((ids == target).any()):
        raise InputError(
            f"the labels have no examples of class {focus!r}, so its recall is undefined",
            "add labelled examples of that class",
        )
    from aim_cli.calibration.classify import recall_metric

    metric = recall_metric(logits, ids, target, direction, check_sigma(sigma, "sigma", "sigma"))
    return metric(check_sigma(focus_sigma, "focus_sigma", "focus_sigma"))


def calibrate_logits(
    logits: torch.Tensor,
    labels: Any,
    *,
    target_acc: float | None = None,
    target_recall: float | None = None,
    focus: int | str | None = None,
    sigma: float | None = None,
    class_names: Sequence[str] | None = None,
    draws: int = 20,
    seed: int = 0,
) -> Calibration:
    """The sigma (or, with focus and target_recall, the focus sigma) that reaches a target metric.

    The same calibration as `aim calibrate --task classify` on logits you already have: an exact
    curve, a root, and a seeded Monte Carlo check. The result has .sigma, .focus_sigma,
    .predicted, .check, .curve, .warnings, .to_dict() and .profile(name).
    """
    from aim_cli.calibration.runner import API_NAMES, calibrate_classification_logits, calibration_request

    logits, ids = _logits_and_labels(logits, labels, class_names)
    focus_text = None if focus is None else str(focus)
    request = calibration_request(
        "classify", target_acc, None, target_recall, focus_text, sigma, draws, seed, names=API_NAMES
    )
    if request.focus is None:  # nothing to resolve: the names are never read
        return calibrate_classification_logits(logits, ids, request, ())
    _focus_class_id(request.focus.name, class_names, logits.shape[1])  # a bad focus fails before any work
    names, _ = _class_names(class_names, logits.shape[1], [request.focus])
    # Without class_names the focus is a class id, and ids name the classes in the report.
    return calibrate_classification_logits(logits, ids, request, names or [str(i) for i in range(logits.shape[1])])
