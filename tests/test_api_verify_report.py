"""`aim.verify` and `aim.write_report` equal `aim verify` and `aim report`: same verdict, numbers and page."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import aim_cli as aim
from aim_cli import demo
from aim_cli.io import OutputError
from tests.conftest import run_aim

LIMIT = 300  # items of the demo evaluation set, for calibrate and verify alike
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tier calibrated for accuracy 0.6 on the demo classifier, certified by --write-profile."""
    path = tmp_path_factory.mktemp("certified") / "tier-60.yaml"
    result = run_aim("calibrate", "--target-acc", "0.6", "--limit", str(LIMIT), "--write-profile", str(path), "-q")
    assert result.returncode == 0, result.stderr
    return path


def _perturbed_demo(tmp_path: Path, scale: float) -> Path:
    """A copy of the demo classifier whose head's weights and bias are scaled (its logits shrink)."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "perturbed"
    shutil.copytree(demo.model_dir("classify"), folder)
    weights = folder / "model.safetensors"
    state = load_file(str(weights))
    for key in ("classifier.1.weight", "classifier.1.bias"):
        state[key] = state[key] * scale
    save_file(state, str(weights), metadata={"format": "pt"})
    return folder


def _same_numbers(api: aim.Verification, cli_json: Path) -> None:
    """The API's result is the JSON the CLI wrote, apart from the time taken."""
    cli = json.loads(cli_json.read_text())
    mine = json.loads(json.dumps(api.to_dict()))
    cli.pop("seconds"), mine.pop("seconds")
    assert mine == cli


def test_verify_holds_both_ways(certified: Path, tmp_path: Path) -> None:
    """Exit 0 and holds True: the same verdict, value, interval and Monte Carlo draws."""
    report = tmp_path / "cli.json"
    result = run_aim("verify", str(certified), "--limit", str(LIMIT), "-o", str(report), "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    notes: list[str] = []
    done: list[int] = []
    verification = aim.verify(certified, limit=LIMIT, notice=notes.append, progress=done.append)
    assert verification.holds is True and verification.same_model and verification.same_data
    _same_numbers(verification, report)
    certificate = aim.Profile.load(certified).certificate
    assert certificate is not None and verification.certificate == certificate
    assert verification.value == pytest.approx(certificate.predicted, abs=1e-6)
    assert verification.method == "exact" and verification.units == LIMIT
    assert verification.interval == (verification.low, verification.high)
    assert verification.low <= verification.value <= verification.high
    assert verification.check.draws == 8 and verification.warnings == () and verification.failures == ()
    assert len(notes) == 1 and notes[0].startswith("model: ") and notes[0].endswith(f"| data: {verification.data}")
    assert sum(done) == LIMIT
    with pytest.raises(AttributeError):
        verification.low = 0.0  # type: ignore[misc]  # a frozen record


def test_verify_of_a_scaled_model_fails_both_ways(certified: Path, tmp_path: Path) -> None:
    """Logits halved: exit 1 and holds False, with the same numbers; a loaded model gives them too."""
    model = _perturbed_demo(tmp_path, 0.5)
    report = tmp_path / "cli.json"
    result = run_aim("verify", str(certified), "--model", str(model), "--limit", str(LIMIT), "-o", str(report), "-q")
    assert result.returncode == 1, result.stdout + result.stderr
    by_spec = aim.verify(aim.Profile.load(certified), str(model), limit=LIMIT)
    assert by_spec.holds is False and not by_spec.same_model and by_spec.value < by_spec.low
    assert any("not the certified one" in warning for warning in by_spec.warnings)
    _same_numbers(by_spec, report)
    loaded = aim.load_model(str(model), task="classify", device="cpu")
    by_model = aim.verify(str(certified), loaded, limit=LIMIT, device="cpu")
    assert by_model.to_dict() | {"seconds": 0} == by_spec.to_dict() | {"seconds": 0}


def test_verify_writes_the_cli_json(certified: Path, tmp_path: Path) -> None:
    """output= writes what -o writes."""
    out = tmp_path / "api.json"
    verification = aim.verify(certified, limit=LIMIT, output=out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(verification.to_dict()))


def test_report_page_equals_the_cli_page(certified: Path, tmp_path: Path) -> None:
    """The same page, byte for byte apart from its timestamp, and a summary of every tier."""
    tiers = tmp_path / "tiers"
    tiers.mkdir()
    shutil.copy(certified, tiers / "tier-60.yaml")
    (tiers / "plain.yaml").write_text("version: 1\nutility: {sigma: 1.0}\nnoise: {seed: 3}\n")
    cli_page, api_page = tmp_path / "cli.html", tmp_path / "api.html"
    args = ["--tiers", str(tiers), "--limit", "120", "--examples", "2"]
    result = run_aim("report", *args, "-o", str(cli_page), "-q")
    assert result.returncode == 0, result.stderr
    summary = aim.write_report(tiers, output=api_page, limit=120, examples=2)
    cli_text, api_text = cli_page.read_text(encoding="utf-8"), api_page.read_text(encoding="utf-8")
    assert TIMESTAMP.search(cli_text) and TIMESTAMP.sub("", cli_text) == TIMESTAMP.sub("", api_text)
    assert summary.output == api_page and summary.published and summary.failures == ()
    assert summary.task == "classify" and summary.items == 120 and set(summary.clean) == {"accuracy"}
    by_name = {tier.name: tier for tier in summary.tiers}
    assert list(by_name) == ["plain", "tier-60"]
    certificate = aim.Profile.load(certified).certificate
    assert certificate is not None and by_name["tier-60"].certificate == certificate.id
    assert by_name["tier-60"].same_model is True and by_name["plain"].certificate is None
    assert by_name["plain"].same_model is None and by_name["plain"].sigma == 1.0
    assert by_name["plain"].exact and 0.0 <= by_name["plain"].metrics["accuracy"] <= 1.0


def test_bad_input_is_an_aim_error(certified: Path, tmp_path: Path) -> None:
    """Uncertified tiers, wrong options and wrong models are one-line aim errors, and nothing is written."""
    tiers = tmp_path / "tiers"
    tiers.mkdir()
    plain = tiers / "plain.yaml"
    plain.write_text("version: 1\nutility: {sigma: 1.5}\n")
    with pytest.raises(aim.ProfileError, match="no certificate"):
        aim.verify(plain)
    with pytest.raises(aim.ProfileError, match="tier must be a certified Profile"):
        aim.verify(1.5)  # type: ignore[arg-type]
    with pytest.raises(aim.InputError, match=r"draws must be an integer 2\.\.1000"):
        aim.verify(certified, draws=1)
    with pytest.raises(aim.AimError, match="--layout and --split describe --data"):
        aim.verify(certified, layout="plain")
    segmenter = aim.load_model(task="segment", device="cpu")
    with pytest.raises(aim.InputError, match="a classify run needs a classify model"):
        aim.verify(certified, segmenter, limit=10)
    with pytest.raises(OutputError, match="unsupported file type"):
        aim.write_report(tiers, output=tmp_path / "report.txt")
    with pytest.raises(aim.InputError, match="unknown task 'lm-eval'"):
        aim.write_report(tiers, output=tmp_path / "report.html", task="lm-eval")
    with pytest.raises(aim.AimError, match="--model needs --data"):
        aim.write_report(tiers, "demo", output=tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()
