"""`aim report` pages in a real headless browser: the system's Chromium, driven over the DevTools pipe.

Run by `make test-browser` (which sets AIM_BROWSER_TESTS=1); `make test` skips it. Needs the
system's Chromium (Debian: `apt-get install chromium`); without it the test skips and says so.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from aim_cli.profile import load_profile
from tests.chromium import Chromium, find_chromium
from tests.conftest import REPO, run_aim

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(os.environ.get("AIM_BROWSER_TESTS") != "1", reason="browser test: run `make test-browser`"),
]

# A screenshot of a real page has text, figures and images: its grey levels vary far more than this.
MIN_VARIANCE = 200.0
# `aim report` on the demo models, on a shared CI machine (measured: well under this).
REPORT_SECONDS = 60.0

FOCUS_CIRCLE = "version: 1\nfocus:\n  sigma: 3.0\n  targets:\n    - {class: circle, direction: up}\nnoise: {seed: 1}\n"


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system Chromium, or a clean skip."""
    found = find_chromium()
    if found is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")
    return found


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Certified tiers from the real CLI, by task: the demo segmenter's on all its data (the docs' screenshot)."""
    folder = tmp_path_factory.mktemp("certified")
    runs = {
        "classify": ("tier-60", ["--target-acc", "0.6", "--limit", "200"]),
        "segment": ("tier-50", ["--task", "segment", "--target-miou", "0.5"]),
    }
    made = {}
    for task, (name, args) in runs.items():
        made[task] = folder / f"{name}.yaml"
        result = run_aim("calibrate", *args, "--write-profile", str(made[task]), "--quiet")
        assert result.returncode == 0, result.stderr
    made["generate"] = made["classify"]  # no text certificate: the page says it is for another model
    return made


def _tiers(folder: Path, certified: Path) -> Path:
    """The repository's example tiers plus one certified tier."""
    folder.mkdir()
    for path in [*(REPO / "profiles").glob("*.yaml"), certified]:
        shutil.copy(path, folder / path.name)
    (folder / "focus-circle.yaml").write_text(FOCUS_CIRCLE, encoding="utf-8")  # a focus tier for the classifier
    return folder


def _check_page(browser: str, page: Path, screenshot: Path) -> dict[str, object]:
    """Load the page: no console error, every image decoded with a size, a screenshot that is not blank."""
    with Chromium(browser) as chrome:
        chrome.open(page.resolve().as_uri())
        images = chrome.evaluate(
            "Promise.all(Array.from(document.images).map(i => i.decode().then(() => true, () => false)))"
            ".then(ok => Array.from(document.images).map((i, k) => ({ok: ok[k], complete: i.complete,"
            " width: i.naturalWidth, height: i.naturalHeight, data: i.src.startsWith('data:'),"
            " figure: i.classList.contains('figure')})))"
        )
        errors = chrome.errors()
        chrome.screenshot(screenshot)
    assert errors == [], errors
    assert images, "the page shows no image"
    broken = [i for i, image in enumerate(images) if not (image["ok"] and image["complete"] and image["width"] > 0)]
    assert broken == [], f"images not decoded: {broken} of {len(images)}"
    assert all(image["data"] for image in images), "an image is not embedded"
    figures = sum(1 for image in images if image["figure"])
    with Image.open(screenshot) as shot:
        variance = sum(ImageStat.Stat(shot.convert("L")).var)
        size = shot.size
    assert variance > MIN_VARIANCE, f"screenshot looks blank (grey-level variance {variance:.1f})"
    return {"images": len(images), "figures": figures, "variance": variance, "size": size}


@pytest.mark.parametrize(
    ("task", "figures", "model"), [("classify", 2, "this"), ("segment", 2, "this"), ("generate", 1, "another")]
)
def test_demo_report_renders(
    chromium: str, certified: dict[str, Path], tmp_path: Path, task: str, figures: int, model: str
) -> None:
    """The demo report of each task: made in under a minute, whole in the browser, its certificate shown."""
    tiers = _tiers(tmp_path / "tiers", certified[task])
    page = tmp_path / f"report-{task}.html"
    start = time.perf_counter()
    result = run_aim("report", "--task", task, "--tiers", str(tiers), "-o", str(page), "--quiet")
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert seconds < REPORT_SECONDS, f"aim report --task {task} took {seconds:.1f} s"
    certificate = load_profile(certified[task]).certificate
    assert certificate is not None
    text = page.read_text(encoding="utf-8")
    assert f"interval {certificate.interval.low:.3f}&ndash;{certificate.interval.high:.3f} at 95%" in text
    assert f"certified on {model} model" in text
    screenshot = tmp_path / f"report-{task}.png"
    seen = _check_page(chromium, page, screenshot)
    assert seen["figures"] == figures
    print(f"\n{task}: report {seconds:.1f} s, {seen}")  # shown with -s: the numbers behind the docs
    keep = os.environ.get("AIM_SCREENSHOT_DIR")
    if keep:  # e.g. the docs' screenshot: AIM_SCREENSHOT_DIR=docs/images make test-browser
        shutil.copy(screenshot, Path(keep) / f"report-{task}.png")
