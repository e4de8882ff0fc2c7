"""Cost of keyed noise: KeyedNoise.standard_normal vs SeededNoise.standard_normal (torch.randn).

Same shapes, one thread, interleaved repetitions; the ratio is median keyed / median seeded.
Keyed time includes the per-item HMAC of each content key (what a real call pays).
"""

from __future__ import annotations

import hashlib
import statistics

import torch
from timing import interleaved

from aim_cli.modulation import KeyedNoise, SeededNoise

GOAL = 1.5
# (name, shape): batch first, as the tasks call it.
CASES = [
    ("batch 32 x 10 classes", (32, 10)),
    ("batch 32 x 1000 classes", (32, 1000)),
    ("batch 32 x 32000 vocab", (32, 32000)),
    ("batch 8 x 150 cls x 128x128 px", (8, 150, 128, 128)),
]


def run(quick: bool = False) -> list[dict]:
    """Rows: keyed/seeded noise time per shape."""
    torch.set_num_threads(1)
    like = torch.zeros(1)
    seeded = SeededNoise(0)
    keyed = KeyedNoise(b"benchmark key")
    rows = []
    for name, shape in CASES:
        keys = [hashlib.sha256(str(i).encode()).digest() for i in range(shape[0])]
        big = len(shape) > 2
        reps = (3 if big else 15) if quick else (7 if big else 51)
        inner = 1 if big else 20  # small calls are microseconds: time several per repetition

        def seeded_call(inner: int = inner, shape: tuple[int, ...] = shape) -> None:
            for _ in range(inner):
                seeded.standard_normal(shape, like)

        def keyed_call(inner: int = inner, shape: tuple[int, ...] = shape, keys: list[bytes] = keys) -> None:
            for _ in range(inner):
                keyed.standard_normal(shape, like, keys)

        seeded_call(), keyed_call()  # warm-up
        times = interleaved([seeded_call, keyed_call], reps)
        base, cost = statistics.median(times[0]) / inner, statistics.median(times[1]) / inner
        ratio = cost / base
        rows.append(
            {
                "name": f"keyed noise {name} keyed/seeded",
                "measured": round(ratio, 2),
                "goal": f"<= {GOAL}",
                "met": ratio <= GOAL,
                "detail": f"seeded {base * 1e3:.3f} ms, keyed {cost * 1e3:.3f} ms per call, "
                f"{reps} interleaved reps x {inner} calls, 1 thread",
            }
        )
    return rows


if __name__ == "__main__":
    for row in run(quick=False):
        print(f"{row['name']}: {row['measured']} (goal {row['goal']}, met {row['met']}) - {row['detail']}")
