"""The HTML builder: escaping as Jinja escapes, elements with their attribute rules, compact numbers."""

from __future__ import annotations

import numpy as np
from markupsafe import Markup
from markupsafe import escape as jinja_escape

from backend.markup import element, empty, escape, number, numbers, opening


def test_escape_writes_what_jinja_writes_and_keeps_markup():
    for text in ['<script>alert("x")</script>', "Tom & Jerry's", "plain words", "", "a > b", 42, 0.5, None]:
        assert escape(text) == str(jinja_escape(text))
    assert escape(Markup("<b>bold</b>")) == "<b>bold</b>"  # already markup: not escaped twice


def test_elements_escape_their_attributes_and_follow_the_attribute_rules():
    assert element("a", escape("x < y"), href='/a?b=1&c="2"', class_="link", data_concept=3) == \
        '<a href="/a?b=1&amp;c=&#34;2&#34;" class="link" data-concept="3">x &lt; y</a>'
    assert element("li", "chip", title=None, hidden=False, open=True) == "<li open>chip</li>"
    assert empty("img", src="/i.png", alt="") == '<img src="/i.png" alt="">'  # an HTML void element
    assert empty("line", x1=0, y2=1.5) == '<line x1="0" y2="1.5"/>'  # SVG
    assert opening("svg", viewBox="0 0 10 10", aria_label="<t>") == '<svg viewBox="0 0 10 10" aria-label="&lt;t&gt;">'


def test_numbers_are_compact_and_the_table_agrees_with_formatting_each_value():
    values = np.concatenate([np.linspace(-300, 900, 2001), [0.0, 12.0, 12.5, -0.04, 1999.96]])
    assert numbers(values) == [number(v) for v in values.tolist()]  # numpy's path (many values)
    assert numbers(values[:200].tolist()) == [number(v) for v in values[:200].tolist()]  # Python's (a few)
    assert numbers([1.3, float("nan"), 3.0]) == ["1.3", "nan", "3"]  # a NaN that min and max do not see
    assert [number(v) for v in (12.0, 12.5, 3.0001, -2.5)] == ["12", "12.5", "3", "-2.5"]
    far = numbers([5e6, 1.25, float("nan")])  # beyond the table (and NaN): each value formatted on its own
    assert far == ["5000000", "1.2", "nan"]
