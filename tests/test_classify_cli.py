"""`aim classify` end to end: the real CLI on the demo, on user checkpoints, and on bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from aim_cli import demo
from tests.conftest import assert_user_error, run_aim

SAMPLES = demo.samples_dir("classify")


@pytest.fixture(scope="module")
def tiny_hf_classifier(tmp_path_factory) -> Path:
    """A random ViT classifier saved as a local Hugging Face directory."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    directory = tmp_path_factory.mktemp("hf_vit")
    labels = {0: "cat", 1: "dog", 2: "bird"}
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory) -> dict[str, Path]:
    """mobilenet_v3_small weights (3 classes) as safetensors with labels, plain .pth, and a code pickle."""
    import torchvision
    from safetensors.torch import save_file

    directory = tmp_path_factory.mktemp("tv")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=3)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    paths = {
        "safetensors": directory / "m.safetensors",
        "pth": directory / "m.pth",
        "pickle": directory / "whole.pth",
        "labels": directory / "labels.txt",
        "wrong": directory / "r18.safetensors",
    }
    save_file(state, str(paths["safetensors"]), metadata={"labels": json.dumps(["apple", "pear", "plum"])})
    torch.save({"state_dict": state}, paths["pth"])
    torch.save(model, paths["pickle"])  # needs torchvision classes to unpickle: must be refused
    paths["labels"].write_text("red\ngreen\nblue\n")
    save_file(
        {k: v.contiguous() for k, v in torchvision.models.resnet18(num_classes=3).state_dict().items()},
        str(paths["wrong"]),
    )
    return paths


def test_no_arguments_runs_demo_on_samples():
    result = run_aim("classify")
    assert result.returncode == 0, result.stderr
    for sample in SAMPLES.glob("*.png"):
        assert sample.name in result.stdout
    assert "demo classifier" in result.stderr


def test_demo_predictions_are_right_on_clean_samples(tmp_path):
    out = tmp_path / "preds.jsonl"
    result = run_aim("classify", "--output", str(out), "--quiet", "--compare", "--topk", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(list(SAMPLES.glob("*.png")))
    correct = sum(Path(r["path"]).name.startswith(r["prediction"]) for r in records)
    assert correct >= len(records) - 1
    assert all(len(r["topk"]) == 3 and r["clean_prediction"] == r["prediction"] for r in records)


def test_csv_output_and_settings_recorded(tmp_path):
    out = tmp_path / "preds.csv"
    result = run_aim("classify", str(SAMPLES), "--sigma", "2", "--seed", "5", "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert rows and rows[0]["sigma"] == "2.0" and rows[0]["seed"] == "5"


def test_seeded_cli_runs_identical_and_seeds_differ(tmp_path):
    outputs = []
    for seed in ("1", "1", "2"):
        out = tmp_path / f"run{len(outputs)}.jsonl"
        assert run_aim("classify", "--sigma", "3", "--seed", seed, "-o", str(out), "-q").returncode == 0
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_profile_applies_and_flags_override(tmp_path):
    out = tmp_path / "p.jsonl"
    profile = Path(__file__).resolve().parents[1] / "profiles" / "free-tier.yaml"
    assert run_aim("classify", "--profile", str(profile), "-o", str(out), "-q").returncode == 0
    first = json.loads(out.read_text().splitlines()[0])
    assert first["sigma"] == 4.0 and first["seed"] == 1234
    assert run_aim("classify", "--profile", str(profile), "--sigma", "0", "-o", str(out), "-q").returncode == 0
    assert json.loads(out.read_text().splitlines()[0])["sigma"] == 0.0


def test_focus_boost_moves_predictions_to_target(tmp_path):
    out = tmp_path / "f.jsonl"
    result = run_aim("classify", "--focus", "ring", "--focus-sigma", "50", "--seed", "0", "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    predictions = [json.loads(line)["prediction"] for line in out.read_text().splitlines()]
    assert predictions.count("ring") >= len(predictions) - 2


def test_keyed_profile_same_image_same_answer(tmp_path):
    profile = tmp_path / "keyed.yaml"
    profile.write_text("version: 1\nname: keyed\nutility:\n  sigma: 4\nnoise:\n  key_env: AIM_NOISE_KEY\n")
    copies = tmp_path / "imgs"
    copies.mkdir()
    sample = sorted(SAMPLES.glob("*.png"))[0]
    for i in range(4):
        shutil.copy(sample, copies / f"copy{i}.png")
    out = tmp_path / "k.jsonl"
    result = run_aim(
        "classify",
        str(copies),
        "--profile",
        str(profile),
        "-o",
        str(out),
        "-q",
        "--topk",
        "10",
        env={"AIM_NOISE_KEY": "secret"},
    )
    assert result.returncode == 0, result.stderr
    tops = [json.loads(line)["topk"] for line in out.read_text().splitlines()]
    assert all(t == tops[0] for t in tops)
    missing = run_aim("classify", "--profile", str(profile))
    assert_user_error(missing, 2, "AIM_NOISE_KEY")


def test_hf_directory_model(tiny_hf_classifier, tmp_path):
    out = tmp_path / "hf.jsonl"
    result = run_aim("classify", str(SAMPLES), "--model", str(tiny_hf_classifier), "-o", str(out), "-q")
    assert result.returncode == 0, result.stderr
    assert {json.loads(line)["prediction"] for line in out.read_text().splitlines()} <= {"cat", "dog", "bird"}


def test_torchvision_safetensors_with_metadata_labels(torchvision_weights, tmp_path):
    out = tmp_path / "tv.jsonl"
    result = run_aim(
        "classify",
        str(SAMPLES),
        "--model",
        "torchvision:mobilenet_v3_small",
        "--weights",
        str(torchvision_weights["safetensors"]),
        "-o",
        str(out),
        "-q",
    )
    assert result.returncode == 0, result.stderr
    assert {json.loads(line)["prediction"] for line in out.read_text().splitlines()} <= {"apple", "pear", "plum"}


def test_torchvision_pth_with_labels_file(torchvision_weights, tmp_path):
    out = tmp_path / "tv.jsonl"
    result = run_aim(
        "classify",
        str(SAMPLES),
        "--model",
        "torchvision:mobilenet_v3_small",
        "--weights",
        str(torchvision_weights["pth"]),
        "--labels",
        str(torchvision_weights["labels"]),
        "-o",
        str(out),
        "-q",
    )
    assert result.returncode == 0, result.stderr
    assert {json.loads(line)["prediction"] for line in out.read_text().splitlines()} <= {"red", "green", "blue"}


# ---- bad input: one line, exit code, no traceback, nothing half-written ----


def test_corrupt_and_missing_images_fail_but_batch_goes_on(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for sample in sorted(SAMPLES.glob("*.png"))[:3]:
        shutil.copy(sample, images / sample.name)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out.jsonl"
    result = run_aim("classify", str(images), str(tmp_path / "missing.png"), "-o", str(out), "-q")
    assert_user_error(result, 1, "broken.png", "missing.png", "2 input(s) failed")
    assert len(out.read_text().splitlines()) == 3


def test_no_images_found(tmp_path):
    assert_user_error(run_aim("classify", str(tmp_path)), 2, "no images found")


def test_unknown_model_directory():
    assert_user_error(run_aim("classify", str(SAMPLES), "--model", "./no/such/dir"), 2, "does not exist")


def test_hub_id_not_in_cache(tmp_path):
    result = run_aim(
        "classify", str(SAMPLES), "--model", "google/vit-base-patch16-224", env={"HF_HOME": str(tmp_path / "hf")}
    )
    assert_user_error(result, 2, "local Hugging Face cache", "hf download")


def test_directory_without_config(tmp_path):
    assert_user_error(run_aim("classify", str(SAMPLES), "--model", str(tmp_path)), 2, "config.json")


def test_weights_that_do_not_fit(torchvision_weights):
    result = run_aim(
        "classify",
        str(SAMPLES),
        "--model",
        "torchvision:mobilenet_v3_small",
        "--weights",
        str(torchvision_weights["wrong"]),
    )
    assert_user_error(result, 2, "do not fit")


def test_hf_weights_that_do_not_fit_config(tiny_hf_classifier, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_hf_classifier, broken)
    config = json.loads((broken / "config.json").read_text())
    config["hidden_size"] = 32
    (broken / "config.json").write_text(json.dumps(config))
    assert_user_error(run_aim("classify", str(SAMPLES), "--model", str(broken)), 2, "do not fit")


def test_pickle_needing_code_is_refused(torchvision_weights):
    result = run_aim(
        "classify",
        str(SAMPLES),
        "--model",
        "torchvision:mobilenet_v3_small",
        "--weights",
        str(torchvision_weights["pickle"]),
    )
    assert_user_error(result, 2, "arbitrary code", "safetensors")


def test_unknown_torchvision_arch_and_missing_weights():
    assert_user_error(
        run_aim("classify", str(SAMPLES), "--model", "torchvision:resnet999", "--weights", "x.pth"),
        2,
        "unknown torchvision",
    )
    assert_user_error(run_aim("classify", str(SAMPLES), "--model", "torchvision:resnet18"), 2, "--weights")


def test_profile_errors_reach_the_user(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("version: 1\nutility:\n  sigma: [1\n")
    assert_user_error(run_aim("classify", "--profile", str(bad_yaml)), 2, str(bad_yaml), "line")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("version: 1\nutility:\n  sgima: 1\n")
    assert_user_error(run_aim("classify", "--profile", str(unknown)), 2, "utility.sgima", "line 3")
    assert_user_error(run_aim("classify", "--sigma", "-1"), 2, "--sigma")
    assert_user_error(run_aim("classify", "--sigma", "nan"), 2, "--sigma")


def test_unknown_focus_class_suggests(tmp_path):
    assert_user_error(run_aim("classify", "--focus", "circel"), 2, "unknown class name", "circle")


def test_output_in_missing_directory_writes_nothing(tmp_path):
    out = tmp_path / "nope" / "out.jsonl"
    assert_user_error(run_aim("classify", "-o", str(out)), 2, "does not exist")
    assert not out.parent.exists()


def test_unsupported_output_type(tmp_path):
    assert_user_error(run_aim("classify", "-o", str(tmp_path / "out.txt")), 2, ".jsonl")


def test_debug_shows_traceback(tmp_path):
    result = run_aim("classify", "--debug", str(tmp_path))
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_version_and_module_entry():
    result = run_aim("--version")
    assert result.returncode == 0 and result.stdout.startswith("aim ")


def test_top_prediction_is_the_logits_argmax_even_when_softmax_rounds_them_equal():
    # 1e-8 apart: softmax gives both 0.5 exactly, but the argmax (what calibration counts) is class 1.
    from aim_cli.tasks.classify import top_predictions

    logits = torch.tensor([[0.0, 1e-8, -5.0]])
    first, second = top_predictions(logits, ["a", "b", "c"], 2)[0]
    assert (first.class_id, second.class_id) == (1, 0)
    assert first.probability == pytest.approx(second.probability)
