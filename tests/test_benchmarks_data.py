"""Benchmark loaders: tiny fixtures in each standard layout, label mapping, converters, layout errors."""
import json

import numpy as np
import pytest
from PIL import Image

from synseg_core.data.benchmarks import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    COCO_OBJECT_CLASSES,
    COCO_STUFF_CLASSES,
    CONTEXT60_CLASSES,
    VOC_CLASSES,
    convert_coco_object,
    convert_coco_stuff,
    get_dataset,
    list_datasets,
    main,
)
from synseg_core.data.segmentation import DatasetError

IGNORE = -1


def write_pair(image_path, mask_path, mask, palette=False):
    """An 8x8-or-smaller image and its label png (a palette png like VOC's when ``palette``)."""
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (mask.shape[1], mask.shape[0]), (120, 60, 30)).save(image_path)
    label = Image.fromarray(mask.astype(np.uint8))
    if palette:
        label = label.convert("P")
        label.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    label.save(mask_path)


def make_voc(root, mask):
    base = root / "VOCdevkit" / "VOC2012"
    write_pair(base / "JPEGImages" / "2007_000032.jpg", base / "SegmentationClass" / "2007_000032.png", mask,
               palette=True)
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000032\n")
    return base


def make_context(root, mask):
    base = root / "VOC2010"
    write_pair(base / "JPEGImages" / "2008_000002.jpg", base / "SegmentationClassContext" / "2008_000002.png", mask)
    (base / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (base / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    return base


def make_coco_raw(root, mask, image_id="000000000139"):
    """COCO-Stuff-164k as downloaded: images/val2017/<id>.jpg and annotations/val2017/<id>.png (raw ids)."""
    write_pair(root / "images" / "val2017" / f"{image_id}.jpg", root / "annotations" / "val2017" / f"{image_id}.png",
               mask)
    return root


VOC_MASK = np.array([[0, 15, 255], [1, 20, 0]])


def test_voc21_keeps_background_and_ignores_boundaries(tmp_path):
    dataset = get_dataset("voc21", make_voc(tmp_path, VOC_MASK))
    assert dataset[0].mask.tolist() == [[0, 15, IGNORE], [1, 20, 0]]
    assert dataset.class_names[15] == "person"
    assert dataset.background_index == 0 and dataset.num_classes == 21


def test_voc20_turns_background_into_ignore_and_shifts_ids(tmp_path):
    dataset = get_dataset("voc20", make_voc(tmp_path, VOC_MASK))
    assert dataset[0].mask.tolist() == [[IGNORE, 14, IGNORE], [0, 19, IGNORE]]
    assert dataset.class_names[14] == "person"
    assert dataset.background_index is None and dataset.num_classes == 20


def test_voc_root_may_be_the_folder_holding_vocdevkit(tmp_path):
    make_voc(tmp_path, VOC_MASK)
    assert get_dataset("voc21", tmp_path).names == ["2007_000032"]


def test_voc_mask_value_outside_the_classes_is_an_error_naming_the_file(tmp_path):
    make_voc(tmp_path, np.array([[0, 30]]))
    with pytest.raises(DatasetError, match=r"2007_000032\.png.*\[30\].*0\.\.20 or 255"):
        get_dataset("voc21", tmp_path)[0]


def test_context60_and_context59(tmp_path):
    base = make_context(tmp_path, np.array([[0, 1, 59]]))
    context60, context59 = get_dataset("context60", base), get_dataset("context59", tmp_path)
    assert context60[0].mask.tolist() == [[0, 1, 59]]
    assert context59[0].mask.tolist() == [[IGNORE, 0, 58]]
    assert context60.class_names[59] == context59.class_names[58] == "wood"
    assert (context60.background_index, context59.background_index) == (0, None)


def test_coco_stuff_conversion_and_loading(tmp_path):
    # Raw ids are COCO category id - 1: 0 person, 12 -> train 11 (stop sign), 181 -> 170 (wood), 255 unlabeled.
    root = make_coco_raw(tmp_path, np.array([[0, 12], [181, 255]]))
    assert convert_coco_stuff(root) == 1
    dataset = get_dataset("coco_stuff", root)
    assert dataset[0].mask.tolist() == [[0, 11], [170, IGNORE]]
    assert dataset.class_names[11] == "stop sign" and dataset.class_names[170] == "wood"
    assert dataset.names == ["000000000139"]


def test_coco_object_from_stuff_pngs_keeps_things_and_makes_the_rest_background(tmp_path):
    # 17 dog -> 17, 89 toothbrush -> 80, 91 banner (stuff) -> 0, 255 unlabeled -> 0: as GroupViT/TCL.
    root = make_coco_raw(tmp_path, np.array([[17, 89], [91, 255]]))
    assert convert_coco_object(root) == 1
    dataset = get_dataset("coco_object", root)
    assert dataset[0].mask.tolist() == [[17, 80], [0, 0]]
    assert dataset.class_names[17] == "dog" and dataset.class_names[80] == "toothbrush"
    assert dataset.background_index == 0


def test_coco_object_from_instance_json_rasterises_polygons_and_rle(tmp_path):
    instances = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "height": 6, "width": 8}],
        "annotations": [
            # a dog (category 18) polygon over x in [1, 4], y in [1, 3]
            {"id": 1, "image_id": 139, "category_id": 18, "iscrowd": 0, "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
            # a crowd of people (category 1) as uncompressed column-major RLE: columns 6 and 7 fully set
            {"id": 2, "image_id": 139, "category_id": 1, "iscrowd": 1,
             "segmentation": {"counts": [36, 12], "size": [6, 8]}},
        ],
    }
    (tmp_path / "instances_val2017.json").write_text(json.dumps(instances))
    assert convert_coco_object(tmp_path, instances_json=tmp_path / "instances_val2017.json") == 1
    mask = np.asarray(Image.open(tmp_path / "annotations" / "val2017" / "000000000139_instanceTrainIds.png"))
    expected = np.zeros((6, 8), np.uint8)
    expected[1:4, 1:5] = 17
    expected[:, 6:] = 1
    assert mask.tolist() == expected.tolist()


def test_coco_object_without_converted_masks_says_how_to_make_them(tmp_path):
    root = make_coco_raw(tmp_path, np.zeros((2, 2)))
    with pytest.raises(DatasetError, match="convert-coco-object"):
        get_dataset("coco_object", root)


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    root = tmp_path / "cityscapes"
    stem = "frankfurt_000000_000294"
    write_pair(root / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png",
               root / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png",
               np.array([[7, 26, 0], [33, 23, 4]]))
    dataset = get_dataset("cityscapes", tmp_path)
    assert dataset[0].mask.tolist() == [[0, 13, IGNORE], [18, 10, IGNORE]]
    assert dataset.class_names[13] == "car" and dataset.names == [stem]


def test_ade20k_ignores_other_and_shifts_ids(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    write_pair(base / "images" / "validation" / "ADE_val_00000001.jpg",
               base / "annotations" / "validation" / "ADE_val_00000001.png", np.array([[0, 1, 150]]))
    dataset = get_dataset("ade20k", tmp_path)
    assert dataset[0].mask.tolist() == [[IGNORE, 0, 149]]
    assert dataset.class_names[0] == "wall" and dataset.class_names[149] == "flag"


def test_wrong_layout_says_what_was_expected(tmp_path):
    with pytest.raises(DatasetError, match=r"PASCAL VOC 2012.*expected JPEGImages, SegmentationClass, "
                                           r"ImageSets/Segmentation/val\.txt"):
        get_dataset("voc21", tmp_path)


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ValueError, match="ade20k"):
        get_dataset("pascal", "anywhere")


def test_registry_names_every_benchmark():
    assert list_datasets() == ["ade20k", "cityscapes", "coco_object", "coco_stuff", "context59", "context60",
                               "folder", "voc20", "voc21"]


@pytest.mark.parametrize("names, size", [(VOC_CLASSES, 21), (CONTEXT60_CLASSES, 60), (COCO_OBJECT_CLASSES, 81),
                                         (COCO_STUFF_CLASSES, 171), (CITYSCAPES_CLASSES, 19), (ADE20K_CLASSES, 150)])
def test_class_lists_have_the_standard_sizes_and_unique_names(names, size):
    assert len(names) == len(set(names)) == size


def test_check_command_reports_the_dataset(tmp_path, capsys):
    make_voc(tmp_path, VOC_MASK)
    main(["check", "voc21", str(tmp_path), "--all"])
    assert "1 images, 21 classes" in capsys.readouterr().out
