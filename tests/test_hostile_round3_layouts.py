"""Hostile pass, round 3: data set layouts (tests/data/hostile_round3/layouts.md lists every case).

Two classes are under test. What a run reads: every file a data set root leads to (split-list
entries, `--split`, symlinks) is resolved before the run and held to the rules for files on the
command line, the same in `aim segment --masks ROOT` and `aim calibrate --task segment`. Layouts by
content: a layout that changes ids (ADE20K's shift, Cityscapes' label ids) is taken from folder
names only when the masks' values support it, else one line naming --layout. The data are the
demo segmenter's four scenes (7 classes, 0-based masks), laid out every way the table needs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from aim_cli import demo
from aim_cli.calibration.core import Target, check_reachable
from aim_cli.errors import AimError, InputError
from aim_cli.layouts.conventions import evidence
from aim_cli.layouts.reads import plain_name
from tests.conftest import assert_user_error, run_aim

SAMPLES = demo.samples_dir("segment")
SAMPLE_MASKS = SAMPLES.parent / "segment_masks"
CLASSES = 7  # the demo segmenter's
SCENES = sorted(SAMPLES.glob("*.png"))


def _truth(i: int) -> np.ndarray:
    """Scene i's 0-based ground truth."""
    return np.asarray(Image.open(SAMPLE_MASKS / SCENES[i].name)).astype(np.int64)


def _save(values: np.ndarray, path: Path, mode: str = "L") -> Path:
    """A mask as an 8-bit grey ('L'), 16-bit ('I;16') or colour ('RGB') PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(values.astype(np.uint16)).save(path)
    elif mode == "RGB":
        Image.fromarray(np.stack([values * 30 % 256, values, values * 7 % 256], -1).astype(np.uint8)).save(path)
    else:
        Image.fromarray(values.astype(np.uint8)).save(path)
    return path


def _plain(root: Path, truths: Callable[[int], np.ndarray] = _truth, mode: str = "L") -> Path:
    """aim's own layout: images/NAME.png with masks/NAME.png."""
    for i, scene in enumerate(SCENES):
        (root / "images").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scene, root / "images" / scene.name)
        _save(truths(i), root / "masks" / scene.name, mode)
    return root


def _ade(root: Path, truths: Callable[[int], np.ndarray] = _truth, mode: str = "L") -> Path:
    """ADE20K's folder names (images/validation, annotations/validation) around the given mask values."""
    for i, scene in enumerate(SCENES):
        (root / "images" / "validation").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scene, root / "images" / "validation" / scene.name)
        _save(truths(i), root / "annotations" / "validation" / scene.name, mode)
    return root


def _shifted(i: int) -> np.ndarray:
    """Raw ADE20K values of scene i: class k stored as k+1, 0 = other, and the last class (id 7) somewhere."""
    raw = _truth(i) + 1
    raw[0, :] = 0
    if i == len(SCENES) - 1:
        raw[1, 0] = CLASSES  # class 6 as ADE20K stores it: the evidence of the shift
    return raw


def _shifted_twin(i: int) -> np.ndarray:
    """The model-space ids of _shifted(i): 255 where 'other', k-1 elsewhere."""
    raw = _shifted(i)
    return np.where(raw == 0, 255, raw - 1)


def _voc(devkit: Path, year: str = "VOC2012", lines: list[str] | None = None) -> Path:
    """A VOCdevkit/VOC20xx copy: JPEGImages, palette-free grey SegmentationClass masks, a val list."""
    root = devkit / year
    for i, scene in enumerate(SCENES):
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.open(scene).convert("RGB").save(root / "JPEGImages" / f"{scene.stem}.jpg", quality=95)
        _save(_truth(i), root / "SegmentationClass" / f"{scene.stem}.png")
    listing = root / "ImageSets" / "Segmentation"
    listing.mkdir(parents=True, exist_ok=True)
    names = lines if lines is not None else [s.stem for s in SCENES]
    (listing / "val.txt").write_text("".join(f"{line}\n" for line in names))
    return devkit


def _segment(tmp: Path, *args: str):
    """`aim segment` (demo model, fixed seed) writing into a fresh output folder."""
    out = tmp / f"out{len(list(tmp.glob('out*')))}"
    return run_aim("segment", *args, "--sigma", "0.5", "--seed", "1", "-o", str(out)), out


def _calibrate(*args: str):
    """`aim calibrate --task segment` on the demo model, two draws."""
    return run_aim("calibrate", "--task", "segment", "--target-acc", "0.5", "--draws", "2", *args)


def _metrics(out: Path) -> dict:
    """evaluation.json's clean and modulated metrics (what the scores are, not what names the data)."""
    report = json.loads((out / "evaluation.json").read_text())
    return {"images": report["images"], "clean": report["clean"], "modulated": report["modulated"]}


def _one_line(result) -> None:
    """One error line on stderr."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("aim: error")]
    assert len(errors) == 1, result.stderr


# --- layouts by content ---------------------------------------------------------------------


def test_plain_masks_under_ade20k_names_are_not_shifted(tmp_path):
    """The reported case: 0-based masks in images/validation + annotations/validation (was exit 0, mIoU 0.0017)."""
    root = _ade(tmp_path / "root")
    result, _ = _segment(tmp_path, "--masks", str(root))
    assert_user_error(result, 2, "--layout ade20k", "--layout plain", "ids 0..6")
    _one_line(result)
    assert_user_error(_calibrate("--data", str(root)), 2, "--layout ade20k", "--layout plain")


def test_named_layout_plain_scores_them_as_aim_s_own_layout(tmp_path):
    root, plain = _ade(tmp_path / "root"), _plain(tmp_path / "plain")
    reference, ref_out = _segment(tmp_path, "--masks", str(plain))
    named, named_out = _segment(tmp_path, "--masks", str(root), "--layout", "plain")
    assert reference.returncode == 0 and named.returncode == 0, named.stderr
    assert _metrics(named_out) == _metrics(ref_out)
    assert _metrics(ref_out)["clean"]["pixel_accuracy"] > 0.9


def test_named_layout_ade20k_is_taken_as_asked(tmp_path):
    """The user names the shift: it is applied, whatever the content (their call)."""
    result, _ = _segment(tmp_path, "--masks", str(_ade(tmp_path / "root")), "--layout", "ade20k")
    assert result.returncode == 0, result.stderr


def test_ade20k_content_with_its_shift_is_detected(tmp_path):
    """Raw ADE20K values (0 = other, top id = the class count) are detected and score like their plain twin."""
    root, plain = _ade(tmp_path / "root", _shifted), _plain(tmp_path / "plain", _shifted_twin)
    reference, ref_out = _segment(tmp_path, "--masks", str(plain))
    detected, det_out = _segment(tmp_path, "--masks", str(root))
    assert reference.returncode == 0 and detected.returncode == 0, detected.stderr
    assert _metrics(det_out) == _metrics(ref_out)


def test_ade20k_content_without_other_is_still_the_shift(tmp_path):
    """Ids 1..7 with no 0: the top id equals the class count, which only the shift explains."""
    root = _ade(tmp_path / "root", lambda i: _truth(i) + 1)
    result, out = _segment(tmp_path, "--masks", str(root))
    assert result.returncode == 0, result.stderr
    assert _metrics(out)["clean"]["pixel_accuracy"] > 0.9


@pytest.mark.parametrize(
    ("case", "truths", "mode", "fragments"),
    [
        ("plain-0-based-16-bit", _truth, "I;16", ("--layout ade20k",)),
        (
            "already-reduced-255",
            lambda i: np.where(np.arange(64)[None, :] < 2, 255, _truth(i)),
            "L",
            ("--layout plain",),
        ),
        ("ids-past-the-classes", lambda i: _truth(i) + 3, "L", ("--layout",)),
        ("shift-and-255", lambda i: np.where(np.arange(64)[None, :] < 2, 255, _truth(i) + 1), "L", ("--layout",)),
        ("all-zero", lambda i: np.zeros((64, 64)), "L", ("--layout",)),
    ],
)
def test_ade20k_names_without_the_content_are_refused(tmp_path, case, truths, mode, fragments):
    root = _ade(tmp_path / "root", truths, mode)
    result, out = _segment(tmp_path, "--masks", str(root))
    assert_user_error(result, 2, *fragments)
    _one_line(result)
    assert not (out / "evaluation.json").exists()


def test_ade20k_annotation_folder_beside_named_images_needs_the_content(tmp_path):
    root = _ade(tmp_path / "root")
    images = [str(p) for p in sorted((root / "images" / "validation").iterdir())]
    result, _ = _segment(tmp_path, *images, "--masks", str(root / "annotations" / "validation"))
    assert_user_error(result, 2, "--layout ade20k", "--layout plain")


def test_mixed_root_takes_aim_s_own_layout(tmp_path):
    """images/ + masks/ + annotations/: aim's own layout is unambiguous, the ADE20K-like folder is not read."""
    root = _plain(tmp_path / "root")
    _save(np.full((64, 64), 99), root / "annotations" / "validation" / SCENES[0].name)
    result, out = _segment(tmp_path, "--masks", str(root))
    assert result.returncode == 0, result.stderr
    assert _metrics(out)["images"] == len(SCENES)


# --- masks that are wrong on their own: each fails alone, the batch goes on ---------------------


@pytest.mark.parametrize(
    ("case", "bad", "fragment"),
    [
        ("wrong-size", lambda: (np.zeros((32, 32)), "L"), "32x32"),
        ("colour-mask", lambda: (_truth(0), "RGB"), "colour"),
        ("16-bit-beyond-the-classes", lambda: (np.full((64, 64), 300), "I;16"), "value 300"),
        ("8-bit-beyond-the-classes", lambda: (np.full((64, 64), 9), "L"), "value 9"),
    ],
)
def test_a_bad_mask_fails_alone(tmp_path, case, bad, fragment):
    root = _plain(tmp_path / "root")
    values, mode = bad()
    _save(values, root / "masks" / SCENES[0].name, mode)
    result, out = _segment(tmp_path, "--masks", str(root))
    assert_user_error(result, 1, fragment)
    assert _metrics(out)["images"] == len(SCENES) - 1


def test_16_bit_masks_score_like_8_bit_ones(tmp_path):
    eight, sixteen = _plain(tmp_path / "eight"), _plain(tmp_path / "sixteen", mode="I;16")
    a, a_out = _segment(tmp_path, "--masks", str(eight))
    b, b_out = _segment(tmp_path, "--masks", str(sixteen))
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    assert _metrics(a_out) == _metrics(b_out)


# --- Pascal VOC: split lists name ids, never paths -----------------------------------------------


def _outside_image(tmp: Path) -> Path:
    """An image of another tree named like one of the root's (so it would pair with that mask), never to be read."""
    other = tmp / "elsewhere" / f"{SCENES[1].stem}.jpg"
    other.parent.mkdir(parents=True, exist_ok=True)
    Image.open(SCENES[1]).convert("RGB").save(other)
    return other


@pytest.mark.parametrize(
    ("case", "entry"),
    [
        ("absolute-path", "{outside}"),
        ("dot-dot", "../../../elsewhere/scene_1"),
        ("sub-folder", "sub/scene_0"),
        ("backslash", "..\\..\\elsewhere\\scene_1"),
        ("nul-byte", "scene_0\x00.jpg"),
        ("dot-dot-alone", ".."),
    ],
)
def test_voc_split_entry_that_is_not_an_id_is_refused_by_segment_and_calibrate(tmp_path, case, entry):
    """Was: an absolute entry made segment read and score another tree's image, exit 0."""
    outside = _outside_image(tmp_path)
    entry = entry.format(outside=outside.with_suffix(""))
    devkit = _voc(tmp_path / "VOCdevkit", lines=[SCENES[0].stem, entry])
    result, out = _segment(tmp_path, "--masks", str(devkit))
    assert_user_error(result, 2, "line 2", "not a plain name")
    _one_line(result)
    assert "\x00" not in result.stderr and not out.exists()
    assert_user_error(_calibrate("--data", str(devkit)), 2, "line 2", "not a plain name")


def test_voc_repeated_entry_is_refused(tmp_path):
    devkit = _voc(tmp_path / "VOCdevkit", lines=[SCENES[0].stem, SCENES[1].stem, SCENES[0].stem])
    result, _ = _segment(tmp_path, "--masks", str(devkit))
    assert_user_error(result, 2, "twice", "lines 1 and 3")


@pytest.mark.parametrize("lines", [[], ["", "   ", "\t"]], ids=["empty", "blank-lines"])
def test_voc_empty_split_is_refused(tmp_path, lines):
    devkit = _voc(tmp_path / "VOCdevkit", lines=lines)
    assert_user_error(_segment(tmp_path, "--masks", str(devkit))[0], 2, "names no images")
    assert_user_error(_calibrate("--data", str(devkit)), 2, "names no images")


def test_voc_crlf_split_list_is_read(tmp_path):
    devkit = _voc(tmp_path / "VOCdevkit")
    split = devkit / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    split.write_bytes("".join(f"{s.stem}\r\n" for s in SCENES).encode())
    result, out = _segment(tmp_path, "--masks", str(devkit))
    assert result.returncode == 0, result.stderr
    assert _metrics(out)["images"] == len(SCENES)


@pytest.mark.parametrize("split", ["../..", "/etc/passwd", "val/../val", "..", "."])
def test_split_that_is_a_path_is_refused(tmp_path, split):
    devkit = _voc(tmp_path / "VOCdevkit")
    ade = _ade(tmp_path / "ade", _shifted)
    for root in (devkit, ade):
        assert_user_error(_segment(tmp_path, "--masks", str(root), "--split", split)[0], 2, "--split", "plain name")
        assert_user_error(_calibrate("--data", str(root), "--split", split), 2, "--split", "plain name")


def test_voc_image_symlinked_out_fails_alone_in_segment_and_calibrate(tmp_path):
    """A JPEGImages entry linking to another tree is never read: the same failure in both commands."""
    devkit = _voc(tmp_path / "VOCdevkit")
    link = devkit / "VOC2012" / "JPEGImages" / f"{SCENES[0].stem}.jpg"
    link.unlink()
    link.symlink_to(_outside_image(tmp_path))
    result, out = _segment(tmp_path, "--masks", str(devkit))
    assert_user_error(result, 1, "outside", "--allow-outside-paths")
    assert _metrics(out)["images"] == len(SCENES) - 1
    calibrated = _calibrate("--data", str(devkit))
    assert_user_error(calibrated, 1, "outside")
    allowed, allowed_out = _segment(tmp_path, "--masks", str(devkit), "--allow-outside-paths")
    assert allowed.returncode == 0, allowed.stderr
    assert _metrics(allowed_out)["images"] == len(SCENES)


def test_voc_mask_symlinked_out_fails_alone(tmp_path):
    devkit = _voc(tmp_path / "VOCdevkit")
    outside = _save(_truth(0), tmp_path / "elsewhere" / "mask.png")
    link = devkit / "VOC2012" / "SegmentationClass" / f"{SCENES[0].stem}.png"
    link.unlink()
    link.symlink_to(outside)
    result, out = _segment(tmp_path, "--masks", str(devkit))
    assert_user_error(result, 1, "mask", "outside")
    assert _metrics(out)["images"] == len(SCENES) - 1


def test_named_images_mask_symlinked_out_of_the_masks_folder_fails_alone(tmp_path):
    """Images named on the command line are the user's; the masks found for them stay inside --masks."""
    root = _plain(tmp_path / "root")
    outside = _save(_truth(0), tmp_path / "elsewhere" / SCENES[0].name)
    (root / "masks" / SCENES[0].name).unlink()
    (root / "masks" / SCENES[0].name).symlink_to(outside)
    images = [str(p) for p in sorted((root / "images").iterdir())]
    result, out = _segment(tmp_path, *images, "--masks", str(root / "masks"))
    assert_user_error(result, 1, "mask", "outside")
    assert _metrics(out)["images"] == len(SCENES) - 1
    allowed, allowed_out = _segment(tmp_path, *images, "--masks", str(root / "masks"), "--allow-outside-paths")
    assert allowed.returncode == 0 and _metrics(allowed_out)["images"] == len(SCENES), allowed.stderr


def test_voc_split_list_symlinked_out_is_refused(tmp_path):
    devkit = _voc(tmp_path / "VOCdevkit")
    split = devkit / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    outside = tmp_path / "elsewhere" / "val.txt"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_text(f"{SCENES[0].stem}\n")
    split.unlink()
    split.symlink_to(outside)
    assert_user_error(_segment(tmp_path, "--masks", str(devkit))[0], 2, "split list", "outside")
    assert_user_error(_calibrate("--data", str(devkit)), 2, "split list", "outside")


def test_voc_symlink_loop_fails_alone_without_hanging(tmp_path):
    devkit = _voc(tmp_path / "VOCdevkit")
    loop = devkit / "VOC2012" / "JPEGImages" / f"{SCENES[0].stem}.jpg"
    loop.unlink()
    loop.symlink_to(loop)
    result, out = _segment(tmp_path, "--masks", str(devkit))
    assert_user_error(result, 1, SCENES[0].stem)
    assert _metrics(out)["images"] == len(SCENES) - 1


@pytest.mark.parametrize(
    "build", [lambda t: _ade(t, _shifted) / "images" / "validation", lambda t: _plain(t) / "images"]
)
def test_folder_symlink_loop_is_not_followed(tmp_path, build):
    """images/.../loop -> .. : listed once, no hang, the same numbers."""
    folder = build(tmp_path / "root")
    os.symlink("..", folder / "loop")
    result, out = _segment(tmp_path, "--masks", str(tmp_path / "root"))
    assert result.returncode == 0, result.stderr
    assert _metrics(out)["images"] == len(SCENES)


def test_voc_split_list_that_is_a_fifo_is_refused(tmp_path):
    devkit = _voc(tmp_path / "VOCdevkit")
    split = devkit / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    split.unlink()
    os.mkfifo(split)
    assert_user_error(_segment(tmp_path, "--masks", str(devkit))[0], 2, "split list")


def test_voc_devkit_with_two_years_is_ambiguous(tmp_path):
    devkit = _voc(_voc(tmp_path / "VOCdevkit", "VOC2007"), "VOC2012")
    for extra in ((), ("--layout", "voc")):
        result, _ = _segment(tmp_path, "--masks", str(devkit), *extra)
        assert_user_error(result, 2, "VOC2007 and VOC2012", "ambiguous", "VOC2012")
        _one_line(result)
        assert_user_error(_calibrate("--data", str(devkit), *extra), 2, "ambiguous")
    result, out = _segment(tmp_path, "--masks", str(devkit / "VOC2007"))
    assert result.returncode == 0 and _metrics(out)["images"] == len(SCENES), result.stderr


# --- outputs: a file the data reaches is never written -----------------------------------------


def test_calibrate_output_that_a_data_file_links_to_is_refused(tmp_path):
    """With outside paths allowed, a VOC image may link anywhere: never to what the run writes."""
    devkit = _voc(tmp_path / "VOCdevkit")
    target = tmp_path / "profile.yaml"
    target.write_text("keep me\n")
    link = devkit / "VOC2012" / "JPEGImages" / f"{SCENES[0].stem}.jpg"
    link.unlink()
    link.symlink_to(target)
    result = _calibrate("--data", str(devkit), "--allow-outside-paths", "--write-profile", str(target))
    assert_user_error(result, 2, "would overwrite")
    assert target.read_text() == "keep me\n"


def test_segment_allow_outside_paths_needs_masks(tmp_path):
    assert_user_error(_segment(tmp_path, "--allow-outside-paths")[0], 2, "--masks")


# --- Cityscapes: label ids only when the content shows them ---------------------------------------


@pytest.fixture(scope="module")
def cityscapes_model(tmp_path_factory) -> Path:
    """A tiny random SegFormer with Cityscapes' 19 train classes."""
    pytest.importorskip("cityscapesscripts")
    from tests.test_layouts import _cityscapes_tables, _segformer

    return _segformer(tmp_path_factory.mktemp("city") / "model", _cityscapes_tables()[1])


def _cityscapes(root: Path, masks: dict[str, Callable[[int], np.ndarray]]) -> Path:
    """leftImg8bit/val/aachen/* with the given gtFine variants (suffix -> values per frame)."""
    (root / "gtFine" / "val" / "aachen").mkdir(parents=True)
    for i, scene in enumerate(SCENES[:2]):
        stem = f"aachen_{i:06d}_000019"
        image = root / "leftImg8bit" / "val" / "aachen" / f"{stem}_leftImg8bit.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.open(scene).convert("RGB").resize((32, 32)).save(image)
        for suffix, values in masks.items():
            _save(values(i)[::2, ::2], root / "gtFine" / "val" / "aachen" / f"{stem}{suffix}")
    return root


LABEL_IDS = "_gtFine_labelIds.png"
TRAIN_IDS = "_gtFine_labelTrainIds.png"


@pytest.mark.parametrize(
    ("case", "masks", "code", "fragment"),
    [
        ("label-ids-as-shipped", {LABEL_IDS: lambda i: _truth(i) + 20}, 0, None),
        ("train-ids-only", {TRAIN_IDS: _truth}, 0, None),
        ("label-ids-holding-train-ids-and-255", {LABEL_IDS: lambda i: np.where(_truth(i) == 0, 255, _truth(i))}, 2,
         "--layout plain"),
        ("label-ids-up-to-18", {LABEL_IDS: _truth}, 2, "--layout cityscapes"),
        ("label-ids-past-33", {LABEL_IDS: lambda i: _truth(i) + 40}, 2, "--layout"),
        ("no-gtfine-for-the-split", {}, 2, "ground-truth mask"),
    ],
)  # fmt: skip
def test_cityscapes_label_ids_need_the_content(tmp_path, cityscapes_model, case, masks, code, fragment):
    root = _cityscapes(tmp_path / "root", masks)
    result, _ = _segment(tmp_path, "--model", str(cityscapes_model), "--masks", str(root))
    if code == 0:
        assert result.returncode == 0, result.stderr
    else:
        assert_user_error(result, code, fragment)
        _one_line(result)


# --- messages: never 'nan', never an option the user did not give ------------------------------


def test_calibrating_on_masks_that_score_nothing_says_so(tmp_path):
    """Every pixel ignored: was 'nan (clean)' and advice about focus the user never gave."""
    root = _plain(tmp_path / "root", lambda i: np.full((64, 64), 255))
    result = _calibrate("--data", str(root))
    assert_user_error(result, 2, "undefined", "nothing in it is scored")
    assert "nan" not in result.stderr.lower() and "focus" not in result.stderr.lower()


TARGETS = [
    Target("accuracy", 0.5),
    Target("pixel_accuracy", 0.5),
    Target("miou", 0.5),
    Target("recall", 0.5, "person", 1),
    Target("recall", 0.5, "person", -1),
]
NUMBERS = st.one_of(st.floats(0, 1), st.just(math.nan), st.just(math.inf), st.just(-math.inf))


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, len(TARGETS) - 1), value=NUMBERS, clean=NUMBERS, limit=NUMBERS)
def test_every_reachability_message_is_free_of_nan_and_of_options_not_given(index, value, clean, limit):
    """The one builder of 'target out of reach' messages, over every branch: no nan, focus only when given."""
    base = TARGETS[index]
    target = Target(base.metric, value, base.focus_class, base.focus_direction)
    try:
        check_reachable(target, clean, limit, "chance" if base.metric != "recall" else "always person")
    except AimError as exc:
        text = str(exc).lower()
        assert "nan" not in text.replace("nanoseconds", "") and "inf" not in text.split("information")[0]
        assert "none" not in text
        if base.metric != "recall":
            assert "focus" not in text, text
    else:
        assert all(map(math.isfinite, (clean, limit)))


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=12))
def test_plain_name_takes_names_and_refuses_paths(text):
    path_like = not text or any(c in text for c in "/\\\x00") or text in (".", "..")
    try:
        assert plain_name(text, "--split", "hint") == text and not path_like
    except InputError as exc:
        assert path_like and "\x00" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(
    classes=st.integers(2, 300),
    values=st.sets(st.integers(0, 299), min_size=1, max_size=20),
    ignored=st.booleans(),
)
def test_zero_based_ids_never_show_the_ade20k_shift(classes, values, ignored):
    """Ids a 0-based mask of this model can hold never count as evidence of the shift."""
    ids = {v % classes for v in values} | ({255} if ignored else set())
    assert evidence(ids, "ade20k", classes) is not True


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    classes=st.integers(2, 160),
    seed=st.integers(0, 2**16),
    folders=st.sampled_from(
        [("images/validation", "annotations/validation"), ("images/training", "annotations/training")]
    ),
)
def test_random_0_based_masks_under_ade20k_names_are_never_shifted(tmp_path_factory, classes, seed, folders):
    """Whatever the class count and values, 0-based masks under ADE20K's names are read unshifted or refused."""
    from aim_cli.calibration.datasets import read_segmentation_data

    rng = np.random.default_rng(seed)
    root = tmp_path_factory.mktemp("ade")
    split = folders[0].split("/")[1]
    for i in range(3):
        (root / folders[0]).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(root / folders[0] / f"{i}.png")
        _save(rng.integers(0, min(classes, 256), (8, 8)), root / folders[1] / f"{i}.png")
    dataset = read_segmentation_data(root, split=split)
    try:
        dataset.prepare(classes)
    except InputError as exc:
        assert "--layout" in str(exc)
    else:
        assert dataset.convert is None
