"""`aim report`: tiers and certificates read defensively, a self-contained page from the real CLI, clear errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from aim_cli.errors import ProfileError
from aim_cli.report.tiers import certificate_view, load_certified_profile, load_tiers
from tests.conftest import REPO, assert_user_error, run_aim

CERTIFICATE = """\
certificate:
  aim_version: "0.1.0"
  model: {spec: demo, fingerprint: "sha256:00"}
  data: {spec: demo, fingerprint: "sha256:11", items: 500}
  metric: accuracy
  target: 0.6
  method: exact
  predicted: 0.601
  interval: {low: 0.55, high: 0.65, confidence: 0.95, sample_size: 500, meaning: "a fresh sample"}
  settings_hash: "sha256:22"
"""
TIER = "version: 1\nname: tier-60\nutility: {sigma: 2.56}\nnoise: {seed: 0}\n"
FOCUS_TIER = "version: 1\nfocus:\n  sigma: 3.0\n  targets:\n    - {class: circle, direction: up}\nnoise: {seed: 1}\n"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("text", None),
        ({}, None),
        ({"metric": "accuracy"}, None),  # no promise: nothing to show
        ({"predicted": "0.6"}, None),  # text, not a number
        ({"predicted": True}, None),  # a bool is not a number
        ({"predicted": float("nan")}, None),
        ({"predicted": 0.6}, {"predicted": 0.6, "low": None, "has_interval": False}),
        ({"interval": {"low": 0.5, "high": 0.7}}, {"predicted": None, "low": 0.5, "has_interval": True}),
        ({"interval": {"low": 0.5}, "predicted": 0.6}, {"low": 0.5, "high": None, "has_interval": False}),
        ({"interval": [0.5, 0.7], "predicted": 0.6}, {"low": None, "has_interval": False}),
        ({"predicted": 0.6, "data": {"items": 500}}, {"items": 500}),
        ({"predicted": 0.6, "data": {"items": "500"}}, {"items": None}),
    ],
)
def test_certificate_view_reads_what_is_well_formed(raw: Any, expected: dict[str, Any] | None) -> None:
    """Anything missing or malformed reads as absent; a certificate without a promise is no certificate."""
    view = certificate_view(raw)
    if expected is None:
        assert view is None
        return
    assert view is not None
    for key, value in expected.items():
        assert getattr(view, key) == value, key


def test_a_certified_profile_loads_with_its_certificate(tmp_path: Path) -> None:
    """The certificate key is taken out before the profile parser sees it, and read as the schema says."""
    path = tmp_path / "tier-60.yaml"
    path.write_text(TIER + CERTIFICATE, encoding="utf-8")
    profile, raw = load_certified_profile(path)
    assert profile.sigma == 2.56 and profile.seed == 0
    view = certificate_view(raw)
    assert view is not None
    assert (view.metric, view.predicted, view.low, view.high, view.confidence) == ("accuracy", 0.601, 0.55, 0.65, 0.95)
    assert (view.method, view.items) == ("exact", 500)


def test_tiers_folder_errors_are_one_line(tmp_path: Path) -> None:
    """A missing folder, an empty one and an unknown key each say what is wrong."""
    with pytest.raises(ProfileError, match="not a directory"):
        load_tiers(tmp_path / "missing")
    with pytest.raises(ProfileError, match="no .yaml profiles"):
        load_tiers(tmp_path)
    (tmp_path / "bad.yaml").write_text(TIER + "colour: red\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="unknown key"):
        load_tiers(tmp_path)


@pytest.fixture(scope="module")
def tiers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's tiers, a certified one and a classifier focus tier."""
    folder = tmp_path_factory.mktemp("tiers")
    for path in (REPO / "profiles").glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    (folder / "tier-60.yaml").write_text(TIER + CERTIFICATE, encoding="utf-8")
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


def test_classify_report_is_one_self_contained_page(tiers: Path, tmp_path: Path) -> None:
    """Demo classifier: every tier in the table, the certificate's interval, examples under each usable tier."""
    page = tmp_path / "report.html"
    result = run_aim("report", "--tiers", str(tiers), "--limit", "200", "--examples", "2", "-o", str(page))
    assert result.returncode == 0, result.stderr
    assert f"wrote report to {page}" in result.stderr
    text = page.read_text(encoding="utf-8")
    sources = _self_contained(text)
    figures = text.count("class='figure'") + text.count('class="figure"')
    assert figures == 2  # the curve, and the per-class recall of the focus tier
    # 2 examples x (clean + the 4 tiers that apply to the classifier); the person tiers do not.
    assert len(sources) == figures + 2 * 5
    assert text.count("not applicable: ") == 2 and "unknown class name &#x27;person&#x27;" in text
    assert "interval 0.550&ndash;0.650 at 95%" in text
    assert not list(tmp_path.glob(".*")), "a temporary file was left"


def test_segment_report_shows_overlays(tiers: Path, tmp_path: Path) -> None:
    """Demo segmenter: both curves, a legend, input, truth and one overlay per column."""
    page = tmp_path / "segment.html"
    result = run_aim(
        "report", "--task", "segment", "--tiers", str(tiers), "--limit", "4", "--examples", "2", "-o", str(page)
    )
    assert result.returncode == 0, result.stderr
    text = page.read_text(encoding="utf-8")
    sources = _self_contained(text)
    assert "mIoU" in text and "pixel accuracy" in text and "class='legend'" in text
    # 2 examples x (input + truth + clean + 5 tiers: focus-circle does not apply to the segmenter) + 2 figures
    assert len(sources) == 2 + 2 * (2 + 1 + 5)


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
