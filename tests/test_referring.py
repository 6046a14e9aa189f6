"""Shapes' attributes in synthetic scenes, and the attribute stand-in's referring expressions (issue 11, experiment 3)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.clipseg_init import (
    EXPRESSIONS,
    UNSEEN_CLASSES,
    WORDS_PER_IMAGE,
    Expression,
    referred_expressions,
    referred_masks,
    train_clipseg_init,
)
from benchmarks.stage1_clip import BENCHMARK_CLIP, train_clip
from synseg_core.checkpoint import load_model
from synseg_core.data.synthetic import CLASSES, STUFF_CLASSES, SceneObject, generate_scene, read_objects, write_synthetic_dataset


def test_scene_objects_are_the_painted_shapes_with_distinct_colours_and_the_caption_words():
    for index in range(40):
        scene = generate_scene((6, index))
        names = [o.name for o in scene.objects]
        assert names == [c for c in scene.categories if c not in STUFF_CLASSES]  # exhaustive captions name every shape
        assert all((scene.mask == CLASSES.index(n)).any() for n in names)
        assert len({o.color for o in scene.objects}) == len(scene.objects)
        for shape in scene.objects:
            assert f"{shape.color} {shape.name}" in scene.caption
            assert (f"{shape.size} {shape.color}" in scene.caption) == (shape.size != "medium")


def test_dataset_folder_round_trips_the_objects(tmp_path):
    write_synthetic_dataset(tmp_path, 5, seed=3, progress=False)
    assert read_objects(tmp_path) == [generate_scene((3, i)).objects for i in range(5)]
    (tmp_path / "objects.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="write it again"):
        read_objects(tmp_path)


def test_expressions_never_say_an_unseen_class_name():
    words = {w for e in EXPRESSIONS for w in e.text.split()}
    assert not words & {w for c in UNSEEN_CLASSES for w in c.split()}


def test_an_attribute_refers_to_unseen_shapes_a_seen_name_only_to_its_own():
    shapes = [SceneObject("moon", "red", "large"), SceneObject("circle", "red", "small"), SceneObject("star", "blue", "medium")]
    ids = lambda names: sorted(CLASSES.index(n) for n in names)  # noqa: E731
    assert sorted(Expression("red thing", color="red").classes(shapes)) == ids(["moon", "circle"])
    assert Expression("red circle", color="red", shape="circle").classes(shapes) == ids(["circle"])
    assert Expression("blue circle", color="blue", shape="circle").classes(shapes) == []
    assert Expression("large shape", size="large").classes(shapes) == ids(["moon"])
    assert sorted(Expression("shape").classes(shapes)) == ids(["moon", "circle", "star"])
    assert sorted(Expression("background", stuff=True).classes(shapes)) == ids(STUFF_CLASSES)


def test_referred_expressions_put_those_that_refer_to_something_first():
    scenes = [generate_scene((8, i)).objects for i in range(30)]
    ids, member = referred_expressions(scenes, torch.Generator().manual_seed(0))
    assert ids.shape == (30, WORDS_PER_IMAGE // 2) and member.shape == (30, WORDS_PER_IMAGE // 2, len(CLASSES))
    for shapes, row, refers in zip(scenes, ids.tolist(), member, strict=True):
        for i, classes in zip(row, refers, strict=True):
            assert sorted(torch.nonzero(classes).flatten().tolist()) == sorted(EXPRESSIONS[i].classes(shapes))
        # with ~100 expressions and 1-3 shapes, two that refer to something always exist
        assert refers.any(-1).all()
    assert len(set(map(tuple, ids.tolist()))) > 20  # sampled, not fixed


def test_referred_masks_cover_every_pixel_of_the_referred_classes():
    scene = generate_scene((8, 1))
    masks = torch.from_numpy(scene.mask)[None]
    red = Expression("x", color=scene.objects[0].color).classes(scene.objects)
    member = torch.zeros(1, 2, len(CLASSES), dtype=torch.bool)
    member[0, 0, red] = True
    member[0, 1, [CLASSES.index(s) for s in STUFF_CLASSES]] = True
    target = referred_masks(masks, member)
    assert torch.equal(target[0, 0], masks[0] == CLASSES.index(scene.objects[0].name))
    assert torch.equal(target[0, 1], torch.from_numpy(np.isin(scene.mask, [CLASSES.index(s) for s in STUFF_CLASSES])))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("referring")
    write_synthetic_dataset(root / "data", 12, seed=4, progress=False)
    config = {**BENCHMARK_CLIP, "vision_cfg": {**BENCHMARK_CLIP["vision_cfg"], "patch_size": 4}}
    train_clip(root / "data" / "captions.jsonl", root / "clip.safetensors", steps=1, batch_size=4, warmup=1, config=config,
               progress=False)
    return root / "data", root / "clip.safetensors"


def test_attribute_stand_in_trains_on_a_patch_4_clip_it_reads_from_the_weights(tiny_data, tmp_path):
    data, clip = tiny_data
    stats = train_clipseg_init(data, clip, tmp_path / "model", steps=2, batch_size=4, referring="attributes", progress=False)
    assert np.isfinite(stats["loss_last"])
    model = load_model(tmp_path / "model")
    assert model.patch_size == 4  # the 16x16 grid of the resolution experiment
    assert model(torch.zeros(1, 3, 64, 64), model.encode_text(["red thing"])).shape == (1, 1, 64, 64)


def test_unknown_referring_mode_and_missing_objects_are_clear_errors(tiny_data, tmp_path):
    data, clip = tiny_data
    with pytest.raises(ValueError, match="referring mode"):
        train_clipseg_init(data, clip, tmp_path / "m", steps=1, referring="captions", progress=False)
    bare = tmp_path / "bare"
    write_synthetic_dataset(bare, 2, seed=5, progress=False)
    (bare / "objects.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="objects.jsonl"):
        train_clipseg_init(bare, clip, tmp_path / "m", steps=1, referring="attributes", progress=False)
