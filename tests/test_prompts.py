"""Prompt-template ensembles and the text-embedding cache."""
from __future__ import annotations

import pytest
import torch

from synseg_core.text.prompts import EmbeddingCache, check_vocabulary, fill_templates, get_templates


def test_template_sets_have_their_published_sizes():
    assert len(get_templates("imagenet80")) == 80
    assert len(get_templates("tcl")) == 9
    assert fill_templates("door", "single") == ["a photo of a door."]
    assert "a photo of many doors." in fill_templates("doors", "tcl") or "a photo of many door." in fill_templates("door", "tcl")


def test_unknown_template_set_names_the_choices():
    with pytest.raises(ValueError, match="imagenet80"):
        get_templates("nope")


def test_embedding_is_the_normalised_mean_of_normalised_template_embeddings(tiny_model):
    enc = tiny_model.text_encoder
    prompts = fill_templates("chair", "tcl")
    with torch.no_grad():
        each = torch.nn.functional.normalize(enc(enc.tokenizer(prompts)), dim=-1)
    expected = torch.nn.functional.normalize(each.mean(0), dim=-1)
    torch.testing.assert_close(enc.embed_prompts(["chair"], "tcl")[0], expected, atol=1e-6, rtol=1e-5)


def test_a_repeated_word_is_never_encoded_again():
    cache = EmbeddingCache()
    calls = []

    def compute(words):
        calls.append(list(words))
        return torch.randn(len(words), 4)

    first = cache.get_or_compute("m", "tcl", ["door", "chair"], compute)
    second = cache.get_or_compute("m", "tcl", ["chair", "lamp", "door"], compute)
    assert calls == [["door", "chair"], ["lamp"]]
    torch.testing.assert_close(second[0], first[1])
    torch.testing.assert_close(second[2], first[0])
    assert cache.hits == 2 and cache.misses == 3


def test_cache_keys_include_model_and_template_set():
    cache = EmbeddingCache()
    compute = lambda words: torch.randn(len(words), 4)  # noqa: E731
    cache.get_or_compute("m1", "tcl", ["door"], compute)
    cache.get_or_compute("m2", "tcl", ["door"], compute)
    cache.get_or_compute("m1", "single", ["door"], compute)
    assert len(cache) == 3 and cache.misses == 3


def test_model_encode_text_uses_the_cache(tiny_model):
    tiny_model.text_encoder.cache.clear()
    misses = tiny_model.text_encoder.cache.misses
    a = tiny_model.encode_text(["tree", "road"])
    b = tiny_model.encode_text(["road"])
    assert tiny_model.text_encoder.cache.misses - misses == 2
    torch.testing.assert_close(a[1], b[0])
    assert torch.allclose(a.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize(
    "words, message",
    [([], "empty"), (["door", " "], "empty word"), (["door", "chair", "door"], "repeats"), ("door", "list of words")],
)
def test_bad_vocabularies_are_refused_with_a_reason(words, message):
    with pytest.raises(ValueError, match=message):
        check_vocabulary(words)


def test_vocabulary_limit_is_enforced():
    with pytest.raises(ValueError, match="at most 3"):
        check_vocabulary(["a", "b", "c", "d"], max_words=3)


def test_the_imagenet_sets_are_open_clips_lists():
    import open_clip

    assert [t("{}") for t in get_templates("imagenet80")] == [t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES]
    assert [t("{}") for t in get_templates("tcl")][:7] == [t("{}") for t in open_clip.SIMPLE_IMAGENET_TEMPLATES]


def test_listing_and_checking_need_neither_torch_nor_open_clip():
    import subprocess
    import sys

    code = ("import sys; from synseg_core.text.prompts import list_template_sets, check_vocabulary; "
            "list_template_sets(); check_vocabulary(['door']); print('torch' in sys.modules, 'open_clip' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False", "False"]


def test_the_cache_stacks_numpy_rows_into_an_array():
    import numpy as np

    cache = EmbeddingCache()
    out = cache.get_or_compute("onnx", "tcl", ["door", "chair"], lambda words: np.ones((len(words), 4), np.float32))
    assert isinstance(out, np.ndarray) and out.shape == (2, 4) and out.dtype == np.float32
