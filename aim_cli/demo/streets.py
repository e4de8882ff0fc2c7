"""Deterministic synthetic street scenes with ground-truth masks for the demo segmenter.

Scenes are 64x64 RGB: sky on top, a row of buildings with trees and hedges in front,
a sidewalk band, and the road at the bottom with cars. Persons are small, thin and
often coloured like what stands behind them, so they are the hard class: a demo
segmenter under-segments them, which is what a focus boost on ``person`` should fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

LABELS = ["road", "sidewalk", "building", "sky", "vegetation", "car", "person"]
ROAD, SIDEWALK, BUILDING, SKY, VEGETATION, CAR, PERSON = range(len(LABELS))
IMAGE_SIZE = 64

# One fixed seed per split so the sets never overlap and never change between runs.
SPLIT_SEEDS = {"train": 1_000, "eval": 2_000, "samples": 3_000}


def _jitter(rng: np.random.Generator, base: tuple[float, float, float], spread: float) -> np.ndarray:
    """Return an RGB colour near ``base``, each channel moved by up to ``spread``."""
    return np.clip(np.asarray(base, dtype=np.float32) + rng.uniform(-spread, spread, 3), 0, 255)


def _paint(img: np.ndarray, mask: np.ndarray, region: np.ndarray, colour: np.ndarray, label: int) -> None:
    """Paint ``region`` (boolean HxW) with one colour and one class id."""
    img[region] = colour
    mask[region] = label


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Return a boolean HxW mask of the rectangle [y0, y1) x [x0, x1), clipped to the image."""
    region = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    region[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return region


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Return a boolean HxW mask of an axis-aligned ellipse."""
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _draw_background(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, base_y: int, road_y: int) -> None:
    """Draw sky, buildings, hedges, sidewalk and road (everything behind trees, cars and persons)."""
    size = IMAGE_SIZE
    # Sky: a vertical gradient from deeper to paler blue (or overcast grey).
    top = _jitter(rng, (90, 140, 215), 30) if rng.random() < 0.75 else _jitter(rng, (170, 175, 185), 20)
    bottom = np.clip(top + rng.uniform(20, 50), 0, 255)
    t = np.linspace(0.0, 1.0, base_y)[:, None, None]
    img[:base_y] = (1 - t) * top + t * bottom
    mask[:base_y] = SKY

    # Buildings: a row of façades of varying width and height, with occasional gaps.
    x = int(rng.integers(-6, 1))
    while x < size:
        width = int(rng.integers(8, 21))
        if rng.random() < 0.15:  # a gap: sky, sometimes a hedge at the bottom
            if rng.random() < 0.6:
                hedge_top = base_y - int(rng.integers(3, 9))
                _paint(img, mask, _box(hedge_top, base_y, x, x + width), _jitter(rng, (60, 115, 55), 25), VEGETATION)
            x += width
            continue
        roof = int(rng.integers(4, max(base_y - 8, 6)))
        facade = _jitter(rng, (135, 120, 105), 50)
        _paint(img, mask, _box(roof, base_y, x, x + width), facade, BUILDING)
        # Windows stay labelled building: they only add texture the model must see through.
        window = np.clip(facade * rng.uniform(0.45, 0.75), 0, 255)
        for wy in range(roof + 2, base_y - 3, int(rng.integers(4, 6))):
            for wx in range(x + 2, x + width - 2, int(rng.integers(3, 5))):
                img[max(wy, 0) : wy + 2, max(wx, 0) : max(wx + 1, 0)] = window
        x += width

    # Sidewalk band with a light curb line at its road edge.
    _paint(img, mask, _box(base_y, road_y, 0, size), _jitter(rng, (170, 160, 145), 25), SIDEWALK)
    img[road_y - 1, :] = np.clip(img[road_y - 1, :] + 25, 0, 255)

    # Road: dark asphalt getting slightly lighter towards the viewer, with lane dashes.
    asphalt = _jitter(rng, (75, 75, 80), 20)
    t = np.linspace(0.0, 1.0, size - road_y)[:, None, None]
    img[road_y:] = asphalt * (1 + 0.2 * t)
    mask[road_y:] = ROAD
    lane_y = int(rng.integers(road_y + 6, size - 4)) if size - road_y > 11 else size - 3
    offset = int(rng.integers(0, 8))
    for dx in range(-8 + offset, size, 12):
        img[lane_y : lane_y + 1, max(dx, 0) : max(dx + 6, 0)] = _jitter(rng, (220, 220, 210), 15)


def _draw_trees(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, base_y: int, road_y: int) -> None:
    """Draw a few street trees standing on the sidewalk, in front of the buildings."""
    for _ in range(int(rng.integers(0, 4))):
        cx = float(rng.uniform(0, IMAGE_SIZE))
        foot = int(rng.integers(base_y, road_y))
        trunk_h = int(rng.integers(5, 11))
        _paint(img, mask, _box(foot - trunk_h, foot, int(cx), int(cx) + 2), _jitter(rng, (90, 65, 45), 20), VEGETATION)
        ry, rx = float(rng.uniform(4, 9)), float(rng.uniform(4, 9))
        leaves = _jitter(rng, (55, 110, 50), 30)
        crown = _ellipse(foot - trunk_h - ry + 2, cx, ry, rx)
        _paint(img, mask, crown, leaves, VEGETATION)
        # Dappled light so the crown is not one flat colour.
        img[crown] = np.clip(img[crown] + rng.normal(0, 12, (int(crown.sum()), 1)), 0, 255)


def _draw_cars(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, road_y: int) -> None:
    """Draw a few boxy cars standing on the road."""
    size = IMAGE_SIZE
    for _ in range(int(rng.integers(0, 4))):
        height = int(rng.integers(5, 10))
        width = int(rng.integers(10, 21))
        bottom = int(rng.integers(min(road_y + height, size - 1), size + 1))
        left = int(rng.integers(-width // 2, size - width // 2))
        body = _jitter(rng, tuple(rng.uniform(30, 220, 3)), 10)
        _paint(img, mask, _box(bottom - height, bottom, left, left + width), body, CAR)
        # Cabin narrower than the body, windows dark, wheels black: all labelled car.
        cabin_h = max(2, height // 2)
        cabin = _box(bottom - height - cabin_h, bottom - height, left + 3, left + width - 3)
        _paint(img, mask, cabin, body, CAR)
        img[_box(bottom - height - cabin_h + 1, bottom - height, left + 4, left + width - 4)] = _jitter(
            rng, (50, 60, 75), 15
        )
        for wheel_x in (left + 2, left + width - 5):
            _paint(img, mask, _box(bottom - 2, bottom, wheel_x, wheel_x + 3), np.array([20.0, 20.0, 20.0]), CAR)


def _draw_persons(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, base_y: int, road_y: int) -> None:
    """Draw a few small, thin persons, usually coloured close to what stands behind them."""
    for _ in range(int(rng.integers(1, 5))):
        height = int(rng.integers(6, 15))
        width = int(rng.integers(2, 5))
        # Most persons walk on the sidewalk, some cross the road.
        if rng.random() < 0.7:
            foot = int(rng.integers(base_y + 1, road_y + 1))
        else:
            foot = int(rng.integers(road_y + 2, IMAGE_SIZE + 1))
        left = int(rng.integers(0, IMAGE_SIZE - width + 1))
        body = _box(foot - height, foot, left, left + width)
        under_img, under_mask = img.copy(), mask.copy()
        behind = img[body].mean(axis=0)
        if rng.random() < 0.6:  # camouflaged: clothes close to the background colour
            clothes = np.clip(behind + rng.normal(0, 18, 3), 0, 255)
        else:
            clothes = np.clip(rng.uniform(20, 200, 3), 0, 255)
        _paint(img, mask, body, clothes, PERSON)
        # Legs: a gap between two legs for wider persons, the gap shows the background.
        legs_h = max(2, height * 2 // 5)
        if width >= 3:
            gap = _box(foot - legs_h, foot, left + width // 2, left + width // 2 + 1)
            img[gap] = under_img[gap]
            mask[gap] = under_mask[gap]
        # Head: skin or hair tone on the top rows.
        head_h = 2 if height >= 9 else 1
        img[_box(foot - height, foot - height + head_h, left, left + width)] = _jitter(rng, (170, 130, 100), 60)


def make_scene(rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """Generate one street scene and its uint8 HxW class-id mask from ``rng``."""
    size = IMAGE_SIZE
    img = np.zeros((size, size, 3), dtype=np.float32)
    mask = np.zeros((size, size), dtype=np.uint8)
    base_y = int(rng.integers(28, 38))  # where buildings meet the sidewalk
    road_y = base_y + int(rng.integers(5, 11))  # where the sidewalk meets the road
    _draw_background(rng, img, mask, base_y, road_y)
    _draw_trees(rng, img, mask, base_y, road_y)
    _draw_cars(rng, img, mask, road_y)
    _draw_persons(rng, img, mask, base_y, road_y)
    # Lighting and sensor noise: scene-wide brightness, then per-pixel Gaussian noise.
    lit = img * rng.uniform(0.7, 1.2) + rng.normal(0, rng.uniform(4, 12), img.shape)
    image = Image.fromarray(np.clip(lit, 0, 255).round().astype(np.uint8))
    return image, mask


def make_dataset(split: str, n: int) -> list[tuple[Image.Image, np.ndarray]]:
    """Return ``n`` scenes of ``split`` ("train", "eval" or "samples"), always the same ones."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    rng = np.random.default_rng(SPLIT_SEEDS[split])
    return [make_scene(rng) for _ in range(n)]


def evaluation_set(n: int = 200) -> list[tuple[Image.Image, np.ndarray]]:
    """Return the first ``n`` scenes of the fixed evaluation split."""
    return make_dataset("eval", n)


def export(directory: Path, n: int) -> None:
    """Write ``n`` evaluation scenes as images/<i>.png and single-channel masks/<i>.png."""
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    (directory / "masks").mkdir(parents=True, exist_ok=True)
    for i, (image, mask) in enumerate(evaluation_set(n)):
        image.save(directory / "images" / f"{i}.png")
        Image.fromarray(mask).save(directory / "masks" / f"{i}.png")
