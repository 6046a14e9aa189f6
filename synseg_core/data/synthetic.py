"""Procedural scenes with captions and exact masks, for testing and tiny end-to-end training.

Each scene has 1-3 coloured shapes (``OBJECT_CLASSES``) on one or two textured "stuff"
backgrounds (``STUFF_CLASSES``), e.g. "a red star and a small blue ring on a striped floor".
Shapes vary in colour, shading, size, rotation and position and may partly occlude each
other (each keeps at least half of itself visible); colours are chosen to contrast with the
background. The caption's categories, as ``extract_categories`` reads them, are exactly the
scene's class names. Scene ``i`` of seed ``s`` depends only on ``(s, i)``.

Two caption styles (``CAPTION_STYLES``) describe the same images: ``exhaustive`` (the default, above)
names every region; ``web`` reads like a CC12M caption: it names 1-3 salient things (larger
objects first, a background now and then) in varied phrasing, and sometimes adds a word that has
no region ("a photo of a red star, my favourite gift"), which becomes a category as noun
extraction would make it.

On disk (``write_synthetic_dataset`` or ``python -m synseg_core.data.synthetic OUT``) one folder
holds both formats, sharing the images:

    OUT/captions.jsonl   training manifest: {"image": "images/000000.png", "caption": ..., "categories": [...]}
    OUT/classes.txt      the 13 objects then the 6 stuff classes; no "background" (every pixel is labeled)
    OUT/images/000000.png
    OUT/masks/000000.png 8-bit class ids
    OUT/objects.jsonl    per image, its shapes' attributes: {"image": ..., "objects": [{"class": "star", "color": "red", "size": "small"}]}
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

OBJECT_CLASSES = ("circle", "star", "ring", "square", "triangle", "cross", "heart", "moon", "arrow", "diamond",
                  "hexagon", "pentagon", "flower")
STUFF_CLASSES = ("floor", "carpet", "grass", "brick wall", "sky", "water")
CLASSES = OBJECT_CLASSES + STUFF_CLASSES
COLORS = {
    "red": (215, 35, 35), "green": (40, 165, 60), "blue": (40, 80, 225), "yellow": (245, 220, 40),
    "orange": (245, 140, 25), "purple": (140, 50, 185), "pink": (245, 135, 195), "white": (245, 245, 245),
    "black": (20, 20, 20), "brown": (125, 75, 35), "gray": (128, 128, 128), "cyan": (40, 205, 220),
}
_PALETTE = np.array(list(COLORS.values()), dtype=np.float32)  # [colours, 3]
# How a caption names each background; every phrase reads back as the class name.
_STUFF_PHRASES = {
    "floor": ("a striped floor", "the striped floor"),
    "carpet": ("a checkered carpet", "the checkered carpet"),
    "grass": ("green grass", "the grass"),
    "brick wall": ("a brick wall", "an old brick wall"),
    "sky": ("a clear sky", "the blue sky"),
    "water": ("calm water", "the water"),
}
_GROUNDS = ("floor", "carpet", "grass", "water")  # stuff that can fill the whole image or its lower part
_UPPER = {"sky": "under", "brick wall": "in front of"}  # stuff above a horizon, and its preposition
_MIN_CONTRAST = 150  # L1 RGB distance between an object's colour and 90% of the background pixels
_MIN_VISIBLE = 0.5  # fraction of a shape that must stay visible after occlusion
_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision
CAPTION_STYLES = ("exhaustive", "web")
# Nouns a web caption uses for what is not in the picture; none is a class or a word of a class.
ABSENT_WORDS = ("photo", "day", "gift", "morning", "family", "vacation", "idea", "friend", "story", "weekend")
_ABSENT_RATE = 0.3  # fraction of web captions with one absent word
_WEB_THINGS = ("{}", "a photo of {}", "{} in the picture", "close-up of {}", "look at {}!", "{}, seen from above")
_WEB_ABSENT = ("{}, a nice {}", "{} on a sunny {}", "my {}: {}", "{} from our {}")


@dataclass
class SyntheticScene:
    """image: ``uint8 [S, S, 3]``; mask: ``int64 [S, S]`` ids into ``CLASSES`` (no ignore pixels);
    categories: the class names in caption order; objects: each shape's attributes (``SceneObject``)."""

    image: np.ndarray
    mask: np.ndarray
    caption: str
    categories: list[str]
    objects: list[SceneObject]


SIZE_WORDS = ("small", "medium", "large")  # how captions size a shape ("medium" is never said)


@dataclass(frozen=True)
class SceneObject:
    """One shape of a scene as a referring expression sees it: its class, colour and size word (``SIZE_WORDS``).
    A scene has at most one shape per class, so its pixels are ``mask == CLASSES.index(name)``."""

    name: str
    color: str
    size: str


def _regular_polygon(sides: int, phase: float = 0.0, radius: float = 1.0) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(sides) / sides
    return radius * np.stack([np.sin(angles), -np.cos(angles)], axis=1)


def _star() -> np.ndarray:
    outer, inner = _regular_polygon(5), _regular_polygon(5, np.pi / 5, 0.42)
    return np.stack([outer, inner], axis=1).reshape(-1, 2)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) / 17.0


# Each shape, in unit coordinates (radius ~1 around the origin), is a list of (polygon, filled):
# polygons are painted in order, filled ones add to the shape and unfilled ones cut holes.
_SHAPES: dict[str, list[tuple[np.ndarray, bool]]] = {
    "circle": [(_regular_polygon(40), True)],
    "star": [(_star(), True)],
    "ring": [(_regular_polygon(40), True), (_regular_polygon(40, radius=0.55), False)],
    "square": [(_regular_polygon(4, np.pi / 4, 1.1), True)],
    "triangle": [(_regular_polygon(3, radius=1.1) + [0, 0.2], True)],
    "cross": [(np.array([[-0.33, -1], [0.33, -1], [0.33, -0.33], [1, -0.33], [1, 0.33], [0.33, 0.33], [0.33, 1],
                         [-0.33, 1], [-0.33, 0.33], [-1, 0.33], [-1, -0.33], [-0.33, -0.33]]), True)],
    "heart": [(_heart(), True)],
    "moon": [(_regular_polygon(40), True), (_regular_polygon(40, radius=0.85) + [0.5, -0.2], False)],
    "arrow": [(np.array([[-1, -0.25], [0.2, -0.25], [0.2, -0.7], [1, 0], [0.2, 0.7], [0.2, 0.25], [-1, 0.25]]), True)],
    "diamond": [(np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]]), True)],
    "hexagon": [(_regular_polygon(6, np.pi / 6), True)],
    "pentagon": [(_regular_polygon(5, radius=1.05) + [0, 0.08], True)],
    "flower": [(_regular_polygon(20, radius=0.42) + offset, True) for offset in _regular_polygon(5, radius=0.55)]
              + [(_regular_polygon(20, radius=0.4), True)],
}
# Shapes that look the same at every rotation are not rotated (their masks stay crisp).
_ROTATABLE = frozenset(OBJECT_CLASSES) - {"circle", "ring"}


def generate_scene(seed: int | Sequence[int], size: int = 64, caption_style: str = "exhaustive") -> SyntheticScene:
    """One scene, a pure function of ``seed`` (an int or a sequence such as ``(seed, index)``).

    ``caption_style`` (``CAPTION_STYLES``) changes the caption and categories only: the image and
    mask of a seed are the same in every style.
    """
    if caption_style not in CAPTION_STYLES:
        raise ValueError(f"unknown caption style {caption_style!r}; expected one of {', '.join(CAPTION_STYLES)}")
    rng = np.random.default_rng(seed)
    xx, yy = _grid(size)
    if rng.random() < 0.5:
        ground = str(rng.choice(_GROUNDS))
        stuff = [ground]
        image = _TEXTURES[ground](rng, xx, yy, size)
        mask = np.full((size, size), CLASSES.index(ground), dtype=np.int64)
    else:  # a horizon: sky or a wall above, ground below
        stuff = [str(rng.choice(_GROUNDS)), str(rng.choice(list(_UPPER)))]
        upper = yy < size * rng.uniform(0.3, 0.55) + rng.uniform(-0.15, 0.15) * (xx - size / 2)
        below, above = (_TEXTURES[name](rng, xx, yy, size) for name in stuff)
        image = np.where(upper[..., None], above, below)
        mask = np.where(upper, CLASSES.index(stuff[1]), CLASSES.index(stuff[0]))
    objects = _place_objects(rng, size, image, mask)
    image += rng.standard_normal((size, size, 1), dtype=np.float32) * 4  # sensor noise (luminance)
    caption, categories = (_caption if caption_style == "exhaustive" else _web_caption)(rng, objects, stuff)
    return SyntheticScene(np.clip(image, 0, 255).astype(np.uint8), mask, caption, categories,
                          [SceneObject(o.name, o.color, _size_word(o)) for o in objects])


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinates, ``float32 [S, S]`` each (read-only, shared)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xx.flags.writeable = yy.flags.writeable = False
    return xx, yy


@dataclass
class _Object:
    name: str
    color: str
    radius_fraction: float
    area: int  # pixels of the whole shape


def _place_objects(rng: np.random.Generator, size: int, image: np.ndarray, mask: np.ndarray) -> list[_Object]:
    """Paint 1-3 distinct shapes into ``image``/``mask`` (in place); returns them in paint order."""
    # Contrast with nearly all of the background, not just its mean (a checkered carpet has two colours).
    samples = image[::4, ::4].reshape(-1, 1, 3)
    distances = np.quantile(np.abs(samples - _PALETTE).sum(-1), 0.1, axis=0)  # [colours]
    colors = [c for c, d in zip(COLORS, distances, strict=True) if d >= _MIN_CONTRAST]
    colors = colors or [list(COLORS)[int(distances.argmax())]]
    xx, yy = _grid(size)
    placed: list[_Object] = []
    visible: list[np.ndarray] = []  # per placed shape, its pixels not covered by a later one
    for name in rng.choice(OBJECT_CLASSES, size=int(rng.integers(1, 4)), replace=False):
        radius_fraction = rng.uniform(0.14, 0.26)
        radius = radius_fraction * size
        for _ in range(10):
            angle = rng.uniform(0, 2 * np.pi) if name in _ROTATABLE else 0.0
            shape = _rasterise(str(name), radius, rng.uniform(radius, size - radius, 2), angle, size)
            if all(np.count_nonzero(v & ~shape) >= _MIN_VISIBLE * p.area for v, p in zip(visible, placed, strict=True)):
                break
        else:
            continue  # no spot leaves the earlier shapes visible enough: leave this one out
        color = str(rng.choice(colors))
        if len(colors) > 1:
            colors.remove(color)  # distinct colours within a scene
        light_angle = rng.uniform(0, 2 * np.pi)  # a linear shading ramp across the shape
        ramp = ((xx[shape] - size / 2) * np.cos(light_angle) + (yy[shape] - size / 2) * np.sin(light_angle)) / size
        image[shape] = np.asarray(COLORS[color], np.float32) * (1 + rng.uniform(-0.25, 0.25) * ramp)[:, None]
        mask[shape] = CLASSES.index(str(name))
        visible = [v & ~shape for v in visible] + [shape]
        placed.append(_Object(str(name), color, radius_fraction, int(np.count_nonzero(shape))))
    return placed


def _rasterise(name: str, radius: float, center: np.ndarray, angle: float, size: int) -> np.ndarray:
    """Boolean ``[size, size]`` mask of a shape."""
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    canvas = np.zeros((size, size), dtype=np.uint8)
    for polygon, filled in _SHAPES[name]:
        points = (polygon @ rotation.T * radius + center - 0.5) * (1 << _SUBPIXEL_BITS)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1 if filled else 0, cv2.LINE_8, _SUBPIXEL_BITS)
    return canvas.astype(bool)


def _jitter(rng: np.random.Generator, rgb: Sequence[float], amount: float = 18) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of two colours: ``[S, S]`` weights -> ``[S, S, 3]``."""
    return a * (1 - t[..., None]) + b * t[..., None]


# Background textures: (rng, x coordinates, y coordinates, size) -> float32 [S, S, 3] RGB.

def _striped_floor(rng, xx, yy, size):
    angle, period = rng.choice([0.0, np.pi / 2, np.pi / 4, 3 * np.pi / 4]), size * rng.uniform(0.08, 0.16)
    stripes = (((xx * np.cos(angle) + yy * np.sin(angle)) / period) % 1.0 < 0.5).astype(np.float32)
    light = _jitter(rng, (205, 170, 120))
    return _mix(light, light * rng.uniform(0.55, 0.7), stripes)


def _checkered_carpet(rng, xx, yy, size):
    cell = size * rng.uniform(0.09, 0.16)
    checks = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    palette = [(230, 230, 230), (170, 40, 60), (60, 60, 150), (200, 180, 90)]
    i, j = rng.choice(len(palette), 2, replace=False)
    return _mix(_jitter(rng, palette[i]), _jitter(rng, palette[j]), checks)


def _grass(rng, xx, yy, size):
    blades = rng.random((size, size)).astype(np.float32) * 0.5 + rng.random((1, size)).astype(np.float32) * 0.5
    return _mix(_jitter(rng, (45, 95, 30)), _jitter(rng, (110, 185, 60)), blades)


def _brick_wall(rng, xx, yy, size):
    height = size * rng.uniform(0.09, 0.14)
    row = np.floor(yy / height)
    shifted = xx + (row % 2) * height
    mortar = ((yy % height) < 1.2) | ((shifted % (2 * height)) < 1.2)
    brick_shade = 0.85 + 0.3 * rng.random((size + 1, size + 1))  # one shade per brick
    shade = brick_shade[row.astype(int), np.floor(shifted / (2 * height)).astype(int)]
    bricks = _jitter(rng, (165, 70, 45)) * shade[..., None]
    return np.where(mortar[..., None], _jitter(rng, (200, 195, 185)), bricks)


def _sky(rng, xx, yy, size):
    return _mix(_jitter(rng, (60, 120, 215)), _jitter(rng, (175, 210, 245)), yy / size)


def _water(rng, xx, yy, size):
    period = size * rng.uniform(0.12, 0.22)
    waves = 0.5 + 0.5 * np.sin(2 * np.pi * (yy / period + 0.25 * np.sin(2 * np.pi * xx / (2.3 * period))))
    return _mix(_jitter(rng, (20, 70, 120)), _jitter(rng, (60, 140, 180)), waves.astype(np.float32))


_TEXTURES = {"floor": _striped_floor, "carpet": _checkered_carpet, "grass": _grass, "brick wall": _brick_wall,
             "sky": _sky, "water": _water}


def _caption(rng: np.random.Generator, objects: list[_Object], stuff: list[str]) -> tuple[str, list[str]]:
    """A caption naming every object and background, and its categories in caption order."""
    things = _join([_object_phrase(obj) for obj in objects])
    ground = str(rng.choice(_STUFF_PHRASES[stuff[0]]))
    object_names = [o.name for o in objects]
    if len(stuff) == 2:
        upper = f"{_UPPER[stuff[1]]} {rng.choice(_STUFF_PHRASES[stuff[1]])}"
        return f"{things} on {ground} {upper}", object_names + stuff
    if rng.random() < 0.3:
        return f"{ground} with {things}", [stuff[0]] + object_names
    return f"{things} {rng.choice(['on', 'lying on'])} {ground}", object_names + stuff


def _size_word(obj: _Object) -> str:
    return "small" if obj.radius_fraction < 0.17 else "large" if obj.radius_fraction > 0.23 else "medium"


def _object_phrase(obj: _Object, color: bool = True) -> str:
    size = _size_word(obj)
    words = f"{size + ' ' if size != 'medium' else ''}{obj.color + ' ' if color else ''}{obj.name}"
    return ("an " if words[0] in "aeiou" else "a ") + words


def _web_caption(rng: np.random.Generator, objects: list[_Object], stuff: list[str]) -> tuple[str, list[str]]:
    """A CC12M-like caption: 1-3 salient things (objects by size, then backgrounds), sometimes a word with no region."""
    salient = sorted(objects, key=lambda o: -o.area)
    count = int(rng.integers(1, 4))
    named_objects = salient[:count] if rng.random() < 0.85 else salient[:max(0, count - 1)]
    named_stuff = [str(s) for s in rng.permutation(stuff)][:max(0, min(count - len(named_objects), len(stuff)))]
    if not named_objects and not named_stuff:
        named_stuff = [stuff[0]]
    phrases = [_object_phrase(o, color=rng.random() < 0.7) for o in named_objects]
    if named_objects and named_stuff:
        place = str(rng.choice(_STUFF_PHRASES[named_stuff[0]]))
        things = f"{_join(phrases)} {rng.choice(['on', 'with', 'and', 'over'])} {place}"
        things += "".join(f" and {rng.choice(_STUFF_PHRASES[s])}" for s in named_stuff[1:])
    else:
        things = _join(phrases + [str(rng.choice(_STUFF_PHRASES[s])) for s in named_stuff])
    categories = [o.name for o in named_objects] + named_stuff
    if rng.random() < _ABSENT_RATE:
        absent = str(rng.choice(ABSENT_WORDS))
        template = str(rng.choice(_WEB_ABSENT))
        caption = template.format(absent, things) if template.startswith("my") else template.format(things, absent)
        return caption, categories + [absent]
    return str(rng.choice(_WEB_THINGS)).format(things), categories


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def write_synthetic_dataset(out: str | Path, num: int, seed: int = 0, size: int = 64, progress: bool = True,
                            caption_style: str = "exhaustive") -> Path:
    """Write ``num`` scenes to ``out`` in both layouts (module docstring). Returns ``out``."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    (out / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    with (out / "captions.jsonl").open("w") as manifest, (out / "objects.jsonl").open("w") as objects:
        for i in tqdm(range(num), desc="synthetic scenes", unit="scene", disable=not progress):
            scene = generate_scene((seed, i), size, caption_style)
            name = f"{i:06d}"
            Image.fromarray(scene.image).save(out / "images" / f"{name}.png", compress_level=1)
            Image.fromarray(scene.mask.astype(np.uint8)).save(out / "masks" / f"{name}.png", compress_level=1)
            manifest.write(json.dumps({"image": f"images/{name}.png", "caption": scene.caption,
                                       "categories": scene.categories}) + "\n")
            objects.write(json.dumps({"image": f"images/{name}.png", "objects": [
                {"class": o.name, "color": o.color, "size": o.size} for o in scene.objects]}) + "\n")
    return out


def read_objects(root: str | Path) -> list[list[SceneObject]]:
    """The shapes of every image of a folder written by ``write_synthetic_dataset``, in image order."""
    path = Path(root) / "objects.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; the folder predates shape attributes, write it again with "
                                "python -m synseg_core.data.synthetic")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [[SceneObject(o["class"], o["color"], o["size"]) for o in row["objects"]] for row in rows]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m synseg_core.data.synthetic",
        description="Write procedural scenes (coloured shapes on textured backgrounds) with captions and exact "
                    "masks: OUT/captions.jsonl for training and OUT/{classes.txt,images,masks} for evaluation.",
        epilog=f"objects: {', '.join(OBJECT_CLASSES)}; backgrounds: {', '.join(STUFF_CLASSES)}. "
               "Use different seeds for training and evaluation sets.")
    parser.add_argument("out", type=Path, help="output folder (created; existing scenes are overwritten)")
    parser.add_argument("--num", type=int, default=1000, help="number of scenes (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="scene i depends only on (seed, i) (default 0)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--captions", choices=CAPTION_STYLES, default="exhaustive",
                        help="caption style: every region named, or CC12M-like (1-3 salient things, sometimes an absent word)")
    args = parser.parse_args(argv)
    if args.num < 1 or args.size < 16:
        parser.error("--num must be >= 1 and --size >= 16")
    write_synthetic_dataset(args.out, args.num, args.seed, args.size, caption_style=args.captions)
    print(f"wrote {args.num} scenes to {args.out}")


if __name__ == "__main__":
    main()
