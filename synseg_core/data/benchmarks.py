"""The standard OVSS benchmarks in their standard on-disk layouts (mmseg's, as TCL evaluates them).

``get_dataset(name, root)`` returns a ``SegmentationDataset`` whose items are
``SegmentationSample`` (image ``uint8 [H, W, 3]``, mask ``int64 [H, W]``, -1 = ignore)
for every name in ``list_datasets()``:

=============  ====  ==========  ===================================================================
name           K     background  on disk (``root`` may also be the folder above the one shown)
=============  ====  ==========  ===================================================================
voc21          21    yes (id 0)  VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt}
voc20          20    no          same files; VOC's background becomes ignore
context60      60    yes (id 0)  VOC2010/{JPEGImages, SegmentationClassContext, ImageSets/SegmentationContext/val.txt}
context59      59    no          same files; background becomes ignore
coco_object    81    yes (id 0)  coco_stuff164k/{images/val2017/*.jpg, annotations/val2017/*_instanceTrainIds.png}
coco_stuff     171   no          coco_stuff164k/{images/val2017/*.jpg, annotations/val2017/*_labelTrainIds.png}
cityscapes     19    no          cityscapes/{leftImg8bit/val/<city>/*_leftImg8bit.png, gtFine/val/<city>/*_gtFine_labelIds.png}
ade20k         150   no          ADEChallengeData2016/{images/validation/*.jpg, annotations/validation/*.png}
folder         any   if named    the generic layout of ``segmentation.load_segmentation_folder``
=============  ====  ==========  ===================================================================

Class names are the ones TCL evaluates with (mmseg's lists; GroupViT's for COCO-Object).
Context's ``SegmentationClassContext`` pngs are what mmseg's ``pascal_context.py`` writes
from the Detail API json (``trainval_merged.json``); COCO's ``*_labelTrainIds.png`` and
``*_instanceTrainIds.png`` are written by ``convert_coco_stuff`` / ``convert_coco_object``
here (or by mmseg's / GroupViT's scripts, with the same result). Run
``python -m synseg_core.data.benchmarks --help`` for the converters and a layout check.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from synseg_core.data.segmentation import (
    DatasetError,
    SegmentationDataset,
    SegmentationFile,
    label_table,
    load_segmentation_folder,
)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
CONTEXT60_CLASSES = (
    "background", "aeroplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain",
    "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light",
    "motorbike", "mountain", "mouse", "person", "plate", "platform", "pottedplant", "road", "rock", "sheep",
    "shelves", "sidewalk", "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck",
    "tvmonitor", "wall", "water", "window", "wood",
)
COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush", "banner", "blanket", "branch", "bridge", "building-other",
    "bush", "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth", "clothes",
    "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble",
    "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower", "fog", "food-other", "fruit",
    "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves", "light", "mat", "metal",
    "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other",
    "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock", "roof", "rug",
    "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs", "stone",
    "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)
COCO_OBJECT_CLASSES = ("background",) + COCO_STUFF_CLASSES[:80]
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray",
    "ashcan", "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass",
    "clock", "flag",
)
# The official cityscapesScripts labels.py: label id -> train id; every other id 0..33 is ignored.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
# COCO-Stuff-164k raw label pngs hold COCO category id - 1 (0..181, 255 unlabeled); these 11 ids are
# unused, and the remaining 171 in order are the train ids (things 0..79, stuff 80..170).
_COCO_UNUSED_RAW_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
COCO_RAW_TO_TRAIN_ID = {raw: train for train, raw in enumerate(r for r in range(182) if r not in _COCO_UNUSED_RAW_IDS)}
_COCO_NUM_THINGS = 80


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def get_dataset(name: str, root: str | Path, split: str = "val") -> SegmentationDataset:
    """The benchmark ``name`` (see ``list_datasets()``) read from ``root``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list_datasets()}")
    return _REGISTRY[name](Path(root), split)


def _find_root(root: Path, title: str, nestings: Sequence[str], required: Sequence[str]) -> Path:
    """The first of ``root/<nesting>`` holding every ``required`` path; DatasetError saying what was expected."""
    for nesting in nestings:
        candidate = root / nesting
        if all((candidate / r).exists() for r in required):
            return candidate
    where = " or ".join(str(root / n) for n in nestings)
    raise DatasetError(f"{title}: {root} is not in the expected layout; expected {', '.join(required)} "
                       f"under {where}")


def _identity_table(num_classes: int, reduce_zero_label: bool) -> np.ndarray:
    """255 is ignore; with ``reduce_zero_label`` raw 0 is ignored too and raw k becomes k - 1."""
    if reduce_zero_label:
        return label_table(256, {k: k - 1 for k in range(1, num_classes + 1)}, ignore=[0, 255])
    return label_table(256, {k: k for k in range(num_classes)}, ignore=[255])


# The two PASCAL layouts: title, folder under VOCdevkit, mask folder, ImageSets folder, classes with background.
_PASCAL = {
    "voc": ("PASCAL VOC 2012", "VOC2012", "SegmentationClass", "Segmentation", VOC_CLASSES),
    "context": ("PASCAL Context", "VOC2010", "SegmentationClassContext", "SegmentationContext", CONTEXT60_CLASSES),
}


def _pascal(kind: str, root: Path, split: str, with_background: bool) -> SegmentationDataset:
    title, folder, mask_dir, split_dir, all_classes = _PASCAL[kind]
    split_file = f"ImageSets/{split_dir}/{split}.txt"
    base = _find_root(root, title, ("", folder, f"VOCdevkit/{folder}"), ("JPEGImages", mask_dir, split_file))
    names = [line.strip() for line in (base / split_file).read_text().splitlines() if line.strip()]
    files = [SegmentationFile(n, base / "JPEGImages" / f"{n}.jpg", base / mask_dir / f"{n}.png") for n in names]
    classes = all_classes if with_background else all_classes[1:]
    return SegmentationDataset(files, classes, {8: _identity_table(len(classes), reduce_zero_label=not with_background)},
                               expected_labels=f"0..{len(all_classes) - 1} or 255", source=f"{title} {split} at {base}")


def _coco(root: Path, split: str, mask_suffix: str, classes: Sequence[str], title: str) -> SegmentationDataset:
    image_dir, mask_dir = f"images/{split}2017", f"annotations/{split}2017"
    base = _find_root(root, title, ("", "coco_stuff164k"), (image_dir, mask_dir))
    files = [SegmentationFile(p.stem, p, base / mask_dir / f"{p.stem}{mask_suffix}")
             for p in sorted((base / image_dir).glob("*.jpg"))]
    missing = [f.mask for f in files if not f.mask.is_file()]
    if missing:
        raise DatasetError(f"{title}: {len(missing)} of {len(files)} masks are missing, e.g. {missing[0]}; "
                           f"write them with `python -m synseg_core.data.benchmarks "
                           f"convert-{title.lower().replace(' ', '-')} {base}`")
    return SegmentationDataset(files, classes, {8: _identity_table(len(classes), reduce_zero_label=False)},
                               expected_labels=f"0..{len(classes) - 1} or 255", source=f"{title} {split} at {base}")


def _cityscapes(root: Path, split: str) -> SegmentationDataset:
    image_dir, mask_dir = f"leftImg8bit/{split}", f"gtFine/{split}"
    base = _find_root(root, "Cityscapes", ("", "cityscapes"), (image_dir, mask_dir))
    files = []
    for image in sorted((base / image_dir).glob("*/*_leftImg8bit.png")):
        stem = image.name[: -len("_leftImg8bit.png")]
        files.append(SegmentationFile(stem, image, base / mask_dir / image.parent.name / f"{stem}_gtFine_labelIds.png"))
    table = label_table(256, CITYSCAPES_ID_TO_TRAIN_ID, ignore=[i for i in range(34) if i not in CITYSCAPES_ID_TO_TRAIN_ID])
    return SegmentationDataset(files, CITYSCAPES_CLASSES, {8: table}, expected_labels="label ids 0..33",
                               source=f"Cityscapes {split} at {base}")


def _ade20k(root: Path, split: str) -> SegmentationDataset:
    folder = {"val": "validation", "train": "training"}.get(split, split)
    image_dir, mask_dir = f"images/{folder}", f"annotations/{folder}"
    base = _find_root(root, "ADE20K", ("", "ADEChallengeData2016", "ade/ADEChallengeData2016"), (image_dir, mask_dir))
    files = [SegmentationFile(p.stem, p, base / mask_dir / f"{p.stem}.png") for p in sorted((base / image_dir).glob("*.jpg"))]
    return SegmentationDataset(files, ADE20K_CLASSES, {8: _identity_table(150, reduce_zero_label=True)},
                               expected_labels="0..150", source=f"ADE20K {split} at {base}")


_REGISTRY: dict[str, Callable[[Path, str], SegmentationDataset]] = {
    "voc21": lambda root, split: _pascal("voc", root, split, with_background=True),
    "voc20": lambda root, split: _pascal("voc", root, split, with_background=False),
    "context60": lambda root, split: _pascal("context", root, split, with_background=True),
    "context59": lambda root, split: _pascal("context", root, split, with_background=False),
    "coco_object": lambda root, split: _coco(root, split, "_instanceTrainIds.png", COCO_OBJECT_CLASSES, "COCO Object"),
    "coco_stuff": lambda root, split: _coco(root, split, "_labelTrainIds.png", COCO_STUFF_CLASSES, "COCO Stuff"),
    "cityscapes": _cityscapes,
    "ade20k": _ade20k,
    "folder": lambda root, split: load_segmentation_folder(root),
}


# --- COCO converters ----------------------------------------------------------------------------

def _raw_coco_masks(coco_root: Path, split: str) -> list[Path]:
    mask_dir = Path(coco_root) / "annotations" / f"{split}2017"
    masks = sorted(p for p in mask_dir.glob("*.png") if "TrainIds" not in p.name)
    if not masks:
        raise DatasetError(f"no COCO-Stuff label pngs (<image id>.png, from stuffthingmaps_trainval2017.zip) "
                           f"in {mask_dir}")
    return masks


def _convert_pngs(masks: Sequence[Path], table: np.ndarray, suffix: str) -> int:
    for path in tqdm(masks, desc=f"writing *{suffix}", unit="mask"):
        raw = np.asarray(Image.open(path))
        Image.fromarray(table[raw].astype(np.uint8)).save(path.with_name(path.stem + suffix))
    return len(masks)


def convert_coco_stuff(coco_root: str | Path, split: str = "val") -> int:
    """COCO-Stuff-164k label pngs -> ``<id>_labelTrainIds.png`` (171 train ids, 255 ignore), beside them.

    Same output as mmseg's ``coco_stuff164k.py``. Returns the number of masks written.
    """
    table = np.full(256, 255, dtype=np.uint8)
    table[list(COCO_RAW_TO_TRAIN_ID)] = list(COCO_RAW_TO_TRAIN_ID.values())
    return _convert_pngs(_raw_coco_masks(Path(coco_root), split), table, "_labelTrainIds.png")


def convert_coco_object(coco_root: str | Path, split: str = "val", instances_json: str | Path | None = None) -> int:
    """Write COCO-Object masks ``annotations/<split>2017/<id>_instanceTrainIds.png``: 0 background, 1..80 things.

    Without ``instances_json`` they come from the COCO-Stuff label pngs in that folder, things
    kept and stuff/unlabeled set to background: exactly GroupViT's / TCL's ``convert_coco_object.py``.
    With it they are rasterised from the COCO instance annotations (``instances_<split>2017.json``):
    polygons and uncompressed RLE, crowd regions included, later annotations painted over earlier
    ones. Polygon edges can differ from pycocotools' rasteriser by a pixel. Returns the number written.
    """
    coco_root = Path(coco_root)
    if instances_json is None:
        table = np.zeros(256, dtype=np.uint8)
        for raw, train in COCO_RAW_TO_TRAIN_ID.items():
            if train < _COCO_NUM_THINGS:
                table[raw] = train + 1
        return _convert_pngs(_raw_coco_masks(coco_root, split), table, "_instanceTrainIds.png")
    return _rasterise_instances(Path(instances_json), coco_root / "annotations" / f"{split}2017")


def _rasterise_instances(instances_json: Path, out_dir: Path) -> int:
    data = json.loads(instances_json.read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in data.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    out_dir.mkdir(parents=True, exist_ok=True)
    for image in tqdm(data["images"], desc="rasterising COCO objects", unit="image"):
        mask = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        for ann in by_image.get(image["id"], []):
            train = COCO_RAW_TO_TRAIN_ID.get(ann["category_id"] - 1)
            if train is None or train >= _COCO_NUM_THINGS:
                raise DatasetError(f"{instances_json}: annotation {ann.get('id')} has category_id "
                                   f"{ann['category_id']}, not one of COCO's 80 object categories")
            mask[_annotation_mask(ann["segmentation"], mask.shape, instances_json)] = train + 1
        Image.fromarray(mask).save(out_dir / f"{Path(image['file_name']).stem}_instanceTrainIds.png")
    return len(data["images"])


def _annotation_mask(segmentation: list | dict, shape: tuple[int, int], source: Path) -> np.ndarray:
    """A COCO ``segmentation`` (polygon list or uncompressed RLE) as a bool ``[H, W]`` mask."""
    height, width = shape
    if isinstance(segmentation, dict):
        counts = segmentation["counts"]
        if isinstance(counts, str):
            raise DatasetError(f"{source}: compressed RLE is not supported; expected polygons or "
                               "uncompressed RLE as in instances_<split>2017.json")
        # Runs alternate background/foreground starting with background, over the column-major image.
        flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
        return flat.reshape(width, height).T
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in segmentation:
        draw.polygon(list(zip(polygon[0::2], polygon[1::2], strict=True)), fill=1, outline=1)
    return np.asarray(canvas).astype(bool)


# --- CLI ------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m synseg_core.data.benchmarks",
                                     description="Check benchmark layouts and write COCO label files.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="load a benchmark and print what was found")
    check.add_argument("name", choices=list_datasets())
    check.add_argument("root", type=Path)
    check.add_argument("--split", default="val")
    check.add_argument("--all", action="store_true", help="read every image and mask (slow; finds corrupt files)")
    stuff = commands.add_parser("convert-coco-stuff", help="COCO-Stuff pngs -> *_labelTrainIds.png")
    obj = commands.add_parser("convert-coco-object", help="COCO-Stuff pngs or instances json -> *_instanceTrainIds.png")
    for sub in (stuff, obj):
        sub.add_argument("coco_root", type=Path, help="folder holding images/ and annotations/")
        sub.add_argument("--split", default="val")
    obj.add_argument("--instances", type=Path, help="instances_<split>2017.json to rasterise instead of the pngs")
    args = parser.parse_args(argv)

    if args.command == "check":
        dataset = get_dataset(args.name, args.root, args.split)
        print(dataset)
        print(f"classes: {dataset.class_names[:5]} ... background index: {dataset.background_index}")
        for i in tqdm(range(len(dataset) if args.all else 1), desc="reading", unit="item"):
            dataset[i]
    elif args.command == "convert-coco-stuff":
        print(f"wrote {convert_coco_stuff(args.coco_root, args.split)} masks")
    else:
        print(f"wrote {convert_coco_object(args.coco_root, args.split, args.instances)} masks")


if __name__ == "__main__":
    main()
