"""`aim verify` end to end: the certified model and data hold (exit 0), a perturbed model does not (exit 1),
an edited or uncertified profile is an error (exit 2); `aim calibrate --write-profile` writes the certificate."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import yaml

from aim_cli import demo
from aim_cli.certificates import CertificateWarning
from aim_cli.profile import Profile
from tests.conftest import assert_user_error, run_aim

LIMIT = "300"  # items of the demo evaluation set, for calibrate and verify alike


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    """A tier calibrated for accuracy 0.6 on the demo classifier, certified by --write-profile."""
    folder = tmp_path_factory.mktemp("certified")
    path = folder / "tier-60.yaml"
    result = run_aim("calibrate", "--target-acc", "0.6", "--limit", LIMIT, "--write-profile", str(path), "-q")
    assert result.returncode == 0, result.stderr
    return path


def test_calibrate_writes_a_certificate(certified) -> None:
    """The profile holds the agreed fields, and the interval brackets the predicted value near the target."""
    document = yaml.safe_load(certified.read_text())
    cert = document["certificate"]
    assert cert["task"] == "classify" and cert["metric"] == "accuracy" and cert["method"] == "exact"
    assert cert["model"]["fingerprint"].startswith("sha256:") and cert["data"]["items"] == int(LIMIT)
    interval = cert["interval"]
    assert interval["confidence"] == 0.95 and interval["sample_size"] == int(LIMIT)
    assert interval["low"] < cert["predicted"] < interval["high"]
    assert abs(cert["predicted"] - 0.6) < 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fresh certified profile loads without a warning
        assert Profile.load(certified).certificate is not None


def test_same_model_and_data_hold(certified, tmp_path) -> None:
    """Exit 0, HOLDS on stdout, and the JSON says the model and data are the certified ones."""
    report = tmp_path / "verify.json"
    result = run_aim("verify", str(certified), "--limit", LIMIT, "-o", str(report), "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HOLDS" in result.stdout and "DOES NOT" not in result.stdout
    data = json.loads(report.read_text())
    assert data["holds"] is True and data["model"]["same"] is True and data["data"]["same"] is True
    assert data["measured"]["value"] == pytest.approx(data["certified"]["predicted"], abs=1e-6)
    monte_carlo = data["measured"]["monte_carlo"]
    assert monte_carlo["ci95"][0] - 0.01 <= data["measured"]["value"] <= monte_carlo["ci95"][1] + 0.01


def _perturbed_demo(tmp_path, scale: float):
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


def test_perturbed_model_does_not_hold(certified, tmp_path) -> None:
    """Logits halved: the same sigma now gives far less accuracy; exit 1, and the model is reported as another."""
    report = tmp_path / "verify.json"
    model = _perturbed_demo(tmp_path, 0.5)
    result = run_aim("verify", str(certified), "--model", str(model), "--limit", LIMIT, "-o", str(report), "-q")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "DOES NOT HOLD" in result.stdout and "not the certified one" in result.stderr
    data = json.loads(report.read_text())
    assert data["holds"] is False and data["model"]["same"] is False and data["data"]["same"] is True
    assert data["measured"]["value"] < data["interval"]["low"]


def test_edited_profile_is_an_error(certified, tmp_path) -> None:
    """A sigma changed by hand: aim verify refuses (exit 2); other commands warn on every use."""
    document = yaml.safe_load(certified.read_text())
    document["utility"]["sigma"] = 1.0
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(document, sort_keys=False))
    assert_user_error(run_aim("verify", str(edited), "--limit", LIMIT), 2, "edited after certification")
    with pytest.warns(CertificateWarning, match="edited after certification"):
        Profile.load(edited)
    image = sorted(demo.samples_dir("classify").iterdir())[0]
    shown = run_aim("classify", "--profile", str(edited), str(image))
    assert "edited after certification" in shown.stderr


def test_uncertified_profile_is_an_error(tmp_path) -> None:
    """Nothing to verify: exit 2 with the way to get a certificate."""
    plain = tmp_path / "plain.yaml"
    plain.write_text("version: 1\nutility: {sigma: 1.5}\n")
    assert_user_error(run_aim("verify", str(plain)), 2, "no certificate", "--write-profile")


def test_bad_certificate_is_an_error(certified, tmp_path) -> None:
    """A hand-damaged certificate is refused when the profile loads (file and key named)."""
    document = yaml.safe_load(certified.read_text())
    document["certificate"]["interval"]["confidence"] = 2
    damaged = tmp_path / "damaged.yaml"
    damaged.write_text(yaml.safe_dump(document, sort_keys=False))
    assert_user_error(run_aim("verify", str(damaged)), 2, "damaged.yaml", "certificate.interval.confidence")


def test_segmentation_tier_verifies(tmp_path) -> None:
    """A certified mIoU tier of the demo segmenter holds on its own model and data (images as units)."""
    path = tmp_path / "seg.yaml"
    made = run_aim(
        "calibrate", "--task", "segment", "--target-miou", "0.5", "--limit", "12", "--write-profile", str(path), "-q"
    )
    assert made.returncode == 0, made.stderr
    cert = yaml.safe_load(path.read_text())["certificate"]
    assert cert["units"] == "images" and cert["data"]["items"] == 12 and cert["metric"] == "miou"
    report = tmp_path / "verify.json"
    result = run_aim("verify", str(path), "--limit", "12", "-o", str(report), "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    assert data["holds"] and data["measured"]["value"] == pytest.approx(cert["predicted"], abs=1e-6)


@pytest.fixture()
def tiers(certified, tmp_path):
    """A tiers folder with the certified tier and an uncertified one."""
    folder = tmp_path / "tiers"
    folder.mkdir()
    shutil.copy(certified, folder / "tier-60.yaml")
    (folder / "plain.yaml").write_text("version: 1\nutility: {sigma: 1.0}\nnoise: {seed: 3}\n")
    return folder


def test_serve_accepts_the_certified_model(tiers) -> None:
    """aim serve (Ray path, --dry-run) starts with the model the tier was certified on, without a warning."""
    result = run_aim("serve", str(demo.model_dir("classify")), "--profiles", str(tiers), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "another model" not in result.stderr


def test_serve_refuses_a_tier_certified_on_another_model(tiers, tmp_path) -> None:
    """A perturbed copy of the model: refused at start-up (exit 2, tier named); the flag serves it with a warning."""
    model = _perturbed_demo(tmp_path, 0.9)
    refused = run_aim("serve", str(model), "--profiles", str(tiers), "--dry-run")
    assert_user_error(refused, 2, "tier-60", "another model", "--allow-uncertified-model")
    allowed = run_aim("serve", str(model), "--profiles", str(tiers), "--dry-run", "--allow-uncertified-model")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning" in allowed.stderr and "tier-60" in allowed.stderr and "--allow-uncertified-model" in allowed.stderr


def test_answers_name_their_tier_and_certificate(tiers) -> None:
    """The endpoint core's answers carry the certificate id of their tier (None for an uncertified tier)."""
    from aim_cli.certificates import answer_headers
    from aim_cli.engines.vision_tiers import EndpointSpec, VisionTiers

    endpoint = VisionTiers(EndpointSpec("classify", str(demo.model_dir("classify")), profiles=str(tiers), device="cpu"))
    image = sorted(demo.samples_dir("classify").iterdir())[0].read_bytes()
    jobs = [endpoint.admit("image/png", image, {"aim_profile": name}) for name in ("tier-60", "plain")]
    (status, certified_answer), (_, plain_answer) = endpoint.answer(jobs)
    expected = Profile.load(tiers / "tier-60.yaml").certificate
    assert status == 200 and expected is not None
    assert certified_answer["tier"] == "tier-60" and certified_answer["certificate"] == expected.id
    assert plain_answer["tier"] == "plain" and plain_answer["certificate"] is None
    assert answer_headers(certified_answer) == {"X-Aim-Tier": "tier-60", "X-Aim-Certificate": expected.id}


def test_text_tier_certifies_verifies_and_passes_the_vllm_start_up_check(tmp_path, certified) -> None:
    """A multiple-choice tier of the demo LM: certified, verified (exit 0), and accepted by the vLLM path's check
    for the demo LM's folder, while an image tier is refused there (the check runs without vLLM installed)."""
    from aim_cli.api.serve import check_language_model_certificates
    from aim_cli.errors import AimError

    path = tmp_path / "lm.yaml"
    made = run_aim(
        "calibrate", "--task", "generate", "--target-acc", "0.5", "--limit", "80", "--write-profile", str(path), "-q"
    )
    assert made.returncode == 0, made.stderr
    cert = yaml.safe_load(path.read_text())["certificate"]
    assert cert["task"] == "generate" and cert["method"] == "exact" and cert["data"]["items"] == 80
    verified = run_aim("verify", str(path), "--limit", "80", "-q")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    lm_dir = str(demo.model_dir("generate"))
    check_language_model_certificates({"lm": Profile.load(path)}, lm_dir, False)  # the certified folder: accepted
    with pytest.raises(AimError, match="tier-60"):
        check_language_model_certificates({"tier-60": Profile.load(certified)}, lm_dir, False)
