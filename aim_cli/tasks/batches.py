"""Batching for the task pipelines: fixed-size batches, progress callbacks, and the non-finite-logits guard."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from aim_cli.errors import FailedInput, ModelError
from aim_cli.modulation import nonfinite_items

T = TypeVar("T")
ProgressCallback = Callable[[int], None]


def nonfinite_error(what: object) -> ModelError:
    """The one-line error for an input whose logits the model computed as NaN or inf."""
    return ModelError(
        f"the model computed non-finite logits (NaN/inf) for {what}: its weights are damaged or the dtype overflows",
        "check the checkpoint's weights, or run it in float32",
    )


def check_model_logits(logits: torch.Tensor, names: Sequence[object]) -> None:
    """Raise nonfinite_error for the first input (named by `names`, per row) whose logits are not finite."""
    bad = nonfinite_items(logits)
    if bad:
        raise nonfinite_error(names[bad[0]])


def drop_nonfinite(
    items: Sequence[T], logits: torch.Tensor, path: Callable[[T], Path]
) -> tuple[list[T], torch.Tensor, list[tuple[T, FailedInput]]]:
    """Split a batch at the model-output boundary: inputs with finite logits go on, the others fail.

    Returns the kept items, their logits, and (item, failure) for each input whose logits hold
    NaN/inf. One check when the batch is healthy; only a broken batch pays for indexing.
    """
    bad = set(nonfinite_items(logits))
    if not bad:
        return list(items), logits, []
    keep = [i for i in range(len(items)) if i not in bad]
    failures = [(items[i], FailedInput(path(items[i]), str(nonfinite_error(path(items[i]))))) for i in sorted(bad)]
    index = torch.tensor(keep, dtype=torch.long, device=logits.device)
    return [items[i] for i in keep], logits.index_select(0, index), failures


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
