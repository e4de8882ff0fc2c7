"""aim.calibrate: the same calibration, profile and report as `aim calibrate`, typed, from Python."""

from __future__ import annotations

import inspect
import json

import pytest
import yaml

import aim_cli as aim
from aim_cli.errors import AimError, InputError
from aim_cli.io import OutputError
from tests.conftest import run_aim


def _report(calibration: aim.Calibration) -> dict:
    """The JSON report without its timings (the one thing two runs never share)."""
    report = json.loads(json.dumps(calibration.to_dict()))
    report.pop("timing_s")
    return report


def _profile(path) -> dict:
    """A written profile without its certificate's creation time."""
    document = yaml.safe_load(path.read_text())
    document.get("certificate", {}).pop("created", None)
    return document


def _cli_and_api(tmp_path, cli_args: list[str], **api_args) -> tuple[dict, aim.Calibration]:
    """Run `aim calibrate` and aim.calibrate on the same options; both write a profile and a report."""
    cli_profile, cli_report = tmp_path / "cli.yaml", tmp_path / "cli.json"
    result = run_aim(
        "calibrate", *cli_args, "--write-profile", str(cli_profile), "--json", str(cli_report), "--name", "t", "-q"
    )
    assert result.returncode == 0, result.stderr
    api_profile, api_report = tmp_path / "api.yaml", tmp_path / "api.json"
    calibration = aim.calibrate(**api_args, profile_out=api_profile, report_out=str(api_report), name="t")
    assert float(result.stdout) == pytest.approx(calibration.value, rel=1e-5)  # stdout has 6 significant digits
    cli = json.loads(cli_report.read_text())
    cli.pop("timing_s")
    assert _report(calibration) == cli
    assert json.loads(api_report.read_text())["value"] == cli["value"]
    assert _profile(api_profile) == _profile(cli_profile)
    return cli, calibration


def test_classify_equals_the_cli(tmp_path):
    cli, calibration = _cli_and_api(
        tmp_path, ["--target-acc", "0.6", "--limit", "300", "--draws", "5"], target_acc=0.6, limit=300, draws=5
    )
    assert isinstance(calibration, aim.Calibration)
    assert calibration.sigma == cli["value"] and calibration.focus_sigma is None
    assert calibration.predicted == pytest.approx(0.6, abs=1e-3)
    assert calibration.items == 300 and not calibration.failures
    rows = calibration.rows()
    assert all(isinstance(row, aim.CurveRow) for row in rows)
    (chosen,) = [row for row in rows if row.chosen]
    assert chosen.parameter == calibration.value and chosen.predicted == pytest.approx(0.6, abs=1e-3)
    assert chosen.check is calibration.check
    curve = [tuple(point) for point in calibration.curve]
    assert [(row.parameter, row.predicted) for row in rows] == [p for p in curve if p[0] in {r.parameter for r in rows}]


def test_segment_equals_the_cli(tmp_path):
    cli, calibration = _cli_and_api(
        tmp_path,
        ["--task", "segment", "--target-miou", "0.5", "--limit", "6", "--draws", "3"],
        task="segment",
        target_miou=0.5,
        limit=6,
        draws=3,
    )
    assert cli["metric"] == "miou" and calibration.target.metric == "miou"
    assert calibration.sigma == cli["value"] and calibration.items == cli["items"]
    assert calibration.predicted == pytest.approx(cli["predicted"])
    assert any(row.chosen for row in calibration.rows())


def test_notes_and_progress_go_to_the_callbacks(tmp_path):
    notes: list[str] = []
    done: list[int] = []
    calibration = aim.calibrate(target_acc=0.6, limit=40, draws=2, notice=notes.append, progress=done.append)
    assert notes[0].startswith("model: demo") and "| data: " in notes[0]
    assert sum(done) == calibration.items == 40
    assert not list(tmp_path.iterdir())  # nothing asked, nothing written


def test_the_command_options_are_the_api_keywords():
    # `aim calibrate` passes its options to aim.calibrate by name: every one must be a keyword there.
    from aim_cli.cli.calibrate import calibrate as command

    options = set(inspect.signature(command).parameters) - {"quiet"}
    keywords = set(inspect.signature(aim.calibrate).parameters) - {"progress", "notice"}
    assert options == keywords


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"target_acc": 0.6, "target_miou": 0.5}, AimError, "give exactly one target"),
        ({"target_acc": 1.5}, AimError, "not a fraction"),
        ({"target_miou": 0.5}, AimError, "applies to --task segment"),
        ({"target_acc": 0.6, "task": "detect"}, InputError, "unknown task 'detect'"),
        ({"target_acc": 0.6, "layout": "coco"}, InputError, "unknown layout 'coco'"),
        ({"target_acc": 0.6, "model": "torchvision:resnet18"}, AimError, "--model needs --data"),
        ({"target_acc": 0.6, "task": "lm-eval", "data": "x.jsonl"}, AimError, "--task lm-eval takes --tasks"),
        ({"target_acc": 0.6, "model": 3, "data": "."}, InputError, "model must be a spec"),
        ({"target_acc": 0.6, "confidence": 1.0}, AimError, "--confidence"),
        ({"target_acc": 0.6, "limit": 0}, InputError, "limit must be an integer of at least 1"),
        ({"target_acc": 0.6, "batch_size": 2.5}, InputError, "batch_size must be an integer"),
        ({"target_acc": 0.6, "profile_out": "tier.txt"}, AimError, ".yaml"),
    ],
)
def test_bad_input_is_a_one_line_aim_error(tmp_path, arguments, error, message):
    with pytest.raises(error, match=message):
        aim.calibrate(**arguments)
    assert not list(tmp_path.iterdir())


def test_an_output_never_replaces_an_input(tmp_path):
    data = tmp_path / "images"
    (data / "star").mkdir(parents=True)
    with pytest.raises(OutputError, match=r"--write-profile .* would write inside --data"):
        aim.calibrate("torchvision:resnet18", data, target_acc=0.5, profile_out=data / "tier.yaml")
    assert sorted(p.name for p in data.iterdir()) == ["star"]
