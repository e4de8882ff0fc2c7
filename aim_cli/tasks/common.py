"""Pieces every task shares: turning a profile into a modulation for a given model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from aim_cli.errors import AimError, ProfileError
from aim_cli.labels import resolve_class
from aim_cli.modulation import FocusTarget, Modulation, NoiseSource
from aim_cli.profile import Profile, noise_source

T = TypeVar("T")
ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class ModulationPlan:
    """A profile resolved against one model: what to add, how noise is drawn, which seed."""

    modulation: Modulation
    noise: NoiseSource
    seed: int | None
    target_names: tuple[str, ...] = ()

    @property
    def keyed(self) -> bool:
        """True when noise is derived from a secret key and each input's content."""
        return self.seed is None

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
        targets.append(FocusTarget(class_id, request.direction))
        names.append(f"{labels[class_id]}:{'up' if request.direction > 0 else 'down'}")
    modulation = Modulation(profile.sigma, profile.effective_focus_sigma, tuple(targets))
    noise, seed = noise_source(profile)
    return ModulationPlan(modulation, noise, seed, tuple(names))


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
