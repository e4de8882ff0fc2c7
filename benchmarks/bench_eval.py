"""Benchmark: `aim eval` against lm-eval's own run, and lm-eval calibration against a 101-sigma sweep.

Rows (needs aim-cli[eval]; without lm-eval one row says so and nothing is timed):
- aim eval at sigma 2 / lm-eval's `hf` model on a local one-token multiple-choice task, both
  models loaded once, full simple_evaluate runs, medians of interleaved repetitions. Goal <= 1.05.
  The same on a generate_until task with answer extraction: informational (noisy generations
  stop at other lengths than clean ones, so the work differs).
- the loglikelihood requests alone (the forward passes plus aim's per-position noise): informational,
  the hook's cost without lm-eval's task building and metrics around it.
- `aim calibrate --task lm-eval` on the single-token multiple-choice task (one clean pass, exact
  curve, root, Monte Carlo check) against a 101-sigma sweep of lm-eval runs at sigma 0..20 (timed
  on 6 or 11 of the sigmas and scaled to 101: each costs a full run). Goal >= 30.

All on the demo arithmetic LM, CPU, one thread.

    python benchmarks/bench_eval.py [--quick]
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EVAL_GOAL = 1.05
CALIBRATION_GOAL = 30.0
SIGMAS = [round(0.2 * k, 1) for k in range(101)]  # the reference sweep: 0..20 step 0.2

_MC = """task: bench_mc
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list: [{{metric: acc}}]
"""
_GEN = """task: bench_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: {data}}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
generation_kwargs: {{until: ["</s>"], max_gen_toks: 4, do_sample: false}}
filter_list:
  - name: extract
    filter: [{{function: regex, regex_pattern: "(-?[0-9]+)"}}, {{function: take_first}}]
metric_list: [{{metric: exact_match}}]
"""


def write_tasks(folder: Path, mc_items: int, gen_items: int) -> None:
    """Local lm-eval tasks over generated JSONL (sums whose answer's first digit is the one-token choice)."""
    rng = random.Random(0)
    with open(folder / "mc.jsonl", "w", encoding="utf-8") as handle:
        for _ in range(mc_items):
            a, b = rng.randrange(50), rng.randrange(50)
            right = str(a + b)[0]
            choices = [right, *rng.sample([d for d in "0123456789" if d != right], 3)]
            rng.shuffle(choices)
            handle.write(
                json.dumps({"question": f"{a}+{b}=", "choices": choices, "answer": choices.index(right)}) + "\n"
            )
    with open(folder / "gen.jsonl", "w", encoding="utf-8") as handle:
        for _ in range(gen_items):
            a, b = rng.randrange(50), rng.randrange(50)
            handle.write(json.dumps({"question": f"{a}+{b}=", "answer": str(a + b)}) + "\n")
    (folder / "mc.yaml").write_text(_MC.format(data=folder / "mc.jsonl"), encoding="utf-8")
    (folder / "gen.yaml").write_text(_GEN.format(data=folder / "gen.jsonl"), encoding="utf-8")


def interleaved(calls: list[Callable[[], Any]], reps: int) -> list[list[float]]:
    """Wall-clock seconds of each call, alternating between them, `reps` times."""
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(reps):
        for index, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[index].append(time.perf_counter() - start)
    return times


def _skipped(reason: str) -> list[dict]:
    """The one row of a run without lm-eval."""
    return [{"name": "aim eval (lm-eval)", "measured": "skipped", "goal": "", "met": True, "detail": reason}]


def run(quick: bool = False) -> list[dict]:
    """The four rows (or one skip row)."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        from aim_cli.integrations.lm_eval import AimLM
    except ImportError as exc:
        return _skipped(f"lm-eval not installed ({exc}); pip install 'aim-cli[eval]'")
    import logging

    import torch

    from aim_cli import demo
    from aim_cli.calibration.core import Target
    from aim_cli.calibration.lm_eval import build_tasks, calibrate_lm_eval
    from aim_cli.profile import Profile

    torch.set_num_threads(1)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    os.environ.setdefault("TQDM_DISABLE", "1")
    model_dir = str(demo.model_dir("generate"))
    mc_items, gen_items = (100, 20) if quick else (300, 50)
    reps = 3 if quick else 5
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_tasks(Path(tmp), mc_items, gen_items)
        manager = TaskManager(include_path=tmp)
        plain = HFLM(pretrained=model_dir, device="cpu", batch_size=16)
        aim = AimLM(pretrained=model_dir, device="cpu", batch_size=16)
        aim.set_profile(Profile(sigma=2.0, seed=0))
        tasks = ["bench_mc", "bench_gen"]

        def evaluate(model: Any, names: list[str] = tasks) -> Any:
            return lm_eval.simple_evaluate(model=model, tasks=names, task_manager=manager, log_samples=False)

        evaluate(plain), evaluate(aim)  # warm-up: dataset caches, first-call costs
        for name, goal in (("bench_mc", EVAL_GOAL), ("bench_gen", None)):
            base, ours = (
                statistics.median(t)
                for t in interleaved([lambda n=name: evaluate(plain, [n]), lambda n=name: evaluate(aim, [n])], reps)
            )
            ratio = ours / base
            what = f"{mc_items} one-token MC docs" if name == "bench_mc" else f"{gen_items} generate_until docs"
            rows.append(
                {
                    "name": f"aim eval sigma 2 / lm-eval hf: {name} (full runs)",
                    "measured": round(ratio, 3),
                    "goal": f"<= {goal}" if goal else "",
                    "met": ratio <= goal if goal else True,
                    "detail": f"lm-eval hf {base:.2f} s, aim {ours:.2f} s per simple_evaluate of {what} (demo LM, "
                    f"CPU), median of {reps} interleaved"
                    + ("" if goal else "; informational: noisy generations stop at other lengths than clean ones"),
                }
            )

        (task,) = build_tasks(["bench_mc"], manager, None)
        requests = task.instances
        base, ours = (
            statistics.median(t)
            for t in interleaved(
                [lambda: plain.loglikelihood(requests, True), lambda: aim.loglikelihood(requests, True)], reps
            )
        )
        rows.append(
            {
                "name": "loglikelihood requests only: aim sigma 2 / lm-eval hf",
                "measured": round(ours / base, 3),
                "goal": "",
                "met": True,
                "detail": f"{len(requests)} requests: hf {base:.3f} s, aim {ours:.3f} s (forward passes + keyed "
                "noise at the scored positions, 52-token vocabulary, a model of ~0.7M parameters; informational)",
            }
        )

        timed = SIGMAS[::20] if quick else SIGMAS[::10]
        start = time.perf_counter()
        calibration = calibrate_lm_eval(aim, ["bench_mc"], manager, Target("accuracy", 0.6), 20, 0)
        calibrate_s = time.perf_counter() - start
        start = time.perf_counter()
        for sigma in timed:
            aim.set_profile(Profile(sigma=sigma, seed=0))
            evaluate(aim, ["bench_mc"])
        sweep_s = (time.perf_counter() - start) * len(SIGMAS) / len(timed)
        speedup = sweep_s / calibrate_s
        rows.append(
            {
                "name": "lm-eval single-token MC calibration vs 101-sigma sweep",
                "measured": round(speedup, 1),
                "goal": f">= {CALIBRATION_GOAL:g}",
                "met": speedup >= CALIBRATION_GOAL,
                "detail": f"calibrate {calibrate_s:.2f} s (sigma {calibration.value:.3g}, predicted "
                f"{calibration.predicted:.3f}, measured {calibration.check.mean:.3f}); sweep {sweep_s:.1f} s "
                f"(timed {len(timed)} of 101 sigmas, scaled), {mc_items} questions",
            }
        )
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['name']}: {row['measured']} (goal {row['goal']}, met {row['met']}) - {row['detail']}")
