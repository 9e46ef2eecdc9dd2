"""End to end over an atlas built with the internal stage: the internal endpoints and pages, steering from the atlas's
own layout (API and panel), and `blindspot eval steer`."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from app.cli import cli
from app.main import create_app
from app.settings import Settings
from backend.atlas import Atlas
from backend.steering import SteeringBusy
from tests.conftest import one_torch_thread

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(internal_atlas):
    with one_torch_thread(), TestClient(create_app(Settings(atlas=internal_atlas))) as test_client:
        yield test_client


def test_internal_endpoints_answer_from_the_tables(client):
    ranking = client.get("/api/internal/world-model/minority", params={"limit": 5}).json()
    assert 1 <= len(ranking["features"]) <= 5
    feature = ranking["features"][0]["feature"]
    card = client.get(f"/api/internal/world-model/features/{feature}").json()
    assert card["feature"] == feature and card["exemplars"]
    assert client.get(card["exemplars"][0]["image"]).status_code == 200
    concept = card["attributed_concepts"][0]["concept"] if card["attributed_concepts"] else 0
    features = client.get(f"/api/concepts/{concept}/features", params={"generator": "world-model"}).json()
    assert features["concept"] == concept and "probe" in features
    assert client.get("/api/internal/world-model/features/99999").status_code == 404
    assert client.get("/api/internal/nope/minority").status_code == 404
    assert client.get("/api/concepts/99999/features").status_code == 404
    assert client.get("/api/internal/world-model/minority", params={"limit": 0}).status_code == 422


def test_steering_an_attributed_feature_of_the_built_atlas(client):
    ranking = client.get("/api/internal/world-model/minority", params={"limit": 1}).json()
    feature = ranking["features"][0]["feature"]
    caption = client.get("/api/overview", params={"limit": 1}).json()["pairs"][0]["caption"]
    answer = client.post("/api/steer", json={"prompt": caption, "features": [{"feature": feature, "strength": 30.0}],
                                             "mode": "add", "concepts": [0, 1]})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["request"]["steps"] == 4 and result["request"]["width"] == 32
    assert client.get(result["steered"]["url"]).content.startswith(b"\x89PNG")


def test_eval_steer_reports_attributed_against_random_features(internal_atlas):
    with one_torch_thread():
        run = CliRunner().invoke(cli, ["eval", "steer", str(internal_atlas), "--concepts", "2", "--features", "2",
                                       "--prompts", "2", "--seeds", "0,1", "--json"])
    assert run.exit_code == 0, run.output
    report = json.loads(run.output[run.output.index("{"):])
    atlas = Atlas(internal_atlas)
    try:
        suppressed = {r["concept"] for r in atlas.rows(
            "SELECT concept FROM concept_stats WHERE source_id = 'world-model' AND suppressed")}
        for row in report["concepts"]:
            assert row["concept"] in suppressed
            top = atlas.rows("SELECT feature FROM attributions WHERE source_id = 'world-model' AND concept = ? "
                             "ORDER BY rank LIMIT 2", [row["concept"]])
            assert row["attributed"]["features"] == [r["feature"] for r in top]
            assert not set(row["control"]["features"]) & set(row["attributed"]["features"])
            assert row["attributed"]["trials"] == row["control"]["trials"] == row["prompts"] * 2
            assert 0.0 <= row["attributed"]["raised"] <= 1.0
    finally:
        atlas.close()
    trials = sum(r["attributed"]["trials"] for r in report["concepts"])
    assert report["overall"]["attributed"]["trials"] == trials > 0


def test_minority_page_lists_the_kept_features_in_rank_order_and_pages(client):
    ranking = client.get("/api/internal/world-model/minority", params={"limit": 500}).json()
    page = client.get("/internal", params={"limit": 3})
    assert page.status_code == 200
    shown = [int(f) for f in re.findall(r'<tr data-feature="(\d+)">', page.text)]
    assert shown == [f["feature"] for f in ranking["features"][:3]]
    assert f'href="/internal/world-model/features/{shown[0]}"' in page.text
    if ranking["kept"] > 3:
        assert "offset=3" in page.text  # the next page
        second = client.get("/internal", params={"limit": 3, "offset": 3}, headers={"HX-Request": "true"})
        assert second.text.lstrip().startswith('<div id="internal"')  # the fragment only
        assert [int(f) for f in re.findall(r'<tr data-feature="(\d+)">', second.text)] == \
            [f["feature"] for f in ranking["features"][3:6]]


def test_feature_card_page_shows_exemplars_with_their_spatial_maps(client):
    feature = client.get("/api/internal/world-model/minority", params={"limit": 1}).json()["features"][0]["feature"]
    card = client.get(f"/api/internal/world-model/features/{feature}").json()
    page = client.get(f"/internal/world-model/features/{feature}")
    assert page.status_code == 200 and f"Feature {feature}" in page.text
    maps = re.findall(r'<img class="heat" src="([^"]+)"', page.text)
    assert len(maps) == sum(1 for e in card["exemplars"] if e["heatmap"])
    png = client.get(maps[0])
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert f'/steer?generator=world-model&amp;features={feature}' in page.text
    assert client.get("/internal/world-model/features/99999").status_code == 404
    assert client.get(f"/api/internal/world-model/features/{feature}/heatmaps/nope.png").status_code == 404


def test_internal_page_of_an_atlas_without_the_lens_says_how_to_get_one(world_atlas):
    with TestClient(create_app(Settings(atlas=world_atlas))) as plain:
        page = plain.get("/internal")
        panel = plain.get("/steer")
    assert page.status_code == 200 and "[[internal]]" in page.text
    assert panel.status_code == 200 and "cannot steer" in panel.text


def test_steer_panel_fills_the_prompt_from_the_concept_and_runs_from_its_url(client):
    feature = client.get("/api/internal/world-model/minority", params={"limit": 1}).json()["features"][0]["feature"]
    panel = client.get("/steer", params={"generator": "world-model", "features": f"{feature}:30", "concept": "0"})
    assert panel.status_code == 200
    prompt = re.search(r'name="prompt" value="([^"]*)"', panel.text).group(1)
    assert prompt  # the caption of the real image that shows concept 0 most
    result_url = re.search(r'hx-get="(/steer/result\?[^"]+)" hx-trigger="load"', panel.text).group(1)
    result = client.get(result_url.replace("&amp;", "&"), headers={"HX-Request": "true"})
    assert result.status_code == 200, result.text
    images = re.findall(r'<figure class="steer-image" data-side="(\w+)">\s*<img src="([^"]+)"', result.text)
    assert [side for side, _ in images] == ["baseline", "steered"]
    assert all(client.get(url).content.startswith(b"\x89PNG") for _, url in images)
    assert re.search(r'<table class="grid effect effect">.*?<tr data-concept="0">', result.text, re.S)


@pytest.mark.parametrize("params, status, message", [
    ({"prompt": "a red circle", "features": "1:abc"}, 422, "id:strength"),
    ({"prompt": "a red circle", "features": "999999:1"}, 422, "feature must be an integer"),
    ({"prompt": "a red circle", "features": "1:5", "start": "1"}, 422, "give both"),
    ({"prompt": "a red circle", "features": "1:5", "generator": "planted"}, 404, "no internal lens"),
])
def test_steer_panel_names_what_is_wrong(client, params, status, message):
    answer = client.get("/steer/result", params=params, headers={"HX-Request": "true"})
    assert answer.status_code == status and message in answer.text
    assert 'class="notice error"' in answer.text


def test_steer_panel_shows_a_full_queue_and_retries(client, monkeypatch):
    service = client.app.state.steering["world-model"]

    def busy(request):
        raise SteeringBusy(7)

    monkeypatch.setattr(service, "submit", busy)
    answer = client.get("/steer/result", params={"prompt": "a green star", "features": "2:3", "seed": 987})
    assert answer.status_code == 429
    assert "queue is full" in answer.text and 'hx-trigger="load delay:7s"' in answer.text


def test_internal_pages_show_top_images_and_every_header_names_the_run(client, internal_atlas):
    atlas = Atlas(internal_atlas)
    try:
        run = atlas.info()["run_name"]
    finally:
        atlas.close()
    ranking = client.get("/api/internal/world-model/minority", params={"limit": 3}).json()
    page = client.get("/internal", params={"limit": 3}).text
    for feature in ranking["features"]:
        assert 1 <= len(feature["thumbnails"]) <= 3
        for path in feature["thumbnails"]:
            assert f'src="/{path}"' in page and client.get(f"/{path}").status_code == 200
    feature = ranking["features"][0]["feature"]
    for url in ("/internal", f"/internal/world-model/features/{feature}", "/steer", "/", "/explorer"):
        assert f'<span class="run">{run}</span>' in client.get(url).text, url


def test_the_features_of_a_concept_carry_the_users_label(client):
    concept = 0
    client.post(f"/api/concepts/{concept}/label", data={"label": "named by me"})
    try:
        answer = client.get(f"/api/concepts/{concept}/features", params={"generator": "world-model"}).json()
        assert answer["label"] == "named by me"
    finally:
        client.delete(f"/api/concepts/{concept}/label")
