"""Utility and focus noise on logits: the only place in aim where noise is made.

Pure torch: this module knows nothing about files, models or the command line.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Sequence

import torch

BOOST = 1
SUPPRESS = -1


@dataclass(frozen=True)
class FocusTarget:
    """One class whose logit gets the one-signed half-normal term."""

    class_id: int
    direction: int = BOOST  # +1 boosts the class, -1 suppresses it


@dataclass(frozen=True)
class Modulation:
    """How to redistribute logits: utility std, focus std and focus targets."""

    sigma: float = 0.0
    focus_sigma: float = 0.0
    targets: tuple[FocusTarget, ...] = ()

    def __post_init__(self) -> None:
        for name in ("sigma", "focus_sigma"):
            value = getattr(self, name)
            if not (value >= 0.0 and value != float("inf")):  # also rejects NaN
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for target in self.targets:
            if target.direction not in (BOOST, SUPPRESS):
                raise ValueError(f"focus direction must be +1 or -1, got {target.direction}")

    @property
    def has_focus(self) -> bool:
        """True when some target class receives a non-zero focus term."""
        return self.focus_sigma > 0 and len(self.targets) > 0

    @property
    def is_identity(self) -> bool:
        """True when modulation leaves logits unchanged."""
        return self.sigma == 0 and not self.has_focus


class NoiseSource:
    """Makes standard-normal draws; subclasses decide how they are seeded."""

    def standard_normal(
        self, shape: Sequence[int], like: torch.Tensor, item_keys: Sequence[bytes] | None = None
    ) -> torch.Tensor:
        """Return N(0,1) draws of `shape` on `like`'s device and dtype; dim 0 indexes items."""
        raise NotImplementedError


class SeededNoise(NoiseSource):
    """One seeded stream per run: identical inputs in identical order give identical noise."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._generators: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator:
        """One generator per device, created lazily so noise is made where the logits live."""
        key = str(device)
        if key not in self._generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed)
            self._generators[key] = generator
        return self._generators[key]

    def standard_normal(
        self, shape: Sequence[int], like: torch.Tensor, item_keys: Sequence[bytes] | None = None
    ) -> torch.Tensor:
        """Draw the whole batch in one call from the run's stream."""
        return torch.randn(
            tuple(shape), generator=self._generator(like.device), device=like.device, dtype=like.dtype
        )


class KeyedNoise(NoiseSource):
    """Noise derived from a secret key and each input's content.

    The same input always gets the same noise, so repeating a query cannot average it away,
    while without the key the noise cannot be predicted.
    """

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the noise key must not be empty")
        self._key = key

    def item_seed(self, item_key: bytes) -> int:
        """Derive a 63-bit seed from the secret key and an input's content digest."""
        digest = hmac.new(self._key, item_key, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    def standard_normal(
        self, shape: Sequence[int], like: torch.Tensor, item_keys: Sequence[bytes] | None = None
    ) -> torch.Tensor:
        """Draw each item's noise from its own keyed generator (one call per item)."""
        if item_keys is None or len(item_keys) != shape[0]:
            raise ValueError("keyed noise needs one content key per item")
        rows = []
        for item_key in item_keys:
            generator = torch.Generator(device=like.device)
            generator.manual_seed(self.item_seed(item_key))
            rows.append(
                torch.randn(tuple(shape[1:]), generator=generator, device=like.device, dtype=like.dtype)
            )
        return torch.stack(rows)


def content_key(data: bytes) -> bytes:
    """Digest of an input's content, used to key its noise."""
    return hashlib.sha256(data).digest()


def modulate(
    logits: torch.Tensor,
    modulation: Modulation,
    noise: NoiseSource,
    class_dim: int = 1,
    item_keys: Sequence[bytes] | None = None,
) -> torch.Tensor:
    """Return logits plus utility noise on every class and focus noise on target classes.

    Works for (N, C), (N, C, H, W) and (N, V) tensors; `class_dim` names the class axis.
    Both noise terms come from one draw so the cost is one random-number call per batch.
    """
    if modulation.is_identity:
        return logits
    class_dim = class_dim % logits.dim()
    num_classes = logits.shape[class_dim]
    targets = modulation.targets if modulation.has_focus else ()
    for target in targets:
        if not 0 <= target.class_id < num_classes:
            raise ValueError(f"focus class id {target.class_id} outside 0..{num_classes - 1}")
    utility_width = num_classes if modulation.sigma > 0 else 0
    shape = list(logits.shape)
    shape[class_dim] = utility_width + len(targets)
    draws = noise.standard_normal(shape, logits, item_keys)
    out = logits
    if utility_width:
        out = out + modulation.sigma * draws.narrow(class_dim, 0, utility_width)
    if targets:
        view = [1] * logits.dim()
        view[class_dim] = len(targets)
        signs = torch.tensor(
            [t.direction for t in targets], device=logits.device, dtype=logits.dtype
        ).view(view)
        focus = modulation.focus_sigma * signs * draws.narrow(class_dim, utility_width, len(targets)).abs()
        index = torch.tensor([t.class_id for t in targets], device=logits.device)
        out = out.index_add(class_dim, index, focus)
    if torch.finfo(out.dtype).max < 1e6:
        # float16 tops out at 65504 and a rare draw past 6 sigma could reach it: saturate, never inf.
        # Logits that were already infinite (tokens masked with -inf) stay so.
        limit = torch.finfo(out.dtype).max
        out = torch.where(logits.isinf(), out, out.clamp(-limit, limit))
    return out
