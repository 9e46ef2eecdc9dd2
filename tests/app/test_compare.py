"""Model comparison: delta histograms with skewness, the Pearson matrix, delta of a vs b, datapoint-score histograms."""

from __future__ import annotations

import numpy as np
import pytest

from tests.app.charts import SVG, app_client, charts, marks, series_marks
from tests.conftest import LENS_ITEMS as ITEMS

HX = {"HX-Request": "true"}


def test_json_holds_every_models_histogram_the_matrix_and_the_pair(client, atlas_db):
    data = client.get("/api/compare", params={"a": "planted", "b": "same"}).json()
    assert data["models"] == ["planted", "same"] and (data["a"], data["b"]) == ("planted", "same")
    n_concepts = atlas_db.execute("SELECT count(*) FROM concepts").fetchone()[0]
    for model, histogram in data["histograms"].items():
        assert len(histogram["edges"]) == len(histogram["counts"]) + 1 == 101  # 100 bins over [0, 1] (appendix D.3)
        assert histogram["edges"][0] == 0.0 and histogram["edges"][-1] == pytest.approx(1.0)
        assert sum(histogram["counts"]) == n_concepts
        skewness = atlas_db.execute("SELECT skewness FROM source_summary WHERE source_id = ?", [model]).fetchone()[0]
        assert histogram["skewness"] == pytest.approx(skewness)
    pearson = np.array(data["pearson"])
    assert pearson.shape == (2, 2) and np.allclose(np.diag(pearson), 1.0) and np.allclose(pearson, pearson.T)
    deltas = {m: dict(atlas_db.execute("""SELECT s.concept, s.delta FROM concept_stats s JOIN concepts c USING (concept)
                                          WHERE s.source_id = ? AND NOT c.is_dead""", [m]).fetchall())
              for m in ("planted", "same")}
    scatter = data["scatter"]
    assert scatter["concept"] == sorted(deltas["planted"])
    assert scatter["a"] == pytest.approx([deltas["planted"][c] for c in scatter["concept"]])
    assert scatter["b"] == pytest.approx([deltas["same"][c] for c in scatter["concept"]])
    stored = atlas_db.execute("SELECT pearson FROM model_correlations WHERE source_a = 'planted' "
                              "AND source_b = 'same'").fetchone()[0]
    assert data["pearson_ab"] == pytest.approx(stored) == pearson[0, 1]


def test_datapoint_histograms_count_every_pair_of_both_models(client, atlas_db):
    points = client.get("/api/compare", params={"a": "same", "b": "planted"}).json()["datapoints"]
    assert list(points["counts"]) == ["same", "planted"]
    for model, counts in points["counts"].items():
        n, median = atlas_db.execute("SELECT count(*), median(l2) FROM datapoints WHERE source_id = ?", [model]).fetchone()
        assert sum(counts) == n == ITEMS
        assert points["summary"][model]["median"] == pytest.approx(median)
        assert points["summary"][model]["q1"] <= median <= points["summary"][model]["q3"]
    low, high = atlas_db.execute("SELECT min(l2), max(l2) FROM datapoints").fetchone()
    assert points["edges"][0] == pytest.approx(low) and points["edges"][-1] == pytest.approx(high)


def test_page_draws_each_chart_with_the_right_marks(client):
    data = client.get("/api/compare").json()
    page = client.get("/compare").text
    drawn = charts(page)
    for model, histogram in data["histograms"].items():
        assert marks(drawn[model], "bar") == sum(1 for c in histogram["counts"] if c > 0)  # log scale: empty bins omitted
    assert marks(drawn["pearson-matrix"], "cell") == len(data["models"]) ** 2
    assert marks(drawn["delta-scatter"], "point") == len(data["scatter"]["concept"])
    by_series = series_marks(drawn["datapoint-histogram"], "bar")
    assert by_series == {m: sum(1 for c in counts if c > 0) for m, counts in data["datapoints"]["counts"].items()}
    assert "skewness" in page and "Pearson r" in page


def test_fragment_matches_the_page(client):
    page = client.get("/compare", params={"a": "same", "b": "planted"}).text
    fragment = client.get("/compare", params={"a": "same", "b": "planted"}, headers=HX).text
    assert "<html" not in fragment and fragment.lstrip().startswith('<div id="compare"')
    assert fragment.strip() in page


def test_b_defaults_to_another_model_and_a_model_compares_with_itself(client):
    data = client.get("/api/compare", params={"a": "same"}).json()
    assert (data["a"], data["b"]) == ("same", "planted")
    itself = client.get("/api/compare", params={"a": "same", "b": "same"}).json()
    assert itself["scatter"]["a"] == itself["scatter"]["b"] and list(itself["datapoints"]["counts"]) == ["same"]


@pytest.mark.parametrize("params", [{"a": "nope"}, {"b": "nope"}, {"a": "real"}])
def test_unknown_models_are_404(client, params):
    for path in ("/compare", "/api/compare"):
        assert client.get(path, params=params).status_code == 404


def test_an_atlas_without_analysis_explains_itself(world_atlas, tmp_path_factory):
    with app_client(world_atlas, tmp_path_factory) as plain:
        page = plain.get("/compare")
        assert page.status_code == 200 and "without the analyze stage" in page.text
        data = plain.get("/api/compare").json()
        assert data["analysed"] is False and data["histograms"] == {} and data["pearson"] == []


def test_log_histograms_tick_whole_counts_and_scatter_points_are_links_inside_the_frame(client):
    """The log-scale count axis ticks 1, 2, 5, 10 ... (not 0.5 and 2); points at delta 0 and 1 sit inside the
    axes, not on them; each point opens its concept's card."""
    data = client.get("/api/compare", params={"a": "planted", "b": "same"}).json()
    drawn = charts(client.get("/compare", params={"a": "planted", "b": "same"}).text)
    for model in data["histograms"]:
        axes = next(g for g in drawn[model].iter(f"{SVG}g") if g.get("class") == "axes")
        ticks = [t.text for t in axes.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
        assert ticks[:2] == ["1", "2"] and "0.5" not in ticks, ticks
    scatter = drawn["delta-scatter"]
    axes = next(g for g in scatter.iter(f"{SVG}g") if g.get("class") == "axes")
    x_axis, y_axis = [e for e in axes if e.tag == f"{SVG}line"][:2]
    left, bottom, right = float(x_axis.get("x1")), float(x_axis.get("y1")), float(x_axis.get("x2"))
    top = float(y_axis.get("y2"))
    links = [a for a in scatter.iter(f"{SVG}a")]
    assert len(links) == len(data["scatter"]["concept"])
    for link, concept in zip(links, data["scatter"]["concept"]):
        assert link.get("href") == f"/concepts/{concept}?model=planted"
        circle = link.find(f"{SVG}circle")
        cx, cy, r = (float(circle.get(k)) for k in ("cx", "cy", "r"))
        assert left < cx - r and cx + r < right and top < cy - r and cy + r < bottom
    assert any(d in (0.0, 1.0) or d < 0.01 or d > 0.99 for d in data["scatter"]["a"])  # points at the ends exist


def test_a_click_on_the_delta_scatter_opens_the_nearest_concepts_card(client, atlas_db):
    deltas = atlas_db.execute("""SELECT a.concept, a.delta, b.delta FROM concept_stats a
        JOIN concept_stats b ON b.concept = a.concept AND b.source_id = 'same' JOIN concepts c ON c.concept = a.concept
        WHERE a.source_id = 'planted' AND NOT c.is_dead""").fetchall()
    concept, x, y = deltas[len(deltas) // 2]
    answer = client.get("/compare/nearest", params={"a": "planted", "b": "same", "at_x": x + 1e-4, "at_y": y},
                        follow_redirects=False)
    nearest = min(deltas, key=lambda r: ((r[1] - x - 1e-4) ** 2 + (r[2] - y) ** 2, r[0]))[0]
    assert answer.status_code == 303 and answer.headers["location"] == f"/concepts/{nearest}?model=planted"
    assert client.get("/compare/nearest", params={"at_x": 0.5, "at_y": 0.5, "a": "nope"}).status_code == 404
    assert client.get("/compare/nearest", params={"at_x": 9, "at_y": 0.5}).status_code == 422
