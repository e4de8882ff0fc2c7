"""No silent wrong number: ground-truth ids that look like a known convention the model does not use."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from aim_cli.layouts.imagenet import is_synset
from aim_cli.metrics import IGNORE_INDEX

ADE20K_CLASSES = 150
CITYSCAPES_LABEL_IDS = 34
CITYSCAPES_TRAIN_IDS = 19


def mask_problem(
    raw: Collection[int], layout: str, num_classes: int, reduced: bool, detected: bool = True
) -> tuple[str, str] | None:
    """(problem, fix) when the masks' raw values follow a convention this layout does not map, else None.

    `raw` is the set of values the masks hold before any mapping; `reduced` says whether the
    ade20k layout shifts them (0 -> ignore, k -> k-1) for this model. Values a model cannot
    have are always a problem; values that are valid ids but look like raw ADE20K (0 = other,
    no ignored pixel, on a 150-class model) only when the layout was `detected`, not named.
    """
    values = {int(v) for v in raw}
    ids = values - {IGNORE_INDEX}
    top = max(ids) if ids else -1
    if layout == "cityscapes":
        if num_classes != CITYSCAPES_TRAIN_IDS:
            return (
                f"--layout cityscapes maps the label ids to the {CITYSCAPES_TRAIN_IDS} train ids, "
                f"but the model has {num_classes} classes",
                "--layout plain scores the masks' values as they are",
            )
        return None
    if layout == "ade20k":
        if reduced and IGNORE_INDEX in values and top < ADE20K_CLASSES:
            return (
                f"the masks hold {IGNORE_INDEX} and ids up to {top}: they look already reduced (0 = first class), "
                "and --layout ade20k would shift them again",
                "--layout plain scores them as they are",
            )
        return None
    if num_classes == CITYSCAPES_TRAIN_IDS and CITYSCAPES_TRAIN_IDS < top < CITYSCAPES_LABEL_IDS:
        return (
            f"the masks hold ids up to {top}: Cityscapes' {CITYSCAPES_LABEL_IDS} label ids, "
            f"but the model predicts the {CITYSCAPES_TRAIN_IDS} train ids",
            "--layout cityscapes maps label ids to train ids with the official table",
        )
    if top == num_classes and 0 in ids and num_classes != ADE20K_CLASSES + 1:
        what = (
            f"{ADE20K_CLASSES + 1} ADE20K ids (0 = other, 1..{ADE20K_CLASSES}) on a {num_classes}-class model"
            if num_classes == ADE20K_CLASSES
            else f"ids 0..{top} on a {num_classes}-class model: shifted by one (0 = unlabelled, 1..{top} the classes)"
        )
        return f"the masks hold {what}", "--layout ade20k ignores 0 and reads k as class k-1"
    if detected and num_classes == ADE20K_CLASSES and 0 in values and IGNORE_INDEX not in values:
        return (
            f"the masks hold 0 and no ignored pixel ({IGNORE_INDEX}) on a {ADE20K_CLASSES}-class model: "
            "they look like ADE20K annotations, where 0 is 'other' and class k is stored as k+1",
            "--layout ade20k reads them so; --layout plain scores them as they are",
        )
    return None


def label_problem(labels: Collection[str], layout: str, model_labels: Sequence[str]) -> tuple[str, str] | None:
    """(problem, fix) when class folders are ImageNet synsets that the plain layout would not map, else None."""
    if layout != "plain" or not labels or not all(is_synset(label) for label in labels):
        return None
    if all(is_synset(str(label)) for label in model_labels):
        return None  # the model itself is labelled by synsets (timm): plain resolves them by name
    return (
        f"the class folders are ImageNet synsets ({sorted(labels)[0]} ...) but the model's classes are named "
        f"otherwise ({model_labels[0]!r} ...)",
        "--layout imagenet maps synsets to the model's classes by the ILSVRC-2012 order",
    )


def evidence(raw: Collection[int], layout: str, num_classes: int) -> bool | None:
    """Whether mask values show the convention of a layout that changes ids, for a detected layout.

    True: they do; False: they contradict it; None: not yet (read more masks). Folder and file
    names only suggest a layout; these values decide it:
    ade20k (shifted for this model): raw ADE20K stores class k as k+1 with 0 = other, so only an
    id equal to the model's class count (impossible 0-based) shows the shift; a 255 pixel (raw
    ADE20K has none) or an id past the class count contradicts it.
    cityscapes (label ids): the 34 label ids reach past the 19 train ids and never hold 255 (the
    train ids' ignore value); ids up to 18 alone cannot tell the two apart.
    """
    values = {int(v) for v in raw}
    ids = values - {IGNORE_INDEX}
    top = max(ids) if ids else -1
    if layout == "ade20k":
        if IGNORE_INDEX in values or top > num_classes:
            return False
        return True if top == num_classes else None
    if layout == "cityscapes":
        if IGNORE_INDEX in values or top >= CITYSCAPES_LABEL_IDS:
            return False
        return True if top >= CITYSCAPES_TRAIN_IDS else None
    return True


def _shown(values: set[int]) -> str:
    """Mask values in a few words: their id range and whether 255 is there."""
    ids = values - {IGNORE_INDEX}
    text = f"ids {min(ids)}..{max(ids)}" if ids else "no class id"
    return text + (f" and {IGNORE_INDEX}" if IGNORE_INDEX in values else "")


def unsupported(raw: Collection[int], layout: str, num_classes: int) -> tuple[str, str]:
    """(problem, fix) when a layout found from the folders changes ids but the masks do not show its convention."""
    values = {int(v) for v in raw}
    if not values:
        return (
            f"no mask could be read to confirm the {layout} layout the folders suggest",
            f"name the layout: --layout {layout} or --layout plain",
        )
    if layout == "ade20k":
        return (
            f"the folders look like ADE20K's, but the masks hold {_shown(values)}: that is not ADE20K's convention "
            f"for a {num_classes}-class model (class k stored as k+1, up to {num_classes}, 0 = other, no "
            f"{IGNORE_INDEX}), so their ids are not shifted on a guess",
            "--layout ade20k shifts them (0 ignored, k read as class k-1); --layout plain reads them as they are",
        )
    return (
        f"the gtFine *_labelIds masks hold {_shown(values)}: not Cityscapes' {CITYSCAPES_LABEL_IDS} label ids "
        f"(which reach past {CITYSCAPES_TRAIN_IDS - 1} and never hold {IGNORE_INDEX}), so they are not mapped "
        "on a guess",
        "--layout cityscapes maps label ids to train ids; --layout plain reads them as they are",
    )
