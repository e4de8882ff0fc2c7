"""The public Python API: `import aim_cli as aim`.

The same code the CLI runs, without files or Typer: validated profiles, modulation of any
logits tensor, the transformers logits processor, the exact analytic functions and calibration
from logits a user already has. Errors are aim_cli.errors.AimError subclasses with one-line
messages, as on the command line.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import torch

import aim_cli
from aim_cli.calibration.core import Calibration, MonteCarloCheck  # noqa: F401 (re-exported via __all__)
from aim_cli.errors import AimError, InputError, ModelError, ProfileError  # noqa: F401 (re-exported)
from aim_cli.labels import resolve_class
from aim_cli.profile import FocusRequest, Profile, check_sigma, is_real_number
from aim_cli.tasks.common import ItemKey, ModulationPlan, item_key, plan_modulation, plan_tokens  # noqa: F401 (item_key re-exported)

if TYPE_CHECKING:
    from aim_cli.generation import ModulationProcessor

# The public names are listed once, in aim_cli/__init__.py, which must stay cheap to import.
__all__ = list(aim_cli.__all__)

# A Profile, a mapping in the YAML schema, or a bare utility sigma.
ProfileLike = Union[Profile, Mapping[str, Any], float, int]


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


def _check_logits(logits: Any, class_dim: int = 1) -> int:
    """The class axis of a logits tensor, normalised; a clear error for anything else."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise InputError(f"logits must be a floating-point torch tensor, got {type(logits).__name__}"
                         + (f" of {logits.dtype}" if isinstance(logits, torch.Tensor) else ""),
                         "e.g. model(x).logits or torch.as_tensor(array, dtype=torch.float32)")
    if logits.dim() < 2:
        raise InputError(f"logits must have an item axis and a class axis, got shape {tuple(logits.shape)}",
                         "give a batch, e.g. logits[None] for one item")
    if not -logits.dim() <= class_dim < logits.dim():
        raise InputError(f"class_dim {class_dim} is outside a {logits.dim()}-d tensor")
    axis = class_dim % logits.dim()
    if axis == 0:
        raise InputError("class_dim 0 is the item axis", "put items on dim 0 and classes on another axis")
    return axis


def _names(class_names: Sequence[str] | None, num_classes: int | None, focus: Sequence[FocusRequest]) -> list[str]:
    """The class names focus targets resolve against; class ids stand in when none are given."""
    if class_names is not None:
        names = [str(name) for name in class_names]
        if num_classes is not None and len(names) != num_classes:
            raise InputError(f"{len(names)} class_names for {num_classes} classes", "give one name per class")
        return names
    for request in focus:
        if not request.name.isdigit():
            raise ProfileError(
                f"{request.origin or 'focus'}: '{request.name}' is a class name, but no class_names were given",
                "pass class_names=[...] (the model's labels) or give the class id",
            )
    if num_classes is None:
        if focus:
            raise ProfileError("focus targets by id need the number of classes", "pass num_classes= or class_names=")
        return []
    return [str(i) for i in range(num_classes)]


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
    return plan_modulation(resolved, _names(class_names, num_classes, resolved.focus))


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
    bytes, text, a tensor or array (token ids give `aim generate`'s key) or a PIL image.
    """
    axis = _check_logits(logits, class_dim)
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


def _logits_and_labels(logits: Any, labels: Any, class_names: Sequence[str] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float logits and (N,) label ids in range; labels may be names with class_names."""
    _check_logits(logits, 1)
    if logits.dim() != 2:
        raise InputError(f"logits must be (items, classes), got shape {tuple(logits.shape)}",
                         "flatten other axes into items, e.g. logits.movedim(1, -1).reshape(-1, C)")
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__len__"):
        raise InputError(f"labels must be one class id (or name) per row of logits, got {type(labels).__name__}",
                         "e.g. a list, an array or a 1-d tensor of ids")
    if len(labels) and isinstance(labels[0], str):
        if class_names is None:
            raise InputError("labels are names, but no class_names were given", "pass class_names=[...] or label ids")
        from aim_cli.calibration.datasets import resolve_labels

        labels = resolve_labels(list(labels), list(class_names), "labels")
    ids = torch.as_tensor(labels, device=logits.device)
    if ids.shape != (logits.shape[0],) or ids.is_floating_point():
        raise InputError(f"labels must be {logits.shape[0]} integer class ids, got shape {tuple(ids.shape)} of {ids.dtype}",
                         "one label per row of logits")
    if len(ids) and not bool(((ids >= 0) & (ids < logits.shape[1])).all()):
        raise InputError(f"labels must be class ids from 0 to {logits.shape[1] - 1}")
    return logits, ids.long()


def _class_id(focus: int | str, class_names: Sequence[str] | None, num_classes: int) -> int:
    """A focus class given as an id or a name (resolved like profile targets)."""
    names = _names(class_names, num_classes, [FocusRequest(str(focus), origin="focus")])
    try:
        return resolve_class(str(focus), names)
    except AimError as exc:
        raise ProfileError(f"focus: {exc.message}", exc.hint) from None


def _check_direction(direction: int) -> None:
    """A focus direction is +1 (boost) or -1 (suppress)."""
    if isinstance(direction, bool) or direction not in (1, -1):
        raise ProfileError(f"direction must be 1 (boost) or -1 (suppress), got {direction!r}")


def expected_accuracy(logits: torch.Tensor, labels: Any, sigma: float) -> float:
    """Exact expected top-1 accuracy under utility noise sigma (calibration.classify.expected_correct)."""
    return accuracy_curve(logits, labels, [sigma])[0]


def accuracy_curve(logits: torch.Tensor, labels: Any, sigmas: Sequence[float]) -> list[float]:
    """Exact expected accuracy at each sigma, all from the same clean logits (checked once)."""
    logits, ids = _logits_and_labels(logits, labels, None)
    from aim_cli.calibration.classify import expected_correct

    return [float(expected_correct(logits, ids, check_sigma(s, "sigma", "sigma")).mean()) for s in sigmas]


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
    from aim_cli.calibration.classify import expected_correct

    if focus is None or focus_sigma == 0:
        return expected_correct(logits, ids, sigma)
    focus_sigma = check_sigma(focus_sigma, "focus_sigma", "focus_sigma")
    _check_direction(direction)
    target = _class_id(focus, class_names, logits.shape[1])
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
    target = _class_id(focus, class_names, logits.shape[1])
    _check_direction(direction)
    if not bool((ids == target).any()):
        raise InputError(f"the labels have no examples of class {focus!r}, so its recall is undefined",
                         "add labelled examples of that class")
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
    from aim_cli.tasks.calibrate import API_NAMES, calibrate_classification_logits, calibration_request

    logits, ids = _logits_and_labels(logits, labels, class_names)
    focus_text = None if focus is None else str(focus)
    request = calibration_request(
        "classify", target_acc, None, target_recall, focus_text, sigma, draws, seed, names=API_NAMES
    )
    focus_requests = [FocusRequest(request.focus.name, origin="focus")] if request.focus else []
    names = _names(class_names, logits.shape[1], focus_requests)
    return calibrate_classification_logits(logits, ids, request, names)
