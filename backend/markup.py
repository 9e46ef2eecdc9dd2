"""The server's one HTML builder: escaping, elements and numbers, for the markup written in Python.

Jinja writes each page's layout. The parts a page repeats many times (the concept card's chips,
image figures, delta rows and concept lists in ``backend/views/concept_html.py``, and every chart
of ``backend/svg.py``) are built with this module and handed to the templates as ``Markup``: the
card is the view the explorer loads on every click, and through Jinja the same markup costs
several times as much (``bench/card_html_bench.py``). One builder means one escaping rule: every
value that is not a number goes through ``escape``, so a label or a caption cannot inject markup.

- ``escape(value)``: text safe in an element's content and in a quoted attribute, with the entities
  of markupsafe (and so of Jinja); a value that is already ``Markup`` is kept as it is.
- ``escape_all(texts)``: ``escape`` of many texts at once (the card's captions, ids, paths and labels).
- ``element(tag, inner, **attributes)``, ``empty(tag, **attributes)``, ``opening(tag, **attributes)``:
  one element, one without content, the opening tag of one written piece by piece. ``inner`` is
  markup (escape text first); attribute values are escaped; ``None`` and ``False`` leave an
  attribute out, ``True`` writes it bare; ``class_`` is ``class`` and ``data_model`` is ``data-model``.
  A loop over hundreds of elements writes f-strings instead (a third of the cost) and escapes their text.
- ``number(value)``, ``numbers(values)``: compact coordinates (one decimal, no trailing zeros); the
  second formats many at once by looking them up in a table of formatted tenths.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache

import numpy as np
from markupsafe import Markup

__all__ = ["Markup", "element", "empty", "escape", "escape_all", "number", "numbers", "opening"]

COORDINATE_RANGE = 2000  # numbers() reads |value| <= this from its table; beyond it formats each value itself
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                   "wbr"})


def escape(value: object) -> str:
    """``value`` as text for HTML or SVG: ``& < > " '`` replaced by entities (markupsafe's), ``Markup`` kept."""
    if type(value) is not str:
        if hasattr(value, "__html__"):
            return value.__html__()
        value = str(value)
    if "&" in value or "<" in value or ">" in value or '"' in value or "'" in value:
        return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;")
                .replace("'", "&#39;"))
    return value


def escape_all(texts: Iterable[str]) -> list[str]:
    """``escape`` of each text, in one pass over them all: a concept card escapes about a hundred captions, ids,
    paths and labels, and one pass over them joined costs a fraction of a call per text."""
    texts = list(texts)
    joined = "\0".join(texts)
    if "&" in joined or "<" in joined or ">" in joined or '"' in joined or "'" in joined:
        escaped = escape(joined).split("\0")
        return escaped if len(escaped) == len(texts) else [escape(text) for text in texts]  # a text held a NUL
    return texts


def _attributes(attributes: dict[str, object]) -> str:
    written = []
    for name, value in attributes.items():
        if value is None or value is False:
            continue
        name = name.rstrip("_").replace("_", "-")
        written.append(f" {name}" if value is True else f' {name}="{escape(value)}"')
    return "".join(written)


def opening(tag: str, /, **attributes: object) -> str:
    """``<tag attributes>``, for an element whose content is written piece by piece after it."""
    return f"<{tag}{_attributes(attributes)}>"


def element(tag: str, inner: str = "", /, **attributes: object) -> str:
    """``<tag attributes>inner</tag>``; ``inner`` is markup (pass text through ``escape``)."""
    return f"<{tag}{_attributes(attributes)}>{inner}</{tag}>"


def empty(tag: str, /, **attributes: object) -> str:
    """An element without content: ``<img ...>`` for an HTML void element, ``<line .../>`` for any other (SVG)."""
    return f"<{tag}{_attributes(attributes)}{'' if tag in _VOID else '/'}>"


def number(value: float) -> str:
    """A compact coordinate: one decimal, no trailing zeros (``12``, ``12.5``, ``-0.3``, ``0`` for ``-0.04``)."""
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


@cache
def _table() -> tuple[list[str], np.ndarray]:
    """Every tenth from -COORDINATE_RANGE to COORDINATE_RANGE formatted as ``number`` does, as a list and as an
    array (built once: 40,001 strings, about 40 ms)."""
    written = [number(i / 10) for i in range(-10 * COORDINATE_RANGE, 10 * COORDINATE_RANGE + 1)]
    return written, np.array(written, dtype=object)


def numbers(values: np.ndarray | Sequence[float]) -> list[str]:
    """``number`` of each value, looked up in a table of formatted tenths: Python's float formatting costs
    several times a lookup, and a card's histogram alone writes about two hundred coordinates. Above a few hundred
    values numpy rounds them all at once. A value halfway between two tenths may come out a tenth apart from
    ``number`` (the table rounds the value times ten, ``number`` the value), a twentieth of a pixel."""
    written, table = _table()
    if isinstance(values, np.ndarray) and values.size > 256:
        tenths = np.rint(values.ravel() * 10)
        if (np.abs(tenths) <= 10 * COORDINATE_RANGE).all():  # False for NaN
            return table[tenths.astype(np.int64) + 10 * COORDINATE_RANGE].tolist()
        return [number(v) for v in values.ravel().tolist()]  # rare: a coordinate far outside its chart
    values = values.tolist() if isinstance(values, np.ndarray) else values
    if values and -COORDINATE_RANGE < min(values) and max(values) < COORDINATE_RANGE:
        offset = 10 * COORDINATE_RANGE
        try:
            return [written[round(v * 10) + offset] for v in values]
        except ValueError:  # a NaN that min and max did not see
            pass
    return [number(v) for v in values]
