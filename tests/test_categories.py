"""Categories from captions (paper §3.1): nouns and noun compounds, lemmatised, filtered, capped."""
import pickle

import pytest

from synseg_core.text.categories import (
    DEFAULT_STOP_WORDS,
    CategoryExtractor,
    extract_categories,
    spacy_model_available,
)


@pytest.fixture
def rules():
    return CategoryExtractor(backend="rules")


def test_nouns_of_a_simple_caption_in_order(rules):
    assert rules("a dog catches a frisbee in the park") == ["dog", "frisbee", "park"]


def test_unit_and_direction_nouns_are_filtered(rules):
    assert rules("two pairs of shoes on the left side of the shelf") == ["shoe", "shelf"]


def test_person_placeholder_becomes_person_and_plurals_are_singular(rules):
    assert rules("<PERSON> walking her dogs on a beach at sunset") == ["person", "dog", "beach", "sunset"]


def test_adjectives_are_dropped_from_noun_phrases(rules):
    assert rules("a red star and a small blue ring on a striped floor") == ["star", "ring", "floor"]


def test_noun_compounds_stay_one_category(rules):
    assert rules("a tennis ball on a tennis court near a brick wall") == ["tennis ball", "tennis court", "brick wall"]


def test_irregular_plurals_are_lemmatised(rules):
    assert rules("men, women and children with mice, knives and shelves") == [
        "man", "woman", "child", "mouse", "knife", "shelf"]


def test_words_naming_the_picture_are_filtered(rules):
    assert rules("Stock Photo - close up of a cute puppy sleeping on a wooden table") == ["puppy", "table"]


def test_repeated_categories_are_kept_once_at_first_mention(rules):
    assert rules("a dog and a cat and two more dogs") == ["dog", "cat"]


def test_verb_after_a_subject_is_not_a_category(rules):
    assert rules("a man walks his dog") == ["man", "dog"]
    assert rules("a long walk on the beach") == ["walk", "beach"]


def test_colour_word_is_a_noun_only_when_nothing_follows_it(rules):
    assert rules("an orange cat next to an orange on a plate") == ["cat", "orange", "plate"]


def test_caption_without_nouns_gives_no_category(rules):
    assert rules("very beautiful and bright") == []


def test_max_categories_keeps_the_first_ones():
    assert extract_categories("a cat, a dog, a bird and a fish", max_categories=2) == ["cat", "dog"]


def test_stop_words_replace_the_default_list():
    assert extract_categories("two pairs of shoes in the park", stop_words={"park"}) == ["pair", "shoe"]


def test_default_stop_words_can_be_extended():
    assert extract_categories("a dog in the park", stop_words=DEFAULT_STOP_WORDS | {"park"}) == ["dog"]


def test_extra_stop_words_extend_the_default_list_case_insensitively():
    extractor = CategoryExtractor(backend="rules", extra_stop_words=["Park"])
    assert extractor("two pairs of shoes on the left side of the park") == ["shoe"]


def test_extra_stop_words_extend_a_replaced_list():
    extractor = CategoryExtractor(backend="rules", stop_words={"park"}, extra_stop_words={"shoe"})
    assert extractor("two pairs of shoes in the park") == ["pair"]


def test_auto_backend_falls_back_to_rules_without_the_spacy_model():
    assert CategoryExtractor(spacy_model="no_such_spacy_model").backend == "rules"


def test_spacy_backend_without_the_model_is_an_error():
    with pytest.raises(RuntimeError, match="no_such_spacy_model"):
        CategoryExtractor(backend="spacy", spacy_model="no_such_spacy_model")


def test_extractor_survives_pickling_for_dataloader_workers(rules):
    assert pickle.loads(pickle.dumps(rules))("a cat on a mat") == ["cat", "mat"]


class _Token:
    def __init__(self, i, text, pos):
        self.i, self.lemma_, self.pos_ = i, text.lower(), pos


class _Span:
    def __init__(self, doc, start, end, root):
        self.tokens, self.start, self.root = doc[start:end], start, doc[root]

    def __iter__(self):
        return iter(self.tokens)


def test_spacy_chunks_give_head_compounds_and_other_nouns_in_caption_order():
    """The spaCy adapter on a hand-tagged doc shaped like spaCy's (noun_chunks with roots)."""
    tagged = [("the", "DET"), ("dog", "NOUN"), ("'s", "PART"), ("red", "ADJ"), ("bowl", "NOUN"), ("sits", "VERB"),
              ("on", "ADP"), ("a", "DET"), ("kitchen", "NOUN"), ("table", "NOUN")]
    doc = [_Token(i, text, pos) for i, (text, pos) in enumerate(tagged)]

    class Doc(list):
        noun_chunks = [_Span(doc, 0, 5, root=4), _Span(doc, 7, 10, root=9)]

    extractor = CategoryExtractor(backend="rules")
    extractor.backend, extractor._nlp = "spacy", lambda text: Doc(doc)
    assert extractor("the dog's red bowl sits on a kitchen table") == ["dog", "bowl", "kitchen table"]


def test_spacy_backend_finds_the_same_simple_nouns():
    pytest.importorskip("spacy")
    if not spacy_model_available("en_core_web_sm"):
        pytest.skip("spaCy model en_core_web_sm is not installed")
    spacy_extractor = CategoryExtractor(backend="spacy")
    assert spacy_extractor("two pairs of shoes on the left side of the shelf") == ["shoe", "shelf"]


@pytest.mark.parametrize(("caption", "expected"), [
    ("a patch of moon rock next to a star", ["moon rock", "star"]),
    ("fields of lavender under the sky", ["lavender", "sky"]),
    ("a thick coat of paint on a door", ["paint", "door"]),
    ("patches of snow on a mountain", ["snow", "mountain"]),
])
def test_a_quantity_noun_before_of_gives_way_to_what_it_measures(rules, caption, expected):
    assert rules(caption) == expected


def test_a_quantity_noun_without_of_keeps_its_meaning(rules):
    assert rules("a cow in a field beside a red carpet") == ["cow", "field", "carpet"]


def test_quantity_nouns_no_longer_push_real_categories_out_under_max_categories():
    caption = "a patch of moss beside a field of lavender and a coat of paint on a fence"
    assert CategoryExtractor(max_categories=3, backend="rules")(caption) == ["moss", "lavender", "paint"]
