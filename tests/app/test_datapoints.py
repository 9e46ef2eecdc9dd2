"""Datapoints ranked by score (memorization and divergence ends) and the page of one pair."""

from __future__ import annotations

import re

import pytest

from tests.app.charts import app_client
from tests.conftest import LENS_ITEMS as ITEMS

HX = {"HX-Request": "true"}


def items_on(html: str) -> list[str]:
    return re.findall(r'<figure class="pair datapoint" data-item="([^"]+)"', html)


@pytest.mark.parametrize("end,descending", [("memorization", False), ("divergence", True)])
def test_pairs_are_ranked_by_their_score_from_either_end(client, atlas_db, end, descending):
    data = client.get("/api/datapoints", params={"model": "planted", "end": end, "limit": 200}).json()
    stored = dict(atlas_db.execute("SELECT item_id, l2 FROM datapoints WHERE source_id = 'planted'").fetchall())
    assert data["total"] == len(stored) == len(data["rows"]) == ITEMS
    scores = [r["l2"] for r in data["rows"]]
    assert scores == sorted(scores, reverse=descending)
    assert all(stored[r["item_id"]] == pytest.approx(r["l2"]) for r in data["rows"])
    first = data["rows"][0]
    assert first["real_image"].startswith("images/real/") and first["generated_image"].startswith("images/planted/")
    assert first["caption"]


def test_page_fragment_and_json_agree_and_pages_join_up(client):
    params = {"model": "same", "end": "divergence", "limit": 5}
    data = client.get("/api/datapoints", params=params).json()
    page = client.get("/datapoints", params=params).text
    fragment = client.get("/datapoints", params=params, headers=HX).text
    ids = [r["item_id"] for r in data["rows"]]
    assert items_on(page) == items_on(fragment) == ids
    assert "<html" not in fragment and "<html" in page
    assert f'href="/pairs/{ids[0]}?model=same"' in page
    following = client.get("/api/datapoints", params={**params, "offset": 5}).json()
    both = client.get("/api/datapoints", params={**params, "limit": 10}).json()
    assert ids + [r["item_id"] for r in following["rows"]] == [r["item_id"] for r in both["rows"]]
    assert [r["rank"] for r in following["rows"]] == [6, 7, 8, 9, 10]
    assert data["links"]["next"].endswith("offset=5&limit=5") and data["links"]["previous"] is None
    assert 'hx-push-url="true"' in page and "next &rarr;" in page


def test_pair_page_shows_both_images_the_caption_and_top_concepts(client, atlas_db):
    item = client.get("/api/datapoints", params={"model": "planted", "end": "divergence", "limit": 1}).json()["rows"][0]
    pair = client.get(f"/api/pairs/{item['item_id']}", params={"model": "planted"}).json()
    assert pair["caption"] == item["caption"] and pair["score"]["l2"] == pytest.approx(item["l2"])
    assert pair["score"]["rank"] == pair["score"]["total"] == ITEMS  # the divergence end: the highest score
    real = dict(atlas_db.execute("SELECT concept, energy FROM energies WHERE image_id = ?",
                                 [f"real/{item['item_id']}"]).fetchall())
    generated = dict(atlas_db.execute("SELECT concept, energy FROM energies WHERE image_id = ?",
                                      [f"planted/{item['item_id']}"]).fetchall())
    top_real = sorted(real, key=lambda c: (-real[c], c))[:10]
    assert [c["concept"] for c in pair["real_concepts"]] == top_real
    assert [c["concept"] for c in pair["generated_concepts"]] == sorted(generated, key=lambda c: (-generated[c], c))[:10]
    for concept in pair["real_concepts"]:
        assert concept["real_energy"] == pytest.approx(real[concept["concept"]])
        assert concept["generated_energy"] == pytest.approx(generated.get(concept["concept"], 0.0))
    page = client.get(f"/pairs/{item['item_id']}", params={"model": "planted"}).text
    assert f'src="/{pair["real_image"]}"' in page and f'src="/{pair["generated_image"]}"' in page
    for concept in pair["real_concepts"]:
        assert f'href="/concepts/{concept["concept"]}?model=planted"' in page
    fragment = client.get(f"/pairs/{item['item_id']}", params={"model": "planted"}, headers=HX).text
    assert fragment.strip() in page and "<html" not in fragment


def test_pair_rank_matches_the_memorization_ranking(client):
    rows = client.get("/api/datapoints", params={"model": "same", "limit": 200}).json()["rows"]
    for row in rows[:3]:
        pair = client.get(f"/api/pairs/{row['item_id']}", params={"model": "same"}).json()
        assert pair["score"]["rank"] == row["rank"]


@pytest.mark.parametrize("path", ["/pairs/no-such-item", "/api/pairs/no-such-item", "/pairs/../atlas.duckdb"])
def test_unknown_pair_is_404(client, path):
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("path", ["/datapoints", "/api/datapoints", "/pairs/w5-000000", "/api/pairs/w5-000000"])
def test_unknown_model_is_404(client, path):
    assert client.get(path, params={"model": "no-such-model"}).status_code == 404


@pytest.mark.parametrize("params", [{"end": "middle"}, {"limit": 0}, {"limit": 201}, {"offset": -3}])
def test_bad_parameters_are_422(client, params):
    for path in ("/datapoints", "/api/datapoints"):
        assert client.get(path, params=params).status_code == 422


def test_an_atlas_without_analysis_explains_itself_and_still_shows_a_pair(world_atlas, tmp_path_factory):
    with app_client(world_atlas, tmp_path_factory) as plain:
        page = plain.get("/datapoints")
        assert page.status_code == 200 and "without the analyze stage" in page.text
        assert plain.get("/api/datapoints").json()["rows"] == []
        item = plain.get("/api/overview", params={"limit": 1}).json()["pairs"][0]
        pair = plain.get(f"/api/pairs/{item['item_id']}").json()
        assert pair["caption"] == item["caption"] and pair["score"] is None and pair["real_concepts"] == []
        html = plain.get(f"/pairs/{item['item_id']}").text
        assert f'src="/{pair["real_image"]}"' in html and f'src="/{pair["generated_image"]}"' in html


def test_the_pair_page_tells_the_models_delta_from_this_pairs_energies(client):
    item = client.get("/api/datapoints", params={"model": "planted", "limit": 1}).json()["rows"][0]
    page = client.get(f"/pairs/{item['item_id']}", params={"model": "planted"}).text
    table = page[page.index('<table class="grid concepts"'):]
    header = table[:table.index("</thead>")]
    assert "energy in this image" in header and "model-wide &delta; (all images)" in header
    assert 'class="num model-wide' in table  # the delta cells are set apart from the energies
    assert "the same on every pair" in page
