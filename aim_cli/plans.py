"""Modulation plans: a profile resolved against one model's classes or tokenizer, and the checks on logits.

The core the API, the task pipelines, calibration and serving share. A plan knows nothing
about files or models: it turns logits (and, in keyed mode, each input's content key) into
modulated logits.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aim_cli.directions import direction_name
from aim_cli.errors import AimError, InputError, ProfileError
from aim_cli.labels import resolve_class
from aim_cli.limits import ascii_whole
from aim_cli.modulation import FocusTarget, Modulation, NoiseSource, modulate, nonfinite_items, token_key
from aim_cli.profile import FocusRequest, Profile, is_integer_number, noise_source, one_or_many

if TYPE_CHECKING:
    from aim_cli.generation import ModulationProcessor

# What identifies an input for keyed noise: its content key as bytes, or the content itself.
ItemKey = Any  # bytes | str | torch.Tensor | np.ndarray | PIL.Image.Image | Sequence[int]


def item_key(item: ItemKey) -> bytes:
    """The content key of one input for keyed noise, computed the way the CLI computes it.

    bytes are taken as the key itself (e.g. a digest or request id); str as its UTF-8 bytes;
    a PIL image gives the CLI's pixel digest (so `aim classify` and the API agree); a 1-D
    integer tensor, array or list gives the token key of `aim generate` and the vLLM plugin;
    any other tensor or array the digest of its dtype, shape and values.
    """
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8")
    pil = sys.modules.get("PIL.Image")  # an image can only exist if PIL is loaded
    if pil is not None and isinstance(item, pil.Image):
        from aim_cli.images import pixel_key

        return pixel_key(item)  # the decoded pixels, as `aim classify` keys the file
    array = _key_array(item)
    if array.ndim == 1 and np.issubdtype(array.dtype, np.integer):
        return token_key(array)
    if array.dtype == object:
        raise InputError(
            f"cannot derive a noise key from {type(item).__name__}", "give bytes, text, a tensor or an image"
        )
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}:{array.shape}:".encode())
    digest.update(array.tobytes())
    return digest.digest()


def _key_array(item: Any) -> np.ndarray:
    """A key given as a tensor, array or (nested) list as a numpy array; one-line error otherwise."""
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu()
        # numpy has no bfloat16: its values, exactly, as float32.
        item = (item.float() if item.dtype == torch.bfloat16 else item).numpy()
    try:
        return np.asarray(item)
    except (ValueError, TypeError):  # ragged lists, objects numpy cannot hold
        raise InputError(
            f"cannot derive a noise key from {type(item).__name__}", "give bytes, text, a tensor or an image"
        ) from None


def check_logits(logits: Any, class_dim: Any = 1, num_classes: int | None = None, masked: bool = False) -> int:
    """The class axis of a logits tensor an API caller gave, normalised; one-line InputError for anything else.

    Floating point, an item axis (dim 0) and a separate class axis, `num_classes` classes when
    known, and finite values: NaN/inf would decide every argmax whatever the noise. With
    `masked` (modulating, not predicting), -inf stays allowed as a mask: noise keeps it -inf.
    """
    axis = logits_axis(logits, class_dim)
    if num_classes is not None and logits.shape[axis] != num_classes:
        raise InputError(
            f"logits have {logits.shape[axis]} classes on dim {axis}, but the plan is for {num_classes} classes",
            "plan with the model's class names (or num_classes=) for these logits",
        )
    bad = nonfinite_items(logits, masked=masked)
    if bad:
        raise InputError(
            f"logits hold non-finite values (NaN/inf) in item {bad[0]} ({len(bad)} of {logits.shape[0]} items): "
            "aim needs finite logits",
            "the model that computed them has damaged weights or overflowed its dtype",
        )
    return axis


LOGIT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def logits_axis(logits: Any, class_dim: Any = 1) -> int:
    """The class axis of a floating-point logits tensor with an item axis (dim 0) and a separate class axis."""
    # float8 and other exotic floats lack the kernels noise and quadrature need: say so, don't crash in torch.
    if not isinstance(logits, torch.Tensor) or logits.dtype not in LOGIT_DTYPES:
        raise InputError(
            "logits must be a floating-point torch tensor (float16, bfloat16, float32 or float64), got "
            f"{type(logits).__name__}" + (f" of {logits.dtype}" if isinstance(logits, torch.Tensor) else ""),
            "e.g. model(x).logits or torch.as_tensor(array, dtype=torch.float32)",
        )
    if logits.dim() < 2:
        raise InputError(
            f"logits must have an item axis and a class axis, got shape {tuple(logits.shape)}",
            "give a batch, e.g. logits[None] for one item",
        )
    if not is_integer_number(class_dim):
        raise InputError(f"class_dim must be an integer axis, got {class_dim!r}")
    if not -logits.dim() <= class_dim < logits.dim():
        raise InputError(f"class_dim {class_dim} is outside a {logits.dim()}-d tensor")
    axis = int(class_dim) % logits.dim()
    if axis == 0:
        raise InputError("class_dim 0 is the item axis", "put items on dim 0 and classes on another axis")
    return axis


@dataclass(frozen=True)
class ModulationPlan:
    """A profile resolved against one model: what to add, how noise is drawn, which seed."""

    modulation: Modulation
    noise: NoiseSource
    seed: int | None
    target_names: tuple[str, ...] = ()
    # Language models: the tokenizer's size; output columns past it are padding, never decisions.
    num_tokens: int | None = None
    # Classifiers and segmenters: the class count the plan was resolved for (None: any).
    num_classes: int | None = None

    @property
    def keyed(self) -> bool:
        """True when noise is derived from a secret key and each input's content."""
        return self.seed is None

    def apply(self, logits: torch.Tensor, class_dim: int = 1, keys: Sequence[ItemKey] | None = None) -> torch.Tensor:
        """Modulate a batch of logits (dim 0 indexes items); keyed plans need one key per item.

        Successive calls of a seeded plan continue one stream, as batches of a CLI run do. The
        logits are checked first (check_logits); a str, bytes or image is one key.
        """
        axis = check_logits(logits, class_dim, self.num_classes, masked=True)
        self._check_targets_fit(logits.shape[axis])
        if not self.keyed or self.modulation.is_identity:
            return modulate(logits, self.modulation, self.noise, class_dim=axis)
        if keys is None:
            raise InputError("keyed noise needs one key per item", "pass keys=[...] (bytes, text, tensors or images)")
        keys = one_or_many(keys, "keys", InputError)
        if len(keys) != logits.shape[0]:
            raise InputError(
                f"{len(keys)} keys for a batch of {logits.shape[0]} items", "give one key per item (dim 0)"
            )
        item_keys = [item_key(k) for k in keys]
        return modulate(logits, self.modulation, self.noise, class_dim=axis, item_keys=item_keys)

    def _check_targets_fit(self, width: int) -> None:
        """Focus targets must be columns of the logits (a plan of unknown class count checks here)."""
        if self.modulation.has_focus:
            largest = max(target.class_id for target in self.modulation.targets)
            if largest >= width:
                raise InputError(
                    f"focus class id {largest} is outside logits of {width} classes",
                    "plan with the model's class names (or num_classes=)",
                )

    def logits_processor(
        self, prompt_starts: Sequence[int] | None = None, encoder_ids: Sequence[Sequence[int]] | None = None
    ) -> ModulationProcessor:
        """The transformers LogitsProcessor applying this plan at every generation step.

        Keyed plans hash each row's tokens from its prompt start (give the starts for left
        padding) and, for an encoder-decoder, each row's encoder prompt ids.
        """
        from aim_cli.generation import ModulationProcessor

        return ModulationProcessor(
            self.modulation,
            self.noise,
            keyed=self.keyed,
            prompt_starts=prompt_starts,
            encoder_ids=encoder_ids,
            num_tokens=self.num_tokens,
        )

    def summary(self) -> str:
        """The run-summary line's modulation part: sigma, focus, and how noise is drawn."""
        text = f"sigma {self.modulation.sigma:g}"
        if self.modulation.has_focus:
            text += f" | focus {', '.join(self.target_names)} sigma {self.modulation.focus_sigma:g}"
            if self.num_tokens is not None:  # a focus word may be several tokens: say how many
                text += f" ({len(self.modulation.targets)} token(s))"
        return text + (" | keyed noise" if self.keyed else f" | seed {self.seed}")

    def describe(self) -> dict[str, object]:
        """Settings to record beside each output, so a result can be reproduced."""
        return {
            "sigma": self.modulation.sigma,
            "focus_sigma": self.modulation.focus_sigma if self.modulation.has_focus else 0.0,
            "focus": list(self.target_names),
            "seed": self.seed,
            "keyed": self.keyed,
        }


def plan_modulation(
    profile: Profile, labels: Sequence[str] | None = None, num_classes: int | None = None
) -> ModulationPlan:
    """Resolve focus class names against the model's labels and build the noise source.

    Without labels, focus targets must be class ids below `num_classes`. The labels are only
    read to resolve a focus target: a plan without focus costs nothing per class.
    """
    count = len(labels) if labels is not None else num_classes
    targets = []
    names = []
    for request in profile.focus:
        class_id = resolve_focus(request, labels, count)
        label = labels[class_id] if labels is not None else str(class_id)
        target = FocusTarget(class_id, request.direction)
        if FocusTarget(class_id, -request.direction) in targets:  # e.g. person:up with pedestrian:down
            raise ProfileError(
                f"{request.origin or request}: class '{label}' is already focused the other way",
                "give each class one direction",
            )
        if target not in targets:
            targets.append(target)
            names.append(f"{label}:{direction_name(request.direction)}")
    modulation = Modulation(profile.sigma, profile.effective_focus_sigma, tuple(targets))
    noise, seed = noise_source(profile)
    return ModulationPlan(modulation, noise, seed, tuple(names), num_classes=count)


def resolve_focus(request: FocusRequest, labels: Sequence[str] | None, num_classes: int | None) -> int:
    """The class id a focus request names: resolved against the labels like --focus, or a class id without them."""
    try:
        return resolve_class(request.name, labels) if labels is not None else _class_id(request.name, num_classes)
    except AimError as exc:  # name where the bad class came from, like every profile error
        raise ProfileError(f"{request.origin}: {exc.message}" if request.origin else exc.message, exc.hint) from None


def _class_id(name: str, num_classes: int | None) -> int:
    """A focus target given as a class id, checked against the class count."""
    class_id = ascii_whole(name)
    if class_id is None and not (name.isascii() and name.isdigit()):
        raise AimError(
            f"'{name[:60]}' is a class name, but no class_names were given",
            "pass class_names=[...] (the model's labels) or give the class id",
        )
    if num_classes is None:
        raise AimError("focus targets by id need the number of classes", "pass num_classes= or class_names=")
    if class_id is None or class_id >= num_classes:  # None here: more digits than any class count
        raise AimError(f"class id {name[:20]} is outside 0..{num_classes - 1}")
    return class_id


def plan_tokens(profile: Profile, tokenizer: Any) -> ModulationPlan:
    """Resolve focus words to token sets of a tokenizer and build the noise source (language models)."""
    from aim_cli.generation import focus_targets

    targets, names = focus_targets(tokenizer, profile.focus)
    modulation = Modulation(profile.sigma, profile.effective_focus_sigma, targets)
    noise, seed = noise_source(profile)
    # Without a tokenizer (a profile with no focus words) nothing marks padding columns.
    return ModulationPlan(modulation, noise, seed, names, num_tokens=len(tokenizer) if tokenizer is not None else None)
