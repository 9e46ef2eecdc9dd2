"""The concept card's repeated parts (chips, image figures, per-model delta rows, concept and feature lists) as HTML.

These are the card's loops and its lists of formatted numbers: about forty images, model rows and
linked concepts per card, written as f-strings with the HTML builder's escaping (``backend/markup.py``,
which the charts of ``backend/svg.py`` use too).
Through Jinja the same markup costs several times as much, and the card is the view the explorer
loads on every click (``bench/card_html_bench.py``). Every value that is not a number goes through
``escape``; ``_concept_card.html`` lays the parts out in their sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from backend.markup import Markup, escape, escape_all, numbers

DELTA_X0, DELTA_WIDTH, DELTA_ROW = 110, 260, 22  # the delta strip: label column, track length, row height
DELTA_VIEW = 560  # its width: the track, then each row's numbers

# what a label's AUROC was measured on, the evidence chip's tooltip, by the label's source
EVIDENCE = {
    "caption": "how well the concept's energy picks out the images whose caption has one of these words: AUROC on the "
               "half of the real images the words were not chosen on (0.5 = chance)",
    "world": "how well the concept detects this world concept: AUROC of its energy against the world's ground truth "
             "on the real images (0.5 = chance)",
    "vlm": "named by a vision-language model from its best exemplar; no score",
}
NO_EVIDENCE = "no caption word or world concept goes with this concept"
WORLD = ("the world concept this concept's energy detects best on the real images, and that AUROC (0.5: chance; the "
         "lens sees a world concept from 0.9)")



@lru_cache(maxsize=256)
def _query(model: str) -> str:
    """``model`` as a query value (a card writes it into a dozen links; an atlas has a few models)."""
    return quote(model, safe="")


def _escaped(images: Sequence[dict[str, Any]]) -> list[tuple[str, ...]]:
    """Each image's URL, heatmap URL (empty where it has none), source, item id and caption, escaped in one pass."""
    flat = escape_all([text for img in images for text in (img.get("url") or "", img.get("heatmap") or "",
                                                            img["source_id"], img["item_id"], img["caption"])])
    return list(zip(*[iter(flat)] * 5))


def _picture(url: str, heat: str, source: str, item: str) -> str:
    """An image (where there is one) with the concept's heatmap over it (where the atlas has one)."""
    picture = f'<img src="{url}" alt="{source} image of {item}" loading="lazy">' if url else ""
    return f'{picture}<img class="heat" src="{heat}" alt="" loading="lazy">' if heat else picture


def quad_row(images: Sequence[dict[str, Any]], empty: str) -> Markup:
    """One row of seed 001's 2x2: an image and its counterpart, each with the concept's energy there."""
    if not images:
        return Markup(f'<p class="muted">{escape(empty)}</p>')
    figures = []
    for img, (url, heat, source, item, caption) in zip(images, _escaped(images)):
        if img["url"] is None:  # a generator that drew only some captions (n_items) has no image of this one
            picture, value = f'<span class="missing">{source} did not draw this caption</span>', "no image"
        else:
            picture, value = _picture(url, heat, source, item), f'energy {img["energy"]:.3g}'
        figures.append(f'<figure class="shot" title="{caption}">\n          <div class="frame">{picture}</div>\n'
                       f"          <figcaption>{source} · {value}</figcaption>\n        </figure>")
    return Markup("\n        ".join(figures))


def example_grid(images: Sequence[dict[str, Any]], empty: str) -> Markup:
    """Activation examples as Neuronpedia shows them: each image (with the concept's heatmap where the atlas has
    one) above its caption and the concept's energy on it, both visible without hovering."""
    if not images:
        return Markup(f'<p class="muted small">{escape(empty)}</p>')
    figures = "".join([
        f'<figure class="example" data-item="{item}"><div class="frame">{_picture(url, heat, source, item)}</div>'
        f'<figcaption><span class="value">energy {img["energy"]:.3g}</span><span class="text">{caption}</span>'
        "</figcaption></figure>" for img, (url, heat, source, item, caption) in zip(images, _escaped(images))])
    return Markup(f'<div class="example-grid">{figures}</div>')


def deltas_svg(deltas: Sequence[dict[str, Any]], model: str, suppressed_below: float,
               exaggerated_above: float) -> Markup:
    """Delta of the concept in every model on one [0, 1] track each, with its interval and its value written
    beside the track; the blindspot thresholds as dashed lines; ``model`` highlighted."""
    x0, w, n = DELTA_X0, DELTA_WIDTH, len(deltas)
    rows = []
    names = escape_all([d["source_id"] for d in deltas])
    places = numbers([x0 + w * d[key] for d in deltas for key in ("ci_low", "ci_high", "delta")])
    for i, (d, name, low, high, at) in enumerate(zip(deltas, names, places[::3], places[1::3], places[2::3])):
        y = 20 + DELTA_ROW * i
        kind = "suppressed" if d["suppressed"] else "exaggerated" if d["exaggerated"] else "neutral"
        written = f'{d["delta"]:.3f} [{d["ci_low"]:.3f}, {d["ci_high"]:.3f}]'
        rows.append(
            f'<g class="delta-row{" current" if d["source_id"] == model else ""}" data-model="{name}">'
            f'<text x="{x0 - 8}" y="{y + 4}" text-anchor="end">{name}</text>'
            f'<line x1="{x0}" y1="{y}" x2="{x0 + w}" y2="{y}" stroke="#e9ecef" stroke-width="6" stroke-linecap="round"/>'
            f'<line x1="{low}" y1="{y}" x2="{high}" y2="{y}" stroke="#868e96" '
            f'stroke-width="2"/><circle cx="{at}" cy="{y}" r="5" class="{kind}"><title>{name}: '
            f'δ {written}</title></circle>'
            f'<text class="value" x="{x0 + w + 14}" y="{y + 4}">δ {written}</text></g>')
    head, tail = _deltas_frame(n, suppressed_below, exaggerated_above)
    return Markup(f'{head}{"".join(rows)}{tail}')


@lru_cache(maxsize=64)
def _deltas_frame(n: int, suppressed_below: float, exaggerated_above: float) -> tuple[str, str]:
    """What the delta strip's number of rows and the atlas's thresholds alone decide: its opening with the
    threshold lines, and its axis with the closing tag (the same for every card of an atlas with ``n`` models)."""
    x0, w = DELTA_X0, DELTA_WIDTH
    bottom = 20 + DELTA_ROW * (n - 1) + 10
    marks = "".join(
        f'<g class="threshold"><line x1="{at}" y1="8" x2="{at}" y2="{bottom}" stroke="{colour}" stroke-dasharray="3 3"/>'
        f'<text x="{at}" y="6" text-anchor="middle">{t:g}</text></g>' for t, colour, at in zip(
            (suppressed_below, 0.5, exaggerated_above), ("#3b5bdb", "#ced4da", "#e8590c"),
            numbers([x0 + w * t for t in (suppressed_below, 0.5, exaggerated_above)])))
    return (f'<svg class="deltas" viewBox="0 -4 {DELTA_VIEW} {bottom + 22}" role="img" '
            f'aria-label="delta of this concept per model">{marks}',
            f'<g class="axis"><text x="{x0}" y="{bottom + 14}">0 suppressed</text>'
            f'<text x="{x0 + w}" y="{bottom + 14}" text-anchor="end">exaggerated 1</text></g></svg>')


def _links(concepts: Sequence[dict[str, Any]], model: str) -> list[str]:
    """A link to each concept's card (its id and escaped label) for ``model``."""
    model_q = _query(model)
    return [f'<a href="/concepts/{c["concept"]}?model={model_q}" data-concept="{c["concept"]}">#{c["concept"]} {label}</a>'
            for c, label in zip(concepts, escape_all([c["label"] for c in concepts]))]


def cooccurring_list(partners: Sequence[dict[str, Any]], other: Sequence[dict[str, Any]], model: str,
                     only: str) -> Markup:
    """A side's co-occurrence partners; ``only`` ("lost" / "new") marks those absent from the ``other`` side."""
    if not partners:
        return Markup('<li class="muted">fires with no other concept here</li>')
    theirs = {p["concept"] for p in other}
    mark = f' <span class="only" title="not among the other side\'s top partners">{only}</span>'
    return Markup("\n        ".join(
        f'<li>{link} <span class="muted" title="co-activation on the same tokens, Z^T Z as a cosine">{p["weight"]:.2f}'
        f'</span>{"" if p["concept"] in theirs else mark}</li>' for p, link in zip(partners, _links(partners, model))))


def nearest_list(neighbours: Sequence[dict[str, Any]], model: str) -> Markup:
    """The nearest concepts by decoder cosine."""
    return Markup("".join([f'<li>{link} <span class="muted">{c["cosine"]:.3f}</span></li>'
                           for c, link in zip(neighbours, _links(neighbours, model))]))


def _chip(text: str, css: str = "", title: str = "") -> str:
    """One chip; ``text`` is markup, ``title`` its tooltip (the project's own words, without a double quote)."""
    css = f"chip {css}" if css else "chip"
    return f'<li class="{css}" title="{title}">{text}</li>' if title else f'<li class="{css}">{text}</li>'


def chips(card: dict[str, Any]) -> Markup:
    """The card's headline: id, the label's evidence, the world concept it detects, frequency, delta with its
    interval, relative delta, significance and the blindspot flag."""
    s, model = card["stats"], escape(card["model"])
    found = [_chip(f'id {card["concept"]}')]
    if card["label_auroc"] is not None:
        measured = "held-out caption words" if card["label_source"] == "caption" else "world concept"
        found.append(_chip(f'{"automatic label" if card["user_label"] else "label"} AUROC {card["label_auroc"]:.2f} '
                           f'<span class="muted">({measured})</span>',
                           "chip-evidence" + (" weak" if card["label_auroc"] < 0.7 else ""),
                           EVIDENCE.get(card["label_source"], NO_EVIDENCE)))
    elif card["label_source"] in ("vlm", "id"):
        found.append(_chip("label not scored", "chip-insig", EVIDENCE.get(card["label_source"], NO_EVIDENCE)))
    if card["world_concept"]:
        auroc = f' · AUROC {card["world_auroc"]:.2f}' if card["world_auroc"] is not None else ""
        found.append(_chip(f'world: {escape(card["world_concept"])}{auroc}', "world-detection", WORLD))
    found += [
        _chip(f'frequency {100 * s["nu_real"]:.1f}% real → {100 * s["nu_gen"]:.1f}% {model}', "",
              "share of images where the concept fires"),
        _chip(f'δ {s["delta"]:.3f} [{s["ci_low"]:.3f}, {s["ci_high"]:.3f}]', "chip-delta",
              "sigmoid((E_gen - E_real) / T), 95% interval"),
        _chip(f'relative δ {s["relative_delta"]:+.3f}', "", "(E_gen - E_real) / (E_gen + E_real)"),
        _chip(("significant" if s["significant"] else "not significant")
              + (f' (q {s["q_value"]:.2g})' if s["q_value"] is not None else ""),
              "chip-sig" if s["significant"] else "chip-insig",
              "Benjamini-Hochberg q-value of the paired sign-flip test of E_gen = E_real")]
    if s["suppressed"]:
        found.append(_chip("suppressed blindspot", "chip-suppressed"))
    elif s["exaggerated"]:
        found.append(_chip("exaggerated blindspot", "chip-exaggerated"))
    elif s["suppressed_paper"] or s["exaggerated_paper"]:
        why = ("the difference is not significant" if not s["significant"] else
               f'the energy moved by less than {100 * card["thresholds"]["min_change"]:.0f}% of its real value '
               f'{"above its baseline " if card["thresholds"].get("baseline_quantile") else ""}(the effect-size floor)')
        found.append(_chip("past the paper's threshold only", "chip-insig",
                           f"delta passes the paper's threshold but {why}: not flagged"))
    if card["is_dead"]:
        found.append(_chip("dead: never fires", "chip-insig"))
    return Markup("\n    ".join(found))


def summary(card: dict[str, Any]) -> Markup:
    """The line under the chips: mean energies, the caption words and their held-out AUROC, the card's own page and
    its JSON."""
    s, concept, model_q = card["stats"], card["concept"], _query(card["model"])
    auroc = f' (held-out AUROC {card["caption_auroc"]:.2f})' if card["caption_auroc"] is not None else ""
    return Markup(f'E_real {s["e_real"]:.3g}, E_gen {s["e_gen"]:.3g} (mean energy per image) · caption words: '
                  f'{escape(card["caption_words"] or "none")}{auroc}\n    · <a href="/concepts/{concept}?model={model_q}">'
                  f'card page</a> · <a href="/api/concepts/{concept}?model={model_q}">JSON</a>')


def fires(card: dict[str, Any]) -> Markup:
    """Where the concept fires, the activation histogram's caption."""
    share = card["histogram"]["fires"]
    return Markup(f'fires on {100 * share["real"]:.1f}% of real and {100 * share["generated"]:.1f}% of '
                  f"{escape(card['model'])}'s images; bars are percentages of all images")


def examples_side(card: dict[str, Any], side: str, empty: str) -> Markup:
    """One side's activation examples: its heading, the top images (``example_grid``) and the button that loads the
    first quantile band."""
    images, model = card["exemplars"][side], card["model"]
    title = "real images" if side == "real" else f"{escape(model)}'s images"
    more = (f'\n      <button type="button" class="more-examples" hx-get="/concepts/{card["concept"]}/examples?model='
            f'{_query(model)}&amp;side={side}&amp;band=0"\n              hx-target="this" hx-swap="outerHTML">'
            "load more: the top quarter of the images where it fires</button>" if images else "")
    return Markup(f'<div class="examples-side" data-side="{side}">\n      <h4>{title}: top {len(images)}</h4>\n      '
                  f"{example_grid(images, empty)}{more}\n    </div>")


def feature_list(features: Sequence[dict[str, Any]], model: str) -> Markup:
    """The internal features attributed to the concept (internal lens), each a link to its page."""
    model_q, items = _query(model), []
    for f in features:
        label = f' · {escape(f["feature_label"])}' if f["feature_label"] else ""
        minority = "" if f["minority"] is None else f', minority {f["minority"]:.2f}'
        items.append(f'<li><a href="/internal/{model_q}/features/{f["feature"]}">feature {f["feature"]}</a>{label} '
                     f'<span class="muted">attribution {f["score"]:.3g}{minority}</span></li>')
    return Markup("".join(items))


def label_block(card: dict[str, Any], saved: bool = False) -> Markup:
    """The card's label block: the label, the form to change it, the way back to the automatic one. The card
    draws it at its top and the label routes answer with it alone (``_concept_label.html``, after a save)."""
    concept, label, automatic = card["concept"], escape(card["label"]), escape(card["automatic_label"])
    user = card["user_label"]
    restore = (f'<button type="button" class="link" hx-delete="/api/concepts/{concept}/label" hx-target="#label-block" '
               'hx-swap="outerHTML">restore the automatic label</button>' if user else "")
    state = (f"your label (automatic: {automatic})" if user
             else "automatic label; type your own (up to 200 characters)")
    done = '<span class="ok" role="status">saved</span>' if saved else ""
    return Markup(
        f'<div class="label-block" id="label-block">\n  <h2 class="concept-title"><span class="concept-id">#{concept}'
        f'</span> <span class="concept-label" data-label-of="{concept}">{label}</span></h2>\n'
        f'  <form class="label-form" hx-post="/api/concepts/{concept}/label" hx-target="#label-block" '
        f'hx-swap="outerHTML">\n    <input type="text" name="label" value="{escape(user or "")}" maxlength="200" '
        f'aria-label="your label for concept {concept}"\n           placeholder="{automatic}">\n'
        f'    <button type="submit">save label</button>\n    {restore}\n    <span class="muted">{state}</span>\n'
        f"    {done}\n"
        '    <span class="error" role="alert"></span>\n  </form>\n</div>')


def card_parts(card: dict[str, Any]) -> dict[str, Markup]:
    """Every repeated part of ``card`` (``backend.views.concept.concept_card``), for ``_concept_card.html``."""
    model, quad, exemplars, partners = card["model"], card["quad"], card["exemplars"], card["cooccurring"]
    thresholds = card["thresholds"]
    return {
        "quad_real": quad_row(quad["real_best"], "the concept never fires on real images"),
        "quad_generated": quad_row(quad["generated_best"], f"the concept never fires on {model} images"),
        "chips": chips(card),
        "summary": summary(card),
        "fires": fires(card),
        "examples_real": examples_side(card, "real", "the concept never fires on real images"),
        "examples_generated": examples_side(card, "generated", f"the concept never fires on {model} images"),
        "deltas": deltas_svg(card["deltas"], model, thresholds["suppressed_below"], thresholds["exaggerated_above"]),
        "cooccurring_real": cooccurring_list(partners["real"], partners["generated"], model, "lost"),
        "cooccurring_generated": cooccurring_list(partners["generated"], partners["real"], model, "new"),
        "nearest": nearest_list(card["nearest"]["concepts"], model),
        "features": feature_list(card["attributions"]["features"], model) if card["attributions"] else Markup(""),
    }
