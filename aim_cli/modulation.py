"""Utility and focus noise on logits: the only place in aim where noise is made.

Pure torch: this module knows nothing about files, models or the command line.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from aim_cli.directions import BOOST, SUPPRESS


@dataclass(frozen=True)
class FocusTarget:
    """One class whose logit gets the one-signed half-normal term."""

    class_id: int
    direction: int = BOOST  # +1 boosts the class, -1 suppresses it


def _distinct_targets(targets: tuple[FocusTarget, ...]) -> tuple[FocusTarget, ...]:
    """Each (class, direction) once: a class named twice (synonyms, a token two words share) gets one draw.

    The theory, and the user, expect one half-normal term per class and direction. Opposite
    directions on one class are refused where names are known (profile.py, plan_modulation); a
    token two focus words share with opposite directions keeps both terms.
    """
    return tuple(dict.fromkeys(targets))


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
        object.__setattr__(self, "targets", _distinct_targets(self.targets))

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
        return torch.randn(tuple(shape), generator=self._generator(like.device), device=like.device, dtype=like.dtype)


class LentGlobalStream:
    """A seeded stream for draws made by code that takes no generator (transformers' sampling, torch's initialisers).

    transformers' generate() samples with torch.multinomial on torch's global generator, and
    nn.Module initialisers draw from it too. This stream owns its state: lent() swaps it into the
    global generator for one block (torch.random.fork_rng), keeps the advanced state, and puts
    the caller's state back, so a seed repeats the same draws and the caller's generator is
    never changed. Another thread drawing from the global generator during the block would
    share it: lend it around calls that own the thread (as generate() does).
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = int(seed)
        device = torch.device(device)
        # The CUDA generator of the device sampling runs on (the CPU one is always lent); other
        # accelerators' global generators are left alone (and unseeded).
        self.cuda_index: int | None = None
        if device.type == "cuda":
            self.cuda_index = device.index if device.index is not None else int(torch.cuda.current_device())
        # Exactly the states that seeding the global generators with `seed` gives them, made without touching them.
        self._cpu = torch.Generator().manual_seed(self.seed).get_state()
        self._cuda: torch.Tensor | None = None
        if self.cuda_index is not None:
            self._cuda = torch.Generator(device=f"cuda:{self.cuda_index}").manual_seed(self.seed).get_state()

    @contextmanager
    def lent(self) -> Iterator[None]:
        """Within the block torch's global generator(s) draw this stream; after it, the caller's state is back."""
        index = self.cuda_index
        with torch.random.fork_rng(devices=[] if index is None else [index], device_type="cuda"):
            torch.set_rng_state(self._cpu)
            if index is not None and self._cuda is not None:
                torch.cuda.set_rng_state(self._cuda, index)
            yield
            self._cpu = torch.get_rng_state()
            if index is not None:
                self._cuda = torch.cuda.get_rng_state(index)


class KeyedNoise(NoiseSource):
    """Noise derived from a secret key and each input's content.

    The same input always gets the same noise, so repeating a query cannot average it away,
    while without the key the noise cannot be predicted.
    """

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the noise key must not be empty")
        self._key = key
        # HMAC-SHA256 with its two padded-key states hashed once: a per-item HMAC then costs
        # two hash copies instead of a full hmac.new (a third of the per-item overhead).
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def __reduce__(self) -> tuple[type, tuple[bytes]]:
        """Pickled as its key (hash states do not pickle): keyed plans travel to Ray workers."""
        return (KeyedNoise, (self._key,))

    def _mac(self, item_key: bytes) -> bytes:
        """HMAC-SHA256(key, item_key), identical to hmac.new(key, item_key, sha256).digest()."""
        inner = self._inner.copy()
        inner.update(item_key)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def item_seed(self, item_key: bytes) -> int:
        """Derive a 63-bit seed from the secret key and an input's content digest."""
        return int.from_bytes(self._mac(item_key)[:8], "little") & ((1 << 63) - 1)

    def standard_normal(
        self, shape: Sequence[int], like: torch.Tensor, item_keys: Sequence[bytes] | None = None
    ) -> torch.Tensor:
        """Draw every item's noise in one vectorised pass of a counter-based generator."""
        if item_keys is None or len(item_keys) != shape[0]:
            raise ValueError("keyed noise needs one content key per item")
        # The full 64 bits of the MAC seed the item's stream (item_seed keeps 63, a valid torch seed).
        seeds = torch.tensor(
            [_signed64(int.from_bytes(self._mac(k)[:8], "little")) for k in item_keys], dtype=torch.int64
        )
        return counter_normal(seeds.to(like.device), tuple(shape[1:]), like)


_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment (odd, golden ratio)
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_LOW24 = (1 << 24) - 1
_BLOCK_ELEMENTS = 1 << 15  # pairs per block, all items together


# Domain separation: a seeded stream can never coincide with a keyed one.
_SEEDED_DOMAIN = b"aim-seeded-request\x00"


def seed_keyed_noise(seed: int) -> KeyedNoise:
    """Seeded noise as a public key: the counter-based generator keyed on the seed; draws depend on (seed, item)."""
    return KeyedNoise(_SEEDED_DOMAIN + int(seed).to_bytes(8, "little"))


def _signed64(value: int) -> int:
    """Reinterpret an unsigned 64-bit integer as torch's signed int64 (same bits)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _xorshift_right_(z: torch.Tensor, bits: int) -> torch.Tensor:
    """z ^= z >>> bits on int64 holding unsigned bits (torch's >> is arithmetic: mask the sign fill)."""
    return z.bitwise_xor_((z >> bits).bitwise_and_((1 << (64 - bits)) - 1))


def counter_normal(seeds: torch.Tensor, item_shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """N(0,1) draws of (len(seeds), *item_shape): splitmix64 of (seed, counter), then Box-Muller.

    Item i's draws depend only on seeds[i] and item_shape: element pair j of item i is the
    splitmix64 output mix(seed_i + (j + 1) * gamma), so each item is its own splitmix64 stream
    and all items are computed together with a handful of integer tensor ops. int64
    multiplication and addition wrap modulo 2**64 exactly like the unsigned arithmetic of the
    reference algorithm; only the right shifts need masking.
    """
    count = 1
    for size in item_shape:
        count *= int(size)
    pairs = (count + 1) // 2
    work = torch.float64 if like.dtype == torch.float64 else torch.float32
    out = torch.empty((len(seeds), 2 * pairs), dtype=work, device=like.device)
    seeds = seeds.view(-1, 1)
    # Blocks of columns keep the integer intermediates in cache (one pass over 20M int64s
    # per op would be memory-bound); block size never changes the values.
    block = max(1, _BLOCK_ELEMENTS // max(1, len(seeds)))
    for first in range(0, pairs, block):
        last = min(pairs, first + block)
        z = torch.arange(first + 1, last + 1, dtype=torch.int64, device=like.device)
        z = z.mul_(_signed64(_GAMMA)).unsqueeze(0) + seeds
        _xorshift_right_(z, 30).mul_(_signed64(_MIX1))
        _xorshift_right_(z, 27).mul_(_signed64(_MIX2))
        _xorshift_right_(z, 31)
        # 24-bit uniforms, as torch.randn makes for float32: u1 in (0, 1) so log never sees 0.
        u1 = (z >> 40).bitwise_and_(_LOW24).to(work).add_(0.5).mul_(2.0**-24)
        theta = z.bitwise_and_(_LOW24).to(work).mul_(2.0 * math.pi * 2.0**-24)
        radius = u1.log_().mul_(-2.0).sqrt_()
        torch.mul(radius, theta.cos(), out=out[:, first:last])
        torch.mul(radius, theta.sin_(), out=out[:, pairs + first : pairs + last])
    return out[:, :count].to(like.dtype).reshape(len(seeds), *item_shape)


def content_key(data: bytes) -> bytes:
    """Digest of an input's content, used to key its noise."""
    return hashlib.sha256(data).digest()


def token_key(token_ids: Sequence[int] | np.ndarray) -> bytes:
    """Content key of a token sequence (prompt plus generated ids, no padding).

    Little-endian int64 bytes make the key independent of platform, batch and serving engine,
    so `aim generate` and the vLLM plugin give a repeated request the same noise.
    """
    return content_key(np.asarray(token_ids, dtype="<i8").tobytes())


def nonfinite_items(logits: torch.Tensor, masked: bool = False) -> list[int]:
    """The items (dim 0) whose logits are not all finite: aim's one finite-logits rule.

    NaN and inf mean damaged weights or an overflowing dtype, and they decide the argmax (or
    crash sampling) whatever the noise. One reduction checks a healthy batch. With `masked`
    (next-token scores after transformers' processors, which mask tokens with -inf on purpose)
    -inf is allowed as long as a row keeps some finite score: its max must be finite, and
    NaN propagates through max, so that is still one reduction.
    """
    if logits.dim() == 0 or logits.numel() == 0:
        return []
    rows = logits.reshape(logits.shape[0], -1)
    if masked:
        bad = ~torch.isfinite(rows.amax(dim=1))
    else:
        if bool(torch.isfinite(rows).all()):
            return []
        bad = ~torch.isfinite(rows).all(dim=1)
    return bad.nonzero().flatten().tolist()


def exclude_padding_(logits: torch.Tensor, num_tokens: int | None) -> torch.Tensor:
    """Set IN PLACE the columns at and past `num_tokens` of (..., V) modulated logits to -inf; returns them.

    Many checkpoints pad their output layer past the tokenizer (T5 32128 vs 32100 ids, Qwen2.5
    152064 vs 151665): those columns are no tokens, and noise must not let them win. The draws
    still cover the full width, so keyed and seeded streams do not depend on this.
    """
    if num_tokens is not None and logits.shape[-1] > num_tokens:
        logits[..., num_tokens:] = float("-inf")
    return logits


def check_focus_classes(modulation: Modulation, num_classes: int) -> None:
    """Every focus target must be one of the `num_classes` classes the logits have."""
    for target in modulation.targets if modulation.has_focus else ():
        if not 0 <= target.class_id < num_classes:
            raise ValueError(f"focus class id {target.class_id} outside 0..{num_classes - 1}")


def noise_width(modulation: Modulation, num_classes: int) -> int:
    """Draws per item along the class axis: one per class for utility noise, then one per focus target."""
    return (num_classes if modulation.sigma > 0 else 0) + (len(modulation.targets) if modulation.has_focus else 0)


def add_noise_(
    out: torch.Tensor,
    modulation: Modulation,
    draws: torch.Tensor,
    class_dim: int = -1,
    clean: torch.Tensor | None = None,
) -> torch.Tensor:
    """Write `clean` plus utility and focus noise into `out` IN PLACE (`clean` defaults to `out`); returns it.

    The one noise kernel: sigma * z on every class, then d * sigma_f * |z| on each focus target,
    from N(0,1) `draws` shaped like `out` but noise_width(...) wide on `class_dim` (utility columns
    first); `draws` is left as it is. `modulate` writes into a new tensor; the segmentation path
    adds to a strip of upsampled logits without copying it.
    """
    class_dim = class_dim % out.dim()
    source = out if clean is None else clean
    targets = modulation.targets if modulation.has_focus else ()
    utility = out.shape[class_dim] if modulation.sigma > 0 else 0
    if utility and source is out:
        out.add_(draws.narrow(class_dim, 0, utility), alpha=modulation.sigma)
    elif utility:
        torch.add(source, draws.narrow(class_dim, 0, utility), alpha=modulation.sigma, out=out)  # one fused pass
    elif source is not out:
        out.copy_(source)
    if targets:
        view = [1] * out.dim()
        view[class_dim] = len(targets)
        signs = torch.tensor([t.direction for t in targets], device=out.device, dtype=out.dtype).view(view)
        focus = draws.narrow(class_dim, utility, len(targets)).abs().mul_(signs * modulation.focus_sigma)
        index = torch.tensor([t.class_id for t in targets], device=out.device)
        out.index_add_(class_dim, index, focus)
    return out


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
    check_focus_classes(modulation, logits.shape[class_dim])
    shape = list(logits.shape)
    shape[class_dim] = noise_width(modulation, logits.shape[class_dim])
    draws = noise.standard_normal(shape, logits, item_keys)
    out = add_noise_(torch.empty_like(logits), modulation, draws, class_dim, clean=logits)
    if torch.finfo(out.dtype).max < 1e6:
        # float16 tops out at 65504 and a rare draw past 6 sigma could reach it: saturate, never inf.
        # Logits that were already infinite (tokens masked with -inf) stay so.
        limit = torch.finfo(out.dtype).max
        out = torch.where(logits.isinf(), out, out.clamp(-limit, limit))
    return out
