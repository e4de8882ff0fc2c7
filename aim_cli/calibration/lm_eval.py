"""Calibration on an lm-evaluation-harness task: analytic when one token decides each question, else Monte Carlo.

lm-eval scores a multiple-choice question by the loglikelihood of each choice after the shared
context, and picks the argmax. aim's lm-eval model (aim_cli.integrations.lm_eval) gives the
logits at position t of a row the keyed draw of the tokens up to t, so two requests whose rows
agree up to t see the same clean logits and the same noise there. The exact case is:

    every choice of a question has the same context ids, and continuations of equal length that
    are one token sequence P (possibly empty) followed by a last token t_i, the t_i all different.

Then every choice's row (context + P, left-truncated to max_length as lm-eval truncates) is the
same token sequence, the terms lm-eval sums for P are the same numbers for every choice, and the
choices differ only in the last term log_softmax(noisy logits at the row's last position)[t_i],
whose softmax normaliser is common too: lm-eval's pick is the argmax of the t_i columns of one
noisy logits vector. One-token choices (MMLU's " A".." D") are the case P = (); a tokenizer that
makes lm-eval's moved space " " its own token (choices " ", "A" / " ", "B") is P = (" ",).
Accuracy at any sigma is then classification accuracy over the C choice columns, which
calibration.classify computes exactly from one clean forward pass. Every other task (choices
that differ before their last token, generate_until, custom scoring) is calibrated by the
seeded Monte Carlo search of free-form text, each measurement one lm-eval run of the task.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from aim_cli.calibration.classify import calibrate_target
from aim_cli.calibration.core import Calibration, MonteCarloCheck, Target
from aim_cli.calibration.text import search_sigma
from aim_cli.errors import AimError, InputError
from aim_cli.profile import Profile

if TYPE_CHECKING:
    from pathlib import Path

    from aim_cli.calibration.runner import CalibrationRequest
    from aim_cli.integrations.lm_eval import AimLM


@dataclass
class ChoiceLogits:
    """Clean logits of each question's choice tokens at the answer position, and the right choice."""

    logits: torch.Tensor  # (N, C) float32
    answers: torch.Tensor  # (N,) choice indices
    seconds: float


def flatten_tasks(task_dict: dict) -> list[Any]:
    """The leaf Task objects of lm-eval's (possibly nested, for groups like mmlu) task dict."""
    leaves: list[Any] = []
    for value in task_dict.values():
        if isinstance(value, dict):
            leaves.extend(flatten_tasks(value))
        elif value is not None:
            leaves.append(value)
    return leaves


def _gold_index(task: Any, doc: dict, choices: Sequence[str]) -> int | None:
    """The right choice's index as lm-eval's multiple-choice scoring reads it; None if not one index."""
    gold = task.doc_to_target(doc)
    if isinstance(gold, str):
        return choices.index(gold) if gold in choices else None
    if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < len(choices):
        return gold
    return None


def encode_request(lm: AimLM, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) exactly as lm-eval's loglikelihood encodes a request.

    An empty context is conditioned on the prefix token (BOS or EOS), as TemplateLM.loglikelihood does.
    """
    if context == "":
        continuation_ids = lm.tok_encode(continuation, add_special_tokens=False)
        if continuation_ids and lm.prefix_token_id == continuation_ids[0]:
            return list(continuation_ids[:1]), list(continuation_ids[1:])
        return [lm.prefix_token_id], list(continuation_ids)
    context_ids, continuation_ids = lm._encode_pair(context, continuation)
    return list(context_ids), list(continuation_ids)


def decided_by_last_token(continuations: Sequence[Sequence[int]]) -> list[int] | None:
    """The choices' last tokens when the continuations share every token but their last; else None.

    Equal lengths, the same tokens before the last (the shared prefix, possibly none), and
    distinct last tokens: then one noisy logits vector decides the question (module docstring).
    """
    if not continuations or any(len(c) == 0 for c in continuations):
        return None
    prefix = list(continuations[0][:-1])
    if any(len(c) != len(prefix) + 1 or list(c[:-1]) != prefix for c in continuations):
        return None
    last = [int(c[-1]) for c in continuations]
    return last if len(set(last)) == len(last) else None


def shared_prefix_questions(lm: AimLM, task: Any) -> list[tuple[list[int], list[int], int]] | None:
    """(row ids, last token per choice, gold) per question, or None where one token does not decide each question.

    The requests are lm-eval's own (task.instances, fewshot context and all), encoded as lm-eval
    encodes them (encode_request). A task qualifies when, for every question, the choices have one
    context and continuations that differ only in their last token (decided_by_last_token), and
    the score is plain argmax accuracy against one gold index. The row is what lm-eval feeds the
    model for every choice: context + shared prefix, left-truncated to max_length.
    """
    config = task.config
    if task.OUTPUT_TYPE != "multiple_choice" or callable(getattr(config, "process_results", None)):
        return None
    if task.multiple_input or task.multiple_target:
        return None
    by_doc: dict[int, list[Any]] = {}
    for instance in task.instances:
        by_doc.setdefault(instance.doc_id, []).append(instance)
    questions = []
    for doc_id in sorted(by_doc):
        instances = sorted(by_doc[doc_id], key=lambda i: i.idx)
        doc = instances[0].doc
        choices = task.doc_to_choice(doc)
        if len(instances) != len(choices):  # e.g. acc_mutual_info adds unconditional requests
            return None
        contexts, continuations = set(), []
        for instance in instances:
            context, continuation = instance.arguments
            context_ids, continuation_ids = encode_request(lm, context, continuation)
            contexts.add(tuple(context_ids))
            continuations.append(continuation_ids)
        tokens = decided_by_last_token(continuations)
        gold = _gold_index(task, doc, choices)
        if len(contexts) != 1 or tokens is None or gold is None:
            return None
        # lm-eval's row: (context + continuation)[-(max_length + 1):][:-1], the same for every choice here.
        row = (list(contexts.pop()) + list(continuations[0][:-1]))[-lm.max_length :]
        questions.append((row, tokens, gold))
    return questions


@torch.inference_mode()
def collect_choice_logits(
    lm: AimLM, questions: Sequence[tuple[list[int], list[int], int]], progress: Callable[[int], None] | None = None
) -> ChoiceLogits:
    """One clean forward pass per batch (lm-eval's, without aim's hook); the choices' logits at the answer position."""
    from lm_eval.models.huggingface import HFLM

    start = time.perf_counter()
    batch_size = lm.batch_size if isinstance(lm.batch_size, int) else 16
    widths = {len(q[1]) for q in questions}
    if len(widths) != 1:
        raise InputError("the questions have different numbers of choices", "calibrate such a task by Monte Carlo")
    rows: list[torch.Tensor] = []
    for offset in range(0, len(questions), batch_size):
        chunk = questions[offset : offset + batch_size]
        width = max(len(q[0]) for q in chunk)
        # Right padding, as lm-eval pads loglikelihood batches: a causal model's earlier positions ignore it.
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (context, _, _) in enumerate(chunk):
            ids[row, : len(context)] = torch.tensor(context)
        logits = HFLM._model_call(lm, ids.to(lm.device))
        for row, (context, tokens, _) in enumerate(chunk):
            rows.append(logits[row, len(context) - 1, tokens].float().cpu())
        if progress:
            progress(len(chunk))
    answers = torch.tensor([q[2] for q in questions])
    return ChoiceLogits(torch.stack(rows), answers, time.perf_counter() - start)


def build_tasks(names: Sequence[str], manager: Any, limit: int | None) -> list[Any]:
    """lm-eval's leaf tasks of `names`, each with its requests built (lm-eval's own prompt and fewshot)."""
    if hasattr(manager, "load"):  # lm-eval >= 0.4.10: a flat dict of the leaf tasks
        tasks = list(manager.load(list(names))["tasks"].values())
    else:
        from lm_eval.tasks import get_task_dict

        tasks = flatten_tasks(get_task_dict(list(names), manager))
    for task in tasks:
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        if not task.instances:
            raise InputError(f"lm-eval task {task.config.task}: no documents to score", "check its data files")
    return tasks


def task_metric(results: dict, name: str) -> tuple[str, float]:
    """The first metric lm-eval reports for a task ('acc,none', 'exact_match,strict-match', ...)."""
    entry = results.get(name) or {}
    for key, value in entry.items():
        if "," in key and "_stderr" not in key and isinstance(value, (int, float)):
            return key, float(value)
    raise InputError(f"lm-eval reported no numeric metric for task {name}")


class LmEvalScorer:
    """The task's lm-eval metric at (sigma, seed): one full lm-eval run of the task per measurement."""

    def __init__(self, lm: AimLM, names: Sequence[str], manager: Any, limit: int | None, progress: Any = None):
        self.lm = lm
        self.names = list(names)
        self.manager = manager
        self.limit = limit
        self.progress = progress
        self.passes = 0
        self.seconds = 0.0
        self.metric = ""

    def accuracy(self, sigma: float, seed: int) -> float:
        """Mean of the named tasks' first metrics, measured by lm-eval at utility sigma with this seed."""
        import lm_eval

        start = time.perf_counter()
        self.lm.set_profile(Profile(sigma=sigma, seed=seed))
        out = lm_eval.simple_evaluate(
            model=self.lm, tasks=self.names, task_manager=self.manager, limit=self.limit, log_samples=False
        )
        metrics = [task_metric(out["results"], name) for name in self.names]
        self.metric = metrics[0][0]
        self.passes += 1
        self.seconds += time.perf_counter() - start
        if self.progress:
            self.progress(1)
        return sum(v for _, v in metrics) / len(metrics)

    def check(self, sigma: float, draws: int, seed: int) -> MonteCarloCheck:
        """`draws` seeded lm-eval runs at one sigma."""
        return MonteCarloCheck(sigma, [self.accuracy(sigma, seed + k) for k in range(draws)])


def calibrate_lm_eval(
    lm: AimLM,
    names: Sequence[str],
    manager: Any,
    target: Target,
    draws: int,
    seed: int,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Calibration:
    """The sigma at which the tasks' accuracy meets the target: analytic when one token decides every question."""
    start = time.perf_counter()
    tasks = build_tasks(names, manager, limit)
    questions: list[tuple[list[int], list[int], int]] = []
    for task in tasks:
        found = shared_prefix_questions(lm, task)
        if found is None:
            questions = []
            break
        questions.extend(found)
    if questions and len({len(q[1]) for q in questions}) == 1:
        calibration = _analytic(lm, questions, target, draws, seed, progress)
    else:
        documents = sum(len({i.doc_id for i in task.instances}) for task in tasks)
        calibration = _monte_carlo(lm, names, manager, target, draws, seed, limit, documents, progress)
    calibration.task = "lm-eval"
    calibration.model = str(getattr(lm, "aim_model_name", "") or "")
    calibration.data = ",".join(names)
    calibration.timing["total_s"] = time.perf_counter() - start
    return calibration


def _analytic(
    lm: AimLM,
    questions: Sequence[tuple[list[int], list[int], int]],
    target: Target,
    draws: int,
    seed: int,
    progress: Callable[[int], None] | None,
) -> Calibration:
    """Exact accuracy over the choice columns from one clean pass (calibration.classify), then its check."""
    cached = collect_choice_logits(lm, questions, progress)
    calibration = calibrate_target(cached.logits, cached.answers, target, draws=draws, seed=seed)
    choices = cached.logits.shape[1]
    calibration.limit_label = f"chance (1/{choices} choices)"
    calibration.timing = {"forward_s": cached.seconds, **calibration.timing}
    calibration.notes.append(
        f"1 forward pass over {len(questions)} questions whose {choices} choices differ only in their last token "
        "(one token each, or after a shared prefix that sees the same keyed noise in every choice): lm-eval picks "
        "the argmax of the choices' noisy logits there, so every sigma after that is analytic"
    )
    return calibration


def _monte_carlo(
    lm: AimLM,
    names: Sequence[str],
    manager: Any,
    target: Target,
    draws: int,
    seed: int,
    limit: int | None,
    documents: int,
    progress: Callable[[int], None] | None,
) -> Calibration:
    """Seeded lm-eval runs: a scan from the logit scale, bisection in log-sigma, then `draws` runs at the root."""
    from aim_cli.calibration.core import check_reachable

    scorer = LmEvalScorer(lm, names, manager, limit, progress)
    clean = scorer.accuracy(0.0, seed)
    check_reachable(target, clean, 0.0, "no right answers")
    calibration = search_sigma(scorer, target, draws, seed, clean, 1.0, documents)
    calibration.limit_label = "no right answers"
    calibration.timing = {"lm_eval_s": scorer.seconds}
    calibration.notes = [
        f"the tasks' choices do not differ in one last token, so the curve is measured: {scorer.passes} seeded lm-eval "
        f"runs of {', '.join(names)} (metric {scorer.metric}; scan, bisection and {draws} checking draws)"
    ]
    return calibration


__all__ = [
    "ChoiceLogits",
    "LmEvalScorer",
    "calibrate_lm_eval",
    "calibrate_named_tasks",
    "collect_choice_logits",
    "decided_by_last_token",
    "shared_prefix_questions",
]


def calibrate_on_tasks(
    lm: AimLM,
    names: Sequence[str],
    manager: Any,
    request: CalibrationRequest,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Calibration:
    """The sigma for a target accuracy on lm-eval tasks (analytic where one token decides each question)."""
    if request.metric != "accuracy":
        raise AimError("lm-eval calibration reaches a target task accuracy", "use --target-acc")
    from aim_cli.tasks.evaluate import check_eval_counts, guarded

    check_eval_counts(limit, None)
    with guarded(manager, names):  # lm-eval's and datasets' failures named, user templates sandboxed
        calibration = calibrate_lm_eval(
            lm, names, manager, Target("accuracy", request.value), request.draws, request.seed, limit, progress
        )
    calibration.model = str(getattr(lm, "aim_model_name", ""))
    return calibration


def calibrate_named_tasks(
    request: CalibrationRequest,
    model: str | None,
    tasks: str,
    include_path: Path | None,
    limit: int | None,
    device: str,
    trust_code: bool = False,
    notice: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Calibration:
    """`aim calibrate --task lm-eval`: load the model into aim's lm-eval model, then calibrate on the named tasks.

    The caller has already judged the task folder (scan_task_folder) with its outputs.
    """
    from aim_cli.tasks.evaluate import (
        check_eval_counts,
        check_tasks,
        load_eval_model,
        parse_task_names,
        quiet_lm_eval,
        require_lm_eval,
        task_manager,
    )

    names = parse_task_names(tasks)
    check_eval_counts(limit, None)
    require_lm_eval()
    quiet_lm_eval()
    manager = task_manager(include_path, trust_code)
    check_tasks(names, manager)
    lm = load_eval_model(model, device, request.batch_size)
    if notice is not None:
        notice(f"model: {lm.aim_model_name} | lm-eval tasks: {', '.join(names)}")
    return calibrate_on_tasks(lm, names, manager, request, limit, progress)
