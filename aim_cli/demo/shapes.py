"""Deterministic synthetic shape images for the embedded demo classifier.

Pure PIL + numpy so the dataset can be regenerated anywhere without torch.
Each image is a single shape in a random colour on a random background with
position, size and rotation jitter plus pixel noise: learnable, not trivial.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

LABELS: list[str] = [
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "star",
    "horizontal_bars",
    "vertical_bars",
    "diamond",
    "hexagon",
]

IMAGE_SIZE = 32

# Shapes are drawn at a larger canvas then downsampled, which anti-aliases edges.
_SUPERSAMPLE = 4
# Rotation jitter stays well below 45 degrees so square/diamond and
# horizontal/vertical bars remain distinguishable by construction.
_MAX_ROTATION_DEG = 15.0
_NOISE_STD = 10.0
_MIN_COLOUR_DISTANCE = 110.0

# Fixed seeds so every split is reproducible and disjoint from the others.
_SPLIT_SEEDS: dict[str, int] = {"train": 1234, "eval": 5678, "samples": 9012}

Point = tuple[float, float]


def _rotate(points: list[Point], cx: float, cy: float, angle_deg: float) -> list[Point]:
    """Rotate points around (cx, cy) by angle_deg."""
    a = math.radians(angle_deg)
    cos_a, sin_a = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * cos_a - (y - cy) * sin_a, cy + (x - cx) * sin_a + (y - cy) * cos_a) for x, y in points]


def _regular_polygon(cx: float, cy: float, r: float, sides: int, start_deg: float) -> list[Point]:
    """Vertices of a regular polygon centred at (cx, cy)."""
    return [
        (
            cx + r * math.cos(math.radians(start_deg + 360.0 * i / sides)),
            cy + r * math.sin(math.radians(start_deg + 360.0 * i / sides)),
        )
        for i in range(sides)
    ]


def _rect(cx: float, cy: float, half_w: float, half_h: float) -> list[Point]:
    """Corners of an axis-aligned rectangle centred at (cx, cy)."""
    return [
        (cx - half_w, cy - half_h),
        (cx + half_w, cy - half_h),
        (cx + half_w, cy + half_h),
        (cx - half_w, cy + half_h),
    ]


def _shape_polygons(label: str, cx: float, cy: float, r: float, rot: float) -> list[list[Point]]:
    """Polygons (already rotated) that make up one non-round shape."""
    if label == "square":
        polys = [_rect(cx, cy, r * 0.8, r * 0.8)]
    elif label == "diamond":
        polys = [_regular_polygon(cx, cy, r, 4, 0.0)]
    elif label == "triangle":
        polys = [_regular_polygon(cx, cy + r * 0.15, r, 3, -90.0)]
    elif label == "hexagon":
        polys = [_regular_polygon(cx, cy, r, 6, 0.0)]
    elif label == "cross":
        arm = r * 0.3
        polys = [_rect(cx, cy, r, arm), _rect(cx, cy, arm, r)]
    elif label == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.42
            ang = math.radians(-90.0 + 36.0 * i)
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        polys = [pts]
    elif label == "horizontal_bars":
        bar = r * 0.22
        polys = [_rect(cx, cy + dy * r * 0.62, r, bar) for dy in (-1, 0, 1)]
    elif label == "vertical_bars":
        bar = r * 0.22
        polys = [_rect(cx + dx * r * 0.62, cy, bar, r) for dx in (-1, 0, 1)]
    else:
        raise ValueError(f"no polygon shape for label {label!r}")
    return [_rotate(p, cx, cy, rot) for p in polys]


def _random_colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Foreground and background RGB colours that differ enough to be visible."""
    while True:
        fg = rng.integers(0, 256, size=3)
        bg = rng.integers(0, 256, size=3)
        if float(np.linalg.norm(fg.astype(float) - bg.astype(float))) >= _MIN_COLOUR_DISTANCE:
            return tuple(int(v) for v in fg), tuple(int(v) for v in bg)  # type: ignore[return-value]


def make_example(label_id: int, rng: np.random.Generator) -> Image.Image:
    """Draw one RGB IMAGE_SIZE x IMAGE_SIZE image of class label_id using rng."""
    label = LABELS[label_id]
    canvas = IMAGE_SIZE * _SUPERSAMPLE
    fg, bg = _random_colours(rng)
    r = float(rng.uniform(0.28, 0.42)) * canvas
    # Keep the shape fully inside the frame so no class is cropped into another.
    margin = r + 1.0 * _SUPERSAMPLE
    cx = float(rng.uniform(margin, canvas - margin))
    cy = float(rng.uniform(margin, canvas - margin))
    rot = float(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))

    img = Image.new("RGB", (canvas, canvas), bg)
    draw = ImageDraw.Draw(img)
    if label == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
    elif label == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fg)
        inner = r * 0.55
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=bg)
    else:
        for poly in _shape_polygons(label, cx, cy, r, rot):
            draw.polygon(poly, fill=fg)

    small = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, _NOISE_STD, size=pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8), mode="RGB")


def make_dataset(split: str, n: int) -> list[tuple[Image.Image, int]]:
    """Generate n balanced (image, label_id) pairs, deterministic for each split."""
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_SEEDS)}")
    rng = np.random.default_rng(_SPLIT_SEEDS[split])
    # Round-robin labels keep classes balanced for any n; order is still mixed.
    return [(make_example(i % len(LABELS), rng), i % len(LABELS)) for i in range(n)]


def evaluation_set(n: int = 1000) -> list[tuple[Image.Image, int]]:
    """The fixed held-out evaluation split (same images on every call)."""
    return make_dataset("eval", n)


def export_image_folder(directory: Path, n: int) -> None:
    """Write the first n eval images as an ImageFolder tree directory/<label>/<index>.png."""
    directory = Path(directory)
    for index, (image, label_id) in enumerate(evaluation_set(n)):
        class_dir = directory / LABELS[label_id]
        class_dir.mkdir(parents=True, exist_ok=True)
        image.save(class_dir / f"{index:05d}.png")
