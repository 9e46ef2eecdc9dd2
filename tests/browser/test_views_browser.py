"""What a researcher sees in a real browser: nothing overlaps or is cut off, keys follow the model, search hits show
on the map, the card's activation examples read without hovering and load their lower bands."""

from __future__ import annotations

import re

import pytest

from tests.browser.test_explorer_browser import (  # noqa: F401 (atlas_facts: a fixture)
    atlas_facts, open_explorer, point_on_page, screen_position)


def overlap(a: dict, b: dict) -> float:
    """The area two bounding boxes share."""
    width = min(a["x"] + a["width"], b["x"] + b["width"]) - max(a["x"], b["x"])
    height = min(a["y"] + a["height"], b["y"] + b["height"]) - max(a["y"], b["y"])
    return max(width, 0) * max(height, 0)


def inside(inner: dict, outer: dict, slack: float = 0.5) -> bool:
    return (inner["x"] >= outer["x"] - slack and inner["y"] >= outer["y"] - slack
            and inner["x"] + inner["width"] <= outer["x"] + outer["width"] + slack
            and inner["y"] + inner["height"] <= outer["y"] + outer["height"] + slack)


@pytest.mark.parametrize("width", [1440, 900])
def test_overview_pair_images_do_not_overlap_and_sit_under_their_sources_name(page, live_server, width):
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(f"{live_server}/?limit=12")
    headers = {h.get_attribute("data-source"): h.bounding_box() for h in page.locator("th.source").all()}
    assert list(headers) == ["real", "planted", "same"]
    images = page.locator("table.pairs-table td.thumb-cell img")
    assert images.count() == 12 * 3
    boxes = [(images.nth(i).get_attribute("alt").split(" ")[0], images.nth(i).bounding_box())
             for i in range(images.count())]
    for i, (_, a) in enumerate(boxes):
        assert a["width"] >= 90  # the 96 px images are drawn at their size
        for _, b in boxes[i + 1:]:
            assert overlap(a, b) == 0
    for source, box in boxes:  # each image under the header naming its source
        column = headers[source]
        assert column["x"] - 1 <= box["x"] + box["width"] / 2 <= column["x"] + column["width"] + 1


def test_the_tooltip_stays_inside_the_map_and_goes_away_on_click_and_model_switch(page, live_server, atlas_facts):
    open_explorer(page, live_server, "?model=planted")
    positions = page.evaluate("() => window.blindspot.screenPositions()")
    rightmost = max(range(atlas_facts["n"]), key=lambda i: positions[i][0])
    x, y = point_on_page(page, rightmost)
    page.mouse.move(x, y)
    page.wait_for_function("() => document.querySelector('#tooltip .delta-value')")
    plot, tip = page.locator("#plot").bounding_box(), page.locator("#tooltip").bounding_box()
    delta = page.locator("#tooltip .delta-value").bounding_box()
    assert inside(tip, plot) and inside(delta, tip)  # delta is shown, not cut off at the map's right edge
    assert not (tip["x"] <= x <= tip["x"] + tip["width"] and tip["y"] <= y <= tip["y"] + tip["height"])  # nor on it
    page.mouse.click(x, y)
    page.wait_for_selector(f"#concept-card[data-concept='{rightmost}']")
    assert page.locator("#tooltip").is_hidden()
    page.mouse.move(x - 40, y - 40)
    page.mouse.move(x, y)
    page.wait_for_function("() => !document.querySelector('#tooltip').hidden")
    page.select_option("#model", "same")
    page.wait_for_function("() => document.querySelector('#plot').dataset.view === 'same/delta/uniform'")
    assert page.locator("#tooltip").is_hidden()


def test_the_edge_key_names_the_model_after_a_switch(page, live_server, atlas_facts):
    concept = atlas_facts["live"][0]
    open_explorer(page, live_server, f"?model=planted&concept={concept}")
    assert page.inner_text(".edge-key").endswith("in planted's images")
    page.select_option("#model", "same")
    page.wait_for_selector(f"#concept-card[data-concept='{concept}'][data-model='same']")
    assert page.inner_text(".edge-key").endswith("in same's images")
    page.go_back()
    page.wait_for_selector(f"#concept-card[data-concept='{concept}'][data-model='planted']")
    assert page.inner_text(".edge-key").endswith("in planted's images")


def test_search_hits_are_ringed_on_the_map(page, live_server, atlas_facts):
    open_explorer(page, live_server, "?model=planted")
    label = page.evaluate("(i) => fetch(`/api/concepts/${i}/brief`).then(r => r.json()).then(b => b.label)",
                          atlas_facts["live"][3])
    page.fill("#search", re.split(r"[,\s]+", label)[0])
    page.wait_for_selector("#search-results a[data-concept]")
    page.wait_for_selector("#hits circle.hit")
    hits = [int(c) for c in page.locator("#search-results a[data-concept]").evaluate_all(
        "links => links.map(a => a.dataset.concept)")]
    rings = page.locator("#hits circle.hit")
    assert sorted(int(r.get_attribute("data-concept")) for r in rings.all()) == sorted(hits)
    for ring in rings.all():
        concept = int(ring.get_attribute("data-concept"))
        x, y = screen_position(page, concept)
        assert abs(float(ring.get_attribute("cx")) - x) < 1 and abs(float(ring.get_attribute("cy")) - y) < 1
    page.fill("#search", "")
    page.wait_for_function("() => document.querySelectorAll('#hits circle').length === 0")


def test_the_delta_legend_marks_the_thresholds_and_is_centred_on_one_half(page, live_server):
    open_explorer(page, live_server, "?model=planted&colour=delta")
    bar = page.locator("#legend .bar").bounding_box()
    ticks = {t.inner_text(): t.bounding_box() for t in page.locator("#legend .tick").all()}
    assert {"0.1", "0.5", "0.9"} <= set(ticks)
    for text, share in (("0.1", 0.1), ("0.5", 0.5), ("0.9", 0.9)):
        centre = ticks[text]["x"] + ticks[text]["width"] / 2
        assert abs(centre - (bar["x"] + share * bar["width"])) < 1.5, text
    # a diverging scale: the ends are the card's blue and orange, the middle is grey
    colours = page.evaluate("""() => {
        const bar = document.querySelector('#legend .bar');
        return getComputedStyle(bar).backgroundImage.match(/rgb\\([^)]*\\)/g);
    }""")
    first, middle, last = (tuple(map(int, re.findall(r"\d+", c))) for c in (colours[0], colours[len(colours) // 2],
                                                                             colours[-1]))
    assert first[2] > first[0] and last[0] > last[2]  # blue at 0, orange at 1
    assert max(middle) - min(middle) < 30  # grey at 0.5


def test_card_examples_show_captions_and_energies_and_load_lower_bands(page, live_server, atlas_facts):
    concept = atlas_facts["live"][0]
    page.goto(f"{live_server}/concepts/{concept}?model=planted")
    side = page.locator(".examples-side[data-side='real']")
    top = side.locator(".example-grid").first.locator("figure.example")
    assert top.count() > 0
    for i in range(top.count()):  # caption and energy are on the page, not only in a tooltip
        caption = top.nth(i).locator("figcaption .text")
        value = top.nth(i).locator("figcaption .value")
        assert caption.is_visible() and caption.bounding_box()["height"] >= 10 and caption.inner_text()
        assert value.is_visible() and value.inner_text().startswith("energy ")
    side.locator("button.more-examples").click()
    page.wait_for_selector(".examples-side[data-side='real'] .band[data-band='0'] figure.example")
    assert "top 0%–25%" in side.locator(".band[data-band='0'] h5").inner_text()
    side.locator("button.more-examples").click()
    page.wait_for_selector(".examples-side[data-side='real'] .band[data-band='1']")
    energies = [float(t.split()[1]) for t in side.locator(".band figcaption .value").all_inner_texts()]
    assert energies == sorted(energies, reverse=True)  # each band lower than the one before


def test_a_click_on_a_compact_delta_scatter_opens_the_nearest_card(page, live_server, monkeypatch):
    """Above 2,000 points a scatter has no element per point (a 32,000-concept page would be megabytes); a click
    still opens the card of the concept drawn nearest. Here the threshold is lowered to make the test atlas's
    scatter compact."""
    from backend import svg

    monkeypatch.setattr(svg, "DETAIL_POINTS", 5)
    page.goto(f"{live_server}/compare?a=planted&b=same")
    chart = page.locator("#delta-scatter svg[data-pick-url]")
    assert chart.count() == 1 and page.locator("#delta-scatter svg a").count() == 0
    chart.scroll_into_view_if_needed()
    data = page.evaluate("() => fetch('/api/compare?a=planted&b=same').then(r => r.json())")
    # the point farthest from its nearest neighbour, so that a click's pixel rounding cannot land nearer another
    points = list(zip(data["scatter"]["a"], data["scatter"]["b"]))
    span = [max(v) - min(v) or 1.0 for v in zip(*points)]

    def clearance(p):
        return min(((p[0] - q[0]) / span[0]) ** 2 + ((p[1] - q[1]) / span[1]) ** 2 for q in points if q != p)

    x, y = max(points, key=clearance)
    where = page.evaluate("""([x, y]) => {
        const chart = document.querySelector('#delta-scatter svg');
        const [x0, x1, y0, y1] = chart.dataset.pickFrame.split(' ').map(Number);
        const [xl, xh, yl, yh] = chart.dataset.pickDomain.split(' ').map(Number);
        const at = new DOMPoint(x0 + (x - xl) / (xh - xl) * (x1 - x0), y0 + (y - yl) / (yh - yl) * (y1 - y0));
        const screen = at.matrixTransform(chart.getScreenCTM());
        return [screen.x, screen.y];
    }""", [x, y])
    expected = page.evaluate(f"() => fetch('/compare/nearest?a=planted&b=same&at_x={x}&at_y={y}')"
                             ".then(r => new URL(r.url).pathname)")
    page.mouse.click(*where)
    page.wait_for_url(re.compile(r"/concepts/\d+\?model=planted"))
    assert page.url.split("?")[0].endswith(expected)
    assert page.locator("#concept-card").count() == 1


def test_the_scatter_uses_the_servers_spatial_index_and_picks_points_with_it(page, live_server, atlas_facts):
    """The page hands regl-scatterplot the KDBush index in the server's order (backend/kdindex.py) instead of
    letting it sort the points on every draw; hover and lasso (tested above) query that index."""
    open_explorer(page, live_server, "?model=planted")
    used = page.evaluate("""async () => {
        const index = window.blindspot.spatialIndex();
        const order = new Uint32Array(await (await fetch('/api/explorer/layout-order.bin')).arrayBuffer());
        const n = order.length;
        const ids = new (n < 65536 ? Uint16Array : Uint32Array)(index, 8, n);
        return {n, same: ids.every((v, i) => v === order[i]), magic: new Uint8Array(index, 0, 1)[0]};
    }""")
    assert used == {"n": atlas_facts["n"], "same": True, "magic": 0xDB}
    concept = atlas_facts["live"][5]
    x, y = point_on_page(page, concept)
    page.mouse.move(x, y)
    page.wait_for_function("(i) => document.querySelector('#tooltip').textContent.startsWith(`#${i} `)", arg=concept)
