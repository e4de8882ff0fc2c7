"""Make docs/images/segment_focus_before_after.png: the demo segmenter without and with a person focus.

Run from the repository root:  HF_HUB_OFFLINE=1 python docs/make_segment_figure.py

Panels, left to right: ground truth, clean model, `--focus pedestrian` (focus sigma 2), each as
the colour overlay `aim segment --overlay` writes, scaled up 3x with nearest neighbour. It uses
the same task code as the CLI (aim_cli.tasks.segment), so the figure shows what aim does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from aim_cli.demo import streets
from aim_cli.masks import colour_table, overlay_image
from aim_cli.models.registry import load_model
from aim_cli.plans import plan_modulation
from aim_cli.profile import resolve_profile
from aim_cli.tasks.segment import input_from_image, segment_inputs

SCALE = 3
CAPTION_HEIGHT = 14
GAP = 4
DEFAULT_OUT = Path(__file__).resolve().parent / "images" / "segment_focus_before_after.png"


def _panel(image: Image.Image, caption: str) -> Image.Image:
    """An image scaled up with nearest neighbour, with a caption strip underneath."""
    big = image.resize((image.width * SCALE, image.height * SCALE), Image.NEAREST)
    panel = Image.new("RGB", (big.width, big.height + CAPTION_HEIGHT), "white")
    panel.paste(big, (0, 0))
    ImageDraw.Draw(panel).text((3, big.height + 2), caption, fill="black")
    return panel


def main(argv: list[str] | None = None) -> None:
    """Pick the evaluation scene with the most person pixels and draw the three overlays."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--scenes", type=int, default=40, help="evaluation scenes to choose from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    scenes = streets.evaluation_set(args.scenes)
    image, truth = max(scenes, key=lambda scene: int((scene[1] == streets.PERSON).sum()))
    segmenter = load_model("segment", None, device=torch.device("cpu"))
    plan = plan_modulation(resolve_profile(None, focus=["pedestrian"], seed=args.seed), segmenter.labels)
    item = input_from_image("scene.png", image, truth)
    result = next(iter(segment_inputs([item], segmenter, plan, clean=True)))
    colours = colour_table(segmenter.labels)
    person = segmenter.labels.index("person")

    def recall(prediction: np.ndarray) -> float:
        return float((prediction[truth == person] == person).mean())

    panels = [
        _panel(overlay_image(image, truth, colours), "ground truth"),
        _panel(
            overlay_image(image, result.clean_prediction, colours),
            f"clean: person recall {recall(result.clean_prediction):.2f}",
        ),
        _panel(
            overlay_image(image, result.prediction, colours), f"focus person: recall {recall(result.prediction):.2f}"
        ),
    ]
    figure = Image.new("RGB", (sum(p.width for p in panels) + GAP * (len(panels) - 1), panels[0].height), "white")
    x = 0
    for panel in panels:
        figure.paste(panel, (x, 0))
        x += panel.width + GAP
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # An adaptive palette keeps the PNG small enough to commit (the overlays use few colours).
    figure.convert("P", palette=Image.ADAPTIVE, colors=256).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
