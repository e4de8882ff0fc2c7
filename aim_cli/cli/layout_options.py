"""The --layout and --split options that `aim calibrate` and `aim segment` share."""

from __future__ import annotations

import enum
from typing import Annotated

import typer


class Layout(str, enum.Enum):
    """Data set layouts aim reads as they ship (aim_cli.layouts)."""

    auto = "auto"
    plain = "plain"
    imagenet = "imagenet"
    ade20k = "ade20k"
    cityscapes = "cityscapes"
    voc = "voc"


LayoutOption = Annotated[
    Layout,
    typer.Option(
        "--layout",
        help="How the data set is laid out: auto (detect), plain (aim's), imagenet (val/<wnid>/), "
        "ade20k, cityscapes or voc, as they ship. See docs/benchmarks.md.",
    ),
]
SplitOption = Annotated[
    str | None,
    typer.Option("--split", help="Split of an ADE20K, Cityscapes or VOC root (default: the validation split)."),
]
AllowOutsideOption = Annotated[
    bool,
    typer.Option(
        "--allow-outside-paths",
        help="Let the --masks data set reach files outside its folder (absolute paths, .., symlinks out).",
    ),
]
