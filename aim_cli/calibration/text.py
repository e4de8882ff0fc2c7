"""Text calibration: multiple choice from cached next-token logits (analytic), free form by Monte Carlo.

A multiple-choice item is right when the greedy next token after the prompt is the right
choice's token. That is top-1 accuracy over the whole vocabulary, so the classification
machinery applies unchanged to the (N, V) next-token logits: one forward pass per batch.
For an encoder-decoder (T5, BART) the choices are decoder continuations of the encoded prompt:
the decisive logits are those of the decoder's first free token.
Free-form answers need whole generations per sigma, so sigma is found by a bracketed,
noisy bisection on seeded Monte Carlo generations and reported with its interval.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from aim_cli.calibration.classify import calibrate_target
from aim_cli.calibration.core import Calibration, MonteCarloCheck, Target, check_reachable, fmt
from aim_cli.errors import InputError
from aim_cli.models.language import LanguageModel
from aim_cli.modulation import Modulation, SeededNoise
from aim_cli.plans import ModulationPlan
from aim_cli.tasks.batches import ProgressCallback
from aim_cli.tasks.generate import GenerationSettings, encode_prompts, fitting_max_new_tokens, generate_completions

# Free-form search: coarse scan points per factor of ten, bisection steps, draws per scan point
# (bisection steps use half the checking draws: near the target the noise matters most), and
# how many times a check that misses the target is folded back into the fit.
SCAN_PER_DECADE = 2
BISECTION_STEPS = 5
DRAWS_PER_STEP = 3
REFINEMENTS = 2


@dataclass
class NextTokenLogits:
    """Next-token logits after each prompt and the right choice's token id."""

    logits: torch.Tensor  # (N, V) float32
    answers: torch.Tensor  # (N,) token ids
    seconds: float


def _continuation(lm: LanguageModel, prompt_ids: Sequence[int], prompt: str, text: str) -> list[int]:
    """Token ids `text` adds after the prompt (tokenized together, so merges at the seam count).

    An encoder-decoder's answer starts a fresh decoder sequence, so the choice is tokenized alone.
    """
    if lm.encoder_decoder:
        return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    joined = list(lm.tokenizer(prompt + text)["input_ids"])
    if joined[: len(prompt_ids)] == list(prompt_ids) and len(joined) > len(prompt_ids):
        tail = joined[len(prompt_ids) :]
        eos = lm.tokenizer.eos_token_id
        return tail[:-1] if len(tail) > 1 and tail[-1] == eos else tail
    return list(lm.tokenizer(text, add_special_tokens=False)["input_ids"])


def answer_tokens(lm: LanguageModel, items: Sequence[dict], prompt_ids: Sequence[Sequence[int]]) -> list[int]:
    """The first token of each item's right choice; the choices' first tokens must differ."""
    answers = []
    for index, (item, ids) in enumerate(zip(items, prompt_ids)):
        firsts = []
        for choice in item["choices"]:
            tokens = _continuation(lm, ids, str(item["prompt"]), str(choice))
            if not tokens:
                raise InputError(f"item {index + 1}: choice {choice!r} encodes to no tokens")
            firsts.append(tokens[0])
        if len(set(firsts)) < len(firsts):
            raise InputError(
                f"item {index + 1}: two choices start with the same token, so the next token cannot tell them apart",
                "use choices whose first tokens differ (e.g. single letters or digits)",
            )
        answers.append(firsts[int(item["answer"])])
    return answers


@torch.inference_mode()
def collect_next_token_logits(
    lm: LanguageModel, items: Sequence[dict], batch_size: int = 32, progress: ProgressCallback | None = None
) -> NextTokenLogits:
    """One forward pass per batch; prompts of equal length share a batch, so nothing is padded."""
    start = time.perf_counter()
    prompts = encode_prompts(lm, [str(item["prompt"]) for item in items])
    answers = answer_tokens(lm, items, [p.ids for p in prompts])
    rows: dict[int, torch.Tensor] = {}
    by_length: dict[int, list[int]] = {}
    for index, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt.ids), []).append(index)
    for members in by_length.values():
        for offset in range(0, len(members), batch_size):
            chunk = members[offset : offset + batch_size]
            ids = torch.tensor([prompts[i].ids for i in chunk], device=lm.device)
            last = lm.first_token_logits(ids)
            for i, row in zip(chunk, last):
                rows[i] = row
            if progress:
                progress(len(chunk))
    logits = torch.stack([rows[i] for i in range(len(prompts))])
    return NextTokenLogits(logits, torch.tensor(answers, device=logits.device), time.perf_counter() - start)


def calibrate_multiple_choice(
    lm: LanguageModel,
    items: Sequence[dict],
    target: Target,
    draws: int,
    seed: int,
    batch_size: int,
    progress: ProgressCallback | None = None,
) -> Calibration:
    """Exact expected accuracy over the vocabulary from cached next-token logits, then a check."""
    cached = collect_next_token_logits(lm, items, batch_size, progress)
    calibration = calibrate_target(cached.logits, cached.answers, target, draws=draws, seed=seed)
    calibration.task = "generate"
    calibration.cached_logits = (cached.logits, cached.answers)
    calibration.limit_label = f"chance (1/{cached.logits.shape[1]} tokens)"
    calibration.timing = {"forward_s": cached.seconds, **calibration.timing}
    token = "the decoder's first token" if lm.encoder_decoder else "the next token"
    calibration.notes.append(
        f"1 forward pass over {len(items)} prompts; the answer counts as right when {token} "
        "(argmax over the whole vocabulary) is the right choice's"
    )
    return calibration


def exact_match(prediction: str, answer: str) -> bool:
    """Right when the completion equals the answer after stripping surrounding whitespace."""
    return prediction.strip() == answer.strip()


class FreeFormScorer:
    """Exact-match accuracy of greedy generations at a given sigma and seed (one full pass)."""

    def __init__(self, lm: LanguageModel, items: Sequence[dict], batch_size: int, progress: ProgressCallback | None):
        self.lm = lm
        self.answers = [str(item["answer"]) for item in items]
        self.prompts = encode_prompts(lm, [str(item["prompt"]) for item in items])
        longest = max(len(lm.tokenizer(a, add_special_tokens=False)["input_ids"]) for a in self.answers)
        # Room for the answer and a little more, so a model that does not stop is scored wrong.
        self.settings = GenerationSettings(
            max_new_tokens=fitting_max_new_tokens(lm, self.prompts, longest + 2), batch_size=batch_size
        )
        self.progress = progress
        self.passes = 0
        self.seconds = 0.0

    def accuracy(self, sigma: float, seed: int) -> float:
        """One seeded generation pass over every prompt at utility sigma."""
        start = time.perf_counter()
        plan = ModulationPlan(Modulation(sigma=sigma), SeededNoise(seed), seed)
        right = sum(
            exact_match(c.completion, self.answers[c.index])
            for c in generate_completions(self.lm, self.prompts, plan, self.settings)
        )
        self.passes += 1
        self.seconds += time.perf_counter() - start
        if self.progress:
            self.progress(1)
        return right / len(self.answers)

    def check(self, sigma: float, draws: int, seed: int) -> MonteCarloCheck:
        """`draws` seeded passes at one sigma."""
        return MonteCarloCheck(sigma, [self.accuracy(sigma, seed + k) for k in range(draws)])


def calibrate_free_form(
    lm: LanguageModel,
    items: Sequence[dict],
    target: Target,
    draws: int,
    seed: int,
    batch_size: int,
    progress: ProgressCallback | None = None,
) -> Calibration:
    """Coarse seeded scan to bracket the target, noisy bisection in log-sigma, then R draws."""
    scorer = FreeFormScorer(lm, items, batch_size, progress)
    clean = scorer.accuracy(0.0, seed)
    limit = 0.0  # random tokens essentially never spell the answer
    check_reachable(target, clean, limit, "random tokens")
    return search_sigma(scorer, target, draws, seed, clean, _logit_scale(lm, scorer), len(items))


class SigmaScorer(Protocol):
    """What the Monte Carlo search measures: a metric per (sigma, seed), and its running cost."""

    passes: int
    seconds: float

    def check(self, sigma: float, draws: int, seed: int) -> MonteCarloCheck:
        """`draws` seeded measurements at one sigma."""
        ...


def search_sigma(
    scorer: SigmaScorer, target: Target, draws: int, seed: int, clean: float, scale: float, items: int
) -> Calibration:
    """Bracket the target by a coarse seeded scan from `scale`, bisect in log-sigma, fit, then check with `draws`.

    Shared by free-form text and lm-eval tasks: anything whose metric at a sigma must be measured.
    """
    limit = 0.0
    # From a tenth of the logit spread (where answers barely change) up by half decades.
    scan = [scale * 10 ** (k / SCAN_PER_DECADE) for k in range(-SCAN_PER_DECADE, 3 * SCAN_PER_DECADE + 1)]
    points: list[MonteCarloCheck] = []
    low, high = 0.0, None
    step_seed = seed + 1000
    per_step = max(DRAWS_PER_STEP, draws // 2)
    for sigma in scan:
        point = scorer.check(sigma, DRAWS_PER_STEP, step_seed)
        step_seed += DRAWS_PER_STEP
        points.append(point)
        if point.mean <= target.value:
            high = sigma
            break
        low = sigma
    if high is None:
        raise InputError(
            f"target accuracy {fmt(target.value)} was not reached by sigma {scan[-1]:.3g} "
            f"(measured {points[-1].mean:.3f} there)",
            "choose a lower target",
        )
    lo = math.log(low) if low > 0 else math.log(high) - math.log(10) / SCAN_PER_DECADE * 2
    hi = math.log(high)
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        point = scorer.check(math.exp(mid), per_step, step_seed)
        step_seed += per_step
        points.append(point)
        if point.mean > target.value:
            lo = mid
        else:
            hi = mid
    points.sort(key=lambda p: p.parameter)
    value = _isotonic_root(points, target.value) or math.exp(0.5 * (lo + hi))
    check = scorer.check(value, draws, seed)
    for round_ in range(REFINEMENTS):
        if check.low <= target.value <= check.high:
            break
        # The check is the most precise measurement so far: refit with it and look again.
        points = sorted([*points, check], key=lambda p: p.parameter)
        value = _isotonic_root(points, target.value) or value
        check = scorer.check(value, draws, seed + 7919 * (round_ + 1))
    warnings = []
    if not check.low <= target.value <= check.high:
        warnings.append(
            f"the measured accuracy at the chosen sigma ({check.mean:.3f}, 95% CI {check.low:.3f}-{check.high:.3f}) "
            "does not cover the target: the curve is steep or noisy here; more data or --draws narrows it"
        )
    for earlier, later in itertools.pairwise(points):
        if later.mean - earlier.mean > max(0.05, earlier.half_width + later.half_width):
            warnings.append(
                f"the measured accuracy is not monotone: {earlier.mean:.3f} at sigma {earlier.parameter:.3g} "
                f"but {later.mean:.3f} at {later.parameter:.3g}"
            )
            break
    others = [p for p in points if p.parameter != value]
    curve = sorted([(0.0, clean), *[(p.parameter, p.mean) for p in others], (value, check.mean)])
    return Calibration(
        task="generate",
        target=target,
        value=value,
        predicted=check.mean,
        clean=clean,
        limit=limit,
        limit_label="random tokens",
        curve=curve,
        check=check,
        points=others,
        items=items,
        seed=seed,
        timing={"generation_s": scorer.seconds},
        warnings=warnings,
        analytic=False,
        notes=[
            f"free-form answers have no closed form: {scorer.passes} seeded generation passes "
            f"(scan, {BISECTION_STEPS} bisection steps, checks of {draws} draws); the curve column is measured"
        ],
    )


def _isotonic_root(points: Sequence[MonteCarloCheck], target: float) -> float | None:
    """Where a decreasing fit through all measured points meets the target.

    Pool-adjacent-violators (weighted by draws) smooths the noisy bisection measurements
    into a non-increasing curve; the root is interpolated linearly in log-sigma.
    """
    blocks: list[list[float]] = []  # [weighted sum, weight, first sigma, last sigma]
    for point in points:
        blocks.append([point.mean * point.draws, float(point.draws), point.parameter, point.parameter])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            last = blocks.pop()
            blocks[-1][0] += last[0]
            blocks[-1][1] += last[1]
            blocks[-1][3] = last[3]
    # Each pooled block is represented at the geometric centre of the sigmas it covers.
    fitted = [(math.sqrt(b[2] * b[3]), b[0] / b[1]) for b in blocks]
    for (s0, v0), (s1, v1) in itertools.pairwise(fitted):
        if v0 >= target >= v1 and v0 > v1:
            t = (v0 - target) / (v0 - v1)
            return math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
    return None


def _logit_scale(lm: LanguageModel, scorer: FreeFormScorer) -> float:
    """Median spread of the first prompts' next-token logits: where the sigma scan starts."""
    with torch.inference_mode():
        prompt = scorer.prompts[0]
        ids = torch.tensor([prompt.ids], device=lm.device)
        row = lm.first_token_logits(ids)[0]
    spread = float(row.max() - row.median())
    return spread if spread > 0 and np.isfinite(spread) else 1.0
