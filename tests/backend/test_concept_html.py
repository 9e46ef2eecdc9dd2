"""The concept card's 2x2 row when a generator drew only some captions (a generator's n_items)."""

from __future__ import annotations

from backend.views.concept_html import quad_row


def image(source_id: str, url: str | None, energy: float) -> dict:
    return {"source_id": source_id, "item_id": "w0-001266", "url": url, "caption": "a brick wall", "energy": energy,
            "heatmap": None}


def test_a_counterpart_the_generator_never_drew_says_so_instead_of_a_broken_image():
    html = str(quad_row([image("real", "/images/real/w0-001266.png", 846.0), image("world-model", None, 0.0)],
                        "never fires"))
    assert html.count("<img ") == 1 and 'src="None"' not in html
    assert "world-model did not draw this caption" in html and "world-model · no image" in html
    assert "real · energy 846" in html
