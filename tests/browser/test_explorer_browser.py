"""The explorer in a real browser: the WebGL scatter draws every concept, clicks open cards, the URL is the state."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import duckdb
import numpy as np
import pytest
from PIL import Image

from tests.browser.conftest import ARTIFACTS

BACKGROUND = np.array([0x14, 0x16, 0x1A])


@pytest.fixture(scope="module")
def atlas_facts(lens_atlas):
    db = duckdb.connect(str(lens_atlas / "atlas.duckdb"), read_only=True)
    try:
        n = db.execute("SELECT count(*) FROM concepts").fetchone()[0]
        live = [c for (c,) in db.execute("SELECT concept FROM concepts WHERE NOT is_dead ORDER BY concept").fetchall()]
        delta = dict(db.execute("SELECT concept, delta FROM concept_stats WHERE source_id = 'planted'").fetchall())
    finally:
        db.close()
    return {"n": n, "live": live, "delta": delta}


def state(page) -> dict[str, str]:
    """The view state in the page's URL (``debug``, which only turns on the page's debugging view, left out)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items() if k != "debug"}


def open_explorer(page, base: str, query: str = "") -> None:
    """The explorer with its read-only debugging view of the scatter (``?debug=1``: ``window.blindspot``), which
    says where the scatter's camera draws each concept."""
    page.goto(f"{base}/explorer{query}{'&' if query else '?'}debug=1")
    page.wait_for_selector("#plot[data-points]", timeout=30_000)


def screen_position(page, concept: int) -> tuple[float, float]:
    """Where the scatter draws ``concept`` now, relative to its canvas."""
    return tuple(page.evaluate("(i) => window.blindspot.screenPosition(i)", concept))


def point_on_page(page, concept: int) -> tuple[float, float]:
    """Where the scatter draws ``concept``, in page coordinates (from the scatterplot's own camera)."""
    x, y = screen_position(page, concept)
    box = page.locator("#scatter").bounding_box()
    return box["x"] + x, box["y"] + y


def test_the_scatter_draws_every_concept(page, live_server, atlas_facts):
    open_explorer(page, live_server)
    assert int(page.get_attribute("#plot", "data-points")) == atlas_facts["n"]
    assert page.evaluate("() => window.blindspot.pointCount()") == atlas_facts["n"]
    # the WebGL canvas really shows points: many pixels differ from the plot's background
    page.locator("#scatter").screenshot(path=str(ARTIFACTS / "scatter-only.png"))
    pixels = np.asarray(Image.open(ARTIFACTS / "scatter-only.png").convert("RGB"), dtype=int)
    coloured = np.abs(pixels - BACKGROUND).sum(-1) > 60
    assert coloured.sum() > 20 * atlas_facts["n"]
    assert "delta" in page.inner_text("#legend")
    assert page.locator("#plot-status").is_hidden()


def test_the_debugging_view_is_there_only_when_asked_for_and_reads_only(page, live_server, atlas_facts):
    page.goto(f"{live_server}/explorer?model=planted")
    page.wait_for_selector("#plot[data-points]", timeout=30_000)
    assert page.evaluate("() => [typeof window.blindspot, typeof window.blindspotExplorer]") == ["undefined",
                                                                                                 "undefined"]
    open_explorer(page, live_server, "?model=planted")
    assert "debug=1" in page.url  # kept through the page's own URL updates, so a reload keeps it
    assert page.evaluate("""() => {
        const api = window.blindspot;
        try { api.pointCount = () => 0; } catch (error) { /* frozen: strict code would throw */ }
        return [Object.isFrozen(api), api.pointCount()];
    }""") == [True, atlas_facts["n"]]


def test_hover_shows_a_tooltip_and_click_opens_the_card_and_updates_the_url(page, live_server, atlas_facts):
    open_explorer(page, live_server, "?model=planted")
    concept = atlas_facts["live"][0]
    x, y = point_on_page(page, concept)
    page.mouse.move(x, y)
    page.wait_for_function("(i) => document.querySelector('#tooltip').textContent.includes('δ')", arg=concept)
    assert page.inner_text("#tooltip").startswith(f"#{concept} ")
    assert f"{atlas_facts['delta'][concept]:.3f}" in page.inner_text("#tooltip")
    page.mouse.click(x, y)
    page.wait_for_selector(f"#concept-card[data-concept='{concept}']")
    assert state(page)["concept"] == str(concept) and state(page)["model"] == "planted"
    assert page.inner_text("#concept-card .concept-id") == f"#{concept}"
    page.wait_for_selector("#edges line")  # co-occurrence edges drawn over the scatter
    assert page.locator("#edges line").count() == int(page.get_attribute("#edges", "data-edges"))


def test_edges_follow_the_concept_when_the_window_is_resized(page, live_server, atlas_facts):
    concept = atlas_facts["live"][0]
    open_explorer(page, live_server, f"?model=planted&concept={concept}")
    page.wait_for_selector("#edges line")
    page.set_viewport_size({"width": 1000, "height": 700})

    def anchored() -> bool:
        cx, cy = (float(page.get_attribute("#edges circle.anchor", k)) for k in ("cx", "cy"))
        x, y = screen_position(page, concept)
        return abs(cx - x) < 1 and abs(cy - y) < 1

    deadline = time.monotonic() + 5
    while not anchored() and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert anchored()  # the edges start at the concept as the scatter now draws it, not where it was


def test_jumping_and_the_back_button_restore_each_previous_view(page, live_server, atlas_facts):
    first, second = atlas_facts["live"][0], atlas_facts["live"][-1]
    open_explorer(page, live_server, f"?model=planted&concept={first}")
    assert page.locator(f"#concept-card[data-concept='{first}']").count() == 1  # rendered by the server
    page.evaluate("() => { document.querySelector('#scatter').dataset.mounted = 'once'; }")

    page.select_option("#colour", "frequency")
    page.wait_for_function("() => document.querySelector('#plot').dataset.view === 'planted/frequency/uniform'")
    assert state(page)["colour"] == "frequency"
    page.fill("#jump", str(second))
    page.press("#jump", "Enter")
    page.wait_for_selector(f"#concept-card[data-concept='{second}']")
    assert state(page)["concept"] == str(second)

    page.go_back()
    page.wait_for_selector(f"#concept-card[data-concept='{first}']")
    radius = page.evaluate("() => JSON.parse(document.querySelector('#explorer').dataset.state).radius")
    assert state(page) == {"model": "planted", "colour": "frequency", "size": "uniform", "radius": str(radius),
                           "concept": str(first)}
    page.go_back()
    page.wait_for_function("() => document.querySelector('#plot').dataset.view === 'planted/delta/uniform'")
    assert page.input_value("#colour") == "delta" and state(page)["concept"] == str(first)
    # the scatter was mounted once: the same canvas survived every swap and history step
    assert page.get_attribute("#scatter", "data-mounted") == "once"


def test_model_switch_and_search_keep_the_url_in_step(page, live_server, atlas_facts):
    open_explorer(page, live_server, "?model=planted")
    page.select_option("#model", "same")
    page.wait_for_function("() => document.querySelector('#plot').dataset.view === 'same/delta/uniform'")
    assert state(page)["model"] == "same"
    label = page.evaluate("(i) => fetch(`/api/concepts/${i}/brief`).then(r => r.json()).then(b => b.label)",
                          atlas_facts["live"][1])
    word = re.split(r"[,\s]+", label)[0]
    page.fill("#search", word)
    page.wait_for_selector("#search-results a[data-concept]")
    hit = page.locator("#search-results a[data-concept]").first
    concept = hit.get_attribute("data-concept")
    hit.click()
    page.wait_for_selector(f"#concept-card[data-concept='{concept}'][data-model='same']")
    assert state(page)["concept"] == concept
    page.go_back()
    page.wait_for_function("() => !document.querySelector('#concept-card')")
    assert "concept" not in state(page) and state(page)["model"] == "same"


def test_an_answer_that_lands_after_the_back_button_changes_nothing(page, live_server, atlas_facts):
    """A slow machine answers the card and the context of a concept after the user has gone back: the closed concept
    must not come back, draw edges or move the camera (a stale zoom to no concept put NaN into every position)."""
    open_explorer(page, live_server, "?model=planted")
    held = []
    page.route(re.compile(r"/api/explorer/context\?|/concepts/\d+\?"), lambda route: held.append(route))
    page.fill("#jump", str(atlas_facts["live"][0]))
    page.press("#jump", "Enter")
    deadline = time.monotonic() + 10
    while len(held) < 2 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert len(held) == 2, [r.request.url for r in held]
    page.go_back()
    page.wait_for_function("() => !new URLSearchParams(location.search).has('concept')")
    for route in held:
        route.continue_()
    page.wait_for_timeout(1500)  # both answers land and are read
    assert page.locator("#concept-card").count() == 0
    assert page.locator("#card .placeholder").count() == 1
    assert page.locator("#edges > *").count() == 0
    positions = page.evaluate("() => window.blindspot.screenPositions()")
    assert all(np.isfinite(p).all() for p in positions)


def test_a_lasso_opens_a_ranking_of_the_selection(page, live_server, atlas_facts):
    open_explorer(page, live_server, "?model=planted")
    box = page.locator("#scatter").bounding_box()
    corners = [(box["x"] + 4, box["y"] + 4), (box["x"] + box["width"] - 4, box["y"] + 4),
               (box["x"] + box["width"] - 4, box["y"] + box["height"] - 4), (box["x"] + 4, box["y"] + box["height"] - 4),
               (box["x"] + 4, box["y"] + 6)]
    page.keyboard.down("Shift")
    page.mouse.move(*corners[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
        for t in np.linspace(0, 1, 12)[1:]:
            page.mouse.move(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)
            page.wait_for_timeout(20)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_selector(".selection-ranking")
    count = int(page.get_attribute(".selection-ranking", "data-count"))
    assert count == atlas_facts["n"]
    ranked = [int(c) for c in page.locator("#selection a[data-concept]").evaluate_all(
        "links => links.map(a => a.dataset.concept)")]
    assert ranked == sorted(ranked, key=lambda c: (atlas_facts["delta"][c], c))
    # the selection is in the URL: the link re-opens the same ranking, closing it takes it out of the URL
    assert "sel" in state(page)
    page.goto(page.url)
    page.wait_for_selector(".selection-ranking")
    assert int(page.get_attribute(".selection-ranking", "data-count")) == count
    page.click("#selection [data-close]")
    assert "sel" not in state(page)
    page.go_back()
    page.wait_for_selector(".selection-ranking")


def drag_with_shift(page, start, end, steps: int = 15) -> None:
    page.keyboard.down("Shift")
    page.mouse.move(*start)
    page.mouse.down()
    for nudge in (1, 2):  # the lasso anchors at the first recorded move: make that the start, within a pixel
        page.mouse.move(start[0] + nudge * np.sign(end[0] - start[0]), start[1] + nudge * np.sign(end[1] - start[1]))
        page.wait_for_timeout(20)
    for t in np.linspace(0, 1, steps)[1:]:
        page.mouse.move(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t)
        page.wait_for_timeout(20)
    page.mouse.up()
    page.keyboard.up("Shift")


def test_a_box_selects_the_concepts_inside_it(page, live_server, atlas_facts):
    open_explorer(page, live_server, "?model=planted")
    page.select_option("#select-mode", "box")
    assert state(page)["select"] == "box"
    box = page.locator("#scatter").bounding_box()
    left, top = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    right, bottom = box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.7
    drag_with_shift(page, (left, top), (right, bottom))
    page.wait_for_selector(".selection-ranking")
    count = int(page.get_attribute(".selection-ranking", "data-count"))
    screen = page.evaluate("() => window.blindspot.screenPositions()")
    assert len(screen) == atlas_facts["n"]
    x0, y0 = left - box["x"], top - box["y"]
    x1, y1 = right - box["x"], bottom - box["y"]

    def inside(margin):
        return sum(1 for x, y in screen if x0 + margin < x < x1 - margin and y0 + margin < y < y1 - margin)

    assert 0 < inside(4) <= count <= inside(-4)  # a rectangle, up to the pixels on its border
    sel = [tuple(map(float, v.split(","))) for v in state(page)["sel"].split(";")]
    assert len({x for x, _ in sel}) == 2 and len({y for _, y in sel}) == 2  # the URL holds the rectangle
    ranked = page.locator("#selection a[data-concept]").evaluate_all("links => links.map(a => a.dataset.concept)")
    page.goto(page.url)  # a shared link: the rectangle of the URL selects the same concepts again
    page.wait_for_selector(".selection-ranking")
    assert int(page.get_attribute(".selection-ranking", "data-count")) == count
    assert page.locator("#selection a[data-concept]").evaluate_all("links => links.map(a => a.dataset.concept)") == ranked


def test_editing_a_label_updates_the_card_and_the_tooltip(page, live_server, atlas_facts):
    concept = atlas_facts["live"][2]
    open_explorer(page, live_server, f"?model=planted&concept={concept}")
    page.fill("#label-block input[name=label]", "hand-named <b>concept</b>")
    page.click("#label-block button[type=submit]")
    page.wait_for_selector("#label-block .ok")
    assert page.inner_text("#label-block .concept-label") == "hand-named <b>concept</b>"  # text, not markup
    x, y = point_on_page(page, concept)
    page.mouse.move(x, y)
    page.wait_for_function("() => document.querySelector('#tooltip').textContent.includes('hand-named')")
    page.evaluate("() => document.querySelector('#label-block input[name=label]').removeAttribute('maxlength')")
    page.fill("#label-block input[name=label]", "x" * 201)
    page.click("#label-block button[type=submit]")
    page.wait_for_function("() => document.querySelector('#label-block .error').textContent.includes('at most 200')")
    assert page.inner_text("#label-block .concept-label") == "hand-named <b>concept</b>"  # the old label kept
    page.fill("#label-block input[name=label]", "   ")
    page.click("#label-block button[type=submit]")
    page.wait_for_function("() => document.querySelector('#label-block .error').textContent.includes('must not be empty')")
    assert page.inner_text("#label-block .concept-label") == "hand-named <b>concept</b>"
    page.click("#label-block button:has-text('restore the automatic label')")
    page.wait_for_function("() => !document.querySelector('#label-block').textContent.includes('hand-named')")
