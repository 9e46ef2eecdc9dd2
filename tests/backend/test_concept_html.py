"""The concept card's parts: the 2x2 row when a generator drew only some captions, and the flag chips."""

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


def card(significant: bool) -> dict:
    """A card past the paper's threshold but not flagged: either not significant, or below the effect-size floor."""
    stats = {"nu_real": 0.4, "nu_gen": 0.38, "delta": 0.04, "ci_low": 0.02, "ci_high": 0.07, "relative_delta": -0.05,
             "significant": significant, "q_value": 1e-4 if significant else 0.3, "suppressed": False,
             "exaggerated": False, "suppressed_paper": True, "exaggerated_paper": False}
    return {"concept": 21, "label_auroc": None, "label_source": "id", "user_label": None, "world_concept": None,
            "world_auroc": None, "model": "planted", "is_dead": False, "stats": stats,
            "thresholds": {"min_change": 0.3}}


def test_a_concept_the_effect_size_floor_left_unflagged_is_not_called_insignificant():
    from backend.views.concept_html import chips

    floored, noisy = str(chips(card(significant=True))), str(chips(card(significant=False)))
    assert "past the paper's threshold only</li>" in floored
    assert "less than 30% of its real value" in floored and "not significant:" not in floored
    assert "the difference is not significant: not flagged" in noisy


def test_the_label_block_escapes_both_labels_and_offers_the_way_back_only_for_a_user_label():
    from backend.views.concept_html import label_block

    hostile = '"><script>alert(1)</script>'
    own = str(label_block({"concept": 7, "label": hostile, "automatic_label": "bricks", "user_label": hostile},
                          saved=True))
    assert "<script>" not in own and 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in own
    assert 'data-label-of="7">&#34;&gt;&lt;script&gt;' in own and 'placeholder="bricks"' in own
    assert "restore the automatic label" in own and "your label (automatic: bricks)" in own
    assert '<span class="ok" role="status">saved</span>' in own
    automatic = str(label_block({"concept": 7, "label": "bricks", "automatic_label": "bricks", "user_label": None}))
    assert 'value=""' in automatic and "restore the automatic label" not in automatic and "saved</span>" not in automatic
