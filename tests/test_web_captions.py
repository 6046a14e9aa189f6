"""The CC12M-like ("web") caption style of the synthetic scenes, next to the unchanged default."""
import hashlib

import numpy as np
import pytest

from synseg_core.data.synthetic import ABSENT_WORDS, CLASSES, generate_scene, write_synthetic_dataset

SCENES = [(1, i) for i in range(200)]


def test_default_captions_are_unchanged():
    # Written by the generator before the web style existed (seed 1, scenes 0-2).
    assert [generate_scene((1, i)).caption for i in range(3)] == [
        "a yellow moon on the water in front of a brick wall",
        "a white arrow, a cyan moon and a small pink square lying on the checkered carpet",
        "a large pink ring and a red diamond on the water",
    ]


def test_web_style_keeps_the_image_and_mask_of_the_seed():
    default, web = generate_scene((1, 5)), generate_scene((1, 5), caption_style="web")
    assert np.array_equal(default.image, web.image) and np.array_equal(default.mask, web.mask)
    assert default.caption != web.caption


def test_web_captions_are_a_function_of_the_seed():
    assert [generate_scene(s, caption_style="web").caption for s in SCENES[:20]] == \
        [generate_scene(s, caption_style="web").caption for s in SCENES[:20]]


def test_web_captions_name_only_present_classes_plus_at_most_one_absent_word():
    for seed in SCENES:
        scene = generate_scene(seed, caption_style="web")
        present = {CLASSES[i] for i in np.unique(scene.mask)}
        named = [c for c in scene.categories if c in CLASSES]
        extra = [c for c in scene.categories if c not in CLASSES]
        assert set(named) <= present and 1 <= len(named) <= 3
        assert len(extra) <= 1 and set(extra) <= set(ABSENT_WORDS)
        assert all(word in scene.caption for word in scene.categories)


def test_web_captions_sometimes_name_an_absent_word_and_sometimes_omit_a_present_class():
    scenes = [generate_scene(s, caption_style="web") for s in SCENES]
    with_absent = sum(any(c in ABSENT_WORDS for c in s.categories) for s in scenes) / len(scenes)
    omitting = sum(len({CLASSES[i] for i in np.unique(s.mask)} - set(s.categories)) > 0 for s in scenes) / len(scenes)
    assert 0.15 < with_absent < 0.45
    assert omitting > 0.5  # exhaustive captions never omit one


def test_web_captions_vary_their_phrasing():
    scenes = [generate_scene(s, caption_style="web") for s in SCENES]
    openings = {s.caption.split()[0] for s in scenes}
    assert len(openings) >= 5


def test_unknown_caption_style_is_rejected():
    with pytest.raises(ValueError, match="caption style"):
        generate_scene((1, 0), caption_style="alt-text")


def test_written_default_dataset_is_byte_identical_to_an_explicit_exhaustive_one(tmp_path):
    write_synthetic_dataset(tmp_path / "a", 5, seed=1, progress=False)
    write_synthetic_dataset(tmp_path / "b", 5, seed=1, progress=False, caption_style="exhaustive")
    digest = [hashlib.sha256((tmp_path / d / "captions.jsonl").read_bytes()).hexdigest() for d in "ab"]
    assert digest[0] == digest[1]
