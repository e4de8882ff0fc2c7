"""Text calibration on the demo LM: multiple choice analytically over the vocabulary, free form by Monte Carlo.

Statistics. Multiple choice: N = 200 items and R = 40 draws on the same next-token logits,
so the measured accuracy's SE is <= sqrt(0.25 / (N R)) = 0.0056 and the 0.03 tolerance is
>= 5.3 SE. Free form has no analytic curve: its bisection is itself noisy, so the test only
asks that the final check's 95% interval is sensible and near the target.
"""

from __future__ import annotations

import json

import pytest
import torch

from aim_cli.calibration.core import Target
from aim_cli.calibration.datasets import demo_text_set, read_text_data
from aim_cli.calibration.text import calibrate_free_form, calibrate_multiple_choice, collect_next_token_logits
from aim_cli.demo import arithmetic
from aim_cli.errors import InputError
from aim_cli.models.registry import load_model
from tests.conftest import assert_user_error, run_aim

FAST = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def lm():
    """The demo arithmetic LM on the CPU."""
    return load_model("generate", None, device=torch.device("cpu"))


@pytest.mark.parametrize("target", [0.8, 0.5, 0.3])
def test_multiple_choice_targets_are_hit(lm, target):
    items = demo_text_set(200).items
    calibration = calibrate_multiple_choice(lm, items, Target("accuracy", target), draws=40, seed=5, batch_size=64)
    assert calibration.clean > 0.9
    assert calibration.predicted == pytest.approx(target, abs=1e-4)
    assert abs(calibration.check.mean - target) <= 0.03, calibration.check.mean
    assert calibration.limit == pytest.approx(1 / lm.model.config.vocab_size)


def test_answer_token_is_the_greedy_next_token(lm):
    items = demo_text_set(50).items
    cached = collect_next_token_logits(lm, items)
    # The clean model answers nearly all of them: its argmax is the right choice's token.
    assert float((cached.logits.argmax(dim=1) == cached.answers).double().mean()) > 0.9
    assert cached.logits.shape == (50, lm.model.config.vocab_size)


def test_free_form_bisection_reports_an_interval(lm):
    items = arithmetic.evaluation_set(60)
    calibration = calibrate_free_form(lm, items, Target("accuracy", 0.5), draws=10, seed=0, batch_size=64)
    assert not calibration.analytic
    assert calibration.check.low < calibration.check.high
    assert abs(calibration.check.mean - 0.5) <= 0.12  # 60 items: one draw's SE is 0.065
    assert calibration.value > 0


def test_text_data_reader(tmp_path):
    good = tmp_path / "mc.jsonl"
    good.write_text(
        '{"prompt": "1+1=", "choices": ["2", "3"], "answer": 0}\n\n'
        '{"prompt": "2+2=", "choices": ["4", "5"], "answer": 0}\n'
    )
    dataset = read_text_data(good)
    assert dataset.multiple_choice and len(dataset.items) == 2
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": "2+2=", "choices": ["4", "5"], "answer": 0}\n')
    with pytest.raises(InputError, match="mixes multiple-choice and free-form"):
        read_text_data(mixed)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "1+1=", "answer": "2"}\n{"prompt": \n')
    with pytest.raises(InputError, match="line 2"):
        read_text_data(broken)
    bad_index = tmp_path / "bad.jsonl"
    bad_index.write_text('{"prompt": "1+1=", "choices": ["2", "3"], "answer": 2}\n')
    with pytest.raises(InputError, match="index of the right choice"):
        read_text_data(bad_index)


def test_cli_generate_multiple_choice_from_file(tmp_path):
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in arithmetic.multiple_choice_set(100)))
    report = tmp_path / "r.json"
    result = run_aim(
        "calibrate",
        "--task",
        "generate",
        "--target-acc",
        "0.6",
        "--data",
        str(data),
        "--draws",
        "30",
        "--json",
        str(report),
        env=FAST,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(report.read_text())["monte_carlo"]["mean"]
    assert abs(measured - 0.6) <= 0.04  # 100 items x 30 draws: SE <= 0.0091
    above = run_aim("calibrate", "--task", "generate", "--target-acc", "0.999", "--data", str(data), env=FAST)
    assert_user_error(above, 2, "above the clean model's", "reachable targets lie between", "(chance)")
