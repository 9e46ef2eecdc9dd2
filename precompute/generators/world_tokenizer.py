"""A CLIP tokenizer over the embedded world's caption vocabulary, built by the project.

Stable Diffusion's tokenizer is a byte-level BPE (``vocab.json`` + ``merges.txt``)
learned on web text; the world's trained generator needs the same class and file
format, but over the few hundred words the caption grammar can emit. We learn the
BPE merges on that word list ourselves (classic Sennrich BPE, most frequent pair
first) until every word is one token, so a caption tokenises to one token per
word, and any other word still falls back to characters (every byte-level
character is in the vocabulary, with and without the ``</w>`` end-of-word mark).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from transformers import CLIPTokenizer

from precompute.world import captions

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"
MAX_LENGTH = 32  # longest grammar caption is 28 words; + BOS and EOS

# The template words of ``captions._words`` that live in f-strings, not in tables.
_TEMPLATE_WORDS = ("with", "behind", "them", "it", "and", "a", "an", "the")
# CLIP's pre-tokenizer for lower-case ASCII text: letter runs, single digits, punctuation runs.
_CLIP_WORDS = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")


def clip_words(text: str) -> list[str]:
    """The pieces CLIP's pre-tokenizer cuts ``text`` into (ASCII text; what becomes one token each)."""
    return _CLIP_WORDS.findall(text.lower())


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for byte in range(256):
        if byte in keep:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@lru_cache(maxsize=1)
def caption_words() -> tuple[str, ...]:
    """Every word the caption grammar can produce, plus digits and punctuation, sorted."""
    phrases: list[str] = [*_TEMPLATE_WORDS, *captions._PREFIXES, *captions._CONNECTORS, *captions._UNSTATED_PLURAL]
    phrases += [p for forms in captions.SHAPE_WORDS.values() for pair in forms for p in pair]
    phrases += [p for options in captions.WORDS.values() for p in options]
    phrases += [p for options in captions.PATTERN_AFTER.values() for p in options]
    phrases += [p for forms in captions.EXTRA_WORDS.values() for pair in forms for p in pair]
    phrases += [*captions._BARE_EXTRAS, *captions._BARE_BACKGROUNDS]
    words = {w for phrase in phrases for w in clip_words(phrase)}
    words |= set("0123456789") | set(",.-!?'\";:()")
    return tuple(sorted(words))


def learn_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """BPE merges, in rank order, that turn each of ``words`` into a single ``word</w>`` symbol.

    Each step merges the most frequent adjacent pair over the not-yet-whole words
    (ties broken alphabetically, so the files are reproducible). Applying merges by
    rank, as the tokenizer does, replays exactly these steps on each word.
    """
    pieces = {w: tuple(w[:-1]) + (w[-1] + END_OF_WORD,) for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        open_words = [p for p in pieces.values() if len(p) > 1]
        if not open_words:
            return merges
        pairs = Counter(pair for p in open_words for pair in pairwise(p))
        top = max(pairs.values())
        best = min(pair for pair, n in pairs.items() if n == top)
        merges.append(best)
        pieces = {w: _merge(p, best) for w, p in pieces.items()}


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def write_world_vocab(out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` of the world tokenizer into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    merges = learn_merges(caption_words())
    tokens = [*chars, *(c + END_OF_WORD for c in chars), *(a + b for a, b in merges), BOS, EOS]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    vocab_path, merges_path = out / "vocab.json", out / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return vocab_path, merges_path


def build_world_tokenizer(out_dir: str | Path) -> CLIPTokenizer:
    """Write the world vocabulary into ``out_dir`` and load it as a ``CLIPTokenizer``.

    Padding and truncation to ``MAX_LENGTH`` (32) positions, like Stable Diffusion's
    77; pad with ``<|endoftext|>`` as CLIP does.
    """
    vocab_path, merges_path = write_world_vocab(out_dir)
    return CLIPTokenizer(vocab=str(vocab_path), merges=str(merges_path), model_max_length=MAX_LENGTH)
