"""Categories from captions: the weak labels MCCL trains on (paper §3.1).

A caption such as "two pairs of shoes on the left side of the shelf" becomes
``["shoe", "shelf"]``: the nouns and noun compounds of the caption, lemmatised
and lower-cased, with direction, unit/quantity and other non-referential words
removed, the quantity/extent noun of "a patch of X" / "a field of X" left out
(``PARTITIVE_WORDS``), deduplicated in caption order and capped per image.

Two backends find the noun chunks; the filtering after them is shared:

- ``"spacy"``: spaCy's tagger and ``noun_chunks`` (needs spaCy *and* an English
  model package such as ``en_core_web_sm``).
- ``"rules"``: a small built-in extractor that needs no download: closed-class
  word lists, suffix heuristics and a plural lemmatiser. docs/DATA.md lists how
  it differs from spaCy.

``backend="auto"`` (the default) picks spaCy when both are installed. Which one
ran is ``CategoryExtractor.backend``; pin it for reproducible training.
"""
from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Sequence
from functools import cache

# Paper §3.1: "direction and unit nouns (e.g., southwest, pair, front) are filtered out".
DIRECTION_WORDS = frozenset("""
    north south east west northeast northwest southeast southwest northern southern eastern western
    left right front back top bottom side middle center centre corner edge end background foreground
    inside outside interior exterior distance rear underside
""".split())
UNIT_WORDS = frozenset("""
    pair couple group bunch lot lots piece set number kind type sort variety amount dozen bit part portion
    half quarter percent inch meter metre centimeter centimetre millimeter kilometer kilometre mile yard
    kg gram kilogram ounce liter litre gallon degree size series collection row stack pile range handful
    plenty majority herd flock swarm
""".split())
# Words naming the picture or an abstraction rather than something in it (frequent in CC12M).
NON_REFERENTIAL_WORDS = frozenset("""
    image photo photograph picture pic view shot closeup close-up illustration stock vector artwork design
    concept idea style template example icon logo clipart render thing something everything anything
    nothing one way time day year month week hour minute moment today tonight lifestyle use fact reason
""".split())
DEFAULT_STOP_WORDS = DIRECTION_WORDS | UNIT_WORDS | NON_REFERENTIAL_WORDS
# Quantity and extent nouns that, followed by "of", only measure or shape what follows: "a patch of moon rock",
# "a field of lavender", "a coat of paint" -> the thing itself. Dropped there, as the paper drops unit words;
# elsewhere they keep their meaning ("a cow in a field", "a red carpet").
PARTITIVE_WORDS = frozenset("""
    patch field coat layer film sheet blanket carpet sea ocean expanse stretch strip streak band heap mound clump
    cluster bundle bouquet assortment selection mix mixture array slice chunk lump scoop spoonful cupful drop dash
    pinch sprinkle splash cloud plume puff wisp swirl stream mass crowd line sprig wedge sliver
""".split())

# Only the last words of a long compound are kept: "coffee shop interior design" -> "interior design".
MAX_COMPOUND_WORDS = 2
_PERSON_PLACEHOLDER = re.compile(r"<\s*person\s*>", re.IGNORECASE)  # CC12M masks names with <PERSON>
_CLOSE_UP = re.compile(r"\bclose\s+up\b", re.IGNORECASE)
_PARTITIVE = re.compile(r"\b(?:" + "|".join(sorted(PARTITIVE_WORDS)) + r")(?:e?s)?\s+of\b", re.IGNORECASE)


class CategoryExtractor:
    """Callable caption -> list of categories.

    Args:
        max_categories: keep at most this many (the first ones in the caption).
        stop_words: words never used in a category; ``None`` means
            ``DEFAULT_STOP_WORDS``.
        backend: ``"auto"``, ``"spacy"`` or ``"rules"``.
        spacy_model: spaCy package loaded by the spaCy backend.
        extra_stop_words: added to ``stop_words`` (extend the default list without repeating it).
    """

    def __init__(self, max_categories: int = 8, stop_words: Iterable[str] | None = None,
                 backend: str = "auto", spacy_model: str = "en_core_web_sm", extra_stop_words: Iterable[str] = ()):
        if max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {max_categories}")
        if backend not in ("auto", "spacy", "rules"):
            raise ValueError(f"backend must be 'auto', 'spacy' or 'rules', got {backend!r}")
        spacy_ready = backend != "rules" and spacy_model_available(spacy_model)
        if backend == "spacy" and not spacy_ready:
            raise RuntimeError(f"backend='spacy' needs spaCy and the model package {spacy_model!r}; "
                               "install both or use backend='rules'")
        self.backend = "spacy" if spacy_ready else "rules"
        self.max_categories = max_categories
        stops = DEFAULT_STOP_WORDS if stop_words is None else stop_words
        self.stop_words = frozenset(w.lower() for w in (*stops, *extra_stop_words))
        self.spacy_model = spacy_model
        self._nlp = None  # loaded on first use, once per process (DataLoader workers included)

    def __call__(self, caption: str) -> list[str]:
        text = _PARTITIVE.sub("", _CLOSE_UP.sub("close-up", _PERSON_PLACEHOLDER.sub("person", caption)))
        chunks = self._spacy_chunks(text) if self.backend == "spacy" else rule_noun_chunks(text)
        return self._select(chunks)

    def __getstate__(self) -> dict:
        # A loaded spaCy pipeline is large; each worker process loads its own.
        return {**self.__dict__, "_nlp": None}

    def _select(self, chunks: Iterable[Sequence[str]]) -> list[str]:
        categories: list[str] = []
        for chunk in chunks:
            words = [w for w in chunk if w not in self.stop_words and any(c.isalpha() for c in w)]
            category = " ".join(words[-MAX_COMPOUND_WORDS:])
            if category and category not in self.stop_words and category not in categories:
                categories.append(category)
                if len(categories) == self.max_categories:
                    break
        return categories

    def _spacy_chunks(self, text: str) -> list[list[str]]:
        if self._nlp is None:
            import spacy
            self._nlp = spacy.load(self.spacy_model, disable=["ner"])
        doc = self._nlp(text)
        chunks: list[tuple[int, list[str]]] = []
        used: set[int] = set()
        for span in doc.noun_chunks:
            if span.root.pos_ != "NOUN":  # pronouns and proper names
                continue
            # The run of nouns ending at the head; adjectives and determiners are dropped.
            start = span.root.i
            while start > span.start and doc[start - 1].pos_ == "NOUN":
                start -= 1
            chunks.append((start, [t.lemma_.lower() for t in doc[start:span.root.i + 1]]))
            used.update(range(start, span.root.i + 1))
        # Nouns outside those compounds ("dog" in "the dog's bowl") are categories of their own.
        chunks += [(t.i, [t.lemma_.lower()]) for t in doc if t.pos_ == "NOUN" and t.i not in used]
        return [words for _, words in sorted(chunks, key=lambda c: c[0])]


def spacy_model_available(model: str = "en_core_web_sm") -> bool:
    """True when spaCy and the named model package are both installed (nothing is loaded)."""
    return importlib.util.find_spec("spacy") is not None and importlib.util.find_spec(model) is not None


@cache
def _default_extractor(max_categories: int, stop_words: frozenset[str] | None) -> CategoryExtractor:
    return CategoryExtractor(max_categories=max_categories, stop_words=stop_words)


def extract_categories(caption: str, max_categories: int = 8, stop_words: Iterable[str] | None = None) -> list[str]:
    """Categories of one caption with the default backend; see ``CategoryExtractor``.

    >>> extract_categories("two pairs of shoes on the left side of the shelf")
    ['shoe', 'shelf']
    """
    stops = None if stop_words is None else frozenset(stop_words)
    return _default_extractor(max_categories, stops)(caption)


# ---------------------------------------------------------------------------------------------
# The rule backend. Only one decision shapes its output: is a token a noun? A chunk's category
# is its run of consecutive nouns, so adjectives, verbs and function words all simply end a run
# and need not be told apart.

_DETERMINERS = frozenset("""
    a an the this that these those some any each every no another other such either neither all both
    many much more most few several my your his her its our their whose which what whatever
""".split())
_PRONOUNS = frozenset("""
    i me you he him she it we us they them myself yourself himself herself itself ourselves themselves
    someone somebody anyone anybody everyone everybody nobody who whom mine yours hers ours theirs
""".split())
_PREPOSITIONS = frozenset("""
    in on at of with by for from to into onto upon over under above below beneath underneath beside
    besides between near across along around through throughout during against among amongst toward
    towards within without via per like unlike off out up down past about after before since until till
    than as amid atop despite except including inside outside behind beyond next
""".split())
_CONJUNCTIONS = frozenset("and or but nor so yet while whereas although though because if when where whether".split())
_AUXILIARIES = frozenset("""
    is are was were be been being am has have had having do does did can could will would shall should
    may might must not 's
""".split())
_ADVERBS = frozenset("""
    very also just too quite really still even here there now then again almost always never often
    together away alone only already once twice ever perhaps maybe how why well
""".split())
_NUMBERS = frozenset("""
    zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand
    million billion first second third fourth fifth last single double triple
""".split())
_CLOSED_CLASS = _DETERMINERS | _PRONOUNS | _PREPOSITIONS | _CONJUNCTIONS | _AUXILIARIES | _ADVERBS | _NUMBERS
_ADJECTIVES = frozenset("""
    red green blue yellow purple violet pink brown black white gray grey beige cyan magenta turquoise
    maroon navy teal golden colorful colourful multicolored dark bright pale pastel vivid
    small big large little tiny huge giant enormous tall short long wide narrow thick thin high low deep
    shallow old young new modern vintage antique ancient retro classic traditional contemporary
    beautiful pretty cute lovely nice ugly elegant gorgeous stunning amazing awesome great good bad best
    happy sad angry calm quiet loud busy empty full hot cold warm cool fresh clean dirty wet dry soft hard
    smooth rough flat round sharp heavy open closed clear cloudy sunny snowy rainy foggy misty stormy windy
    sandy rocky grassy muddy dusty furry fluffy fuzzy shiny glossy sparkly messy tasty juicy spicy creamy
    crispy sweet sour salty healthy easy simple funny lucky sleepy hungry cozy cosy curly wavy leafy hairy
    icy foamy silky sticky fancy trendy spooky scary sexy ready steady real fake free wild tropical
    wooden woolen woollen plastic metallic digital natural abstract urban rural indoor outdoor
    entire whole same different various own favorite favourite famous popular rich poor male female
""".split())
# Adjectives before a noun or adjective ("a square table", "light blue"), nouns otherwise ("an orange").
_ADJECTIVE_OR_NOUN = frozenset("orange gold silver light square cream lime chocolate".split())
# Common verbs. A present-tense form of one is a noun only after a determiner, number or adjective
# ("a walk"), or, with an -s, at the start ("Waves ..."): "a dog runs" has a verb.
_VERBS = frozenset("""
    sit stand walk run hold carry eat drink catch throw jump ride wear look lie lay sleep smile laugh talk
    read write watch wait cook drive swim fly climb fall hang grow float rest play pose sing dance pull
    push kick hit chase fight hug kiss love like enjoy feed graze bark fill surround sell buy open close
    make take give get put use shine glow bloom blow move turn lean stare point reach touch wash clean cut
    fix prepare serve celebrate decorate perch roam stroll wander travel explore visit race skate lift
    kneel crouch overlook see hide help bring leave meet fetch grab pick paint build show go come become
    seem feel keep let begin try call find think know want need say tell ask crash splash roll flow
""".split())
_IRREGULAR_VERB_FORMS = frozenset("""
    sat stood ran held ate drank caught threw rode wore lain slept wrote drove swam flew fell hung grew
    sang fought fed made took taken gave given got shone blew built went gone came seen saw hid brought
    left met lying drawn known shown thrown worn torn born grown flown sewn hidden written ridden eaten
    fallen frozen broken stolen spoken chosen woven beaten
""".split())
# Nouns the suffix rules below would misread as adjectives, participles or adverbs.
_ING_NOUNS = frozenset("""
    string spring sibling building ceiling painting clothing wedding morning evening pudding stuffing
    icing frosting dumpling duckling seedling earring awning railing lightning herring darling shilling
    viking ending offering housing parking dining living
""".split())
_LY_NOUNS = frozenset("""
    family butterfly dragonfly firefly belly jelly bully rally italy holly assembly supply anomaly monopoly
""".split())
_ED_NOUNS = frozenset("seabed flowerbed sofa-bed".split())
_ADJECTIVE_SUFFIXES = ("ful", "ous", "ive", "able", "ible", "less", "ish", "est", "ical", "ic")
_SUFFIX_NOUNS = frozenset("""
    vegetable timetable turntable constable stable archive beehive detective relative executive
    locomotive adhesive explosive radish relish polish english forest interest harvest contest
    protest tourist dentist cyclist florist pianist guitarist scientist artist clinic picnic mosaic
    traffic fabric garlic republic mechanic critic arctic attic relic cleric
""".split())
_MODIFIER_PREFIXES = frozenset("well non multi semi anti ultra".split())  # "well-known", "multi-storey"

# Plurals the suffix rules in _singular get wrong.
_IRREGULAR_PLURALS = {
    "men": "man", "women": "woman", "children": "child", "people": "person", "persons": "person",
    "feet": "foot", "teeth": "tooth", "geese": "goose", "mice": "mouse", "oxen": "ox", "dice": "die",
    "knives": "knife", "wives": "wife", "lives": "life", "leaves": "leaf", "loaves": "loaf",
    "halves": "half", "calves": "calf", "shelves": "shelf", "wolves": "wolf", "scarves": "scarf",
    "thieves": "thief", "elves": "elf", "hooves": "hoof", "wharves": "wharf", "cacti": "cactus",
    "fungi": "fungus", "buses": "bus", "gases": "gas", "lenses": "lens", "canvases": "canvas",
    "axes": "axe", "movies": "movie", "cookies": "cookie", "pies": "pie", "ties": "tie",
    "zombies": "zombie", "hoodies": "hoodie", "selfies": "selfie", "brownies": "brownie",
    "smoothies": "smoothie", "shoes": "shoe", "toes": "toe", "canoes": "canoe", "hoes": "hoe",
}
# Words ending in s that are not plurals, or whose plural is the word itself.
_INVARIANT = frozenset("""
    sheep deer fish species series aircraft means news scissors pants jeans trousers shorts clothes
    glasses binoculars goggles pajamas pyjamas tongs pliers stairs physics mathematics athletics
    gymnastics economics politics billiards darts chess bus gas lens canvas atlas iris christmas
""".split())

_TOKEN = re.compile(r"[^\W\d_]+(?:[-'][^\W\d_]+)*|\d+(?:[.,:]\d+)*|[^\w\s]")


def rule_noun_chunks(text: str) -> list[list[str]]:
    """Noun chunks of ``text`` as lists of singular nouns, in caption order (the rule backend).

    >>> rule_noun_chunks("A dog catches a frisbee in the park")
    [['dog'], ['frisbee'], ['park']]
    """
    tokens = _tokenize(text)
    chunks: list[list[str]] = []
    run: list[str] = []
    for i, token in enumerate(tokens):
        if _is_noun(tokens, i):
            run.append(_singular(token))
        elif run:
            chunks.append(run)
            run = []
    if run:
        chunks.append(run)
    return chunks


def _tokenize(text: str) -> list[str]:
    tokens = []
    for token in _TOKEN.findall(text.lower()):
        if token.endswith("'s") and len(token) > 2:  # the possessive ends a noun run: "dog's | bowl"
            tokens += [token[:-2], "'s"]
        else:
            tokens.append(token)
    return tokens


def _is_noun(tokens: Sequence[str], i: int) -> bool:
    word = tokens[i]
    if len(word) < 2 or not word[0].isalpha() or "'" in word:
        return False
    if word in _CLOSED_CLASS or word in _ADJECTIVES or word in _IRREGULAR_VERB_FORMS:
        return False
    previous = tokens[i - 1] if i > 0 else ""
    following = tokens[i + 1] if i + 1 < len(tokens) else ""
    if word in _ADJECTIVE_OR_NOUN:
        modifies_next = bool(following) and (following in _ADJECTIVES or following in _ADJECTIVE_OR_NOUN
                                             or _is_noun(tokens, i + 1))
        return not modifies_next
    lemma = _verb_lemma(word)
    if lemma is not None:
        if not previous:
            return lemma != word  # "Waves crash" vs the imperative "Look at ..."
        return previous in _DETERMINERS or previous in _NUMBERS or previous in _ADJECTIVES or previous.isdigit()
    return not _looks_like_modifier(word)


def _looks_like_modifier(word: str) -> bool:
    """Adjective, participle or adverb by its form, unless a known noun has that form."""
    if "-" in word:  # "black-and-white", "well-known", "hand-drawn", "eye-catching"
        first, *_, last = word.split("-")
        return (first in _ADJECTIVES or first in _CLOSED_CLASS or first in _MODIFIER_PREFIXES
                or last in _IRREGULAR_VERB_FORMS or _looks_like_modifier(last))
    if word.endswith("ing") and len(word) > 5:
        return word not in _ING_NOUNS
    if word.endswith("ed") and len(word) > 4 and not word.endswith(("eed", "ead")):
        return word not in _ED_NOUNS
    if word.endswith("ly") and len(word) > 4:
        return word not in _LY_NOUNS
    stem = _singular(word)
    if stem in _SUFFIX_NOUNS or stem.endswith("fish"):
        return False
    return len(stem) > 5 and stem.endswith(_ADJECTIVE_SUFFIXES)


def _verb_lemma(word: str) -> str | None:
    """The lexicon verb of which ``word`` is a present-tense form, or None."""
    if word in _VERBS:
        return word
    for suffix, replacement in (("ies", "y"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and word[: -len(suffix)] + replacement in _VERBS:
            return word[: -len(suffix)] + replacement
    return None


def _singular(word: str) -> str:
    """Plural noun -> singular; other words come back unchanged."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word in _INVARIANT or len(word) <= 3 or not word.endswith("s"):
        return word
    if word.endswith(("ss", "us", "is", "ous", "ics")):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "sses", "xes", "zzes", "oes")):
        return word[:-2]
    return word[:-1]
