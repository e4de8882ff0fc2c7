"""Labelled data for calibration: ImageFolder trees, CSV/JSONL manifests, mask folders, JSONL text.

Readers only list what is there and check its shape; images are decoded lazily, one batch
at a time, so memory stays flat however large the data set is.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from aim_cli.errors import AimError, FailedInput, InputError
from aim_cli.images import LoadedImage, load_image, loaded_from_image
from aim_cli.io import IMAGE_SUFFIXES, check_inside, read_text_file
from aim_cli.labels import resolve_class
from aim_cli.layouts.reads import Reads, resolve_reads
from aim_cli.limits import TEXT_BYTES

if TYPE_CHECKING:
    from aim_cli.layouts.common import MaskConverter
    from aim_cli.models.image_model import ImageModel

MANIFEST_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class LabelledImage:
    """One labelled image: a file decoded on demand, or an image already in memory (demo).

    `within` is the folder the file must really lie in (None when the user allowed outside paths).
    """

    name: str
    label: str
    path: Path | None = None
    image: Image.Image | None = None
    within: Path | None = None

    def load(self) -> LoadedImage:
        """Decode the image (or wrap the in-memory one); raises InputError for a bad file."""
        if self.image is not None:
            return loaded_from_image(self.name, self.image)
        assert self.path is not None
        return load_image(self.path, self.within)


@dataclass
class ImageDataset:
    """Labelled images plus the rows that could not be used (listed, not fatal)."""

    items: list[LabelledImage]
    description: str
    failures: list[FailedInput] = field(default_factory=list)
    source: str = ""
    layout: str = "plain"  # how labels become class ids: by name (plain) or by ILSVRC order (imagenet)


def _is_image(path: Path) -> bool:
    """A regular, non-hidden file with an image suffix."""
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def demo_classification_set(n: int = 1000) -> ImageDataset:
    """The demo classifier's own held-out evaluation images (generated, deterministic)."""
    from aim_cli.demo import shapes

    items = [
        LabelledImage(f"shapes-eval-{i:05d}", shapes.LABELS[label], image=image)
        for i, (image, label) in enumerate(shapes.evaluation_set(n))
    ]
    return ImageDataset(items, f"demo evaluation set ({n} shape images)", source="the demo evaluation set")


def read_classification_data(path: Path, allow_outside: bool = False, layout: str = "auto") -> ImageDataset:
    """An ImageFolder tree (one sub-folder per label) or a CSV/JSONL manifest of path,label.

    Every image must really lie inside the tree, or the manifest's folder, unless `allow_outside`.
    `layout` imagenet (detected when every folder is an ILSVRC synset) maps synsets by class order.
    """
    from aim_cli.layouts.imagenet import is_synset

    if layout not in ("auto", "plain", "imagenet"):
        raise InputError(
            f"--layout {layout} is for segmentation data", "classification data takes --layout auto, plain or imagenet"
        )
    if path.is_dir():
        dataset = image_folder(path, allow_outside)
        synsets = all(is_synset(item.label) for item in dataset.items)
        dataset.layout = "imagenet" if layout == "imagenet" or (layout == "auto" and synsets) else "plain"
        if dataset.layout == "imagenet":
            dataset.description += " as ImageNet synset folders"
        return dataset
    if layout == "imagenet":
        raise InputError(f"--layout imagenet reads a folder (val/<wnid>/*.JPEG), not {path}", "pass ImageNet's val/")
    if not path.exists():
        raise InputError(f"data {path} does not exist", "pass an ImageFolder directory or a .csv/.jsonl manifest")
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return manifest(path, allow_outside)
    raise InputError(
        f"data {path}: expected a directory (ImageFolder) or a .csv/.jsonl manifest, got a "
        f"{path.suffix or 'plain'} file",
        "an ImageFolder has one sub-folder per class, named by its label",
    )


def image_folder(root: Path, allow_outside: bool = False) -> ImageDataset:
    """Images under root/<label>/..., labelled by their class folder's name.

    A symlink out of the tree fails alone when it is read, unless `allow_outside`.
    """
    items: list[LabelledImage] = []
    within = None if allow_outside else root
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for image_path in sorted(p for p in class_dir.rglob("*") if _is_image(p)):
            items.append(
                LabelledImage(str(image_path.relative_to(root)), class_dir.name, path=image_path, within=within)
            )
    if not items:
        loose = [p for p in root.iterdir() if _is_image(p)]
        if loose:
            raise InputError(
                f"data {root} holds {len(loose)} image(s) but no class sub-folders, so they have no labels",
                "calibration needs labelled data: put each class's images in a sub-folder named by the label, "
                "or pass a .csv/.jsonl manifest with path,label",
            )
        raise InputError(
            f"data {root} holds no images",
            "expected an ImageFolder tree: DIR/<label>/<image>.png, one sub-folder per class",
        )
    return ImageDataset(items, f"{root} ({len(items)} images)", source=str(root))


def _manifest_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, row) pairs of a CSV (with a header) or JSONL manifest."""
    text = read_text_file(path, TEXT_BYTES, InputError, "manifest")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        if "path" not in header or "label" not in header:
            raise InputError(
                f"manifest {path}: the first line must be a header naming the columns 'path' and 'label'"
                + (f" (found: {', '.join(reader.fieldnames or [])})" if reader.fieldnames else " (the file is empty)"),
                "e.g.  path,label  then  images/cat1.png,cat",
            )
        for number, row in enumerate(reader, start=2):
            yield number, {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"manifest {path}, line {number}: not valid JSON ({exc.msg})",
                'each line must look like {"path": "a.png", "label": "cat"}',
            ) from None
        if not isinstance(row, dict):
            raise InputError(
                f"manifest {path}, line {number}: expected a JSON object", 'e.g. {"path": "a.png", "label": "cat"}'
            )
        yield number, row


def manifest(path: Path, allow_outside: bool = False) -> ImageDataset:
    """Rows of path,label; relative paths are relative to the manifest's folder.

    A row naming a file outside that folder (`..`, an absolute path, a symlink out) is refused
    unless `allow_outside`: a manifest from elsewhere must not make aim read arbitrary files.
    """
    items: list[LabelledImage] = []
    failures: list[FailedInput] = []
    within = None if allow_outside else path.parent
    for number, row in _manifest_rows(path):
        image_ref, label = row.get("path"), row.get("label")
        if image_ref in (None, "") or label in (None, ""):
            missing = "path" if image_ref in (None, "") else "label"
            raise InputError(
                f"manifest {path}, line {number}: no '{missing}' value", "every row needs a path and a label"
            )
        if "\x00" in str(image_ref):  # no file name holds one; the path functions would raise ValueError
            raise InputError(f"manifest {path}, line {number}: the path holds a NUL byte", "fix that row")
        image_path = Path(str(image_ref)).expanduser()
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        if within is not None:
            check_inside(
                os.path.realpath(image_path), image_path, within, InputError, f"manifest {path}, line {number}: image"
            )
        if not image_path.exists():  # a pipe or device is listed and refused when read, naming what it is
            failures.append(FailedInput(image_path, f"{path}, line {number}: {image_ref}: no such file"))
            continue
        items.append(LabelledImage(str(image_ref), str(label), path=image_path, within=within))
    if not items:
        if failures:
            raise InputError(
                f"manifest {path}: none of its {len(failures)} image(s) exist", f"paths are relative to {path.parent}"
            )
        raise InputError(f"manifest {path} lists no images", "add rows of path,label")
    return ImageDataset(items, f"{path} ({len(items)} images)", failures, source=str(path))


def resolve_labels(labels: Sequence[str], model_labels: Sequence[str], source: str, layout: str = "plain") -> list[int]:
    """Class ids for data labels; every label the model does not know is reported at once.

    The imagenet layout maps synsets by class order; a known convention the layout leaves
    unmapped (synset folders on a model named otherwise) is refused, naming the layout that fits.
    """
    from aim_cli.layouts import conventions, imagenet

    if layout == "imagenet":
        return imagenet.class_ids(labels, model_labels, source)
    problem = conventions.label_problem(set(labels), layout, model_labels)
    if problem is not None:
        raise InputError(f"{source}: {problem[0]}", problem[1])
    ids: dict[str, int] = {}
    unknown: list[str] = []
    for label in dict.fromkeys(labels):
        try:
            ids[label] = resolve_class(label, model_labels)
        except AimError:
            unknown.append(label)
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        known = ", ".join(model_labels[:8]) + (f", ... ({len(model_labels)} in all)" if len(model_labels) > 8 else "")
        raise InputError(
            f"{len(unknown)} label(s) in {source} are not classes of the model: {shown}",
            f"the model's classes are: {known}",
        )
    return [ids[label] for label in labels]


# --- segmentation ------------------------------------------------------------------------


@dataclass
class SegmentationDataset:
    """Images with ground-truth masks, re-readable for a second streaming pass.

    Either files (images/NAME.* with masks/NAME.png, read lazily through the segment task's
    reader) or in-memory demo scenes; `inputs()` yields decoded items or failures in order.
    """

    description: str
    paths: list[Path] = field(default_factory=list)
    masks_dir: Path | None = None
    scenes: list[tuple[str, Image.Image, np.ndarray]] = field(default_factory=list)
    within: Path | None = None  # the folder images and masks must really lie in (None: anywhere)
    layout: str = "plain"
    detected: bool = True  # the layout was found from the folders, not named with --layout
    mask_of: Callable[[Path], Path | None] | None = None  # a layout's pairing; None: same base name in masks_dir
    convert: Callable[[np.ndarray, Path], np.ndarray] | None = None  # set by prepare(), for one model
    reads: Reads | None = None  # every file the run reads, resolved before it starts (files only)

    def __post_init__(self) -> None:
        if self.paths and self.reads is None:
            self.reads = resolve_reads(self.paths, self._find, self.within)

    def files(self) -> list[tuple[str, Path]]:
        """Every file this data set makes the run read, named for the output guard."""
        return self.reads.files() if self.reads is not None else []

    def prepare(self, num_classes: int, do_reduce_labels: bool | None = None) -> None:
        """Map this layout's mask values to the model's class ids; refuse a known convention left unmapped."""
        from aim_cli.layouts.segmentation import check_masks, converter

        if self.scenes or self.reads is None:
            return
        masks = [self.reads.masks[p] for p in self.paths if p not in self.reads.refused]
        check_masks(masks, self.layout, num_classes, do_reduce_labels, self.detected)
        self.convert = converter(self.layout, num_classes, do_reduce_labels)

    def _find(self, path: Path) -> Path | None:
        """The ground-truth mask of one image."""
        from aim_cli.tasks.segment import find_mask

        if self.mask_of is not None:
            return self.mask_of(path)
        return find_mask(path, self.masks_dir) if self.masks_dir is not None else None

    def mask_path(self, path: Path) -> Path | None:
        """The ground-truth mask file of one image of the set (None: none found)."""
        return self._find(path)

    def __len__(self) -> int:
        return len(self.scenes) if self.scenes else len(self.paths)

    def limit(self, count: int | None) -> None:
        """Keep only the first `count` items."""
        if count:
            self.paths, self.scenes = self.paths[:count], self.scenes[:count]

    def inputs(self) -> Iterator[object]:
        """SegmentInput (image + truth) or FailedInput per item, decoded one at a time."""
        from aim_cli.tasks.segment import input_from_image, read_inputs

        if self.scenes:
            for name, image, mask in self.scenes:
                yield input_from_image(name, image, mask)
            return
        assert self.reads is not None
        reads = self.reads
        for path in self.paths:  # each image is read with the mask resolved before the run, or fails alone
            if path in reads.refused:
                yield FailedInput(path, reads.refused[path])
            else:
                yield from read_inputs([path], self.masks_dir, self.mask_of, self.convert)


def demo_segmentation_set(n: int = 100) -> SegmentationDataset:
    """The demo segmenter's held-out street scenes with their ground-truth masks."""
    from aim_cli.demo import streets

    scenes = [(f"streets-eval-{i:04d}.png", image, mask) for i, (image, mask) in enumerate(streets.evaluation_set(n))]
    return SegmentationDataset(f"demo evaluation set ({n} street scenes)", scenes=scenes)


def read_segmentation_data(
    root: Path, allow_outside: bool = False, layout: str = "auto", split: str | None = None
) -> SegmentationDataset:
    """DIR/images/* with DIR/masks/* of the same basename, or an ADE20K, Cityscapes or VOC root as it ships.

    A file linked from outside DIR fails alone unless `allow_outside`.
    """
    from aim_cli.layouts.segmentation import ROOT_HINT, open_root, root_layout
    from aim_cli.tasks.segment import find_mask

    if not root.is_dir():
        raise InputError(
            f"data {root} is not a directory", "segmentation data is DIR with images/ and masks/ sub-folders"
        )
    structure = root_layout(root)
    if structure != "plain" and (layout not in ("plain", "auto") or structure is not None):
        listing = open_root(root, layout, split, None if allow_outside else root)
        if listing is not None:
            return SegmentationDataset(
                f"{root}: {listing.description}",
                paths=listing.images,
                masks_dir=root,
                within=None if allow_outside else root,
                layout=listing.layout,
                detected=layout == "auto",
                mask_of=listing.mask_of,
            )
    if split is not None:
        raise InputError(f"--split {split}: {root} is not an ADE20K, Cityscapes or Pascal VOC root", ROOT_HINT)
    images_dir, masks_dir = root / "images", root / "masks"
    missing = [d.name + "/" for d in (images_dir, masks_dir) if not d.is_dir()]
    if missing:
        raise InputError(
            f"data {root} has no {' or '.join(missing)} sub-folder",
            "segmentation data is DIR/images/NAME.png with DIR/masks/NAME.png (class ids) of the same basename",
        )
    paths = sorted(p for p in images_dir.rglob("*") if _is_image(p))
    if not paths:
        raise InputError(f"data {root}: images/ holds no images", "add images/NAME.png with masks/NAME.png")
    if not any(find_mask(p, masks_dir) is not None for p in paths):
        raise InputError(
            f"data {root}: no image in images/ has a mask of the same basename in masks/",
            "e.g. images/0001.png with masks/0001.png (single-channel class ids)",
        )
    within = None if allow_outside else root
    # A named layout on aim's own folders still says what the mask values mean (e.g. ADE20K's 0 = other).
    return SegmentationDataset(
        f"{root} ({len(paths)} images)",
        paths=paths,
        masks_dir=masks_dir,
        within=within,
        layout="plain" if layout == "auto" else layout,
        detected=layout == "auto",
    )


# --- text ----------------------------------------------------------------------------------


@dataclass
class TextDataset:
    """Prompts with answers: all multiple choice ({prompt, choices, answer index}) or all free form."""

    items: list[dict[str, object]]
    multiple_choice: bool
    description: str


def demo_text_set(n: int = 200) -> TextDataset:
    """The demo LM's multiple-choice arithmetic problems (single-digit answers)."""
    from aim_cli.demo import arithmetic

    return TextDataset(arithmetic.multiple_choice_set(n), True, f"demo multiple-choice set ({n} problems)")


def read_text_data(path: Path) -> TextDataset:
    """A JSONL file of {prompt, answer} or {prompt, choices, answer} objects."""
    if path.is_dir() or path.suffix.lower() != ".jsonl":
        raise InputError(
            f"data {path}: text calibration reads a .jsonl file",
            'one object per line: {"prompt": "2+2=", "answer": "4"}',
        )
    lines = read_text_file(path, TEXT_BYTES, InputError, "data").splitlines()
    items: list[dict[str, object]] = []
    kinds: set[bool] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"data {path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or "answer" not in row:
            raise InputError(
                f"{where}: expected an object with 'prompt' (text) and 'answer'", '{"prompt": "2+2=", "answer": "4"}'
            )
        if "choices" in row:
            choices = row["choices"]
            answer = row["answer"]
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                raise InputError(f"{where}: 'choices' must be a list of at least two strings")
            if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
                raise InputError(f"{where}: 'answer' must be the index of the right choice (0..{len(choices) - 1})")
        elif not isinstance(row["answer"], str):
            raise InputError(f"{where}: 'answer' must be text (or an index into 'choices')")
        kinds.add("choices" in row)
        items.append(row)
    if not items:
        raise InputError(f"data {path} holds no items", 'one object per line: {"prompt": "2+2=", "answer": "4"}')
    if len(kinds) > 1:
        raise InputError(f"data {path} mixes multiple-choice and free-form items", "calibrate one kind per file")
    return TextDataset(items, kinds.pop(), f"{path} ({len(items)} items)")


@dataclass
class GroundTruth:
    """Where each image's ground truth is (a masks folder, or a data set root) and in which layout."""

    masks: Path | None
    layout: str
    paths: list[Path]  # the images of a data set root; empty when the images are the inputs
    mask_of: Callable[[Path], Path | None] | None = None  # a layout's pairing; None: same base name in `masks`
    detected: bool = True  # the layout was found from the folders, not named with --layout
    within: Path | None = None  # the folder the files found through `masks` must lie in (None: anywhere)
    images_named: bool = False  # the images were given on the command line, not listed from the root

    def resolve(self, paths: list[Path]) -> Reads:
        """Every file the run reads, before it starts: each image's mask, and the images whose files lie outside."""
        return resolve_reads(paths, self.find, self.within, self.images_named)

    def find(self, path: Path) -> Path | None:
        """The ground-truth mask of an image."""
        from aim_cli.tasks.segment import find_mask

        if self.mask_of is not None:
            return self.mask_of(path)
        return find_mask(path, self.masks) if self.masks is not None else None

    def prepare(self, paths: list[Path], segmenter: ImageModel) -> MaskConverter | None:
        """Refuse masks whose ids follow a convention the layout leaves unmapped; the value mapping for this model."""
        from aim_cli.layouts.segmentation import check_masks, converter

        classes = len(segmenter.labels)
        check_masks([self.find(p) for p in paths], self.layout, classes, segmenter.do_reduce_labels, self.detected)
        return converter(self.layout, classes, segmenter.do_reduce_labels)


def ground_truth(
    inputs_given: bool, masks: Path | None, layout: str, split: str | None, allow_outside: bool = False
) -> GroundTruth:
    """With no inputs, --masks may be a data set root (its images and masks); with inputs, the folder of masks.

    Files found through --masks (listed images, masks, a split list) must lie inside it unless `allow_outside`.
    """
    from aim_cli.layouts.segmentation import folder_layout, folder_lookup, open_root, root_layout

    detected = layout == "auto"
    if masks is None:
        return GroundTruth(None, "plain", [])
    if layout == "imagenet":
        raise InputError("--layout imagenet is for classification data (aim calibrate --data)")
    within = None if allow_outside else masks
    structure = root_layout(masks)
    if not inputs_given and (structure is not None or layout not in ("auto", "plain")):
        listing = None if structure == "plain" else open_root(masks, layout, split, within)
        if listing is None:  # aim's own root: DIR/images with DIR/masks
            plain = read_segmentation_data(masks, allow_outside, "plain" if detected else layout, split)
            return GroundTruth(plain.masks_dir, plain.layout, plain.paths, detected=detected, within=within)
        return GroundTruth(masks, listing.layout, listing.images, listing.mask_of, detected, within)
    if structure not in (None, "plain"):  # images named, masks from a data set root: pair through its listing
        listing = open_root(masks, layout, split, within)
        assert listing is not None
        by_file = {image.resolve(): mask for image, mask in listing.masks.items()}
        pair = lambda image: by_file.get(image.resolve())  # noqa: E731
        return GroundTruth(masks, listing.layout, [], pair, detected, within, images_named=True)
    if split is not None:
        raise AimError("--split selects from a data set root given as --masks")
    chosen = folder_layout(masks) if layout == "auto" else layout
    return GroundTruth(masks, chosen, [], folder_lookup(masks, chosen), detected, within, images_named=True)
