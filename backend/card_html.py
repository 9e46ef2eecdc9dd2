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

DELTA_X0, DELTA_WIDTH, DELTA_ROW = 110, 290, 22  # the delta strip: label column, track length, row height


def _figure(img: dict[str, Any], css: str, title: str, alt: str, caption: str = "") -> str:
    heat = f'\n            <img class="heat" src="{escape(img["heatmap"])}" alt="" loading="lazy">' if img["heatmap"] else ""
    figcaption = f"\n          <figcaption>{caption}</figcaption>" if caption else ""
    return (f'<figure class="{css}" title="{title}">\n'
            f'          <div class="frame"><img src="{escape(img["url"])}" alt="{alt}" loading="lazy">{heat}</div>'
            f"{figcaption}\n        </figure>")


def quad_row(images: Sequence[dict[str, Any]], empty: str) -> Markup:
    """One row of seed 001's 2x2: an image and its counterpart, each with the concept's energy there."""
    if not images:
        return Markup(f'<p class="muted">{escape(empty)}</p>')
    return Markup("\n        ".join(
        _figure(img, "shot", escape(img["caption"]), f'{escape(img["source_id"])} image of {escape(img["item_id"])}',
                f'{escape(img["source_id"])} · energy {img["energy"]:.3g}') for img in images))


def exemplar_strip(images: Sequence[dict[str, Any]]) -> Markup:
    """The exemplars after the best one, small, their score in the tooltip."""
    return Markup("\n      ".join(
        _figure(img, "shot small", f'{escape(img["caption"])} (score {img["score"]:.3g})',
                f'{escape(img["source_id"])} exemplar {rank}') for rank, img in enumerate(images[1:], start=2)))


def deltas_svg(deltas: Sequence[dict[str, Any]], model: str) -> Markup:
    """Delta of the concept in every model on one [0, 1] track each, with its interval; ``model`` highlighted."""
    x0, w, n = DELTA_X0, DELTA_WIDTH, len(deltas)
    rows = []
    for i, d in enumerate(deltas):
        y = 14 + DELTA_ROW * i
        name = escape(d["source_id"])
        kind = "suppressed" if d["suppressed"] else "exaggerated" if d["exaggerated"] else "neutral"
        rows.append(
            f'<g class="delta-row{" current" if d["source_id"] == model else ""}">'
            f'<text x="{x0 - 8}" y="{y + 4}" text-anchor="end">{name}</text>'
            f'<line x1="{x0}" y1="{y}" x2="{x0 + w}" y2="{y}" stroke="#e9ecef" stroke-width="6" stroke-linecap="round"/>'
            f'<line x1="{x0 + w * d["ci_low"]:.1f}" y1="{y}" x2="{x0 + w * d["ci_high"]:.1f}" y2="{y}" stroke="#868e96" '
            f'stroke-width="2"/><circle cx="{x0 + w * d["delta"]:.1f}" cy="{y}" r="5" class="{kind}"><title>{name}: '
            f'δ {d["delta"]:.3f} [{d["ci_low"]:.3f}, {d["ci_high"]:.3f}]</title></circle></g>')
    bottom = DELTA_ROW * n
    return Markup(
        f'<svg class="deltas" viewBox="0 0 420 {bottom + 24}" role="img" aria-label="delta of this concept per model">'
        f'<line x1="{x0 + w / 2:g}" y1="4" x2="{x0 + w / 2:g}" y2="{bottom + 6}" stroke="#ced4da" '
        f'stroke-dasharray="3 3"/>{"".join(rows)}<g class="axis"><text x="{x0}" y="{bottom + 20}">0 suppressed</text>'
        f'<text x="{x0 + w}" y="{bottom + 20}" text-anchor="end">exaggerated 1</text></g></svg>')


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
    """Every repeated part of ``card`` (``backend.concepts.concept_card``), for ``_concept_card.html``."""
    model, quad, exemplars, partners = card["model"], card["quad"], card["exemplars"], card["cooccurring"]
    return {
        "quad_real": quad_row(quad["real_best"], "the concept never fires on real images"),
        "quad_generated": quad_row(quad["generated_best"], f"the concept never fires on {model} images"),
        "strip_real": exemplar_strip(exemplars["real"]),
        "strip_generated": exemplar_strip(exemplars["generated"]),
        "deltas": deltas_svg(card["deltas"], model),
        "cooccurring_real": cooccurring_list(partners["real"], partners["generated"], model, "lost"),
        "cooccurring_generated": cooccurring_list(partners["generated"], partners["real"], model, "new"),
        "nearest": nearest_list(card["nearest"]["concepts"], model),
    }
