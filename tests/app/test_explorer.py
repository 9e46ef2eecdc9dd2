"""The explorer: the binary point payload, the page and its JSON twin, search, neighbours, edges and lasso rankings."""

from __future__ import annotations

import math
import re
import shutil

import duckdb
import numpy as np
import pytest

from backend.explorer import COLOUR_KEYS, PAYLOAD_HEADER
from precompute.atlas.writer import record_row_counts
from tests.app.charts import app_client, query

HX = {"HX-Request": "true"}


def decode(payload: bytes) -> tuple[tuple, np.ndarray]:
    header = PAYLOAD_HEADER.unpack(payload[:PAYLOAD_HEADER.size])
    return header, np.frombuffer(payload[PAYLOAD_HEADER.size:], dtype="<f4").reshape(-1, 3)


@pytest.mark.parametrize("colour, column", [("delta", "delta"), ("relative_delta", "relative_delta"),
                                            ("frequency", "nu_real"), ("frequency_gen", "nu_gen")])
def test_point_payload_is_12_bytes_per_concept_and_holds_the_layout_and_the_colour(client, lens_atlas, colour,
                                                                                   column):
    response = client.get("/api/explorer/points.bin", params={"model": "planted", "colour": colour})
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    rows = query(lens_atlas, f"""SELECT c.umap_x, c.umap_y, CASE WHEN c.is_dead THEN 'NaN' ELSE s.{column} END
                                 FROM concepts c
                                 JOIN concept_stats s ON s.concept = c.concept AND s.source_id = 'planted'
                                 ORDER BY c.concept""")
    assert len(response.content) == PAYLOAD_HEADER.size + 12 * len(rows) == 24 + 12 * 48
    (magic, version, n, colour_index, low, high), body = decode(response.content)
    assert (magic, version, n, COLOUR_KEYS[colour_index]) == (b"BSPT", 1, len(rows), colour)
    np.testing.assert_allclose(body, np.array(rows, dtype=np.float32), rtol=1e-6)
    assert low <= np.nanmin(body[:, 2]) and np.nanmax(body[:, 2]) <= high + 1e-6


def test_each_model_has_its_own_values_on_one_shared_layout(client):
    planted = decode(client.get("/api/explorer/points.bin", params={"model": "planted"}).content)[1]
    same = decode(client.get("/api/explorer/points.bin", params={"model": "same"}).content)[1]
    np.testing.assert_array_equal(planted[:, :2], same[:, :2])
    assert not np.array_equal(planted[:, 2], same[:, 2])


@pytest.mark.parametrize("params, status", [
    ({"colour": "rainbow"}, 422), ({"colour": "minority"}, 422),  # minority needs the internal lens
    ({"model": "x" * 300}, 422), ({"model": "no-such-model"}, 404), ({"model": "real"}, 404),
])
def test_bad_payload_parameters_are_refused_with_the_reason(client, params, status):
    response = client.get("/api/explorer/points.bin", params=params)
    assert response.status_code == status
    assert response.json()["detail"]


def test_page_and_json_twin_carry_the_whole_view_state(client, lens_atlas):
    params = {"model": "same", "colour": "frequency", "size": "extremity", "concept": 5, "radius": 0.2}
    data = client.get("/api/explorer", params=params).json()
    assert data["state"] == params and data["n_concepts"] == 48 and data["models"] == ["planted", "same"]
    assert set(data["colours"]) == {"delta", "relative_delta", "frequency", "frequency_gen"}
    assert data["points_url"] == "/api/explorer/points.bin?model=same&colour=frequency"
    assert data["selected"]["concept"] == 5
    page = client.get("/explorer", params=params)
    assert page.status_code == 200 and "<html" in page.text
    html = page.text
    assert '<option value="same" selected>' in html and '<option value="extremity" selected>' in html
    assert 'value="0.2"' in html and 'id="concept-card" data-concept="5" data-model="same"' in html
    assert '<script type="module" src="/static/explorer.js">' in html


def test_neighbours_are_the_concepts_within_the_radius_of_the_map(client, lens_atlas):
    layout = np.array(query(lens_atlas, "SELECT umap_x, umap_y FROM concepts ORDER BY concept"))
    side = (layout.max(0) - layout.min(0)).max()
    distance = np.linalg.norm(layout - layout[7], axis=1) / side
    for radius in (0.05, 0.15, 0.4):
        data = client.get("/api/explorer/context", params={"concept": 7, "radius": radius, "model": "planted"}).json()
        expected = [int(i) for i in np.argsort(distance, kind="stable") if i != 7 and distance[i] <= radius]
        assert [n["concept"] for n in data["neighbours"]] == expected[:50]
        assert all(math.isclose(n["distance"], distance[n["concept"]], rel_tol=1e-5) for n in data["neighbours"])
    assert client.get("/api/explorer/context", params={"concept": 7, "radius": 0}).json()["neighbours"] == []


@pytest.mark.parametrize("source", ["real", "planted"])
def test_cooccurrence_edges_are_the_top_of_the_concepts_row_of_ztz_as_a_cosine(client, lens_atlas, source,
                                                                               tiny_dinov2):
    """Edges come from the encode stage's token-level Z^T Z (appendix H), normalised C_ij / sqrt(C_ii C_jj)."""
    from precompute.stages.common import StageContext
    from precompute.stages.encode import cooccurrence, lens_digest
    from tests.conftest import lens_config

    ctx = StageContext(config=lens_config(tiny_dinov2), work=lens_atlas.parent / "atlas.work", progress=None)
    total, _ = cooccurrence(ctx, lens_digest(ctx), source)
    dense = total.toarray()
    scale = np.sqrt(np.clip(np.diag(dense), 1e-30, None))
    cosine = dense / scale[:, None] / scale[None, :]
    np.fill_diagonal(cosine, 0)
    concept = int(np.argmax((cosine > 0).sum(axis=1)))  # the concept with the most partners
    expected = [int(i) for i in np.argsort(-cosine[concept], kind="stable") if cosine[concept, i] > 0][:8]
    edges = client.get("/api/explorer/context", params={"concept": concept, "model": "planted"}).json()["edges"]
    side = edges["real" if source == "real" else "generated"]
    assert len(side) == len(expected) == 8
    np.testing.assert_allclose([e["weight"] for e in side], cosine[concept, expected], rtol=1e-4)
    assert [e["weight"] for e in side] == sorted((e["weight"] for e in side), reverse=True)
    # ties aside, the same partners in the same order
    assert {e["concept"] for e in side} <= {int(i) for i in np.flatnonzero(cosine[concept] >= side[-1]["weight"] - 1e-6)}
    labels = dict(query(lens_atlas, "SELECT concept, label FROM concepts"))
    assert all(e["label"] == labels[e["concept"]] for e in side)


def test_search_matches_label_text_case_insensitively_and_treats_wildcards_literally(client, lens_atlas):
    labels = dict(query(lens_atlas, "SELECT concept, label FROM concepts"))
    worlds = dict(query(lens_atlas, "SELECT concept, coalesce(world_concept, '') FROM concepts"))
    word = labels[0].split(",")[0].strip()
    expected = sorted(k for k in labels if word.lower() in labels[k].lower() or word.lower() in worlds[k].lower())
    found = client.get("/api/explorer/search", params={"q": word.upper(), "model": "planted"}).json()
    assert len(found) == min(len(expected), 20) and {r["concept"] for r in found} <= set(expected)
    assert client.get("/api/explorer/search", params={"q": "%"}).json() == []
    underscored = sorted(k for k in labels if "_" in labels[k] or "_" in worlds[k])  # world names: plain_dark
    found = client.get("/api/explorer/search", params={"q": "_"}).json()
    assert len(found) == min(len(underscored), 20) and {r["concept"] for r in found} <= set(underscored)
    assert client.get("/api/explorer/search", params={"q": "   "}).json() == []
    assert client.get("/api/explorer/search", params={"q": "x" * 201}).status_code == 422
    fragment = client.get("/explorer/search", params={"q": word}, headers=HX)
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert fragment.text.count("data-concept=") == min(len(expected), 20)


def test_search_by_id_lists_that_concept_first(client):
    for text in ("#17", "17", " #17 "):
        assert client.get("/api/explorer/search", params={"q": text}).json()[0]["concept"] == 17
    assert all(r["concept"] != 99 for r in client.get("/api/explorer/search", params={"q": "#99"}).json())


def test_lasso_selection_is_ranked_by_delta_both_ways(client, lens_atlas):
    ids = [0, 5, 9, 17, 30, 44]
    delta = dict(query(lens_atlas, "SELECT concept, delta FROM concept_stats WHERE source_id = 'same'"))
    up = client.post("/api/explorer/selection", json={"ids": ids, "model": "same"}).json()
    down = client.post("/api/explorer/selection", json={"ids": ids + ids, "model": "same", "order": "desc"}).json()
    assert up["count"] == down["count"] == len(ids)
    assert [r["concept"] for r in up["concepts"]] == sorted(ids, key=lambda k: (delta[k], k))
    assert [r["delta"] for r in down["concepts"]] == sorted((delta[k] for k in ids), reverse=True)
    fragment = client.post("/explorer/selection", json={"ids": ids, "model": "same"}, headers=HX)
    assert fragment.status_code == 200 and 'data-count="6"' in fragment.text
    assert [int(x) for x in re.findall(r'data-concept="(\d+)"', fragment.text)] == \
        [r["concept"] for r in up["concepts"]]


@pytest.mark.parametrize("body", [{"ids": []}, {"ids": [-1]}, {"ids": [48]}, {"ids": ["a"]}, {"ids": [1], "order": "up"},
                                  {}])
def test_bad_selections_are_422(client, body):
    assert client.post("/api/explorer/selection", json=body).status_code == 422


@pytest.mark.parametrize("params, status", [
    ({"radius": 2}, 422), ({"radius": -0.1}, 422), ({"concept": -1}, 422), ({"concept": "x"}, 422),
    ({"size": "huge"}, 422), ({"concept": 48}, 404), ({"concept": 10_000_001}, 422),
])
def test_bad_view_state_is_refused(client, params, status):
    assert client.get("/api/explorer", params=params).status_code == status
    assert client.get("/explorer", params=params).status_code == status


def test_an_atlas_without_analysis_gets_a_helpful_page_not_an_error(world_atlas, tmp_path_factory):
    with app_client(world_atlas, tmp_path_factory) as client:
        page = client.get("/explorer")
        assert page.status_code == 200 and "no concept analysis yet" in page.text
        assert "explorer.js" not in page.text
        assert client.get("/api/explorer").json()["analysed"] is False
        missing = client.get("/api/explorer/points.bin")
        assert missing.status_code == 404 and "analyze" in missing.json()["detail"]
        assert client.get("/concepts/0").status_code == 404
        brief = client.get("/api/concepts/0/brief")
        assert brief.status_code == 404 and "analyze" in brief.json()["detail"]


@pytest.fixture(scope="module")
def attributed_atlas(lens_atlas, tmp_path_factory):
    """A copy of the lens atlas with internal-lens rows for 'planted' (as the internal stage writes them)."""
    out = tmp_path_factory.mktemp("attributed") / "atlas"
    shutil.copytree(lens_atlas, out)
    db = duckdb.connect(str(out / "atlas.duckdb"))
    try:
        db.execute("INSERT INTO internal_features SELECT 'planted', f, 0.1, 0.5, f / 10, true, f, 'feature ' || f "
                   "FROM range(10) t(f)")
        db.execute("INSERT INTO attributions SELECT 'planted', c, r, (c + r) % 10, 1.0 / (r + 1) "
                   "FROM range(0, 48, 2) a(c), range(3) b(r)")  # even concepts only
        db.execute("INSERT INTO attribution_probes SELECT 'planted', c, 7, 0.9 FROM range(0, 48, 2) a(c)")
        record_row_counts(db)  # as the writer does: the server refuses an atlas whose tables changed after its build
    finally:
        db.close()
    return out


def test_minority_colour_and_steer_link_appear_only_with_the_internal_lens(attributed_atlas, tmp_path_factory):
    dead = {c for (c,) in query(attributed_atlas, "SELECT concept FROM concepts WHERE is_dead")}
    with app_client(attributed_atlas, tmp_path_factory) as client:
        assert "minority" in client.get("/api/explorer", params={"model": "planted"}).json()["colours"]
        assert "minority" not in client.get("/api/explorer", params={"model": "same"}).json()["colours"]
        body = decode(client.get("/api/explorer/points.bin", params={"model": "planted", "colour": "minority"})
                      .content)[1]
        # the minority of each even concept's rank-0 feature; NaN where none is attributed or the concept is dead
        expected = [(c % 10) / 10 if c % 2 == 0 and c not in dead else math.nan for c in range(48)]
        np.testing.assert_allclose(body[:, 2], np.array(expected, dtype=np.float32))
        card = client.get("/api/concepts/4", params={"model": "planted"}).json()
        assert [f["feature"] for f in card["attributions"]["features"]] == [4, 5, 6]
        mode, strength = ("scale", -1) if query(attributed_atlas, "SELECT exaggerated FROM concept_stats WHERE "
                                                "source_id = 'planted' AND concept = 4")[0][0] else ("add", 1)
        url = f"/steer?generator=planted&features=4:{strength},5:{strength},6:{strength}&mode={mode}&concept=4&sweep=true"
        assert card["attributions"]["steer_url"] == url
        assert card["attributions"]["probe"] == {"positives": 7, "auroc": 0.9}
        assert f'href="{url.replace("&", "&amp;")}"' in client.get("/concepts/4").text
        assert client.get("/api/concepts/5", params={"model": "planted"}).json()["attributions"]["features"] == []
        assert client.get("/api/concepts/4", params={"model": "same"}).json()["attributions"] is None
        assert "steer with these" not in client.get("/concepts/4", params={"model": "same"}).text



def test_the_default_radius_lists_neighbours_for_a_typical_concept(client, lens_atlas):
    """0.05 of the map, the old default, listed no neighbour for most concepts of a small map; the default is now
    the median distance to the 8th nearest concept, so a typical concept lists about eight."""
    live = [c for (c,) in query(lens_atlas, "SELECT concept FROM concepts WHERE NOT is_dead ORDER BY concept")]
    state = client.get("/api/explorer", params={"concept": live[0]}).json()["state"]
    assert 0.01 <= state["radius"] <= 0.3
    counts = [len(client.get("/api/explorer/context", params={"concept": c}).json()["neighbours"]) for c in live]
    old = [len(client.get("/api/explorer/context", params={"concept": c, "radius": 0.05}).json()["neighbours"])
           for c in live]
    assert np.median(counts) >= 6
    assert np.median(old) < np.median(counts)
    assert f'value="{state["radius"]}"' in client.get("/explorer").text  # the slider opens there


def test_the_layout_order_is_a_kd_order_of_every_concept(client, lens_atlas):
    from backend.kdindex import kd_order

    raw = client.get("/api/explorer/layout-order.bin", headers={"Accept-Encoding": "identity"})
    assert raw.headers["content-type"] == "application/octet-stream"
    order = np.frombuffer(raw.content, dtype="<u4")
    layout = np.array(query(lens_atlas, "SELECT umap_x, umap_y FROM concepts ORDER BY concept"), dtype=np.float32)
    assert sorted(order.tolist()) == list(range(len(layout)))
    assert order.tolist() == kd_order(layout[:, 0], layout[:, 1]).tolist()
    assert client.get("/api/explorer/layout-order.bin").headers["content-encoding"] == "gzip"
