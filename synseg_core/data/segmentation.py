"""Segmentation datasets for evaluation: one item type for every benchmark.

Every dataset here yields ``SegmentationSample``: the RGB image as ``uint8 [H, W, 3]``
and the label mask as ``int64 [H, W]`` of class ids, with ``IGNORE_INDEX`` (-1) on
pixels that are not scored. Raw mask values are turned into class ids by a lookup
table, which is how the benchmarks' conventions (VOC's 255 boundary, ADE20K's
"0 = other", Cityscapes' id -> trainId, ...) all become this one form.

The generic on-disk layout (see docs/DATA.md) is read by ``load_segmentation_folder``::

    ROOT/classes.txt          one class name per line; line i is class id i
    ROOT/images/<name>.jpg    (or .jpeg / .png)
    ROOT/masks/<name>.png     single channel, 8- or 16-bit class ids; 255 / 65535 = ignore
    ROOT/split.txt            optional: the names to use, one per line
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE_INDEX = -1
BACKGROUND = "background"  # a class with this exact name is the background class
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_INVALID = -2  # lookup-table entry for a raw value the format does not allow
_MODE_BITS = {"L": 8, "P": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I": 16}


class DatasetError(ValueError):
    """A dataset on disk is missing, malformed or not in the expected layout."""


@dataclass
class SegmentationSample:
    """One evaluation item.

    image: ``uint8 [H, W, 3]`` RGB.
    mask: ``int64 [H, W]`` class ids, ``IGNORE_INDEX`` (-1) where unlabeled.
    name: the image's name (file stem) within its dataset.
    """

    image: np.ndarray
    mask: np.ndarray
    name: str


@dataclass(frozen=True)
class SegmentationFile:
    name: str
    image: Path
    mask: Path


def label_table(size: int, ids: Mapping[int, int], ignore: Sequence[int] = ()) -> np.ndarray:
    """Lookup table raw mask value -> class id: ``ids`` map, ``ignore`` -> IGNORE_INDEX, the rest invalid.

    Returns ``int64 [size]``.
    """
    table = np.full(size, _INVALID, dtype=np.int64)
    table[list(ignore)] = IGNORE_INDEX
    for raw, class_id in ids.items():
        table[raw] = class_id
    return table


class SegmentationDataset:
    """Image/mask file pairs with their class names and raw-value lookup tables.

    Args:
        files: the (name, image path, mask path) of every item, in order.
        class_names: class id i is ``class_names[i]``.
        label_tables: bits per mask pixel (8 or 16) -> ``label_table`` for that depth;
            masks of any other depth are an error.
        expected_labels: the valid raw values in words, for error messages.
        source: what the dataset is (e.g. "PASCAL VOC 2012 val at data/VOC2012"), for messages.
    """

    def __init__(self, files: Sequence[SegmentationFile], class_names: Sequence[str],
                 label_tables: Mapping[int, np.ndarray], expected_labels: str, source: str):
        if not files:
            raise DatasetError(f"{source}: the dataset is empty")
        for f in files:
            for path in (f.image, f.mask):
                if not path.is_file():
                    kind = "image" if path == f.image else "mask"
                    raise DatasetError(f"{source}: missing {kind} file {path} (item {f.name!r})")
        self.files = list(files)
        self.class_names = list(class_names)
        self.background_index = self.class_names.index(BACKGROUND) if BACKGROUND in self.class_names else None
        self.label_tables = dict(label_tables)
        self.expected_labels = expected_labels
        self.source = source

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> SegmentationSample:
        f = self.files[index]
        image = read_rgb(f.image)
        raw = _read_raw_mask(f.mask)
        if raw.shape != image.shape[:2]:
            raise DatasetError(f"{f.mask}: mask size {raw.shape[1]}x{raw.shape[0]} (WxH) differs from image "
                               f"{f.image} size {image.shape[1]}x{image.shape[0]}")
        return SegmentationSample(image=image, mask=self._to_class_ids(raw, f.mask), name=f.name)

    def __repr__(self) -> str:
        return f"SegmentationDataset({self.source}: {len(self)} images, {self.num_classes} classes)"

    def _to_class_ids(self, raw: np.ndarray, path: Path) -> np.ndarray:
        bits = 8 if raw.dtype == np.uint8 else 16
        if bits not in self.label_tables:
            raise DatasetError(f"{path}: {bits}-bit mask, expected {' or '.join(map(str, self.label_tables))}-bit")
        mask = self.label_tables[bits][raw]
        if (mask == _INVALID).any():
            bad = np.unique(raw[mask == _INVALID])
            raise DatasetError(f"{path}: mask values {bad[:10].tolist()} are not valid for {self.source} "
                               f"(expected {self.expected_labels})")
        return mask


def read_rgb(path: Path) -> np.ndarray:
    """An image file as ``uint8 [H, W, 3]`` RGB; DatasetError naming the file if unreadable."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from e


def _read_raw_mask(path: Path) -> np.ndarray:
    """A label png as ``uint8`` or ``uint16 [H, W]`` raw values (palette pngs give their indices)."""
    try:
        with Image.open(path) as im:
            if im.mode not in _MODE_BITS:
                raise DatasetError(f"{path}: mask must be a single-channel label image, got mode {im.mode!r} "
                                   "(a colour-coded mask needs converting to label ids first)")
            raw = np.asarray(im)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read mask ({e})") from e
    if _MODE_BITS[im.mode] == 8:
        return raw.astype(np.uint8, copy=False)
    if raw.min() < 0 or raw.max() > 65535:
        raise DatasetError(f"{path}: mask values outside 0..65535")
    return raw.astype(np.uint16, copy=False)


def read_class_names(path: Path) -> list[str]:
    """``classes.txt``: one name per line, line i is class id i; blank lines only at the end."""
    if not path.is_file():
        raise DatasetError(f"missing {path}: expected one class name per line (line i = class id i)")
    lines = path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    names = [line.strip() for line in lines]
    for number, name in enumerate(names, 1):
        if not name:
            raise DatasetError(f"{path}: line {number} is empty; every line up to the last names a class")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise DatasetError(f"{path}: duplicate class names {duplicates}")
    return names


def load_segmentation_folder(root: str | Path) -> SegmentationDataset:
    """The generic layout (module docstring). Ignore value: 255 in 8-bit masks, 65535 in 16-bit ones."""
    root = Path(root)
    image_dir, mask_dir = root / "images", root / "masks"
    for required in (image_dir, mask_dir):
        if not required.is_dir():
            raise DatasetError(f"{root}: not a segmentation folder, missing {required.name}/ (expected "
                               "classes.txt, images/<name>.jpg|.png, masks/<name>.png, optional split.txt)")
    class_names = read_class_names(root / "classes.txt")
    images = _images_by_name(image_dir)
    split = root / "split.txt"
    if split.is_file():
        names = [line.strip() for line in split.read_text(encoding="utf-8").splitlines() if line.strip()]
        missing = [n for n in names if n not in images]
        if missing:
            raise DatasetError(f"{split}: {len(missing)} listed names have no image in {image_dir}, "
                               f"e.g. {missing[0]!r}")
    else:
        names = sorted(images)
        orphans = sorted(p.stem for p in mask_dir.glob("*.png") if p.stem not in images)
        if orphans:
            raise DatasetError(f"{mask_dir / (orphans[0] + '.png')}: mask without an image in {image_dir}")
    n = len(class_names)
    tables = {8: label_table(256, {i: i for i in range(min(n, 255))}, ignore=[255]),
              16: label_table(65536, {i: i for i in range(min(n, 65535))}, ignore=[65535])}
    files = [SegmentationFile(name, images[name], mask_dir / f"{name}.png") for name in names]
    return SegmentationDataset(files, class_names, tables, expected_labels=f"0..{n - 1} from {root / 'classes.txt'} "
                               "or the ignore value 255 (8-bit) / 65535 (16-bit)", source=f"segmentation folder {root}")


def _images_by_name(image_dir: Path) -> dict[str, Path]:
    images: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in images:
            raise DatasetError(f"{image_dir}: two images named {path.stem!r} ({images[path.stem].name}, {path.name})")
        images[path.stem] = path
    return images
