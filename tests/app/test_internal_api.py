"""End to end over an atlas built with the internal stage: the internal endpoints, steering from the atlas's own
layout, and `blindspot eval steer`."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient

from app.cli import cli
from app.main import create_app
from app.settings import Settings
from backend.atlas import Atlas

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(internal_atlas):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with TestClient(create_app(Settings(atlas=internal_atlas))) as test_client:
        yield test_client
    torch.set_num_threads(threads)


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
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = CliRunner().invoke(cli, ["eval", "steer", str(internal_atlas), "--concepts", "2", "--features", "2",
                                       "--prompts", "2", "--seeds", "0,1", "--json"])
    finally:
        torch.set_num_threads(threads)
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
