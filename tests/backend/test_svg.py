"""The SVG chart module: well-formed XML, the right marks, scales and ticks, escaped text, compact large charts."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from backend import svg
from tests.app.charts import marks

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    root = ET.fromstring(str(markup))
    assert root.tag == f"{SVG}svg" and root.get("viewBox").startswith("0 0 ")
    return root


def bars(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}rect") if e.get("class") == "bar"]


def test_histogram_draws_one_bar_per_non_empty_bin():
    edges = np.linspace(0, 1, 11)
    root = parse(svg.histogram(edges, {"planted": [0, 3, 0, 1, 9, 0, 0, 2, 0, 5]}, log_y=True, x_label="delta"))
    assert len(bars(root)) == 5
    heights = [float(b.get("height")) for b in bars(root)]
    by_count = dict(zip([3, 1, 9, 2, 5], heights))
    assert by_count[1] > 0 and by_count[1] < by_count[2] < by_count[3] < by_count[5] < by_count[9]
    # a log axis: 9 is not three times as tall as 3
    assert by_count[9] / by_count[3] < 2.5


def test_overlaid_histograms_keep_their_series_apart():
    root = parse(svg.histogram([0, 1, 2, 3], {"a": [1, 0, 2], "b": [0, 4, 4]}))
    series = {g.get("data-series"): len([e for e in g if e.get("class") == "bar"])
              for g in root.iter(f"{SVG}g") if g.get("class") == "series"}
    assert series == {"a": 2, "b": 2}
    assert marks(root, "bar") == 4


def test_histogram_bars_stand_on_their_bins_as_tall_as_their_counts_and_say_so():
    edges, counts = [0.0, 0.5, 1.0, 1.5, 2.0], {"real": [4, 0, 1, 2.5], "gen": [0, 0, 3, 8]}
    frame = svg.Frame()
    root = parse(svg.histogram(edges, counts, frame=frame))
    bin_width = (frame.x1 - frame.x0) / 4
    per_count = (frame.y0 - frame.y1) / (8 * 1.05)  # a linear axis up to 105% of the largest count
    for g in (g for g in root.iter(f"{SVG}g") if g.get("class") == "series"):
        name = g.get("data-series")
        drawn = [e for e in g if e.get("class") == "bar"]
        shown = [(j, c) for j, c in enumerate(counts[name]) if c > 0]
        assert len(drawn) == len(shown)
        for (j, c), bar in zip(shown, drawn):
            x, y, width, height = (float(bar.get(k)) for k in ("x", "y", "width", "height"))
            assert x == pytest.approx(frame.x0 + j * bin_width, abs=0.06)
            assert width == pytest.approx(bin_width - 0.5, abs=0.11)  # a hairline gap between neighbours
            assert height == pytest.approx(c * per_count, abs=0.11) and y + height == pytest.approx(frame.y0, abs=0.11)
            assert bar.find(f"{SVG}title").text == f"{name}: [{edges[j]:g}, {edges[j + 1]:g}) {c:g}"


def test_histogram_refuses_counts_that_do_not_fit_the_edges():
    with pytest.raises(ValueError, match="11 edges need 10 counts"):
        svg.histogram(np.linspace(0, 1, 11), {"x": [1, 2, 3]})


def test_scatter_places_points_inside_the_frame_and_drops_what_a_log_axis_cannot_show():
    x = np.array([0.0, 0.01, 0.1, 1.0, np.nan])
    y = np.array([0.5, 0.2, 0.9, 0.1, 0.3])
    frame = svg.Frame()
    linear = parse(svg.scatter(x, y, x_domain=(0, 1), y_domain=(0, 1), frame=frame))
    assert marks(linear, "point") == 4  # NaN left out
    for circle in linear.iter(f"{SVG}circle"):
        assert frame.x0 <= float(circle.get("cx")) <= frame.x1 and frame.y1 <= float(circle.get("cy")) <= frame.y0
    assert marks(parse(svg.scatter(x, y, x_log=True)), "point") == 3  # and 0 on a log axis
    # y grows upwards: the point with y = 0.9 is highest on screen
    cy = {float(c.get("cx")): float(c.get("cy")) for c in linear.iter(f"{SVG}circle")}
    assert min(cy, key=cy.get) == pytest.approx(frame.x0 + 0.1 * (frame.x1 - frame.x0))


def test_large_scatters_and_heatmaps_stay_compact_and_countable():
    rng = np.random.default_rng(0)
    n = 20_000
    markup = svg.scatter(rng.random(n), rng.random(n), colour_values=rng.random(n), sizes=rng.uniform(1, 5, n))
    root = parse(markup)
    assert marks(root, "point") == n
    assert len(markup) < 40 * n  # bytes per point: a zero-length path segment, not a <circle> element
    matrix = rng.random((100, 100))
    matrix[3, 4] = np.nan
    heatmap = svg.heatmap(matrix, low=0.0, high=1.0)
    root = parse(heatmap)
    assert marks(root, "cell") == 10_000
    assert any(e.get("fill") == svg.MISSING for e in root.iter(f"{SVG}path"))
    assert len(heatmap) < 300_000


def test_small_heatmap_annotates_values_and_labels_rows_and_columns():
    root = parse(svg.heatmap(np.array([[1.0, 0.25], [0.25, 1.0]]), low=-1, high=1, row_labels=["a", "b"],
                             col_labels=["a", "b"], annotate=True))
    assert marks(root, "cell") == 4
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts.count("1.00") == 2 and texts.count("0.25") == 2


def test_colour_scale_runs_from_blue_purple_to_yellow():
    low, middle, high = svg.colour(np.array([0.0, 0.5, 1.0]), 0.0, 1.0)
    assert (low, high) == ("#440154", "#fde725")
    assert svg.colour(np.array([-5.0, 7.0]), 0.0, 1.0) == [low, high]  # clipped to the scale
    assert middle not in (low, high)


def test_text_from_data_is_escaped():
    hostile = '<script>alert("x")</script> & "quotes"'
    for markup in (svg.histogram([0, 1], {hostile: [2]}, title=hostile, x_label=hostile),
                   svg.scatter([0.1], [0.2], titles=[hostile], x_label=hostile),
                   svg.lines({hostile: ([1, 2], [3, 4])}),
                   svg.heatmap(np.eye(2), low=0, high=1, row_labels=[hostile, "b"], col_labels=["a", hostile])):
        assert "<script>" not in str(markup)
        root = parse(markup)  # still well-formed
        assert any(hostile in (e.text or "") or hostile in (e.get("data-series") or "") for e in root.iter())


def test_ticks_are_round_numbers_inside_the_domain():
    ticks = svg.Scale(0.0, 1.0, 0, 100).ticks()
    assert ticks == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    odd = svg.Scale(3.7, 48.2, 0, 100).ticks()
    assert all(3.7 <= t <= 48.2 for t in odd) and odd == pytest.approx([10, 20, 30, 40])
    decades = svg.Scale(1e-5, 0.5, 0, 100, log=True).ticks()
    assert set(decades) <= {1e-5, 1e-4, 1e-3, 1e-2, 1e-1} and len(decades) >= 3


def test_lines_draw_one_polyline_per_series_with_its_points():
    root = parse(svg.lines({"real": ([1, 2, 3], [10, 5, 1]), "gen": ([1, 2, 3], [9, 0, 2])}, y_log=True))
    lines = {e.get("data-series"): int(e.get("data-points")) for e in root.iter(f"{SVG}polyline")}
    assert lines == {"real": 3, "gen": 2}  # the zero cannot sit on a log axis


def test_points_link_to_their_pages_and_a_compact_chart_says_where_a_click_lands():
    small = parse(svg.scatter([0.0, 0.5, 1.0], [1.0, 0.5, 0.0], x_domain=(0, 1), y_domain=(0, 1), margin=0.03,
                              links=["/a", "/b?x=1&y=2", "/c"], pick_url="/pick?m=1"))
    assert [a.get("href") for a in small.iter(f"{SVG}a")] == ["/a", "/b?x=1&y=2", "/c"]
    assert small.get("data-pick-url") is None  # every point is a link already
    rng = np.random.default_rng(0)
    n = svg.DETAIL_POINTS + 1
    frame = svg.Frame()
    large = parse(svg.scatter(rng.random(n), rng.random(n), x_domain=(0, 1), y_domain=(0, 1), margin=0.03,
                              pick_url="/pick?m=1&k=2", frame=frame))
    assert not list(large.iter(f"{SVG}a")) and large.get("data-pick-url") == "/pick?m=1&k=2"
    assert [float(v) for v in large.get("data-pick-frame").split()] == [frame.x0, frame.x1, frame.y0, frame.y1]
    assert [float(v) for v in large.get("data-pick-domain").split()] == pytest.approx([-0.03, 1.03, -0.03, 1.03])
    ticks = [t.text for t in large.iter(f"{SVG}text") if t.get("text-anchor") == "middle" and t.text]
    assert ticks[:6] == ["0", "0.2", "0.4", "0.6", "0.8", "1"]  # the margin adds no tick outside the domain


def test_log_count_axes_tick_whole_numbers():
    root = parse(svg.histogram(np.linspace(0, 1, 11), {"m": [1, 2, 0, 5, 9, 0, 3, 0, 1, 1]}, log_y=True))
    axes = next(g for g in root.iter(f"{SVG}g") if g.get("class") == "axes")
    ticks = [t.text for t in axes.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert ticks == ["1", "2", "5", "10"]
    many = svg.Scale(0.5, 5000, 0, 100, log=True, tick_bounds=(1.0, float("inf"))).ticks()
    assert many == [1, 10, 100, 1000]
