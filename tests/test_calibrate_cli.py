"""`aim calibrate` end to end: the command as written, its outputs, and errors that teach."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from aim_cli.demo import shapes
from tests.conftest import assert_user_error, run_aim

FAST = {"OMP_NUM_THREADS": "1"}  # tiny models on shared cores: one intra-op thread avoids spin contention


@pytest.fixture(scope="module")
def mislabelled(tmp_path_factory) -> Path:
    """100 demo images in an ImageFolder, 20 of them filed under the wrong class: clean accuracy 0.80."""
    root = tmp_path_factory.mktemp("folder") / "data"
    shapes.export_image_folder(root, 100)
    moved = 0
    for index, label in enumerate(shapes.LABELS):
        for image in sorted((root / label).glob("*.png"))[:2]:
            wrong = shapes.LABELS[(index + 1) % len(shapes.LABELS)]
            shutil.move(str(image), root / wrong / f"moved_{image.name}")
            moved += 1
    assert moved == 20
    return root


def test_command_as_written():
    result = run_aim("calibrate", "--target-acc", "0.6", env=FAST)
    assert result.returncode == 0, result.stderr
    sigma = float(result.stdout)  # stdout carries only the chosen sigma
    assert 1.0 < sigma < 5.0
    for fragment in (
        "predicted accuracy vs sigma",
        "target accuracy 0.6 -> sigma",
        "measured",
        "95% CI",
        "forward",
        "analytic",
        "chance",
    ):
        assert fragment in result.stderr, (fragment, result.stderr)


def test_profile_json_and_plot_then_classify_round_trip(tmp_path):
    profile, report, plot = tmp_path / "tier.yaml", tmp_path / "report.json", tmp_path / "curve.png"
    result = run_aim(
        "calibrate",
        "--target-acc",
        "0.75",
        "--limit",
        "400",
        "--write-profile",
        str(profile),
        "--json",
        str(report),
        "--plot",
        str(plot),
        "--name",
        "tier-75",
        env=FAST,
    )
    assert result.returncode == 0, result.stderr
    sigma = float(result.stdout)
    document = yaml.safe_load(profile.read_text())
    assert document["version"] == 1 and document["name"] == "tier-75"
    assert "accuracy 0.75" in document["description"] and "demo classifier" in document["description"]
    assert document["utility"]["sigma"] == pytest.approx(sigma, rel=1e-4)
    data = json.loads(report.read_text())
    assert data["target"] == 0.75 and data["items"] == 400 and data["parameter"] == "sigma"
    assert abs(data["monte_carlo"]["mean"] - 0.75) <= 0.03
    assert data["monte_carlo"]["ci95"][0] < data["monte_carlo"]["mean"] < data["monte_carlo"]["ci95"][1]
    assert len(data["curve"]) > 20 and data["timing_s"]["forward_s"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert not list(tmp_path.glob(".*.part"))  # atomic writes leave no temp files behind
    out = tmp_path / "preds.jsonl"
    applied = run_aim("classify", "--profile", str(profile), "-o", str(out), "-q", env=FAST)
    assert applied.returncode == 0, applied.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records and all(r["sigma"] == pytest.approx(sigma, rel=1e-4) for r in records)


def test_target_above_clean_names_both_bounds(mislabelled):
    result = run_aim("calibrate", "--target-acc", "0.9", "--data", str(mislabelled), env=FAST)
    assert_user_error(
        result,
        2,
        "target accuracy 0.90 is above the clean model's 0.80",
        "reachable targets lie between 0.10 (chance) and 0.80",
    )


def test_target_below_chance_names_both_bounds(mislabelled):
    result = run_aim("calibrate", "--target-acc", "0.05", "--data", str(mislabelled), env=FAST)
    assert_user_error(
        result, 2, "at or below chance level (0.10)", "reachable targets lie between 0.10 (chance) and 0.80"
    )


def test_manifest_with_relative_paths(mislabelled, tmp_path):
    manifest = mislabelled / "manifest.csv"
    rows = ["path,label"] + [
        f"{p.relative_to(mislabelled)},{p.parent.name}" for p in sorted(mislabelled.rglob("*.png"))
    ]
    manifest.write_text("\n".join(rows) + "\n")
    report = tmp_path / "r.json"
    result = run_aim("calibrate", "--target-acc", "0.5", "--data", str(manifest), "--json", str(report), "-q", env=FAST)
    assert result.returncode == 0, result.stderr
    data = json.loads(report.read_text())
    assert data["items"] == 100 and data["clean"] == pytest.approx(0.8)


def test_empty_data_dir(tmp_path):
    result = run_aim("calibrate", "--target-acc", "0.6", "--data", str(tmp_path), env=FAST)
    assert_user_error(result, 2, "holds no images", "ImageFolder")


def test_images_without_labels(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    result = run_aim("calibrate", "--target-acc", "0.6", "--data", str(tmp_path), env=FAST)
    assert_user_error(result, 2, "no class sub-folders", "manifest")


def test_unknown_labels_in_image_folder(tmp_path):
    for label in ("circle", "cat", "dog", "zebra"):
        (tmp_path / label).mkdir()
        Image.new("RGB", (32, 32)).save(tmp_path / label / "a.png")
    result = run_aim("calibrate", "--target-acc", "0.6", "--data", str(tmp_path), env=FAST)
    assert_user_error(result, 2, "3 label(s)", "'cat', 'dog', 'zebra'", "the model's classes are: circle")


def test_bad_manifests(tmp_path):
    no_header = tmp_path / "m.csv"
    no_header.write_text("a.png,circle\n")
    assert_user_error(
        run_aim("calibrate", "--target-acc", "0.6", "--data", str(no_header), env=FAST),
        2,
        "header naming the columns 'path' and 'label'",
    )
    broken = tmp_path / "m.jsonl"
    broken.write_text('{"path": "a.png", "label": "circle"}\n{"path": "b.png" "label": 3}\n')
    assert_user_error(
        run_aim("calibrate", "--target-acc", "0.6", "--data", str(broken), env=FAST), 2, "line 2", "not valid JSON"
    )
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"path": "nowhere.png", "label": "circle"}\n')
    assert_user_error(
        run_aim("calibrate", "--target-acc", "0.6", "--data", str(missing), env=FAST), 2, "none of its 1 image(s) exist"
    )


def test_usage_errors():
    assert_user_error(run_aim("calibrate", env=FAST), 2, "give exactly one target")
    assert_user_error(run_aim("calibrate", "--target-acc", "60", env=FAST), 2, "not a fraction")
    assert_user_error(run_aim("calibrate", "--target-miou", "0.5", env=FAST), 2, "--task segment")
    assert_user_error(
        run_aim("calibrate", "--target-acc", "0.6", "--model", "somewhere/else/model", env=FAST),
        2,
        "--model needs --data",
    )
    assert_user_error(
        run_aim("calibrate", "--target-acc", "0.6", "--json", "out.txt", env=FAST), 2, "unsupported file type"
    )


def test_plot_without_matplotlib_fails_before_any_work(tmp_path):
    fake = tmp_path / "shadow" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named matplotlib')\n")
    result = run_aim(
        "calibrate",
        "--target-acc",
        "0.6",
        "--plot",
        str(tmp_path / "c.png"),
        env={**FAST, "PYTHONPATH": str(fake.parent)},
    )
    assert_user_error(result, 2, "--plot needs matplotlib", "aim-cli[plot]")
    assert not (tmp_path / "c.png").exists()
