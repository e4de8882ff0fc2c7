"""Interleaved timing shared by the benchmarks: A, B, C, A, B, C, ... so machine noise hits all alike."""

from __future__ import annotations

import time
from collections.abc import Callable


def interleaved(runs: list[Callable[[], object]], reps: int, warm: bool = False) -> list[list[float]]:
    """Seconds per call of each run over `reps` interleaved repetitions (optionally one warm-up call each)."""
    if warm:
        for run in runs:
            run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(reps):
        for run, spent in zip(runs, times):
            start = time.perf_counter()
            run()
            spent.append(time.perf_counter() - start)
    return times
