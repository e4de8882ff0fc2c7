"""Deterministic arithmetic task generator for the embedded demo language model."""

from __future__ import annotations

import random

# Operands stay small so a sub-megabyte model learns the task exactly on a CPU in minutes.
MAX_OPERAND: int = 49
OPERATORS: tuple[str, ...] = ("+", "-")
# Roughly one operand pair in ten is held out of training and used only for evaluation.
HOLDOUT_MODULUS: int = 10
# Fixed seeds keep every split identical across runs, machines and processes.
_SPLIT_SEEDS: dict[str, int] = {"train": 1234, "eval": 5678}
_MC_SEED: int = 4321
DIGITS: tuple[str, ...] = tuple("0123456789")

DEFAULT_PROMPT: str = "23+45="


def _answer(a: int, op: str, b: int) -> int:
    """Return the exact result of ``a op b``."""
    return a + b if op == "+" else a - b


def _is_held_out(a: int, op: str, b: int) -> bool:
    """Return True when the problem belongs to the evaluation hold-out (a fixed arithmetic hash)."""
    # An explicit hash (not Python's ``hash``) so the split never depends on PYTHONHASHSEED.
    return (a * 37 + b * 11 + (7 if op == "-" else 0)) % HOLDOUT_MODULUS == 3


def _format(a: int, op: str, b: int) -> dict:
    """Build one problem dict with ``prompt`` and ``answer`` strings."""
    return {"prompt": f"{a}{op}{b}=", "answer": str(_answer(a, op, b))}


def all_problems() -> list[tuple[int, str, int]]:
    """Return every (a, op, b) triple of the task; subtraction only where the answer is non-negative."""
    triples: list[tuple[int, str, int]] = []
    for op in OPERATORS:
        for a in range(MAX_OPERAND + 1):
            for b in range(MAX_OPERAND + 1):
                if _answer(a, op, b) >= 0:
                    triples.append((a, op, b))
    return triples


def _pool(split: str) -> list[tuple[int, str, int]]:
    """Return the triples of one split, balanced between addition and subtraction."""
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_SEEDS)}")
    want_held_out = split == "eval"
    triples = [t for t in all_problems() if _is_held_out(*t) == want_held_out]
    rng = random.Random(_SPLIT_SEEDS[split])
    by_op = {op: [t for t in triples if t[1] == op] for op in OPERATORS}
    for group in by_op.values():
        rng.shuffle(group)
    # Interleave operators so any prefix of the pool mixes addition and subtraction evenly.
    interleaved: list[tuple[int, str, int]] = []
    for i in range(max(len(g) for g in by_op.values())):
        for op in OPERATORS:
            if i < len(by_op[op]):
                interleaved.append(by_op[op][i])
    return interleaved


def split_size(split: str) -> int:
    """Return how many distinct problems ``split`` holds."""
    return len(_pool(split))


def make_problems(split: str, n: int) -> list[dict]:
    """Return ``n`` deterministic problems of ``split`` ("train" or "eval"), cycling if the pool is smaller."""
    if n < 0:
        raise ValueError("n must be non-negative")
    pool = _pool(split)
    return [_format(*pool[i % len(pool)]) for i in range(n)]


def evaluation_set(n: int = 200) -> list[dict]:
    """Return the first ``n`` held-out evaluation problems (operand pairs never seen in training)."""
    return make_problems("eval", n)


def multiple_choice_set(n: int = 200) -> list[dict]:
    """Return ``n`` single-digit-answer problems with four single-token digit choices and the right index."""
    # Single-digit answers make the very next token after the prompt the whole answer.
    candidates = [t for t in all_problems() if _answer(*t) <= 9]
    # Held-out problems first, so the MC set overlaps training as little as possible.
    held = [t for t in candidates if _is_held_out(*t)]
    seen = [t for t in candidates if not _is_held_out(*t)]
    rng = random.Random(_MC_SEED)
    rng.shuffle(held)
    rng.shuffle(seen)
    ordered = held + seen
    items: list[dict] = []
    for i in range(n):
        a, op, b = ordered[i % len(ordered)]
        right = str(_answer(a, op, b))
        distractors = rng.sample([d for d in DIGITS if d != right], 3)
        choices = [*distractors, right]
        rng.shuffle(choices)
        items.append({"prompt": f"{a}{op}{b}=", "choices": choices, "answer": choices.index(right)})
    return items


def exact_match(prediction: str, answer: str) -> bool:
    """Return True when the prediction equals the answer after stripping surrounding whitespace."""
    return prediction.strip() == answer.strip()
