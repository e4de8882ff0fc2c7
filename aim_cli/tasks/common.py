"""Pieces every task shares: turning a profile into a modulation for a given model."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from aim_cli.errors import AimError, InputError, ProfileError
from aim_cli.labels import resolve_class
from aim_cli.modulation import FocusTarget, Modulation, NoiseSource, modulate, token_key
from aim_cli.profile import Profile, noise_source

if TYPE_CHECKING:
    from aim_cli.generation import ModulationProcessor

T = TypeVar("T")
ProgressCallback = Callable[[int], None]
# What identifies an input for keyed noise: its content key as bytes, or the content itself.
ItemKey = Any  # bytes | str | torch.Tensor | np.ndarray | PIL.Image.Image | Sequence[int]


def item_key(item: ItemKey) -> bytes:
    """The content key of one input for keyed noise, computed the way the CLI computes it.

    bytes are taken as the key itself (e.g. a digest or request id); str as its UTF-8 bytes;
    a PIL image gives the CLI's pixel digest (so `aim classify` and the API agree); a 1-D
    integer tensor, array or list gives the token key of `aim generate` and the vLLM plugin;
    any other tensor or array the digest of its dtype, shape and values.
    """
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    pil = sys.modules.get("PIL.Image")  # an image can only exist if PIL is loaded
    if pil is not None and isinstance(item, pil.Image):
        from aim_cli.images import pixel_key

        return pixel_key(item)
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    array = np.asarray(item)
    if array.ndim == 1 and np.issubdtype(array.dtype, np.integer):
        return token_key(array)
    if array.dtype == object:
        raise InputError(f"cannot derive a noise key from {type(item).__name__}", "give bytes, text, a tensor or an image")
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}:{array.shape}:".encode())
    digest.update(array.tobytes())
    return digest.digest()


@dataclass(frozen=True)
class ModulationPlan:
    """A profile resolved against one model: what to add, how noise is drawn, which seed."""

    modulation: Modulation
    noise: NoiseSource
    seed: int | None
    target_names: tuple[str, ...] = ()
    # Language models: the tokenizer's size; output columns past it are padding, never decisions.
    num_tokens: int | None = None

    @property
    def keyed(self) -> bool:
        """True when noise is derived from a secret key and each input's content."""
        return self.seed is None

    def apply(self, logits: torch.Tensor, class_dim: int = 1, keys: Sequence[ItemKey] | None = None) -> torch.Tensor:
        """Modulate a batch of logits (dim 0 indexes items); keyed plans need one key per item.

        Successive calls of a seeded plan continue one stream, as batches of a CLI run do.
        """
        if not self.keyed or self.modulation.is_identity:
            return modulate(logits, self.modulation, self.noise, class_dim=class_dim)
        if keys is None:
            raise InputError("keyed noise needs one key per item", "pass keys=[...] (bytes, text, tensors or images)")
        if len(keys) != logits.shape[0]:
            raise InputError(f"{len(keys)} keys for a batch of {logits.shape[0]} items", "give one key per item (dim 0)")
        item_keys = [item_key(k) for k in keys]
        return modulate(logits, self.modulation, self.noise, class_dim=class_dim, item_keys=item_keys)

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

    def describe(self) -> dict[str, object]:
        """Settings to record beside each output, so a result can be reproduced."""
        return {
            "sigma": self.modulation.sigma,
            "focus_sigma": self.modulation.focus_sigma if self.modulation.has_focus else 0.0,
            "focus": list(self.target_names),
            "seed": self.seed,
            "keyed": self.keyed,
        }


@dataclass(frozen=True)
class FailedInput:
    """An input that could not be processed, and a one-line reason that names it."""

    path: Path
    reason: str


def plan_modulation(profile: Profile, labels: Sequence[str]) -> ModulationPlan:
    """Resolve focus class names against the model's labels and build the noise source."""
    targets = []
    names = []
    for request in profile.focus:
        try:
            class_id = resolve_class(request.name, labels)
        except AimError as exc:  # name where the bad class came from, like every profile error
            raise ProfileError(f"{request.origin}: {exc.message}" if request.origin else exc.message, exc.hint) from None
        target = FocusTarget(class_id, request.direction)
        if FocusTarget(class_id, -request.direction) in targets:  # e.g. person:up with pedestrian:down
            raise ProfileError(
                f"{request.origin or request}: class '{labels[class_id]}' is already focused the other way",
                "give each class one direction",
            )
        if target not in targets:
            targets.append(target)
            names.append(f"{labels[class_id]}:{'up' if request.direction > 0 else 'down'}")
    modulation = Modulation(profile.sigma, profile.effective_focus_sigma, tuple(targets))
    noise, seed = noise_source(profile)
    return ModulationPlan(modulation, noise, seed, tuple(names))


def plan_tokens(profile: Profile, tokenizer: Any) -> ModulationPlan:
    """Resolve focus words to token sets of a tokenizer and build the noise source (language models)."""
    from aim_cli.generation import focus_targets

    targets, names = focus_targets(tokenizer, profile.focus)
    modulation = Modulation(profile.sigma, profile.effective_focus_sigma, targets)
    noise, seed = noise_source(profile)
    # Without a tokenizer (a profile with no focus words) nothing marks padding columns.
    return ModulationPlan(modulation, noise, seed, names, num_tokens=len(tokenizer) if tokenizer is not None else None)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Yield lists of at most `size` items, streaming (no full materialisation)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
