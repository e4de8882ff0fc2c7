"""`aim report`: tiers with real certificates, a self-contained page from the real CLI, clear errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from aim_cli.certificates import Certificate
from aim_cli.errors import ProfileError
from aim_cli.profile import load_profile
from aim_cli.report.tiers import load_tiers
from tests.conftest import REPO, assert_user_error, run_aim

TIER = "version: 1\nname: tier-60\nutility: {sigma: 2.56}\nnoise: {seed: 0}\n"
FOCUS_TIER = "version: 1\nfocus:\n  sigma: 3.0\n  targets:\n    - {class: circle, direction: up}\nnoise: {seed: 1}\n"
EDITED = "edited after certification: certificate void"


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Certified tiers written by the real CLI: the demo classifier's (accuracy 0.6) and segmenter's (mIoU 0.5)."""
    folder = tmp_path_factory.mktemp("certified")
    runs = {
        "tier-60": ["--target-acc", "0.6", "--limit", "200"],
        "seg-50": ["--task", "segment", "--target-miou", "0.5", "--limit", "4"],
    }
    for name, args in runs.items():
        result = run_aim("calibrate", *args, "--write-profile", str(folder / f"{name}.yaml"), "--quiet")
        assert result.returncode == 0, result.stderr
    return {name: folder / f"{name}.yaml" for name in runs}


def _edited(path: Path) -> str:
    """A certified profile's text with its utility sigma raised by 1 after certification."""
    text = path.read_text(encoding="utf-8")
    edited = re.sub(r"(?m)^(  sigma: )([0-9.]+)$", lambda m: f"{m.group(1)}{float(m.group(2)) + 1:g}", text, count=1)
    assert edited != text
    return edited


def _certificate(path: Path) -> Certificate:
    """The certificate of a certified profile file."""
    certificate = load_profile(path).certificate
    assert certificate is not None
    return certificate


def _interval(certificate: Certificate) -> str:
    """How the page writes a certificate's interval."""
    return f"interval {certificate.interval.low:.3f}&ndash;{certificate.interval.high:.3f} at 95%"


def _row(page: str, tier: str) -> str:
    """The tiers table's row of one tier."""
    match = re.search(rf"<tr><td><span class='swatch'[^>]*></span>{re.escape(tier)}</td>.*?</tr>", page)
    assert match, f"no row for {tier}"
    return match.group(0)


def test_tiers_load_with_their_certificates(certified: dict[str, Path], tmp_path: Path) -> None:
    """A certified tier carries its validated Certificate; an edited one keeps it, with the reason it is void."""
    shutil.copy(certified["tier-60"], tmp_path / "tier-60.yaml")
    edited = _edited(certified["tier-60"])
    (tmp_path / "edited.yaml").write_text(edited, encoding="utf-8")
    (tmp_path / "plain.yaml").write_text(TIER, encoding="utf-8")
    with pytest.warns(UserWarning, match="edited after certification"):
        tiers = {tier.name: tier for tier in load_tiers(tmp_path)}
    assert tiers["tier-60"].certificate == _certificate(certified["tier-60"])
    assert tiers["tier-60"].certificate_problem is None
    assert tiers["edited"].certificate is not None and tiers["edited"].certificate_problem is not None
    assert tiers["plain"].certificate is None and tiers["plain"].certificate_problem is None


def test_tiers_folder_errors_are_one_line(certified: dict[str, Path], tmp_path: Path) -> None:
    """A missing folder, an empty one, an unknown key and a malformed certificate each say what is wrong."""
    with pytest.raises(ProfileError, match="not a directory"):
        load_tiers(tmp_path / "missing")
    with pytest.raises(ProfileError, match=r"no \.yaml profiles"):
        load_tiers(tmp_path)
    (tmp_path / "bad.yaml").write_text(TIER + "colour: red\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="unknown key"):
        load_tiers(tmp_path)
    (tmp_path / "bad.yaml").unlink()
    text = certified["tier-60"].read_text(encoding="utf-8")
    (tmp_path / "broken.yaml").write_text(re.sub(r"predicted: .*", "predicted: high", text), encoding="utf-8")
    with pytest.raises(ProfileError, match=r"certificate\.predicted"):
        load_tiers(tmp_path)
    out = tmp_path.parent / f"{tmp_path.name}-out.html"
    assert_user_error(run_aim("report", "--tiers", str(tmp_path), "-o", str(out)), 2, "broken.yaml", "predicted")
    assert not out.exists()


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory, certified: dict[str, Path]) -> Path:
    """The repository's tiers, the two certified ones, one edited after certification and a classifier focus tier."""
    folder = tmp_path_factory.mktemp("tiers")
    for path in [*(REPO / "profiles").glob("*.yaml"), *certified.values()]:
        shutil.copy(path, folder / path.name)
    edited = _edited(certified["tier-60"])
    (folder / "edited-60.yaml").write_text(edited, encoding="utf-8")
    (folder / "focus-circle.yaml").write_text(FOCUS_TIER, encoding="utf-8")
    return folder


def _self_contained(page: str) -> list[str]:
    """Every image source of the page, after checking it reaches for nothing outside itself."""
    assert "<script" not in page.lower()
    assert not re.search(r"(src|href)\s*=\s*['\"](?!data:)", page), "a reference outside the page"
    assert "url(" not in page and "@import" not in page
    sources = re.findall(r"<img [^>]*src='([^']*)'", page) + re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "data:image/svg+xml;base64,")) for s in sources)
    return sources


def test_classify_report_is_one_self_contained_page(tiers: Path, certified: dict[str, Path], tmp_path: Path) -> None:
    """Demo classifier: every tier in the table, each certificate's interval and model, examples under each tier."""
    page = tmp_path / "report.html"
    result = run_aim("report", "--tiers", str(tiers), "--limit", "200", "--examples", "2", "-o", str(page))
    assert result.returncode == 0, result.stderr
    assert f"wrote report to {page}" in result.stderr
    text = page.read_text(encoding="utf-8")
    sources = _self_contained(text)
    figures = text.count("class='figure'") + text.count('class="figure"')
    assert figures == 2  # the curve, and the per-class recall of the focus tier
    # 2 examples x (clean + the 6 tiers that apply to the classifier); the person tiers do not.
    assert len(sources) == figures + 2 * 7
    assert text.count("not applicable: ") == 2 and "unknown class name &#x27;person&#x27;" in text
    row = _row(text, "tier-60")
    assert _interval(_certificate(certified["tier-60"])) in row and "certified on this model" in row
    row = _row(text, "seg-50")
    assert _interval(_certificate(certified["seg-50"])) in row and "certified on another model" in row
    row = _row(text, "edited-60")
    assert EDITED in row and "interval" not in row  # a void certificate's promise is not shown
    assert not list(tmp_path.glob(".*")), "a temporary file was left"


def test_segment_report_shows_overlays(tiers: Path, certified: dict[str, Path], tmp_path: Path) -> None:
    """Demo segmenter: both curves, a legend, input, truth and one overlay per column, its certified tier."""
    page = tmp_path / "segment.html"
    result = run_aim(
        "report", "--task", "segment", "--tiers", str(tiers), "--limit", "4", "--examples", "2", "-o", str(page)
    )
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    sources = _self_contained(text)
    assert "mIoU" in text and "pixel accuracy" in text and "class='legend'" in text
    # 2 examples x (input + truth + clean + 7 tiers: focus-circle does not apply to the segmenter) + 2 figures
    assert len(sources) == 2 + 2 * (2 + 1 + 7)
    row = _row(text, "seg-50")
    assert _interval(_certificate(certified["seg-50"])) in row and "certified on this model" in row
    assert "certified on another model" in _row(text, "tier-60") and EDITED in _row(text, "edited-60")


def test_generate_report_shows_answers(tiers: Path, tmp_path: Path) -> None:
    """Demo LM, multiple choice: the accuracy curve, and each prompt's answer under every tier, as text."""
    page = tmp_path / "generate.html"
    result = run_aim(
        "report", "--task", "generate", "--tiers", str(tiers), "--limit", "40", "--examples", "2", "-o", str(page)
    )
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    assert len(_self_contained(text)) == 1  # the curve; answers are text
    assert "<th>prompt</th><th>right answer</th><th>clean</th>" in text
    assert text.count("<td class='prompt'>") == 2
    # Focus words become token sets, so every tier of the folder applies to a language model.
    assert all(f"<th>{path.stem}</th>" in text for path in tiers.glob("*.yaml"))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["-o", "report.txt"], ["report.txt", ".html"]),
        (["-o", "{out}", "--tiers", "{tmp}/missing"], ["tiers folder", "not a directory"]),
        (["-o", "{out}", "--model", "demo"], ["--model needs --data"]),
        (["-o", "{out}", "--layout", "plain"], ["--layout and --split describe --data"]),
        (["-o", "{out}", "--tiers", "{tiers}", "--task", "lm-eval"], ["lm-eval"]),
        (["-o", "{out}", "--tiers", "{tiers}", "--task", "generate", "--labels", "l.txt"], ["--labels apply to"]),
        (["-o", "{tiers}/report.html", "--tiers", "{tiers}"], ["would write inside --tiers"]),
        (
            ["-o", "{out}", "--tiers", "{tiers}", "--task", "generate", "--data", "{tmp}/free.jsonl"],
            ["multiple-choice"],
        ),
    ],
)
def test_bad_requests_are_one_line(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    """Usage and input errors: exit 2, one line, no traceback, no page."""
    (tmp_path / "tiers").mkdir()
    (tmp_path / "tiers" / "t.yaml").write_text(TIER, encoding="utf-8")
    (tmp_path / "free.jsonl").write_text('{"prompt": "2+2=", "answer": "4"}\n', encoding="utf-8")
    out = tmp_path / "out.html"
    filled = [a.format(out=out, tmp=tmp_path, tiers=tmp_path / "tiers") for a in args]
    result = run_aim("report", *filled, cwd=tmp_path)
    assert_user_error(result, 2, *fragments)
    assert not out.exists()


@pytest.mark.parametrize(
    ("settings", "key_set", "seed", "note"),
    [
        ({"seed": 7}, False, 7, "seed 7"),  # a seeded tier keeps its seed
        ({}, False, 3, "seed 3 (the tier draws a fresh seed per run)"),  # no seed: the report's, so pages repeat
        ({"key_env": "AIM_REPORT_TEST_KEY"}, True, None, "keyed noise (AIM_REPORT_TEST_KEY)"),
        ({"key_env": "AIM_REPORT_TEST_KEY"}, False, 3, "AIM_REPORT_TEST_KEY not set: seed 3 shown instead"),
    ],
)
def test_examples_noise_is_repeatable_and_said(
    monkeypatch: pytest.MonkeyPatch, settings: dict[str, Any], key_set: bool, seed: int | None, note: str
) -> None:
    """Every tier's examples are drawn with noise the page can name; a keyed tier without its key still shows."""
    from aim_cli.profile import Profile
    from aim_cli.report.noise import example_profile

    monkeypatch.delenv("AIM_REPORT_TEST_KEY", raising=False)
    if key_set:
        monkeypatch.setenv("AIM_REPORT_TEST_KEY", "secret")
    profile, said = example_profile(Profile(sigma=1.0, **settings), 3)
    assert said == note
    assert profile.seed == seed
    assert profile.sigma == 1.0 and (profile.key_env is None) == (not key_set)
