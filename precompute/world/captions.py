"""Captions of world scenes: a small grammar with synonyms, omissions and noise, and its parser.

Real captions describe some of what an image shows, in varied words, and are
sometimes wrong. ``make_caption`` imitates that: the shape is always named, other
families are mentioned with their own probability (``MENTION``), each mentioned
value may be swapped for a wrong one of the same family (``noise``), and every
concept has several phrasings. ``parse_caption`` inverts the grammar (it is what
the planted generator reads), by greedy longest match over a lexicon of every
phrase the grammar can emit, so colour words inside background phrases ("white
background", "blue sky") are never mistaken for the object's colour.

A single object is always stated as one: English has no way to say "a star"
without a number, so ``count_one`` is stated explicitly or by the singular noun.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from precompute.errors import ConfigError
from precompute.world.concepts import CONCEPTS, EXTRAS, EXTRAS_FAMILY, FAMILIES, FAMILY_MEMBERS, Scene

# Probability that a caption mentions each family (shape always) or each extra.
MENTION: Mapping[str, float] = {
    "shape": 1.0, "count": 0.9, "colour": 0.8, "pattern": 0.6, "background": 0.7, "size": 0.4,
    "position": 0.4, "shadow": 0.1, "frame": 0.2, "sun": 0.3,
}

# shape -> (singular, plural) phrasings
SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("circle", "circles"), ("round disc", "round discs"), ("disc", "discs")),
    "square": (("square", "squares"), ("box", "boxes"), ("square tile", "square tiles")),
    "triangle": (("triangle", "triangles"), ("triangular shape", "triangular shapes")),
    "star": (("star", "stars"), ("star shape", "star shapes"), ("five-pointed star", "five-pointed stars")),
    "heart": (("heart", "hearts"), ("heart shape", "heart shapes"), ("love heart", "love hearts")),
    "hexagon": (("hexagon", "hexagons"), ("six-sided shape", "six-sided shapes")),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs"), ("plus shape", "plus shapes")),
    "crescent": (("crescent", "crescents"), ("crescent moon", "crescent moons"), ("moon", "moons")),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses"), ("lozenge", "lozenges")),
    "ring": (("ring", "rings"), ("hoop", "hoops"), ("donut", "donuts")),
}

WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine"),
    "yellow": ("yellow", "golden", "lemon-yellow"),
    "green": ("green", "emerald", "lime-green"),
    "blue": ("blue", "cobalt", "royal-blue"),
    "purple": ("purple", "violet"),
    "pink": ("pink", "rose-pink", "magenta"),
    "white": ("white", "ivory", "snow-white"),
    "black": ("black", "jet-black", "ebony"),
    "brown": ("brown", "chocolate-brown", "tan"),
    "solid": ("solid", "solid-coloured", "plain-coloured"),
    "striped": ("striped", "stripy", "pinstriped"),
    "dotted": ("dotted", "polka-dot", "spotted"),
    "checkered": ("checkered", "checked", "chequered"),
    "count_one": ("one", "a single", "just one", "1"),
    "count_two": ("two", "2", "a pair of"),
    "count_three": ("three", "3", "a trio of"),
    "count_four": ("four", "4", "a group of four"),
    "small": ("small", "tiny", "little"),
    "medium": ("medium", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
    "centre": ("in the centre", "in the middle", "centred", "in the center"),
    "left": ("on the left", "to the left", "on the left side"),
    "right": ("on the right", "to the right", "on the right side"),
    "top": ("at the top", "near the top", "in the upper half"),
    "bottom": ("at the bottom", "near the bottom", "in the lower half"),
    "plain_white": ("a white background", "a plain background", "a plain white background", "a white backdrop"),
    "plain_dark": ("a dark background", "a black background", "a plain dark background", "a dark backdrop"),
    "gradient": ("a gradient background", "a colour gradient", "a smooth gradient"),
    "checkerboard_bg": ("a checkerboard background", "a checkerboard floor", "a chessboard"),
    "wood": ("a wooden table", "wood grain", "a wooden floor", "wooden planks", "a wooden background"),
    "grass": ("grass", "a lawn", "green grass", "a grassy field"),
    "document": ("a page of text", "a printed document", "a text document", "a sheet of paper covered in text"),
    "sky": ("a blue sky", "a cloudy sky", "the sky"),
    "bricks": ("a brick wall", "bricks", "brickwork"),
}

# Pattern phrases that follow the noun ("a star with stripes").
PATTERN_AFTER: dict[str, tuple[str, ...]] = {
    "solid": ("with no pattern",),
    "striped": ("with stripes", "covered in stripes"),
    "dotted": ("with dots", "with polka dots", "covered in spots"),
    "checkered": ("with a check pattern", "with checks"),
}

# extra -> (phrase for one object, phrase for several)
EXTRA_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "shadow": (("casting a shadow", "casting shadows"), ("with a drop shadow", "with drop shadows")),
    "frame": (("in a frame", "in a frame"), ("framed", "framed"), ("with a border", "with a border")),
    "sun": (
        ("with the sun in the corner", "with the sun in the corner"),
        ("under a shining sun", "under a shining sun"),
    ),
}

# Bare keywords the grammar never emits alone, so that captions written by people parse too.
_BARE_EXTRAS = {"shadow": "shadow", "shadows": "shadow", "frame": "frame", "sun": "sun"}
_BARE_BACKGROUNDS = {
    "wood": "wood", "gradient": "gradient", "checkerboard": "checkerboard_bg", "document": "document",
    "brick": "bricks", "lawn": "grass", "sky": "sky",
}

_PREFIXES = ("", "a photo of ", "an image of ", "a picture of ", "a drawing of ", "a rendering of ")
_CONNECTORS = ("on", "against", "in front of", "over")
_UNSTATED_PLURAL = ("", "some ", "several ")
_ARTICLES = frozenset({"a", "an", "the"})
_SPLIT = re.compile(r"[^a-z0-9\-]+")


@dataclass(frozen=True)
class Caption:
    """A caption's text and what it states (``{family: value}``, ``"extras": (...)``), noise included."""

    text: str
    stated: dict


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an " if word[:1] in "aeiou" else "a "


def compose_caption(
    scene: Scene, rng: np.random.Generator, noise: float = 0.02, mention: Mapping[str, float] | None = None
) -> Caption:
    """Describe ``scene`` in words, returning the text and the values it states.

    ``noise`` is the chance that a mentioned family is stated with a wrong value
    of the same family; ``mention`` overrides entries of ``MENTION``.
    """
    if not 0.0 <= noise <= 1.0:
        raise ConfigError(f"caption noise must be in [0, 1], got {noise!r}")
    rates = {**MENTION, **(mention or {})}
    if rates["shape"] != 1.0:
        raise ConfigError(f"a caption always names the shape; mention['shape'] must be 1.0, got {rates['shape']!r}")
    stated: dict = {}
    for family in FAMILIES:
        value = scene.value(family)
        said = value is not None and (rng.random() < rates[family] or (family == "count" and value == "count_one"))
        if said and noise > 0 and rng.random() < noise:
            others = [m for m in FAMILY_MEMBERS[family] if m != value]
            value = _pick(rng, others)
        if said:
            stated[family] = value
    extras = tuple(name for name in EXTRAS if name in scene.extras and rng.random() < rates[name])
    if extras:
        stated[EXTRAS_FAMILY] = extras
    return Caption(_words(stated, scene.shape, rng), stated)


def _words(stated: dict, shape: str, rng: np.random.Generator) -> str:
    """Lay out the stated values in one of the templates."""
    count = stated.get("count")
    plural = count not in (None, "count_one") or (count is None)
    shape_name = stated.get("shape", shape)
    noun = _pick(rng, SHAPE_WORDS[shape_name])[1 if plural else 0]
    looks = [_pick(rng, WORDS[stated["colour"]])] if "colour" in stated else []
    after = ""
    if "pattern" in stated:
        if rng.random() < 0.7:  # "striped red" or "red striped"
            looks.insert(int(rng.integers(len(looks) + 1)), _pick(rng, WORDS[stated["pattern"]]))
        else:
            after = " " + _pick(rng, PATTERN_AFTER[stated["pattern"]])
    size = [_pick(rng, WORDS[stated["size"]])] if "size" in stated else []
    phrase = " ".join(size + looks + [noun])
    if count == "count_one" and rng.random() < 0.5:
        lead = _pick(rng, WORDS["count_one"]) + " "
    elif count == "count_one":
        lead = _article(phrase)
    elif count is None:
        lead = _pick(rng, _UNSTATED_PLURAL)
    else:
        lead = _pick(rng, WORDS[count]) + " "
    obj = lead + phrase + after
    if "position" in stated:
        obj += " " + _pick(rng, WORDS[stated["position"]])
    extras = [_pick(rng, EXTRA_WORDS[e])[1 if plural else 0] for e in stated.get(EXTRAS_FAMILY, ())]
    tail = (" " + " and ".join(extras)) if extras else ""
    prefix = _pick(rng, _PREFIXES)
    if "background" not in stated:
        text = f"{prefix}{obj}{tail}"
    else:
        bg = _pick(rng, WORDS[stated["background"]])
        form = int(rng.integers(3))
        if form == 0:
            text = f"{prefix}{obj} {_pick(rng, _CONNECTORS)} {bg}{tail}"
        elif form == 1:
            text = f"{prefix}{bg} with {obj}{tail}"
        else:
            text = f"{obj}{tail}, {bg} behind {'them' if plural else 'it'}"
    return text[:1].upper() + text[1:]


def make_caption(scene: Scene, rng: np.random.Generator, noise: float = 0.02) -> str:
    """A caption for ``scene``: some families omitted, synonyms varied, a little noise."""
    return compose_caption(scene, rng, noise).text


def _tokens(text: str) -> list[str]:
    return [t for t in _SPLIT.split(text.lower()) if t and t not in _ARTICLES]


@lru_cache(maxsize=1)
def lexicon() -> dict[tuple[str, ...], tuple[str, str, bool]]:
    """Every phrase the grammar emits, as tokens -> (family, value, plural).

    Raises ``ValueError`` if two concepts share a phrase (a bug in the tables).
    """
    family = {c.name: c.family for c in CONCEPTS}
    entries: list[tuple[str, str, str, bool]] = []
    for shape, forms in SHAPE_WORDS.items():
        for singular, plural in forms:
            entries += [(singular, "shape", shape, False), (plural, "shape", shape, True)]
    for name, phrases in WORDS.items():
        entries += [(p, family[name], name, False) for p in phrases]
    for name, phrases in PATTERN_AFTER.items():
        entries += [(p, "pattern", name, False) for p in phrases]
    for name, forms in EXTRA_WORDS.items():
        entries += [(p, EXTRAS_FAMILY, name, False) for pair in forms for p in pair]
    entries += [(word, EXTRAS_FAMILY, name, False) for word, name in _BARE_EXTRAS.items()]
    entries += [(word, "background", name, False) for word, name in _BARE_BACKGROUNDS.items()]
    table: dict[tuple[str, ...], tuple[str, str, bool]] = {}
    for phrase, fam, value, plural in entries:
        key = tuple(_tokens(phrase))
        if key in table and table[key][:2] != (fam, value):
            raise ValueError(f"caption phrase {phrase!r} means both {table[key][1]} and {value}")
        table[key] = (fam, value, plural)
    return table


def parse_caption(text: str) -> dict:
    """What a caption states: ``{family: concept}`` plus ``"extras": (names...)`` if any.

    Inverse of the grammar: greedy longest match over ``lexicon()``; unknown words are
    skipped. The first value found for a family wins. A singular shape noun without a
    number states ``count_one``; a plural one without a number leaves the count open.
    """
    if not isinstance(text, str):
        raise ConfigError(f"a caption must be a string, got {type(text).__name__}")
    table = lexicon()
    longest = max(len(k) for k in table)
    tokens = _tokens(text)
    stated: dict = {}
    extras: list[str] = []
    plural_noun: bool | None = None
    i = 0
    while i < len(tokens):
        for n in range(min(longest, len(tokens) - i), 0, -1):
            hit = table.get(tuple(tokens[i : i + n]))
            if hit is not None:
                break
        else:
            i += 1
            continue
        family, value, plural = hit
        if family == EXTRAS_FAMILY:
            if value not in extras:
                extras.append(value)
        elif family not in stated:
            stated[family] = value
            if family == "shape":
                plural_noun = plural
        i += n
    if "count" not in stated and plural_noun is False:
        stated["count"] = "count_one"
    if extras:
        stated[EXTRAS_FAMILY] = tuple(e for e in EXTRAS if e in extras)
    return {k: stated[k] for k in (*FAMILIES, EXTRAS_FAMILY) if k in stated}
