"""Benchmark data sets as they ship: ImageNet, ADE20K, Cityscapes and Pascal VOC, besides aim's plain layout.

A layout says where each image's ground truth is and how its values become the model's class
ids; it knows nothing about the CLI. `auto` picks the layout from the folder structure.
"""

from __future__ import annotations

LAYOUTS = ("auto", "plain", "imagenet", "ade20k", "cityscapes", "voc")
SEGMENTATION_LAYOUTS = ("plain", "ade20k", "cityscapes", "voc")
EXTRA = "aim-cli[datasets]"
