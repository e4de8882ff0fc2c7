"""aim's lm-evaluation-harness model and `aim eval` / `aim calibrate --task lm-eval` (needs aim-cli[eval]).

Local custom tasks only: lm-eval task YAML over JSONL written here, on the demo arithmetic LM.
"""

from __future__ import annotations

import io
import json
import math
import random
import sys
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")  # lm-eval's HF model imports it

from aim_cli import demo  # noqa: E402
from aim_cli.profile import Profile  # noqa: E402

DEMO_LM = str(demo.model_dir("generate"))

MC_YAML = """task: toy_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""

# The same questions without "=", with lm-eval's default target delimiter " ": the demo tokenizer has " " as a
# token of its own, so every choice's continuation is [" ", digit], two tokens that share the first (scored
# on the space model below, which reads " " as "=").
SPACE_MC_YAML = MC_YAML.replace("task: toy_mc", "task: toy_space_mc").replace('target_delimiter: ""\n', "")

GEN_YAML = """task: toy_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
generation_kwargs:
  until: ["</s>"]
  max_gen_toks: 4
  do_sample: false
filter_list:
  - name: extract
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
      - function: take_first
metric_list:
  - metric: exact_match
"""


def write_tasks(folder: Path, mc_items: int = 60, gen_items: int = 12) -> Path:
    """An MMLU-style task (one-token choices after a shared context) and a GSM8K-style one (answer extraction)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    spaced: list[dict] = []
    with open(folder / "mc.jsonl", "w", encoding="utf-8") as handle:
        for _ in range(mc_items):
            a, b = rng.randrange(50), rng.randrange(50)
            right = str(a + b)[0]  # the answer's first digit: one token
            choices = [right, *rng.sample([d for d in "0123456789" if d != right], 3)]
            rng.shuffle(choices)
            doc = {"question": f"{a}+{b}=", "choices": choices, "answer": choices.index(right)}
            handle.write(json.dumps(doc) + "\n")
            spaced.append({**doc, "question": f"{a}+{b}"})
    with open(folder / "gen.jsonl", "w", encoding="utf-8") as handle:
        for _ in range(gen_items):
            a, b = rng.randrange(50), rng.randrange(50)
            handle.write(json.dumps({"question": f"{a}+{b}=", "answer": str(a + b)}) + "\n")
    (folder / "mc.yaml").write_text(MC_YAML.format(data=folder / "mc.jsonl"), encoding="utf-8")
    (folder / "gen.yaml").write_text(GEN_YAML.format(data=folder / "gen.jsonl"), encoding="utf-8")
    (folder / "space_mc.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in spaced), encoding="utf-8")
    (folder / "space_mc.yaml").write_text(SPACE_MC_YAML.format(data=folder / "space_mc.jsonl"), encoding="utf-8")
    return folder


def write_space_model(folder: Path) -> Path:
    """The demo LM with the space token's embedding set to "='s: a model where " " is its own token and means "=".

    lm-eval moves the space before each choice into the continuation, so every choice of
    toy_space_mc is [" ", digit] and the model, reading "23+45" + " " as "23+45=", answers well:
    a calibration target between chance and its clean accuracy is reachable.
    """
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(DEMO_LM)
    model = AutoModelForCausalLM.from_pretrained(DEMO_LM)
    space, equals = tokenizer.convert_tokens_to_ids([" ", "="])
    with torch.no_grad():
        embeddings = model.get_input_embeddings().weight
        embeddings[space] = embeddings[equals]
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(DEMO_LM) / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The two local tasks, written once for the module."""
    return write_tasks(tmp_path_factory.mktemp("lm_eval_tasks"))


@pytest.fixture(scope="module")
def manager(task_dir):
    """lm-eval's TaskManager with the local tasks (indexing the built-in ones takes seconds: once)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir))


@pytest.fixture(scope="module")
def space_model(tmp_path_factory) -> Path:
    """The space model's folder, written once for the module."""
    return write_space_model(tmp_path_factory.mktemp("space_lm"))


@pytest.fixture(scope="module")
def space_lm(space_model):
    """aim's lm-eval model on the space model."""
    from aim_cli.integrations.lm_eval import AimLM

    return AimLM(pretrained=str(space_model), device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def aim_lm():
    """aim's lm-eval model on the demo LM, loaded once (tests switch tiers with set_profile)."""
    from aim_cli.integrations.lm_eval import AimLM

    return AimLM(pretrained=DEMO_LM, device="cpu", batch_size=8)


def evaluate(model, manager, tasks=("toy_mc", "toy_gen"), **kwargs):
    """lm-eval's results dict for the tasks."""
    out = lm_eval.simple_evaluate(model=model, tasks=list(tasks), task_manager=manager, log_samples=False, **kwargs)
    return out["results"]


def test_position_keys_are_the_token_keys_of_each_prefix():
    """Position t of a row is keyed like `aim generate` keys the prefix row[:t+1] (token_key)."""
    from aim_cli.integrations.lm_eval import position_keys, prefix_keys
    from aim_cli.modulation import token_key

    rows = torch.randint(0, 50, (3, 7))
    keys = position_keys(rows)
    assert keys == [token_key(rows[r, : t + 1].tolist()) for r in range(3) for t in range(7)]
    assert prefix_keys(rows[1], 3) == keys[7 + 3 : 14]


def test_sigma_zero_is_lm_evals_own_hf_model_bit_for_bit(manager):
    """The registered `aim` model at sigma 0 reports exactly what lm-eval's `hf` model reports."""
    import aim_cli.integrations.lm_eval  # noqa: F401  (registers `aim`)

    args = f"pretrained={DEMO_LM},device=cpu"
    plain = evaluate("hf", manager, model_args=args, batch_size=8)
    ours = evaluate("aim", manager, model_args=args + ",sigma=0,seed=3", batch_size=8)
    assert ours == plain
    assert plain["toy_mc"]["acc,none"] > 0.9  # the task is one the demo model solves: a real comparison


def test_noise_is_reproducible_and_independent_of_batching(manager, aim_lm):
    """Noise is keyed on each position's prefix: same seed, same numbers at any batch size; another seed differs."""
    from aim_cli.integrations.lm_eval import AimLM

    aim_lm.set_profile(Profile(sigma=3.0, seed=1))
    first = evaluate(aim_lm, manager)
    single = AimLM(pretrained=DEMO_LM, device="cpu", batch_size=1)
    single.set_profile(Profile(sigma=3.0, seed=1))
    assert evaluate(single, manager) == first
    aim_lm.set_profile(Profile(sigma=3.0, seed=2))
    other = evaluate(aim_lm, manager)
    assert other != first
    assert first["toy_mc"]["acc,none"] < 1.0  # sigma 3 does move the decisions


def test_generation_sees_the_noise_scoring_sees(aim_lm):
    """generate_until's first token is the argmax of the noisy logits loglikelihood scores at that prefix."""
    aim_lm.set_profile(Profile(sigma=4.0, seed=5))
    prompts = [aim_lm.tok_encode(p) for p in ("12+30=", "7+8=", "40+9=", "33+3=")]
    for ids in prompts:
        context = torch.tensor([ids])
        scored = aim_lm._model_call(context)[0, -1]  # outside a scoring run: every position is noised
        generated = aim_lm._model_generate(
            context, max_length=len(ids) + 1, stop=[], attention_mask=torch.ones_like(context), do_sample=False
        )
        assert int(generated[0, len(ids)]) == int(scored.argmax())


def test_scored_loglikelihoods_are_log_softmax_of_noisy_logits(aim_lm, monkeypatch):
    """lm-eval's loglikelihood at sigma > 0 is log_softmax(logits + keyed noise) at the continuation positions.

    The reference noises every position (modulate_positions); the model draws only the scored ones.
    """
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    plan = aim_lm.set_profile(Profile(sigma=2.0, seed=9))
    pairs = [("12+30=", "42"), ("7+8=", "15"), ("40+9=", "4"), ("33+3=", "36")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    import aim_cli.integrations.lm_eval as integration

    reference = integration.modulate_positions
    with monkeypatch.context() as patch:  # scoring draws only the scored positions, never the all-positions path
        patch.setattr(integration, "modulate_positions", lambda *a: pytest.fail("noised every position"))
        scored = aim_lm.loglikelihood(requests, disable_tqdm=True)
    for (context, continuation), (ll, _) in zip(pairs, scored):
        context_ids, continuation_ids = aim_lm._encode_pair(context, continuation)
        ids = torch.tensor([context_ids + continuation_ids[:-1]])
        clean = HFLM._model_call(aim_lm, ids)
        noisy = torch.log_softmax(reference(clean, ids, plan)[0], dim=-1)
        positions = range(len(context_ids) - 1, ids.shape[1])
        expected = sum(float(noisy[t, token]) for t, token in zip(positions, continuation_ids))
        assert ll == pytest.approx(expected, abs=1e-4)


def test_focus_words_resolve_against_the_tokenizer(aim_lm):
    """focus in model_args ('w1|w2') becomes token targets; an unencodable word is a one-line ProfileError."""
    from aim_cli.errors import ProfileError
    from aim_cli.integrations.lm_eval import eval_profile

    plan = aim_lm.set_profile(eval_profile(sigma=0.0, focus="7:up|3:down", seed=0))
    assert plan.modulation.has_focus and len(plan.target_names) == 2
    with pytest.raises(ProfileError):
        aim_lm.set_profile(eval_profile(focus="\u4e2d", seed=0))


def test_choice_logits_are_the_ones_lm_eval_scores(manager, aim_lm):
    """The analytic path reads the position and tokens lm-eval scores: differences of its loglikelihoods."""
    from aim_cli.calibration.lm_eval import build_tasks, collect_choice_logits, shared_prefix_questions

    aim_lm.set_profile(Profile(sigma=0.0, seed=0))
    (task,) = build_tasks(["toy_mc"], manager, 10)
    questions = shared_prefix_questions(aim_lm, task)
    assert questions is not None and len(questions) == 10
    cached = collect_choice_logits(aim_lm, questions)
    instances = sorted(task.instances, key=lambda i: (i.doc_id, i.idx))
    lls = torch.tensor([ll for ll, _ in aim_lm.loglikelihood(instances, disable_tqdm=True)]).view(10, 4)
    torch.testing.assert_close(lls - lls[:, :1], cached.logits - cached.logits[:, :1], atol=1e-4, rtol=0)
    golds = torch.tensor([task.doc_to_target(doc) for doc in task.eval_docs][:10])
    assert torch.equal(cached.answers, golds)


def test_generate_until_tasks_are_not_analytic(manager, aim_lm):
    """Only multiple choice after one shared context qualifies for the exact curve."""
    from aim_cli.calibration.lm_eval import build_tasks, shared_prefix_questions

    (task,) = build_tasks(["toy_gen"], manager, 4)
    assert shared_prefix_questions(aim_lm, task) is None


@pytest.mark.parametrize(
    ("continuations", "decisive"),
    [
        ([[7], [8], [9]], [7, 8, 9]),  # one token each (MMLU's " A".." D")
        ([[25, 7], [25, 8]], [7, 8]),  # lm-eval's moved space as its own token, then the choice
        ([[1, 2, 7], [1, 2, 8], [1, 2, 9]], [7, 8, 9]),  # a longer shared prefix
        ([[25, 7], [26, 8]], None),  # the choices part before their last token
        ([[7, 25], [8, 25]], None),  # a shared suffix: the last token sees different rows
        ([[25, 7], [7]], None),  # different lengths: one choice sums a term the other lacks
        ([[25, 7], [25, 7]], None),  # two choices with the same last token: a tie, not a decision
        ([[], [7]], None),  # a choice that adds no token
        ([], None),
    ],
)
def test_choices_are_decided_by_their_last_token_only_when_all_else_is_shared(continuations, decisive):
    """The exact case: equal lengths, every token but the last shared, distinct last tokens."""
    from aim_cli.calibration.lm_eval import decided_by_last_token

    assert decided_by_last_token(continuations) == decisive


def test_shared_prefix_questions_read_the_row_every_choice_feeds_the_model(manager, space_lm):
    """With " " its own token, each choice is [" ", digit]: the row is context + " ", the tokens the digits."""
    from aim_cli.calibration.lm_eval import build_tasks, encode_request, shared_prefix_questions

    space = space_lm.tok_encode(" ", add_special_tokens=False)
    assert len(space) == 1  # the premise: the demo tokenizer has " " as a token of its own
    (task,) = build_tasks(["toy_space_mc"], manager, 6)
    questions = shared_prefix_questions(space_lm, task)
    assert questions is not None and len(questions) == 6
    for (row, tokens, gold), doc in zip(questions, task.eval_docs):
        instances = sorted((i for i in task.instances if i.doc == doc), key=lambda i: i.idx)
        encoded = [encode_request(space_lm, *i.arguments) for i in instances]
        assert all(len(continuation) == 2 and continuation[0] == space[0] for _, continuation in encoded)
        assert row == encoded[0][0] + space
        assert tokens == [continuation[1] for _, continuation in encoded]
        assert gold == doc["answer"]


def test_shared_prefix_loglikelihoods_differ_as_the_last_tokens_noisy_logits(manager, space_lm):
    """lm-eval's noisy scores of one question's choices differ exactly as their last tokens' noisy logits.

    The shared " " is scored at a position every choice reaches through the same tokens, so it gets
    the same clean logit and the same keyed draw in every choice and cancels; what is left is the
    clean choice logits (collect_choice_logits) plus the keyed draw of the row at its last position.
    """
    from aim_cli.calibration.lm_eval import build_tasks, collect_choice_logits, shared_prefix_questions
    from aim_cli.modulation import token_key

    (task,) = build_tasks(["toy_space_mc"], manager, 12)
    questions = shared_prefix_questions(space_lm, task)
    assert questions is not None
    cached = collect_choice_logits(space_lm, questions)
    sigma = 3.0
    plan = space_lm.set_profile(Profile(sigma=sigma, seed=4))
    vocab = space_lm.model.config.vocab_size
    like = torch.zeros((), dtype=cached.logits.dtype)
    draws = plan.noise.standard_normal((len(questions), vocab), like, [token_key(row) for row, _, _ in questions])
    tokens = torch.tensor([q[1] for q in questions])
    noisy = cached.logits + sigma * draws.gather(1, tokens)
    instances = sorted(task.instances, key=lambda i: (i.doc_id, i.idx))
    lls = torch.tensor([ll for ll, _ in space_lm.loglikelihood(instances, disable_tqdm=True)]).view(12, 4)
    torch.testing.assert_close(lls - lls[:, :1], noisy - noisy[:, :1], atol=1e-4, rtol=0)
    assert not torch.equal(noisy.argmax(dim=1), cached.logits.argmax(dim=1))  # the noise did move decisions


@pytest.mark.slow
def test_monte_carlo_calibration_on_a_generate_until_task(manager, aim_lm):
    """A GSM8K-style task is calibrated by seeded lm-eval runs; the chosen sigma's runs sit near the target."""
    from aim_cli.calibration.core import Target
    from aim_cli.calibration.lm_eval import calibrate_lm_eval

    calibration = calibrate_lm_eval(aim_lm, ["toy_gen"], manager, Target("accuracy", 0.5), draws=3, seed=0)
    assert not calibration.analytic and calibration.value > 0
    assert calibration.clean == 1.0
    # 12 documents x 3 draws: a generous band, but a sigma off by a factor of two lands outside it.
    assert 0.2 <= calibration.check.mean <= 0.8, calibration.check.values


@pytest.mark.slow
def test_measured_mc_accuracy_matches_the_analytic_prediction(manager, aim_lm):
    """lm-eval's accuracy over seeds agrees with the exact curve from one clean pass, within Monte Carlo error."""
    from aim_cli.calibration.classify import expected_correct
    from aim_cli.calibration.lm_eval import build_tasks, collect_choice_logits, shared_prefix_questions

    (task,) = build_tasks(["toy_mc"], manager, None)
    questions = shared_prefix_questions(aim_lm, task)
    assert questions is not None and len(questions) == 60
    cached = collect_choice_logits(aim_lm, questions)
    sigma = 4.0
    probabilities = expected_correct(cached.logits, cached.answers, sigma)
    predicted = float(probabilities.mean())
    assert 0.4 < predicted < 0.85  # a sigma where noise decides: the test can fail
    runs = 8
    measured = []
    for seed in range(runs):
        aim_lm.set_profile(Profile(sigma=sigma, seed=100 + seed))
        measured.append(evaluate(aim_lm, manager, tasks=("toy_mc",))["toy_mc"]["acc,none"])
    # Each question is an independent Bernoulli(p_i) per seed: the mean's variance is sum p(1-p) / (N^2 R).
    n = len(questions)
    stderr = math.sqrt(float((probabilities * (1 - probabilities)).sum()) / (n * n * runs))
    assert abs(sum(measured) / runs - predicted) < 4 * stderr + 1e-9, (measured, predicted, stderr)


@pytest.mark.slow
def test_shared_prefix_calibration_is_exact_and_lm_eval_agrees_at_its_sigma(manager, space_lm):
    """Choices [" ", digit] calibrate in one pass; lm-eval's accuracy over seeds at the chosen sigma is the prediction.

    The tolerance is the Monte Carlo error of `runs` seeded lm-eval runs: each question is an
    independent Bernoulli(p_i) per seed, so the mean's variance is sum p_i (1 - p_i) / (N^2 runs).
    """
    from aim_cli.calibration.classify import expected_correct
    from aim_cli.calibration.core import Target
    from aim_cli.calibration.lm_eval import (
        build_tasks,
        calibrate_lm_eval,
        collect_choice_logits,
        shared_prefix_questions,
    )

    target = 0.6
    calibration = calibrate_lm_eval(space_lm, ["toy_space_mc"], manager, Target("accuracy", target), draws=20, seed=0)
    assert calibration.analytic and calibration.value > 0
    assert calibration.predicted == pytest.approx(target, abs=1e-3)
    (task,) = build_tasks(["toy_space_mc"], manager, None)
    questions = shared_prefix_questions(space_lm, task)
    assert questions is not None
    cached = collect_choice_logits(space_lm, questions)
    probabilities = expected_correct(cached.logits, cached.answers, calibration.value)
    assert float(probabilities.mean()) == pytest.approx(calibration.predicted, abs=1e-9)
    runs = 10
    measured = []
    for seed in range(runs):
        space_lm.set_profile(Profile(sigma=calibration.value, seed=500 + seed))
        measured.append(evaluate(space_lm, manager, tasks=("toy_space_mc",))["toy_space_mc"]["acc,none"])
    n = len(questions)
    stderr = math.sqrt(float((probabilities * (1 - probabilities)).sum()) / (n * n * runs))
    assert abs(sum(measured) / runs - calibration.predicted) < 4 * stderr, (measured, calibration.predicted, stderr)


class Cli:
    """Runs `aim ARGS` in this process and returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
        self.capsys = capsys
        monkeypatch.setattr(sys, "stdin", io.StringIO(""))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
        monkeypatch.delenv("AIM_DEBUG", raising=False)

    def __call__(self, *args: str) -> tuple[int, str, str]:
        """Run the entry point; it always ends in SystemExit."""
        from aim_cli.cli import main

        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--device", "cpu", "--quiet"])
        captured = self.capsys.readouterr()
        return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.fixture
def cli(capsys, monkeypatch) -> Cli:
    """The in-process CLI runner."""
    return Cli(capsys, monkeypatch)


@pytest.mark.slow
def test_aim_eval_end_to_end(cli, task_dir, manager, tmp_path):
    """`aim eval` sweeps sigma, prints the table, writes JSON and a plot; sigma 0 rows are lm-eval's hf numbers."""
    out, png = tmp_path / "eval.json", tmp_path / "curve.png"
    code, stdout, stderr = cli(
        "eval", "--tasks", "toy_mc,toy_gen", "--include-path", str(task_dir), "--sigma", "0,3",
        "--seed", "4", "-o", str(out), "--plot", str(png),
    )  # fmt: skip
    assert code == 0, stderr
    assert "toy_mc" in stdout and "exact_match" in stdout
    report = json.loads(out.read_text())
    assert report["sigmas"] == [0.0, 3.0] and report["noise"]["seed"] == 4
    rows = {(r["task"], r["metric"], r["sigma"]): r["value"] for r in report["rows"]}
    plain = evaluate("hf", manager, model_args=f"pretrained={DEMO_LM},device=cpu", batch_size=16)
    assert rows[("toy_mc", "acc", 0.0)] == plain["toy_mc"]["acc,none"]
    assert rows[("toy_gen", "exact_match", 0.0)] == plain["toy_gen"]["exact_match,extract"]
    assert rows[("toy_mc", "acc", 3.0)] < rows[("toy_mc", "acc", 0.0)]
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_aim_eval_runs_a_profile_at_its_own_sigma(cli, task_dir, tmp_path):
    """Without --sigma, the profile's tier is what runs (not the clean model), with its seed."""
    tier = tmp_path / "tier.yaml"
    tier.write_text("version: 1\nutility: {sigma: 3.5}\nnoise: {seed: 11}\n", encoding="utf-8")
    out = tmp_path / "eval.json"
    code, _, stderr = cli(
        "eval", "--tasks", "toy_mc", "--include-path", str(task_dir), "--profile", str(tier),
        "--limit", "20", "-o", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["sigmas"] == [3.5] and report["noise"]["seed"] == 11 and report["limit"] == 20


@pytest.mark.slow
def test_calibrate_on_a_single_token_mc_task_is_analytic(cli, task_dir, tmp_path):
    """`aim calibrate --task lm-eval` on one-token choices: exact curve, a sigma, and a check that agrees."""
    report = tmp_path / "cal.json"
    code, stdout, stderr = cli(
        "calibrate", "--task", "lm-eval", "--tasks", "toy_mc", "--include-path", str(task_dir),
        "--target-acc", "0.6", "--json", str(report),
    )  # fmt: skip
    assert code == 0, stderr
    data = json.loads(report.read_text())
    assert data["curve_kind"] == "analytic" and data["task"] == "lm-eval"
    assert float(stdout) == pytest.approx(data["value"], rel=1e-5) and data["value"] > 0
    assert data["predicted"] == pytest.approx(0.6, abs=1e-3)
    check = data["monte_carlo"]
    assert check["ci95"][0] - 0.01 <= 0.6 <= check["ci95"][1] + 0.01


@pytest.mark.slow
def test_calibrate_on_a_shared_prefix_mc_task_is_analytic(cli, task_dir, space_model, tmp_path):
    """`aim calibrate --task lm-eval` where each choice is [" ", digit]: the exact curve, not Monte Carlo."""
    report = tmp_path / "cal.json"
    code, _stdout, stderr = cli(
        "calibrate", "--task", "lm-eval", "--tasks", "toy_space_mc", "--include-path", str(task_dir),
        "--model", str(space_model),
        "--target-acc", "0.6", "--json", str(report),
    )  # fmt: skip
    assert code == 0, stderr
    data = json.loads(report.read_text())
    assert data["curve_kind"] == "analytic" and data["task"] == "lm-eval"
    assert data["predicted"] == pytest.approx(0.6, abs=1e-3)
    check = data["monte_carlo"]
    assert check["ci95"][0] - 0.01 <= 0.6 <= check["ci95"][1] + 0.01


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--tasks", "no_such_task_xyz"], ["unknown lm-eval task", "no_such_task_xyz"]),
        (["--tasks", "toy_mc", "--sigma", "0,abc"], ["--sigma", "not a number"]),
        (["--tasks", "toy_mc", "--sigma", "-1"], ["--sigma", ">= 0"]),
        (["--tasks", "toy_mc", "--model", "./no/such/model"], ["does not exist"]),
        (["--tasks", "toy_mc,toy_mc"], ["named twice"]),
    ],
)
def test_bad_input_is_one_line(cli, task_dir, args, fragments):
    """Unknown task, bad sigma list, missing model: one line, exit 2, no traceback."""
    code, _stdout, stderr = cli("eval", "--include-path", str(task_dir), *args)
    assert code == 2, (code, stderr)
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment.lower() in stderr.lower(), (fragment, stderr)
