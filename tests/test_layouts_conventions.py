"""No silent wrong number: ground truth in a convention the chosen layout leaves unmapped is refused.

Every known convention (ids shifted by one, ADE20K's 151 ids on a 150-class model, Cityscapes'
34 label ids on a 19-class model, already-reduced ADE20K masks, the Cityscapes table on a model
of another size) is one line naming the --layout that fixes it: as a rule over mask values
(parametrized, and a property over random class counts and shifts), and end to end through the
CLI, where following the advice then gives the plain layout's numbers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aim_cli.layouts.conventions import label_problem, mask_problem
from tests.test_compatibility import Cli
from tests.test_layouts import (  # noqa: F401 - fixture
    _cityscapes,
    _evaluation,
    _plain_twin,
    _save_ids,
    models,
)

IGNORE = 255
CITYSCAPES_LABEL_IDS = set(range(34))


@pytest.fixture
def cli(capsys, monkeypatch) -> Cli:
    """The in-process CLI runner."""
    return Cli(capsys, monkeypatch)


@pytest.mark.parametrize(
    ("values", "layout", "classes", "reduced", "detected", "fix"),
    [
        pytest.param(set(range(151)), "plain", 150, False, True, "--layout ade20k", id="ade20k-151-on-150"),
        pytest.param({0, 3, 150}, "plain", 150, False, False, "--layout ade20k", id="ade20k-151-named-plain"),
        pytest.param({0, 5, 7}, "plain", 150, False, True, "--layout ade20k", id="ade20k-other-no-ignore"),
        pytest.param({0, 1, 2, 7}, "voc", 7, False, True, "--layout ade20k", id="shifted-by-one"),
        pytest.param(CITYSCAPES_LABEL_IDS, "plain", 19, False, True, "--layout cityscapes", id="cityscapes-34-on-19"),
        pytest.param({0, 7, 26}, "voc", 19, False, True, "--layout cityscapes", id="cityscapes-ids-as-voc"),
        pytest.param({0, 12, 149, IGNORE}, "ade20k", 150, True, True, "--layout plain", id="ade20k-already-reduced"),
        pytest.param({0, 1, 2}, "cityscapes", 7, False, True, "--layout plain", id="cityscapes-on-7-classes"),
    ],
)
def test_every_mask_convention_names_its_layout(values, layout, classes, reduced, detected, fix):
    problem = mask_problem(values, layout, classes, reduced, detected)
    assert problem is not None and fix in problem[1]


@pytest.mark.parametrize(
    ("values", "layout", "classes", "reduced", "detected"),
    [
        pytest.param(set(range(150)) | {IGNORE}, "plain", 150, False, True, id="reduced-ade20k-as-plain"),
        pytest.param({0, 5, 7}, "plain", 150, False, False, id="class-0-named-plain"),
        pytest.param(set(range(151)), "ade20k", 150, True, True, id="ade20k-raw"),
        pytest.param(set(range(151)), "ade20k", 151, False, True, id="ade20k-151-classes"),
        pytest.param(CITYSCAPES_LABEL_IDS, "cityscapes", 19, False, True, id="cityscapes-label-ids"),
        pytest.param(set(range(19)) | {IGNORE}, "plain", 19, False, True, id="cityscapes-train-ids"),
        pytest.param(set(range(21)) | {IGNORE}, "voc", 21, False, True, id="voc"),
        pytest.param({3, 40}, "plain", 7, False, True, id="unknown-values-fail-per-image"),
    ],
)
def test_data_in_its_own_convention_passes(values, layout, classes, reduced, detected):
    assert mask_problem(values, layout, classes, reduced, detected) is None


@settings(max_examples=200, deadline=None)
@given(
    # 151: ADE20K's full set, read as it is; from 255 on, the shifted top id is the ignore value itself.
    classes=st.integers(2, 254).filter(lambda c: c != 151),
    data=st.data(),
)
def test_any_shift_by_one_is_caught_and_unshifted_ids_are_not(classes, data):
    truth = data.draw(st.sets(st.integers(0, classes - 1), min_size=1, max_size=20)) | {classes - 1}
    shifted = {t + 1 for t in truth} | {0}  # 0 = unlabelled, class k stored as k + 1
    problem = mask_problem(shifted, "plain", classes, reduced=False, detected=False)
    assert problem is not None and "--layout ade20k" in problem[1]
    assert mask_problem(truth | {IGNORE}, "plain", classes, reduced=False, detected=False) is None


def test_label_conventions():
    synsets = {"n01440764", "n01443537"}
    assert "--layout imagenet" in label_problem(synsets, "plain", ["tench, Tinca tinca", "goldfish"])[1]
    assert label_problem(synsets, "plain", ["n01440764", "n01443537"]) is None  # timm: by name
    assert label_problem({"cat", "n01440764"}, "plain", ["cat", "dog"]) is None


# --- end to end: one line naming the fix, and the fix gives the plain layout's numbers ---------


def _one_line_error(cli: Cli, *args: str) -> str:
    """Run, require exit 2 with a single line on stderr and no traceback; return that line."""
    code, _, err = cli(*args)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, (code, err)
    return err


def test_shifted_masks_are_refused_then_read_with_the_named_layout(cli, tmp_path):
    from aim_cli.demo import model_dir, streets

    images, truths = [], []
    for i, (image, mask) in enumerate(streets.evaluation_set(3)):
        images.append(tmp_path / "loose" / f"{i}.png")
        images[-1].parent.mkdir(exist_ok=True)
        image.save(images[-1])
        mask = mask.copy()
        mask[0, 0] = len(streets.LABELS) - 1  # the top class is present, so its shifted id is out of range
        truths.append(np.where(np.arange(mask.size).reshape(mask.shape) % 17 == 0, IGNORE, mask))
    plain = _plain_twin(tmp_path / "plain", images, truths)
    shifted = tmp_path / "shifted"
    shutil.copytree(plain / "images", shifted / "images")
    for path, truth in zip(sorted((plain / "masks").iterdir()), truths):
        _save_ids(np.where(truth == IGNORE, 0, truth + 1), shifted / "masks" / path.name)
    model = str(model_dir("segment"))
    err = _one_line_error(cli, "segment", "--masks", str(shifted), "-o", str(tmp_path / "o"), "--model", model)
    assert "shifted by one" in err and "--layout ade20k" in err
    assert not (tmp_path / "o").exists()  # refused before any output
    reference = _evaluation(cli, tmp_path, Path(model), "--masks", str(plain))
    assert _evaluation(cli, tmp_path, Path(model), "--masks", str(shifted), "--layout", "ade20k") == reference


@pytest.mark.parametrize("command", ["segment", "calibrate"])
def test_cityscapes_label_ids_in_plain_folders_are_refused(cli, models, tmp_path, command):  # noqa: F811
    root, plain = _cityscapes(tmp_path, models["cityscapes"])
    renamed = tmp_path / "renamed"  # label-id masks in aim's plain layout: nothing says Cityscapes
    shutil.copytree(plain / "images", renamed / "images")
    for i, mask in enumerate(sorted((root / "gtFine" / "val").rglob("*_labelIds.png"))):
        (renamed / "masks").mkdir(exist_ok=True)
        shutil.copyfile(mask, renamed / "masks" / f"{i:04d}.png")
    model = str(models["cityscapes"])
    if command == "segment":
        err = _one_line_error(cli, "segment", "--masks", str(renamed), "--model", model, "-o", str(tmp_path / "o"))
    else:
        err = _one_line_error(
            cli, "calibrate", "--task", "segment", "--data", str(renamed), "--model", model, "--target-acc", "0.5"
        )
    assert "Cityscapes' 34 label ids" in err and "--layout cityscapes" in err
    if command == "segment":  # the named layout reads aim's folders with Cityscapes' ids
        reference = _evaluation(cli, tmp_path, models["cityscapes"], "--masks", str(plain))
        assert _evaluation(cli, tmp_path, models["cityscapes"], "--masks", str(renamed), "--layout", "cityscapes") == (
            reference
        )


def test_ade20k_annotations_in_plain_folders_are_refused(cli, models, tmp_path):  # noqa: F811
    from tests.test_layouts import _ade20k

    root, plain = _ade20k(tmp_path, models["ade20k"])
    renamed = tmp_path / "renamed"
    shutil.copytree(plain / "images", renamed / "images")
    shutil.copytree(root / "annotations" / "validation", renamed / "masks")
    for i, path in enumerate(sorted((renamed / "masks").iterdir())):
        path.rename(renamed / "masks" / f"{i:04d}.png")
    err = _one_line_error(
        cli, "segment", "--masks", str(renamed), "--model", str(models["ade20k"]), "-o", str(tmp_path / "o")
    )
    assert "ADE20K" in err and "--layout ade20k" in err
    reference = _evaluation(cli, tmp_path, models["ade20k"], "--masks", str(plain))
    assert _evaluation(cli, tmp_path, models["ade20k"], "--masks", str(renamed), "--layout", "ade20k") == reference


def test_reduced_masks_under_the_ade20k_layout_are_refused(cli, models, tmp_path):  # noqa: F811
    from tests.test_layouts import _ade20k

    root, plain = _ade20k(tmp_path, models["ade20k"])
    for path, reduced in zip(sorted((root / "annotations" / "validation").iterdir()), sorted(plain.glob("masks/*"))):
        shutil.copyfile(reduced, path)  # someone already converted them
    err = _one_line_error(
        cli, "segment", "--masks", str(root), "--model", str(models["ade20k"]), "-o", str(tmp_path / "o")
    )
    assert "already reduced" in err and "--layout plain" in err


def test_cityscapes_layout_on_a_model_of_other_size(cli, models, tmp_path):  # noqa: F811
    from aim_cli.demo import model_dir

    root, _ = _cityscapes(tmp_path, models["cityscapes"])
    err = _one_line_error(
        cli, "segment", "--masks", str(root), "--model", str(model_dir("segment")), "-o", str(tmp_path / "o")
    )
    assert "19 train ids, but the model has 7 classes" in err and "--layout plain" in err
