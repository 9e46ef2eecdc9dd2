"""End to end over an atlas built with the internal stage: the internal endpoints and pages, steering from the atlas's
own layout (API and panel), and `blindspot eval steer`."""

from __future__ import annotations

import json
import re
import time

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from app.cli import cli
from app.main import create_app
from app.settings import Settings
from backend.atlas import Atlas
from backend.steering.service import SteeringBusy
from tests.conftest import one_torch_thread

pytestmark = pytest.mark.slow

LIMIT_S = 4.0  # the time limit of one steer in the timeout test: far above a 4-step steer of the tiny world model


@pytest.fixture(scope="module")
def client(internal_atlas):
    with one_torch_thread(), TestClient(create_app(Settings(atlas=internal_atlas)), base_url="http://127.0.0.1") as test_client:
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
    answer = client.post("/api/steer", json={"prompt": caption, "features": [{"feature": feature, "strength": 6.0}],
                                             "mode": "add", "concepts": [0, 1]})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["request"]["steps"] == 4 and result["request"]["width"] == 32
    assert client.get(result["steered"]["url"]).content.startswith(b"\x89PNG")


MAX_DELTA = 0.5


def eval_steer(atlas, *options):
    """``blindspot eval steer ATLAS --json`` on two concepts with small settings; (exit code, parsed report).

    The fixture has 40 pairs of a 4-step model: few of its flags survive the significance test, so the
    concepts are taken by delta (``--max-delta``)."""
    with one_torch_thread():
        run = CliRunner().invoke(cli, ["eval", "steer", str(atlas), "--concepts", "2", "--features", "2",
                                       "--prompts", "2", "--seeds", "0,1", "--min-auroc", "0", "--max-delta",
                                       str(MAX_DELTA), "--json", *options])
    return run.exit_code, json.loads(run.stdout[run.stdout.index("{"):])


def test_eval_steer_reports_attributed_against_random_features(internal_atlas):
    code, report = eval_steer(internal_atlas, "--strength", "2", "--doses", "4")
    assert code == 0, report
    atlas = Atlas(internal_atlas)
    try:
        suppressed = {r["concept"] for r in atlas.rows(
            "SELECT concept FROM concept_stats WHERE source_id = 'world-model' AND delta < ?", [MAX_DELTA])}
        assert report["concepts"]
        for row in report["concepts"]:
            assert row["concept"] in suppressed
            top = atlas.rows("SELECT feature FROM attributions WHERE source_id = 'world-model' AND concept = ? "
                             "AND score > 0 ORDER BY rank LIMIT 2", [row["concept"]])
            assert row["attributed"]["features"] == [r["feature"] for r in top]
            assert not set(row["control"]["features"]) & set(row["attributed"]["features"])
            assert row["attributed"]["trials"] == row["control"]["trials"] == row["prompts"] * 2
            assert 0.0 <= row["attributed"]["raised"] <= 1.0
            assert [d["strength"] for d in row["dose_response"]] == [2.0, 4.0]
    finally:
        atlas.close()
    trials = sum(r["attributed"]["trials"] for r in report["concepts"])
    overall = report["overall"]
    assert overall["attributed"]["trials"] == trials > 0 and overall["control"]["trials"] == trials
    assert {"raised", "mean_change", "trials", "specificity"} <= set(overall["attributed"]) & set(overall["control"])
    assert overall["attributed"]["others_mean_abs_change"] > 0  # steering moves the images
    steers = report["steers"]
    assert steers == {"planned": 4 * trials, "done": 4 * trials, "failed": 0} and report["failures"] == []


def test_eval_steer_lists_a_steer_past_its_time_limit_and_goes_on(internal_atlas, monkeypatch):
    from backend.steering.evaluation import SteerEvalSettings, SteerEvaluation
    from backend.steering.service import SteeringService

    settings = SteerEvalSettings(concepts=2, features=2, prompts=2, min_auroc=0.0, strength=1.5, doses=(0.5,),
                                 max_delta=MAX_DELTA)
    control = SteerEvaluation.plan(internal_atlas, "world-model", settings).plans[0].features["control"]
    original, slowed = SteeringService._steering, []

    def slow_for_one(self, request, models):
        # the first concept's control arm on seed 1, once: it sleeps past the limit before its first denoising step
        if request.seed == 1 and list(request.features) == control and not slowed:
            slowed.append(request)
            time.sleep(LIMIT_S + 0.5)
        return original(self, request, models)

    monkeypatch.setattr(SteeringService, "_steering", slow_for_one)
    code, report = eval_steer(internal_atlas, "--timeout", str(LIMIT_S), "--strength", "1.5", "--doses", "0.5")
    assert code == 0, report  # something was measured: the run went on
    assert slowed, "the control steer of seed 1 was never made"
    steers = report["steers"]
    assert steers["failed"] == 1 and steers["done"] == steers["planned"] - 1 > 0
    failure = report["failures"][0]
    assert (failure["concept"], failure["arm"], failure["seed"], failure["prompt"], failure["features"]) == \
        (report["concepts"][0]["concept"], "control", 1, slowed[0].prompt, control)
    assert "time limit" in failure["reason"] and failure["strength"] in (0.5, 1.5)
    assert sum(d[arm]["trials"] + d[arm]["failed"] for d in report["dose_response"]
               for arm in ("attributed", "control")) == steers["planned"]


def test_eval_steer_exits_non_zero_with_valid_json_when_nothing_is_measured(internal_atlas):
    code, report = eval_steer(internal_atlas, "--timeout", "0.000001", "--strength", "3", "--doses", "3")
    assert code == 1
    assert report["steers"]["done"] == 0 and report["steers"]["failed"] == report["steers"]["planned"] > 0
    assert report["overall"]["attributed"] == {**report["overall"]["attributed"], "trials": 0, "raised": None,
                                               "mean_change": None}
    code, report = eval_steer(internal_atlas, "--max-delta", "0.0000001")  # no concept qualifies
    assert code == 1 and report["error"] and report["steers"] == {"planned": 0, "done": 0, "failed": 0}
    assert set(report["overall"]) >= {"attributed", "control"}


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
    with TestClient(create_app(Settings(atlas=world_atlas)), base_url="http://127.0.0.1") as plain:
        page = plain.get("/internal")
        panel = plain.get("/steer")
    assert page.status_code == 200 and "[[internal]]" in page.text
    assert panel.status_code == 200 and "cannot steer" in panel.text


def test_steer_panel_fills_the_prompt_from_the_concept_and_runs_from_its_url(client):
    feature = client.get("/api/internal/world-model/minority", params={"limit": 1}).json()["features"][0]["feature"]
    panel = client.get("/steer", params={"generator": "world-model", "features": f"{feature}:6", "concept": "0"})
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


def proposed_concept(client):
    """A concept of the internal atlas with a fitted probe and attributed features (the best probe)."""
    atlas = client.app.state.atlas
    return atlas.rows("""SELECT p.concept, p.auroc FROM attribution_probes p WHERE p.source_id = 'world-model'
                         AND p.auroc IS NOT NULL AND EXISTS (SELECT 1 FROM attributions a WHERE a.concept = p.concept
                         AND a.source_id = p.source_id AND a.score > 0) ORDER BY p.auroc DESC LIMIT 1""")[0]


def wait_for_sweep(client, params, timeout_s=180):
    started = time.monotonic()
    while True:
        answer = client.get("/api/steer/sweep", params=params)
        assert answer.status_code in (200, 202), answer.text
        if answer.status_code == 200 or time.monotonic() - started > timeout_s:
            return answer
        assert answer.json()["status"] == "running"
        time.sleep(0.3)


def test_a_sweep_measures_the_dose_response_beside_random_features(client):
    concept = proposed_concept(client)["concept"]
    feature = client.get(f"/api/concepts/{concept}/features", params={"generator": "world-model"}).json()
    feature = next(f["feature"] for f in feature["features"] if f["score"] > 0)
    params = {"generator": "world-model", "prompt": "a small red circle on grass", "features": f"{feature}:2",
              "mode": "add", "concept": str(concept), "seed": "3"}
    first = client.get("/api/steer/sweep", params=params)
    assert first.status_code in (200, 202) and first.json()["steers"]["planned"] == 12  # 3 strengths x 2 seeds x 2
    done = wait_for_sweep(client, params)
    assert done.status_code == 200, done.text
    sweep = done.json()
    assert sweep["status"] == "done" and sweep["steers"] == {"planned": 12, "done": 12, "failed": 0}
    assert sweep["features"]["attributed"] == [feature] and len(sweep["features"]["control"]) == 1
    assert feature not in sweep["features"]["control"] and sweep["seeds"] == [3, 4]
    assert [d["strength"] for d in sweep["dose_response"]] == [0.5, 1.0, 2.0]
    for dose in sweep["dose_response"]:
        for arm in ("attributed", "control"):
            assert dose[arm]["trials"] == 2 and dose[arm]["mean_energy"] >= 0
    again = client.get("/api/steer/sweep", params=params)  # the same sweep, found again
    assert again.status_code == 200 and again.json()["key"] == sweep["key"]
    page = client.get("/steer/sweep", params=params, headers={"HX-Request": "true"})
    assert page.status_code == 200 and 'data-status="done"' in page.text
    assert 'class="line" data-series="proposed features"' in page.text
    assert 'class="line" data-series="random features"' in page.text
    assert len(re.findall(r'<tr data-strength="[^"]+" data-arm="(attributed|control)">', page.text)) == 6


def test_a_sweep_in_progress_polls_itself_and_a_slow_steer_fails_without_a_503(client, monkeypatch):
    from backend.steering.inputs import SteeringLimits

    service = client.app.state.steering["world-model"]
    monkeypatch.setattr(service, "limits", SteeringLimits(timeout_s=LIMIT_S))
    original, slowed = service._steering, []

    def slow_once(request, models):
        if not slowed:
            slowed.append(request)
            time.sleep(LIMIT_S + 0.5)
        return original(request, models)

    monkeypatch.setattr(service, "_steering", slow_once)
    concept = proposed_concept(client)["concept"]
    params = {"generator": "world-model", "prompt": "two blue squares on wood", "features": "1:1.5",
              "mode": "add", "concept": str(concept), "seed": "11"}
    running = client.get("/steer/sweep", params=params, headers={"HX-Request": "true"})
    assert running.status_code == 202 and 'data-status="running"' in running.text
    assert 'hx-trigger="load delay:1s"' in running.text and "<progress" in running.text
    done = wait_for_sweep(client, params)
    assert done.status_code == 200
    sweep = done.json()
    assert sweep["steers"]["failed"] == 1 and sweep["steers"]["done"] == 11
    assert "time limit" in sweep["failures"][0]["reason"]
    page = client.get("/steer/sweep", params=params, headers={"HX-Request": "true"})
    assert page.status_code == 200 and "time limit" in page.text


@pytest.mark.parametrize("params, message", [
    ({"prompt": "a red circle", "features": "1:2"}, "name the concept to measure"),
    ({"prompt": "a red circle", "features": "999999:2", "concept": "0"}, "feature must be an integer"),
    ({"prompt": "a red circle", "features": "1:2", "concept": "99999"}, "concept must be an integer"),
])
def test_a_bad_sweep_is_refused_with_the_reason(client, params, message):
    answer = client.get("/api/steer/sweep", params={"generator": "world-model", **params})
    assert answer.status_code == 422 and message in answer.json()["detail"]
    page = client.get("/steer/sweep", params={"generator": "world-model", **params}, headers={"HX-Request": "true"})
    assert page.status_code == 422 and message in page.text and 'class="notice error"' in page.text


def test_the_panel_proposes_a_concepts_features_or_says_why_not(client, monkeypatch):
    import backend.steering.page

    concept = proposed_concept(client)
    panel = client.get("/steer", params={"generator": "world-model", "concept": str(concept["concept"]),
                                         "sweep": "true"})
    assert panel.status_code == 200
    features = re.search(r'name="features" value="([^"]*)"', panel.text).group(1)
    proposal = client.get(f"/api/concepts/{concept['concept']}/features", params={"generator": "world-model"}).json()
    expected = [f["feature"] for f in proposal["features"] if f["score"] > 0][:3]
    assert [int(p.split(":")[0]) for p in features.split(",")] == expected
    assert re.search(r'id="steer-sweep".*?hx-get="/steer/sweep\?', panel.text, re.S)
    # the same concept under a floor above its probe's AUROC: nothing is proposed, and the panel says why
    original = backend.steering.page.steer_proposal
    monkeypatch.setattr(backend.steering.page, "steer_proposal",
                        lambda atlas, generator, c: original(atlas, generator, c, floor=concept["auroc"] + 0.01))
    refused = client.get("/steer", params={"generator": "world-model", "concept": str(concept["concept"])})
    assert "No features proposed" in refused.text and "below the floor" in refused.text
    assert 'hx-trigger="load"' not in refused.text  # no steer runs, no empty result is shown as an effect

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
