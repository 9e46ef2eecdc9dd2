"""The concept card's repeated parts (image figures, per-model delta rows, concept lists) as HTML.

These are the card's loops: about forty images, model rows and linked concepts per card.
Written as Python string building, like the charts of ``backend/svg.py``, they cost a
quarter of what the same markup costs through Jinja, and the card is the view the
explorer loads on every click (issue 6 asks for p99 <= 100 ms under 20 clients). Every
value that is not a number goes through ``escape``; the template places the parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape

DELTA_X0, DELTA_WIDTH, DELTA_ROW = 110, 260, 22  # the delta strip: label column, track length, row height
DELTA_VIEW = 560  # its width: the track, then each row's numbers


def _figure(img: dict[str, Any], css: str, title: str, alt: str, caption: str = "") -> str:
    heat = f'\n            <img class="heat" src="{escape(img["heatmap"])}" alt="" loading="lazy">' if img["heatmap"] else ""
    figcaption = f"\n          <figcaption>{caption}</figcaption>" if caption else ""
    if img["url"] is None:  # a generator that drew only some captions (n_items) has no image of this one
        picture = f'<span class="missing">{escape(img["source_id"])} did not draw this caption</span>'
    else:
        picture = f'<img src="{escape(img["url"])}" alt="{alt}" loading="lazy">{heat}'
    return (f'<figure class="{css}" title="{title}">\n'
            f'          <div class="frame">{picture}</div>'
            f"{figcaption}\n        </figure>")


def quad_row(images: Sequence[dict[str, Any]], empty: str) -> Markup:
    """One row of seed 001's 2x2: an image and its counterpart, each with the concept's energy there."""
    if not images:
        return Markup(f'<p class="muted">{escape(empty)}</p>')
    return Markup("\n        ".join(
        _figure(img, "shot", escape(img["caption"]), f'{escape(img["source_id"])} image of {escape(img["item_id"])}',
                f'{escape(img["source_id"])} · ' + ("no image" if img["url"] is None else f'energy {img["energy"]:.3g}'))
        for img in images))


def example_grid(images: Sequence[dict[str, Any]], empty: str) -> Markup:
    """Activation examples as Neuronpedia shows them: each image (with the concept's heatmap where the atlas has
    one) above its caption and the concept's energy on it, both visible without hovering."""
    if not images:
        return Markup(f'<p class="muted small">{escape(empty)}</p>')
    figures = []
    for img in images:
        heat = (f'<img class="heat" src="{escape(img["heatmap"])}" alt="" loading="lazy">'
                if img.get("heatmap") else "")
        picture = (f'<img src="{escape(img["url"])}" alt="{escape(img["source_id"])} image of '
                   f'{escape(img["item_id"])}" loading="lazy">' if img.get("url") else "")
        figures.append(
            f'<figure class="example" data-item="{escape(img["item_id"])}"><div class="frame">{picture}{heat}</div>'
            f'<figcaption><span class="value">energy {img["energy"]:.3g}</span>'
            f'<span class="text">{escape(img["caption"])}</span></figcaption></figure>')
    return Markup(f'<div class="example-grid">{"".join(figures)}</div>')


def deltas_svg(deltas: Sequence[dict[str, Any]], model: str, suppressed_below: float,
               exaggerated_above: float) -> Markup:
    """Delta of the concept in every model on one [0, 1] track each, with its interval and its value written
    beside the track; the blindspot thresholds as dashed lines; ``model`` highlighted."""
    x0, w, n = DELTA_X0, DELTA_WIDTH, len(deltas)
    rows = []
    for i, d in enumerate(deltas):
        y = 20 + DELTA_ROW * i
        name = escape(d["source_id"])
        kind = "suppressed" if d["suppressed"] else "exaggerated" if d["exaggerated"] else "neutral"
        numbers = f'{d["delta"]:.3f} [{d["ci_low"]:.3f}, {d["ci_high"]:.3f}]'
        rows.append(
            f'<g class="delta-row{" current" if d["source_id"] == model else ""}" data-model="{name}">'
            f'<text x="{x0 - 8}" y="{y + 4}" text-anchor="end">{name}</text>'
            f'<line x1="{x0}" y1="{y}" x2="{x0 + w}" y2="{y}" stroke="#e9ecef" stroke-width="6" stroke-linecap="round"/>'
            f'<line x1="{x0 + w * d["ci_low"]:.1f}" y1="{y}" x2="{x0 + w * d["ci_high"]:.1f}" y2="{y}" stroke="#868e96" '
            f'stroke-width="2"/><circle cx="{x0 + w * d["delta"]:.1f}" cy="{y}" r="5" class="{kind}"><title>{name}: '
            f'δ {numbers}</title></circle>'
            f'<text class="value" x="{x0 + w + 14}" y="{y + 4}">δ {numbers}</text></g>')
    bottom = 20 + DELTA_ROW * (n - 1) + 10
    marks = "".join(
        f'<g class="threshold"><line x1="{x0 + w * t:.1f}" y1="8" x2="{x0 + w * t:.1f}" y2="{bottom}" '
        f'stroke="{colour}" stroke-dasharray="3 3"/><text x="{x0 + w * t:.1f}" y="6" text-anchor="middle">{t:g}'
        f'</text></g>' for t, colour in ((suppressed_below, "#3b5bdb"), (0.5, "#ced4da"), (exaggerated_above, "#e8590c")))
    return Markup(
        f'<svg class="deltas" viewBox="0 -4 {DELTA_VIEW} {bottom + 22}" role="img" '
        f'aria-label="delta of this concept per model">{marks}{"".join(rows)}<g class="axis">'
        f'<text x="{x0}" y="{bottom + 14}">0 suppressed</text>'
        f'<text x="{x0 + w}" y="{bottom + 14}" text-anchor="end">exaggerated 1</text></g></svg>')


def _link(concept: int, label: str, model_q: str) -> str:
    return f'<a href="/concepts/{concept}?model={model_q}" data-concept="{concept}">#{concept} {escape(label)}</a>'


def cooccurring_list(partners: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]], model: str,
                     only: str) -> Markup:
    """A side's co-occurrence partners; ``only`` ("lost" / "new") marks those absent from the ``other`` side."""
    if not partners:
        return Markup('<li class="muted">fires with no other concept here</li>')
    model_q, theirs = quote(model, safe=""), {p["concept"] for p in other}
    mark = f'<span class="only" title="not among the other side\'s top partners">{only}</span>'
    return Markup("\n        ".join(
        f'<li>{_link(p["concept"], p["label"], model_q)} <span class="muted" title="co-activation on the same '
        f'tokens, Z^T Z as a cosine">{p["weight"]:.2f}</span>{"" if p["concept"] in theirs else " " + mark}</li>'
        for p in partners))


def nearest_list(neighbours: Sequence[dict[str, Any]], model: str) -> Markup:
    """The nearest concepts by decoder cosine."""
    model_q = quote(model, safe="")
    return Markup("".join(f'<li>{_link(c["concept"], c["label"], model_q)} <span class="muted">{c["cosine"]:.3f}'
                          "</span></li>" for c in neighbours))


def card_parts(card: dict[str, Any]) -> dict[str, Markup]:
    """Every repeated part of ``card`` (``backend.views.concept.concept_card``), for ``_concept_card.html``."""
    model, quad, exemplars, partners = card["model"], card["quad"], card["exemplars"], card["cooccurring"]
    thresholds = card["thresholds"]
    return {
        "quad_real": quad_row(quad["real_best"], "the concept never fires on real images"),
        "quad_generated": quad_row(quad["generated_best"], f"the concept never fires on {model} images"),
        "examples_real": example_grid(exemplars["real"], "the concept never fires on real images"),
        "examples_generated": example_grid(exemplars["generated"], f"the concept never fires on {model} images"),
        "deltas": deltas_svg(card["deltas"], model, thresholds["suppressed_below"], thresholds["exaggerated_above"]),
        "cooccurring_real": cooccurring_list(partners["real"], partners["generated"], model, "lost"),
        "cooccurring_generated": cooccurring_list(partners["generated"], partners["real"], model, "new"),
        "nearest": nearest_list(card["nearest"]["concepts"], model),
    }
