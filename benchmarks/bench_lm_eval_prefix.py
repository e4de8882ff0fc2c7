"""Benchmark: lm-eval calibration when every choice is [shared prefix, one last token], against a 101-sigma sweep.

lm-eval moves a context's trailing space into each continuation; with a tokenizer where " " is a
token of its own (the demo LM's), every choice is [" ", digit]: two tokens sharing the first.
aim calibrates such a task in one clean pass (calibration.lm_eval, module docstring). The model
is a copy of the demo LM whose " " embedding is its "=" one, so "23+45" + " " reads as "23+45="
and the task ("23+45", choices " 6", " 3", ...) has a clean accuracy a target can sit under.

Rows (needs aim-cli[eval]; without lm-eval one row says so and nothing is timed):
- `calibrate_lm_eval` on the shared-prefix task (one clean pass, exact curve, root, Monte Carlo
  check on the cached logits) against a 101-sigma sweep of lm-eval runs at sigma 0..20 (timed on 6
  or 11 of the sigmas and scaled to 101: each costs a full run). Goal >= 30.
- the same calibration on the single-token version of the task (target delimiter ""): the
  shared-prefix one should cost about as much. Goal <= 1.5 (ratio of the two calibrations).
- the chosen sigma's exact prediction against lm-eval's own accuracy over seeded runs there
  (informational: the difference in units of its Monte Carlo standard error).
- without --quick, the Monte Carlo search aim fell back to before (informational: its time over the
  exact calibration's, and how far its sigma's exact accuracy is from the target).

All on the demo arithmetic LM, CPU, one thread.

    python benchmarks/bench_lm_eval_prefix.py [--quick]
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SWEEP_GOAL = 30.0
SAME_COST_GOAL = 1.5
SIGMAS = [round(0.2 * k, 1) for k in range(101)]  # the reference sweep: 0..20 step 0.2
TARGET = 0.6

_MC = """task: {name}
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: "{delimiter}"
metric_list: [{{metric: acc}}]
"""


def write_tasks(folder: Path, items: int) -> None:
    """The same sums twice: "a+b" then lm-eval's " " delimiter (shared prefix), and "a+b=" glued to the digit."""
    rng = random.Random(0)
    docs = []
    for _ in range(items):
        a, b = rng.randrange(50), rng.randrange(50)
        right = str(a + b)[0]
        choices = [right, *rng.sample([d for d in "0123456789" if d != right], 3)]
        rng.shuffle(choices)
        docs.append({"question": f"{a}+{b}", "choices": choices, "answer": choices.index(right)})
    for name, delimiter, suffix in (("prefix_mc", " ", ""), ("single_mc", "", "=")):
        lines = [json.dumps({**doc, "question": doc["question"] + suffix}) + "\n" for doc in docs]
        (folder / f"{name}.jsonl").write_text("".join(lines), encoding="utf-8")
        text = _MC.format(name=name, data=folder / f"{name}.jsonl", delimiter=delimiter)
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")


def write_space_model(source: Path, folder: Path) -> Path:
    """A copy of the demo LM whose " " token embedding is its "=" one (as tests/test_lm_eval.py builds it)."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source)
    space, equals = tokenizer.convert_tokens_to_ids([" ", "="])
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[space] = embeddings[equals]
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / name)
    return folder


def _skipped(reason: str) -> list[dict]:
    """The one row of a run without lm-eval."""
    return [{"name": "lm-eval shared-prefix calibration", "measured": "skipped", "goal": "", "met": True,
             "detail": reason}]  # fmt: skip


def run(quick: bool = False) -> list[dict]:
    """The three rows (or one skip row)."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager

        from aim_cli.integrations.lm_eval import AimLM
    except ImportError as exc:
        return _skipped(f"lm-eval not installed ({exc}); pip install 'aim-cli[eval]'")
    import logging

    import torch

    from aim_cli import demo
    from aim_cli.calibration.classify import expected_correct
    from aim_cli.calibration.core import Target
    from aim_cli.calibration.lm_eval import (
        build_tasks,
        calibrate_lm_eval,
        collect_choice_logits,
        shared_prefix_questions,
    )
    from aim_cli.profile import Profile

    torch.set_num_threads(1)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    items = 100 if quick else 300
    reps = 1 if quick else 3
    runs = 4 if quick else 10
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tasks_dir, model_dir = Path(tmp) / "tasks", Path(tmp) / "space_lm"
        tasks_dir.mkdir()
        write_tasks(tasks_dir, items)
        manager = TaskManager(include_path=str(tasks_dir))
        aim = AimLM(
            pretrained=str(write_space_model(demo.model_dir("generate"), model_dir)), device="cpu", batch_size=16
        )
        plain = AimLM(pretrained=str(demo.model_dir("generate")), device="cpu", batch_size=16)
        models = {"prefix_mc": aim, "single_mc": plain}

        def evaluate(name: str) -> Any:
            return lm_eval.simple_evaluate(model=models[name], tasks=[name], task_manager=manager, log_samples=False)

        evaluate("prefix_mc"), evaluate("single_mc")  # warm-up: dataset caches, first-call costs
        (task,) = build_tasks(["prefix_mc"], manager, None)
        questions = shared_prefix_questions(aim, task)
        if questions is None:
            return _skipped("the shared-prefix task did not qualify for the exact path (tokenizer changed?)")

        def calibrate(name: str) -> tuple[float, Any]:
            start = time.perf_counter()
            calibration = calibrate_lm_eval(models[name], [name], manager, Target("accuracy", TARGET), 20, 0)
            return time.perf_counter() - start, calibration

        timings: dict[str, list[float]] = {"prefix_mc": [], "single_mc": []}
        calibration = None
        for _ in range(reps):
            for name in timings:
                seconds, result = calibrate(name)
                timings[name].append(seconds)
                if name == "prefix_mc":
                    calibration = result
        assert calibration is not None
        prefix_s, single_s = statistics.median(timings["prefix_mc"]), statistics.median(timings["single_mc"])

        timed = SIGMAS[::20] if quick else SIGMAS[::10]
        start = time.perf_counter()
        for sigma in timed:
            aim.set_profile(Profile(sigma=sigma, seed=0))
            evaluate("prefix_mc")
        sweep_s = (time.perf_counter() - start) * len(SIGMAS) / len(timed)
        speedup = sweep_s / prefix_s
        rows.append(
            {
                "name": "lm-eval shared-prefix MC calibration vs 101-sigma sweep",
                "measured": round(speedup, 1),
                "goal": f">= {SWEEP_GOAL:g}",
                "met": speedup >= SWEEP_GOAL and calibration.analytic,
                "detail": f"calibrate {prefix_s:.2f} s ({'exact' if calibration.analytic else 'MONTE CARLO'}, sigma "
                f"{calibration.value:.3g}, predicted {calibration.predicted:.3f}); sweep {sweep_s:.1f} s (timed "
                f"{len(timed)} of 101 sigmas, scaled), {items} questions whose choices are [' ', digit]",
            }
        )
        ratio = prefix_s / single_s
        rows.append(
            {
                "name": "lm-eval calibration: shared-prefix / single-token choices",
                "measured": round(ratio, 3),
                "goal": f"<= {SAME_COST_GOAL:g}",
                "met": ratio <= SAME_COST_GOAL,
                "detail": f"shared prefix {prefix_s:.2f} s, one token {single_s:.2f} s, median of {reps} interleaved",
            }
        )

        cached = collect_choice_logits(aim, questions)
        probabilities = expected_correct(cached.logits, cached.answers, calibration.value)
        measured = []
        for seed in range(runs):
            aim.set_profile(Profile(sigma=calibration.value, seed=1000 + seed))
            measured.append(evaluate("prefix_mc")["results"]["prefix_mc"]["acc,none"])
        stderr = math.sqrt(float((probabilities * (1 - probabilities)).sum()) / (len(questions) ** 2 * runs))
        mean = sum(measured) / runs
        rows.append(
            {
                "name": "lm-eval shared-prefix: measured - predicted at the chosen sigma (standard errors)",
                "measured": round((mean - calibration.predicted) / stderr, 2),
                "goal": "",
                "met": True,
                "detail": f"predicted {calibration.predicted:.4f}, lm-eval over {runs} seeds {mean:.4f} "
                f"(standard error {stderr:.4f}); informational",
            }
        )
        if not quick:
            from aim_cli.calibration.lm_eval import _monte_carlo

            start = time.perf_counter()
            fallback = _monte_carlo(aim, ["prefix_mc"], manager, Target("accuracy", TARGET), 20, 0, None, items, None)
            fallback_s = time.perf_counter() - start
            off = float(expected_correct(cached.logits, cached.answers, fallback.value).mean()) - TARGET
            rows.append(
                {
                    "name": "lm-eval shared-prefix: Monte Carlo search (the old path) / exact calibration",
                    "measured": round(fallback_s / prefix_s, 1),
                    "goal": "",
                    "met": True,
                    "detail": f"Monte Carlo {fallback_s:.1f} s, sigma {fallback.value:.3g} whose exact accuracy is "
                    f"{off:+.3f} from the target; exact {prefix_s:.2f} s, sigma {calibration.value:.3g}; informational",
                }
            )
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['name']}: {row['measured']} (goal {row['goal']}, met {row['met']}) - {row['detail']}")
