"""ImageNet (ILSVRC-2012): val/<wnid>/*.JPEG folders mapped to a 1000-class model by the standard class order."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from aim_cli.errors import InputError
from aim_cli.labels import normalize
from aim_cli.layouts.common import require

CLASSES = 1000
WNID = re.compile(r"^n\d{8}$")
# Names a checkpoint gives when it has no real class names ('LABEL_7', 'class_7', '7'): the order is all there is.
GENERIC = re.compile(r"^(label|class)?[ _]?\d+$", re.IGNORECASE)
# Share of a model's real class names that must be ImageNet's, in order, to trust the order.
AGREEMENT = 0.9


def is_synset(label: str) -> bool:
    """A WordNet id such as n01440764."""
    return bool(WNID.match(label))


@lru_cache(maxsize=1)
def synsets() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 synsets in class order, from timm's maintained table."""
    require("timm.data", "imagenet", "the ILSVRC-2012 class table")
    from timm.data import ImageNetInfo

    return tuple(ImageNetInfo("imagenet-1k").label_names())


@lru_cache(maxsize=1)
def _names() -> tuple[frozenset[str], ...]:
    """Every name class i goes by: its synset, timm's description and its first part, torchvision's name."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    try:
        from torchvision.models._meta import _IMAGENET_CATEGORIES as torchvision_names
    except ImportError:  # a private table: without it the other names still identify the order
        torchvision_names = [""] * CLASSES
    names = []
    for i, wnid in enumerate(synsets()):
        description = info.index_to_description(i)
        forms = {wnid, description, description.split(",")[0], torchvision_names[i]}
        names.append(frozenset(normalize(f) for f in forms if f))
    return tuple(names)


def order_problem(model_labels: Sequence[str]) -> str | None:
    """Why the model's classes are not ImageNet-1k's in ILSVRC order (None when they are, or may be)."""
    if len(model_labels) != CLASSES:
        return f"the model has {len(model_labels)} classes, not ImageNet-1k's {CLASSES}"
    named = [(i, label) for i, label in enumerate(model_labels) if not GENERIC.match(str(label).strip())]
    if not named:
        return None
    names = _names()
    agree = sum(normalize(str(label)) in names[i] for i, label in named)
    if agree >= AGREEMENT * len(named):
        return None
    i, label = next((i, label) for i, label in named if normalize(str(label)) not in names[i])
    return f"its class {i} is {label!r}, ImageNet's class {i} is {synsets()[i]} ({sorted(names[i])[0]!r})"


def class_ids(labels: Sequence[str], model_labels: Sequence[str], source: str) -> list[int]:
    """Class ids of synset folder names on a model with ImageNet-1k's classes in ILSVRC order."""
    table = {wnid: i for i, wnid in enumerate(synsets())}
    unknown = sorted({label for label in labels if label not in table})
    if unknown:
        raise InputError(
            f"{len(unknown)} folder(s) in {source} are not ILSVRC-2012 synsets: {', '.join(unknown[:5])}",
            "ImageNet's val/ has one folder per class, named by its WordNet id (n01440764 ...)",
        )
    problem = order_problem(model_labels)
    if problem is not None:
        raise InputError(
            f"{source} holds ImageNet synset folders, but this is not an ImageNet-1k model: {problem}",
            "score it on data labelled by its own class names (--layout plain)",
        )
    return [table[label] for label in labels]
