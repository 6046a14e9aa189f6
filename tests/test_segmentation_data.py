"""The generic evaluation layout: classes.txt, images/, masks/, optional split.txt."""
import numpy as np
import pytest
from PIL import Image

from synseg_core.data.segmentation import IGNORE_INDEX, DatasetError, load_segmentation_folder


def make_folder(root, classes=("background", "cat", "dog"), items=None):
    """items: name -> (mask array, image suffix); images are 8x8 (or the mask's size) and solid grey."""
    items = items if items is not None else {"a": (np.array([[0, 1], [2, 255]], np.uint8), ".png"),
                                             "b": (np.zeros((2, 2), np.uint8), ".jpg")}
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for name, (mask, suffix) in items.items():
        Image.new("RGB", (mask.shape[1], mask.shape[0]), (90, 90, 90)).save(root / "images" / f"{name}{suffix}")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


def test_items_are_uint8_rgb_and_int64_ids_with_ignore_as_minus_one(tmp_path):
    dataset = load_segmentation_folder(make_folder(tmp_path))
    item = dataset[0]
    assert item.name == "a"
    assert item.image.dtype == np.uint8 and item.image.shape == (2, 2, 3)
    assert item.mask.dtype == np.int64
    assert item.mask.tolist() == [[0, 1], [2, IGNORE_INDEX]]
    assert IGNORE_INDEX == -1


def test_class_names_and_background_come_from_classes_txt(tmp_path):
    dataset = load_segmentation_folder(make_folder(tmp_path))
    assert dataset.class_names == ["background", "cat", "dog"]
    assert dataset.background_index == 0
    assert len(dataset) == 2 and dataset.names == ["a", "b"]


def test_no_class_named_background_means_no_background_index(tmp_path):
    dataset = load_segmentation_folder(make_folder(tmp_path, classes=("cat", "dog", "sky")))
    assert dataset.background_index is None


def test_sixteen_bit_masks_use_65535_as_ignore(tmp_path):
    classes = [f"class{i}" for i in range(300)]
    mask = np.array([[0, 299], [65535, 256]], np.uint16)
    dataset = load_segmentation_folder(make_folder(tmp_path, classes, {"a": (mask, ".png")}))
    assert dataset[0].mask.tolist() == [[0, 299], [IGNORE_INDEX, 256]]


def test_split_file_selects_and_orders_items(tmp_path):
    root = make_folder(tmp_path)
    (root / "split.txt").write_text("b\n")
    assert load_segmentation_folder(root).names == ["b"]


def test_split_file_naming_a_missing_image_is_an_error(tmp_path):
    root = make_folder(tmp_path)
    (root / "split.txt").write_text("a\nzzz\n")
    with pytest.raises(DatasetError, match="'zzz'"):
        load_segmentation_folder(root)


def test_mask_value_not_in_classes_is_an_error_naming_the_mask(tmp_path):
    root = make_folder(tmp_path, items={"a": (np.array([[0, 7]], np.uint8), ".png")})
    with pytest.raises(DatasetError, match=r"masks/a\.png.*\[7\]"):
        load_segmentation_folder(root)[0]


def test_mask_size_different_from_image_is_an_error_naming_both(tmp_path):
    root = make_folder(tmp_path, items={"a": (np.zeros((2, 2), np.uint8), ".png")})
    Image.new("RGB", (3, 2)).save(root / "images" / "a.png")
    with pytest.raises(DatasetError, match=r"masks/a\.png.*2x2.*images/a\.png.*3x2"):
        load_segmentation_folder(root)[0]


def test_image_without_mask_is_an_error_naming_the_missing_file(tmp_path):
    root = make_folder(tmp_path)
    (root / "masks" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"missing mask file .*masks/b\.png"):
        load_segmentation_folder(root)


def test_mask_without_image_is_an_error(tmp_path):
    root = make_folder(tmp_path)
    (root / "images" / "b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"masks/b\.png: mask without an image"):
        load_segmentation_folder(root)


def test_corrupt_image_is_an_error_naming_the_file(tmp_path):
    root = make_folder(tmp_path)
    (root / "images" / "a.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"images/a\.png: cannot read image"):
        load_segmentation_folder(root)[0]


@pytest.mark.parametrize("damage", [lambda png: b"garbage", lambda png: png[: len(png) // 2]], ids=["garbage", "truncated"])
def test_corrupt_mask_is_an_error_naming_the_file(tmp_path, damage):
    mask = np.random.default_rng(0).integers(0, 3, (64, 64), dtype=np.uint8)
    root = make_folder(tmp_path, items={"a": (mask, ".png")})
    path = root / "masks" / "a.png"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError, match=r"masks/a\.png: cannot read mask"):
        load_segmentation_folder(root)[0]


def test_colour_mask_is_rejected(tmp_path):
    root = make_folder(tmp_path)
    Image.new("RGB", (2, 2)).save(root / "masks" / "a.png")
    with pytest.raises(DatasetError, match="single-channel"):
        load_segmentation_folder(root)[0]


def test_missing_classes_txt_says_what_it_should_hold(tmp_path):
    root = make_folder(tmp_path)
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match="classes.txt: expected one class name per line"):
        load_segmentation_folder(root)


def test_blank_line_inside_classes_txt_is_an_error_with_its_number(tmp_path):
    root = make_folder(tmp_path)
    (root / "classes.txt").write_text("cat\n\ndog\n")
    with pytest.raises(DatasetError, match="line 2 is empty"):
        load_segmentation_folder(root)


def test_folder_without_images_dir_describes_the_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"missing images/.*classes\.txt, images/<name>"):
        load_segmentation_folder(tmp_path)


def test_empty_folder_is_an_error_naming_it(tmp_path):
    root = make_folder(tmp_path, items={})
    with pytest.raises(DatasetError, match=f"{root}.*empty"):
        load_segmentation_folder(root)
