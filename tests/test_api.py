"""The public Python API (`import aim_cli as aim`): same validation, noise and calibration as the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import aim_cli as aim
from aim_cli import api, demo
from aim_cli.errors import InputError, ProfileError
from aim_cli.profile import load_profile
from tests.conftest import REPO, aim_env, run_aim

PROFILES = REPO / "profiles"
KEY_ENV = {"AIM_TEST_API_KEY": "api-secret"}


@pytest.fixture(scope="module")
def classifier():
    """The demo classifier (loaded once)."""
    from aim_cli.models.registry import load_model

    return load_model("classify", None, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def demo_logits(classifier):
    """Clean logits and labels of 2,000 demo evaluation images."""
    from aim_cli.demo import shapes

    data = shapes.evaluation_set(2000)
    logits = torch.cat([classifier.logits([image for image, _ in data[i : i + 500]]) for i in range(0, 2000, 500)])
    return logits, torch.tensor([label for _, label in data])


def test_import_is_cheap_and_names_agree():
    code = "import sys, aim_cli; assert 'torch' not in sys.modules; print(len(aim_cli.__all__))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=aim_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert aim.__all__ == api.__all__
    for name in aim.__all__:
        assert getattr(aim, name) is getattr(api, name)


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.name)
def test_from_dict_equals_load_of_the_same_yaml(path):
    import yaml

    data = yaml.safe_load(path.read_text())
    loaded = aim.Profile.load(path)
    assert aim.Profile.from_dict(data) == loaded == load_profile(path)
    assert aim.Profile.from_dict(loaded.to_dict()) == loaded


@pytest.mark.parametrize(
    "text, data",
    [
        ("utility:\n  sigma: -1\n", {"utility": {"sigma": -1}}),
        ("utility:\n  sigmaa: 1\n", {"utility": {"sigmaa": 1}}),
        (
            "focus:\n  targets:\n    - {class: person, direction: sideways}\n",
            {"focus": {"targets": [{"class": "person", "direction": "sideways"}]}},
        ),
        ("name: x\n", {"name": "x"}),
        (
            "utility:\n  sigma: 1\nnoise:\n  seed: 1\n  key_env: K\n",
            {"utility": {"sigma": 1}, "noise": {"seed": 1, "key_env": "K"}},
        ),
    ],
)
def test_invalid_dict_gives_the_same_one_line_error_as_the_file(tmp_path, text, data):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as from_file:
        aim.Profile.load(path)
    with pytest.raises(ProfileError) as from_dict:
        aim.Profile.from_dict(data, source="tier")
    # Only the location differs: "<file>, line N, key 'k': ..." vs "tier, key 'k': ..."
    file_message = str(from_file.value).replace(str(path), "tier")
    file_message = (
        file_message.replace(", line 2", "").replace(", line 3", "").replace(", line 4", "").replace(", line 1", "")
    )
    assert str(from_dict.value) == file_message
    assert "\n" not in str(from_dict.value)


def test_direct_construction_is_validated():
    # Regression: Profile(...) used to accept a negative sigma and fail later with a ValueError.
    with pytest.raises(ProfileError, match="sigma must be a finite number >= 0"):
        aim.Profile(sigma=-1.0)
    with pytest.raises(ProfileError, match="exclude each other"):
        aim.Profile(sigma=1.0, seed=1, key_env="K")
    profile = aim.Profile(sigma=1, focus=["person", "car:down"])
    assert profile.focus == (aim.FocusRequest("person", 1), aim.FocusRequest("car", -1))
    assert profile.with_overrides(sigma=2.0, seed=5) == aim.Profile(sigma=2.0, focus=profile.focus, seed=5)


def test_sigma_zero_is_identity():
    logits = torch.randn(6, 7, 3, 3)
    assert aim.modulate(logits, 0.0) is logits
    assert aim.modulate(logits, {"utility": {"sigma": 0}}) is logits


def test_seeded_noise_is_reproducible_and_matches_the_core():
    from aim_cli.modulation import Modulation, SeededNoise, modulate

    logits = torch.randn(5, 10)
    first = aim.modulate(logits, 1.5, seed=3)
    assert torch.equal(first, aim.modulate(logits, aim.Profile(sigma=1.5, seed=3)))
    assert torch.equal(first, modulate(logits, Modulation(1.5), SeededNoise(3)))
    assert not torch.equal(first, aim.modulate(logits, 1.5, seed=4))
    # A plan continues one stream across batches, like the batches of one CLI run.
    plan = aim.plan(1.5, num_classes=10, seed=3)
    assert torch.equal(plan.apply(logits), first) and not torch.equal(plan.apply(logits), first)


def test_keyed_noise_is_batch_independent(monkeypatch):
    monkeypatch.setenv("AIM_TEST_API_KEY", "api-secret")
    profile = {"utility": {"sigma": 2.0}, "noise": {"key_env": "AIM_TEST_API_KEY"}}
    logits = torch.randn(6, 8)
    keys = [f"request-{i}" for i in range(6)]
    whole = aim.modulate(logits, profile, keys=keys)
    alone = torch.cat([aim.modulate(logits[i : i + 1], profile, keys=keys[i : i + 1]) for i in range(6)])
    reordered = aim.modulate(logits.flip(0), profile, keys=keys[::-1]).flip(0)
    assert torch.equal(whole, alone) and torch.equal(whole, reordered)
    assert not torch.equal(whole, logits)
    with pytest.raises(InputError, match="one key per item"):
        aim.modulate(logits, profile)
    with pytest.raises(InputError, match="seeded"):
        aim.modulate(logits, 1.0, keys=keys)


def test_token_id_keys_match_the_generation_processor(monkeypatch):
    monkeypatch.setenv("AIM_TEST_API_KEY", "api-secret")
    profile = aim.Profile.from_dict({"utility": {"sigma": 1.0}, "noise": {"key_env": "AIM_TEST_API_KEY"}})
    scores = torch.randn(2, 30)
    rows = torch.tensor([[0, 0, 5, 6, 7], [3, 4, 5, 6, 7]])  # row 0 is left-padded
    processor = aim.logits_processor(profile, tokenizer=None, prompt_starts=[2, 0])
    expected = processor(rows, scores)
    keys = [rows[0, 2:], rows[1]]  # each row's real tokens, as the processor hashes them
    assert torch.equal(aim.modulate(scores, profile, keys=keys), expected)
    assert torch.equal(aim.modulate(scores, profile, keys=[[5, 6, 7], [3, 4, 5, 6, 7]]), expected)


def test_focus_by_name_and_by_id():
    names = ["cat", "dog", "person"]
    logits = torch.zeros(4000, 3)
    logits[:, 0] = 3.0  # cat leads by 3 everywhere
    profile = aim.Profile.from_dict(
        {"focus": {"sigma": 4.0, "targets": [{"class": "pedestrian"}]}, "noise": {"seed": 0}}
    )
    boosted = aim.modulate(logits, profile, class_names=names)
    share = float((boosted.argmax(1) == 2).double().mean())
    # P(person wins) = 2 * Phi(-3 / 4) = 0.453 exactly; 4000 rows give a standard error of 0.008.
    assert share == pytest.approx(0.4533, abs=4 * 0.008)
    assert torch.equal(boosted[:, :2], logits[:, :2])  # only the target class moves
    by_id = aim.modulate(logits, aim.Profile(focus=["2"], focus_sigma=4.0, seed=0))
    assert torch.equal(by_id, boosted)
    with pytest.raises(ProfileError, match="class_names"):
        aim.modulate(logits, profile)
    with pytest.raises(ProfileError, match="unknown class name 'zebra'"):
        aim.modulate(logits, aim.Profile(focus=["zebra"]), class_names=names)


def test_modulate_checks_its_inputs():
    with pytest.raises(InputError, match="floating-point"):
        aim.modulate(torch.zeros(2, 3, dtype=torch.long), 1.0)
    with pytest.raises(InputError, match="item axis"):
        aim.modulate(torch.zeros(3), 1.0)
    with pytest.raises(ProfileError, match="expected a Profile"):
        aim.modulate(torch.zeros(2, 3), "1.0")


def test_analytic_functions_agree_with_monte_carlo():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(400, 6, generator=generator) * 2
    labels = logits.argmax(1)
    exact = aim.expected_accuracy(logits, labels, 1.0)
    draws = [float((aim.modulate(logits, 1.0, seed=s).argmax(1) == labels).double().mean()) for s in range(40)]
    # 16,000 row draws: standard error <= 0.004
    assert exact == pytest.approx(sum(draws) / len(draws), abs=0.012)
    assert aim.accuracy_curve(logits, labels, [0.0, 1.0]) == [1.0, exact]
    both = aim.win_probability(logits, labels, 1.0, focus=2, focus_sigma=1.5)
    measured = [
        (
            aim.modulate(logits, aim.Profile(sigma=1.0, focus=["2"], focus_sigma=1.5, seed=s)).argmax(1) == labels
        ).double()
        for s in range(40)
    ]
    assert float(both.mean()) == pytest.approx(float(torch.stack(measured).mean()), abs=0.012)
    recall = aim.expected_recall(logits, labels, 2, 1.5)
    assert recall == pytest.approx(
        float(aim.win_probability(logits[labels == 2], labels[labels == 2], 0.0, focus=2, focus_sigma=1.5).mean())
    )
    assert recall == 1.0  # the rows of class 2 already predict it; a boost keeps them


def test_calibrate_logits_hits_the_target_on_the_demo_classifier(demo_logits):
    logits, labels = demo_logits
    result = aim.calibrate_logits(logits, labels, target_acc=0.6)
    assert result.predicted == pytest.approx(0.6, abs=1e-4)
    # 2,000 images x 20 draws: the Monte Carlo mean has a standard error of ~0.0025.
    assert result.check.draws == 20 and abs(result.check.mean - 0.6) <= 0.01
    assert result.sigma == result.value > 0 and result.focus_sigma is None and not result.warnings
    report = result.to_dict()
    assert report["value"] == result.sigma and report["curve"]
    assert result.profile("tier").sigma == pytest.approx(result.sigma, rel=1e-4)


def test_calibrate_logits_target_recall_by_name(demo_logits, classifier):
    logits, labels = demo_logits
    result = aim.calibrate_logits(logits, labels, target_recall=0.5, focus="star:down", class_names=classifier.labels)
    assert result.focus_sigma == result.value > 0 and result.sigma == 0
    assert result.predicted == pytest.approx(0.5, abs=1e-4) and abs(result.check.mean - 0.5) <= 0.03
    assert result.profile().focus[0].name == "star"


def test_calibrate_logits_errors_name_the_keyword():
    logits, labels = torch.randn(10, 3), torch.zeros(10, dtype=torch.long)
    with pytest.raises(aim.AimError, match="give exactly one target: target_acc"):
        aim.calibrate_logits(logits, labels)
    with pytest.raises(aim.AimError, match="target_acc 60 is not a fraction"):
        aim.calibrate_logits(logits, labels, target_acc=60)
    with pytest.raises(aim.AimError, match="target_recall needs focus"):
        aim.calibrate_logits(logits, labels, target_recall=0.9)
    with pytest.raises(InputError, match="labels must be 10 integer class ids"):
        aim.calibrate_logits(logits, labels[:5], target_acc=0.5)
    with pytest.raises(InputError, match="from 0 to 2"):
        aim.calibrate_logits(logits, labels + 3, target_acc=0.5)


def test_processor_in_generate_on_the_demo_lm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo.model_dir("generate"))
    model = AutoModelForCausalLM.from_pretrained(demo.model_dir("generate")).eval()
    inputs = tokenizer(["23+45=", "12+7="], return_tensors="pt", padding=True)

    def run(processors):
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, do_sample=False, logits_processor=processors)
        return out[:, inputs["input_ids"].shape[1] :]

    clean = run([])
    assert torch.equal(run([aim.logits_processor(0.0, tokenizer)]), clean)
    noisy = run([aim.logits_processor(8.0, tokenizer, seed=1)])
    assert torch.equal(noisy, run([aim.logits_processor({"utility": {"sigma": 8.0}, "noise": {"seed": 1}}, tokenizer)]))
    assert not torch.equal(noisy, clean)
    # Focus words become token sets: a strong boost of '9' puts it in every answer.
    focused = run([aim.logits_processor(aim.Profile(focus=["9"], focus_sigma=50.0, seed=0), tokenizer)])
    nine = tokenizer.convert_tokens_to_ids("9")
    assert bool((focused == nine).any(dim=1).all())


def test_cli_keyed_classify_equals_the_api(tmp_path, classifier):
    from PIL import Image

    out = tmp_path / "out.jsonl"
    profile = tmp_path / "keyed.yaml"
    profile.write_text("utility:\n  sigma: 3.0\nnoise:\n  key_env: AIM_TEST_API_KEY\n")
    result = run_aim("classify", "--profile", str(profile), "-o", str(out), env=KEY_ENV)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    images = [Image.open(record["path"]).convert("RGB") for record in records]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(*next(iter(KEY_ENV.items())))
        noisy = aim.modulate(classifier.logits(images), aim.Profile.load(profile), keys=images)
    probabilities = noisy.softmax(1).max(1).values
    for record, label, probability in zip(records, noisy.argmax(1).tolist(), probabilities.tolist()):
        assert record["prediction"] == classifier.labels[label]
        assert record["probability"] == pytest.approx(probability, abs=1e-5)


def test_cli_calibrate_equals_the_api(tmp_path, classifier):
    from aim_cli.calibration.datasets import demo_classification_set

    report = tmp_path / "report.json"
    result = run_aim("calibrate", "--target-acc", "0.6", "--json", str(report), "-q")
    assert result.returncode == 0, result.stderr
    cli = json.loads(report.read_text())
    items = demo_classification_set(1000).items
    logits = classifier.logits([item.load().image for item in items])
    labels = [classifier.labels.index(item.label) for item in items]
    mine = aim.calibrate_logits(logits, labels, target_acc=0.6)
    assert mine.sigma == pytest.approx(cli["value"], rel=1e-9)
    assert mine.check.values == pytest.approx(cli["monte_carlo"]["values"], abs=1e-12)


@pytest.mark.parametrize("scalar", [np.float32, np.float64, np.int64, np.int32, float, int])
def test_numpy_scalars_are_numbers_everywhere(scalar):
    # Values computed with numpy (a sweep, a config) are numbers too: the one number check accepts them.
    logits = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    labels = logits.argmax(dim=1)
    assert aim.Profile(sigma=scalar(2), seed=np.int64(3)).sigma == 2.0
    assert aim.Profile.from_dict({"utility": {"sigma": scalar(2)}, "noise": {"seed": np.int64(3)}}).seed == 3
    assert torch.equal(aim.modulate(logits, scalar(1), seed=np.int64(3)), aim.modulate(logits, 1.0, seed=3))
    target = scalar(0.5) if issubclass(scalar, (float, np.floating)) else 0.5
    result = aim.calibrate_logits(
        logits, labels, target_acc=target, draws=4 if issubclass(scalar, (float, np.floating)) else scalar(4)
    )
    assert result.predicted == pytest.approx(0.5, abs=1e-3)


def test_bools_are_not_numbers():
    with pytest.raises(aim.ProfileError, match="expected a number"):
        aim.Profile(sigma=np.bool_(True))
    with pytest.raises(aim.ProfileError, match="expected an integer"):
        aim.Profile(sigma=1.0, seed=True)


@pytest.mark.parametrize("labels", [3, "cat", None])
def test_labels_that_are_not_one_per_row_are_a_one_line_error(labels):
    logits = torch.randn(4, 3)
    with pytest.raises(InputError, match=r"one class id .* per row"):
        aim.expected_accuracy(logits, labels, 1.0)
    with pytest.raises(InputError, match=r"one class id .* per row"):
        aim.calibrate_logits(logits, labels, target_acc=0.5)
