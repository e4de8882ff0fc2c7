"""Per-step cost of the vLLM plugin's apply() at batch 32 x vocab 32k, against the plain logits path.

The plain path is what vLLM's sampler does to the same logits anyway in a sampling step
(temperature, softmax, then its Gumbel-style draw: probs / Exponential(1) noise, argmax per row);
a greedy step (argmax alone) is reported beside it. aim's cost: apply() with no aim requests in the
batch (what every request pays once the plugin is installed), with all 32 rows on a seeded tier,
and with all 32 on a keyed tier (key = HMAC of 512 prompt + 64 generated token ids per row).
Measured on CPU, one thread, interleaved repetitions: on a GPU the noise is elementwise work on the
device while the keys are still hashed on the host.

Uses the real processor (V1-runner interface) when vLLM is importable, else the same serving core
calls it makes (aim_cli/serving.py).

A second row measures the keys of keyed rows at long context (256 rows x 32k tokens, one new
token per step): hashing each row's whole history every step (token_key, what the plugin did
before) against serving.TokenHasher, which feeds each step only the new token.
"""

from __future__ import annotations

import os
import statistics

import torch
from timing import interleaved

from aim_cli import serving
from aim_cli.modulation import token_key

BATCH, VOCAB, PROMPT, GENERATED = 32, 32000, 512, 64
GOAL = 1.5  # aim's tiers should cost at most about one more sampling step
LONG_ROWS, LONG_CONTEXT = 256, 32768
KEY_GOAL_MS = 5.0  # keys of a full batch of long-context keyed rows: a few ms per step at most


class _Vocabulary:
    """The served tokenizer, as far as tiers without focus words need it: its size (no padding columns)."""

    def __len__(self) -> int:
        return VOCAB


def _steppers() -> tuple[str, dict]:
    """name -> callable(logits) for the three aim cases, through vLLM's processor if it is installed."""
    os.environ.setdefault(serving.KEY_ENV, "benchmark key")
    prompts = [[(7 * i + j) % VOCAB for j in range(PROMPT)] for i in range(BATCH)]
    outputs = [[(11 * i + j) % VOCAB for j in range(GENERATED)] for i in range(BATCH)]
    seeded = {"aim_sigma": 2.0, "aim_seed": 1}
    keyed = {"aim_sigma": 2.0, "aim_keyed": True}
    try:
        from types import SimpleNamespace

        from vllm import SamplingParams
        from vllm.v1.sample.logits_processor import BatchUpdate

        from aim_cli.integrations.vllm import AimV1LogitsProcessor
    except ImportError:
        plans = serving.PlanCache(_Vocabulary)

        def core(args: dict | None):
            plan = plans.resolve(serving.request_profile(args, {})) if args else None

            def step(logits: torch.Tensor) -> torch.Tensor:
                if plan is None:
                    return logits
                rows = [(i, plan, plan.item_key(prompts[i] + outputs[i], PROMPT)) for i in range(BATCH)]
                return serving.modulate_rows(logits, rows)

            return step

        return "serving core (vLLM not installed)", {"none": core(None), "seeded": core(seeded), "keyed": core(keyed)}

    def processor(args: dict | None):
        proc = AimV1LogitsProcessor(
            SimpleNamespace(model_config=SimpleNamespace(tokenizer="")), torch.device("cpu"), False
        )
        proc._plans = serving.PlanCache(_Vocabulary)  # no tokenizer files: a stand-in of the vocabulary's size
        params = SamplingParams(temperature=1.0, extra_args=args)
        proc.update_state(BatchUpdate(BATCH, [], [(i, params, prompts[i], outputs[i]) for i in range(BATCH)], []))
        return proc.apply

    return "vLLM processor apply()", {"none": processor(None), "seeded": processor(seeded), "keyed": processor(keyed)}


def run(quick: bool = False) -> list[dict]:
    """Rows: apply() time / plain sampling-step time, for no, seeded and keyed aim rows."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clean = torch.randn(BATCH, VOCAB) * 3
    source, steps = _steppers()

    def plain() -> None:
        probs = torch.softmax(clean / 0.7, dim=-1)
        probs.div_(torch.empty_like(probs).exponential_()).argmax(dim=-1)

    def greedy() -> None:
        clean.argmax(dim=-1)

    calls = [plain] + [(lambda s=s: s(clean.clone())) for s in steps.values()]
    extra = [lambda: clean.clone(), greedy]  # the clone each aim call includes is subtracted below
    times = interleaved(calls + extra, reps=9 if quick else 41, warm=True)
    medians = [statistics.median(t) for t in times]
    base, clone, argmax = medians[0], medians[-2], medians[-1]
    rows = []
    for (name, _), spent in zip(steps.items(), medians[1:-2]):
        cost = max(spent - clone, 0.0)
        ratio = cost / base
        rows.append(
            {
                "name": f"vLLM plugin apply, batch {BATCH} x {VOCAB}, {name} aim rows / plain sampling step",
                "measured": round(ratio, 3),
                "goal": f"<= {GOAL}",
                "met": ratio <= GOAL,
                "detail": f"{source}: {cost * 1e3:.3f} ms vs sampling step {base * 1e3:.3f} ms "
                f"(greedy argmax {argmax * 1e3:.3f} ms) per step, CPU, 1 thread",
            }
        )
    return rows + run_long_context_keys(quick)


def run_long_context_keys(quick: bool = False) -> list[dict]:
    """Per-step cost of the keys of LONG_ROWS keyed rows at LONG_CONTEXT tokens: full rehash vs incremental."""
    rows, context = (32, 8192) if quick else (LONG_ROWS, LONG_CONTEXT)
    histories = [[(13 * r + t) % VOCAB for t in range(context)] for r in range(rows)]
    hashers = [serving.TokenHasher() for _ in range(rows)]
    for history, hasher in zip(histories, hashers):  # admission: the one full hash per request
        hasher.key(history, 0, lambda h=history: h)
    step = [0]

    def full() -> None:
        for history in histories:
            token_key(history)

    def incremental() -> None:
        step[0] += 1
        for history, hasher in zip(histories, hashers):
            history.append(step[0] % VOCAB)  # the token sampled last step
            start = hasher.resume_at
            hasher.key(history[start:], start, lambda h=history: h)

    times = interleaved([full, incremental], reps=3 if quick else 7, warm=False)
    before, after = (statistics.median(t) for t in times)
    return [
        {
            "name": f"keyed row keys per step, {rows} rows x {context} tokens (ms)",
            "measured": round(after * 1e3, 3),
            "goal": f"<= {KEY_GOAL_MS}",
            "met": after * 1e3 <= KEY_GOAL_MS,
            "detail": f"incremental sha256 (new tokens only) {after * 1e3:.3f} ms "
            f"vs full-history token_key {before * 1e3:.1f} ms "
            f"per step ({before / max(after, 1e-12):.0f}x), CPU, 1 thread",
        }
    ]


if __name__ == "__main__":
    for row in run(quick=False):
        print(f"{row['name']}: {row['measured']} (goal {row['goal']}, met {row['met']}) - {row['detail']}")
