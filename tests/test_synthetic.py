"""Procedural scenes: determinism, exact masks, captions that read back as the classes, speed, disk formats."""
import json
import time

import numpy as np
import pytest

from synseg_core.data.captions import JsonlCaptions, ResizeToTensor
from synseg_core.data.segmentation import load_segmentation_folder
from synseg_core.data.synthetic import (
    CLASSES,
    OBJECT_CLASSES,
    STUFF_CLASSES,
    generate_scene,
    main,
    write_synthetic_dataset,
)
from synseg_core.text.categories import CategoryExtractor


def test_vocabulary_has_at_least_twelve_objects_and_four_stuff_classes():
    assert len(OBJECT_CLASSES) >= 12 and len(STUFF_CLASSES) >= 4
    assert CLASSES == OBJECT_CLASSES + STUFF_CLASSES and "background" not in CLASSES


def test_scene_is_a_function_of_its_seed():
    a, b, c = generate_scene((7, 3)), generate_scene((7, 3)), generate_scene((7, 4))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask) and a.caption == b.caption
    assert not np.array_equal(a.image, c.image)


def test_scene_arrays_have_the_evaluation_item_types():
    scene = generate_scene(0, size=48)
    assert scene.image.shape == (48, 48, 3) and scene.image.dtype == np.uint8
    assert scene.mask.shape == (48, 48) and scene.mask.dtype == np.int64


def test_mask_labels_exactly_the_classes_the_caption_names():
    for index in range(100):
        scene = generate_scene((1, index))
        assert {CLASSES[i] for i in np.unique(scene.mask)} == set(scene.categories), scene.caption


def test_captions_read_back_as_the_scene_categories():
    extractor = CategoryExtractor(backend="rules")
    scenes = [generate_scene((2, i)) for i in range(300)]
    mismatches = [(s.caption, s.categories) for s in scenes if extractor(s.caption) != s.categories]
    assert mismatches == []


def test_objects_are_large_enough_to_learn():
    for i in range(100):
        scene = generate_scene((3, i))
        for name in scene.categories:
            if name in OBJECT_CLASSES:
                assert (scene.mask == CLASSES.index(name)).mean() >= 0.02, (i, name)


def test_every_class_and_colour_occurs():
    scenes = [generate_scene((4, i)) for i in range(300)]
    seen = {c for s in scenes for c in s.categories}
    assert seen == set(CLASSES)
    assert {"red", "blue", "green", "yellow"} <= {w for s in scenes for w in s.caption.split()}


def test_generates_at_least_200_scenes_per_second_at_64px_on_one_core():
    generate_scene(0)
    start = time.process_time()  # CPU time of this process: insensitive to other jobs on the machine
    for i in range(200):
        generate_scene((5, i), size=64)
    assert 200 / (time.process_time() - start) >= 200


def test_written_dataset_loads_as_training_manifest_and_evaluation_folder(tmp_path):
    out = write_synthetic_dataset(tmp_path / "synth", num=5, seed=9, size=32, progress=False)
    evaluation = load_segmentation_folder(out)
    assert evaluation.class_names == list(CLASSES) and evaluation.background_index is None
    scene = generate_scene((9, 2), size=32)
    assert np.array_equal(evaluation[2].image, scene.image)
    assert np.array_equal(evaluation[2].mask, scene.mask)
    training = list(JsonlCaptions(out / "captions.jsonl", transform=ResizeToTensor(32), shuffle=False))
    assert [s.caption for s in training][2] == scene.caption
    assert training[2].categories == scene.categories
    assert json.loads((out / "captions.jsonl").read_text().splitlines()[0])["image"] == "images/000000.png"


def test_cli_writes_the_requested_scenes(tmp_path, capsys):
    main([str(tmp_path / "out"), "--num", "3", "--seed", "1", "--size", "32"])
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert "wrote 3 scenes" in capsys.readouterr().out


def test_cli_help_describes_the_outputs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "captions.jsonl" in text and "--seed" in text and "hexagon" in text
