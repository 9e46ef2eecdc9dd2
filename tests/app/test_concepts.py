"""Concept cards: page, fragment and JSON; the paper's 2x2, histogram, heatmaps, decoder neighbours and user labels."""

from __future__ import annotations

import io
import json
import math
import shutil

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from backend.labels import LabelError, LabelStore
from precompute.sae import load_sae
from tests.app.charts import app_client, query

HX = {"HX-Request": "true"}


@pytest.fixture(scope="module")
def live(lens_atlas) -> int:
    """A concept that fires on real and on 'planted' images (so every part of its card has data)."""
    return query(lens_atlas, """SELECT concept FROM concept_stats JOIN concepts USING (concept)
                                WHERE source_id = 'planted' AND NOT is_dead AND nu_real > 0.2 AND nu_gen > 0.2
                                ORDER BY concept LIMIT 1""")[0][0]


def test_card_statistics_are_the_atlas_rows_for_the_selected_model(client, lens_atlas, live):
    card = client.get(f"/api/concepts/{live}", params={"model": "same"}).json()
    stats = dict(zip(("delta", "ci_low", "ci_high", "relative_delta", "nu_real", "nu_gen", "significant"), query(
        lens_atlas, "SELECT delta, ci_low, ci_high, relative_delta, nu_real, nu_gen, significant FROM concept_stats "
                    "WHERE source_id = 'same' AND concept = ?", [live])[0]))
    assert card["concept"] == live and card["model"] == "same"
    assert {k: card["stats"][k] for k in stats} == stats
    assert [d["source_id"] for d in card["deltas"]] == ["planted", "same"]
    assert card["label"] == card["automatic_label"] == query(lens_atlas, "SELECT label FROM concepts WHERE concept = ?",
                                                             [live])[0][0]
    assert math.isclose(card["histogram"]["fires"]["real"], stats["nu_real"], rel_tol=1e-6)
    assert math.isclose(card["histogram"]["fires"]["generated"], stats["nu_gen"], rel_tol=1e-6)
    assert math.isclose(sum(card["histogram"]["real"]), stats["nu_real"], rel_tol=1e-6)  # bins hold every firing image
    # one axis for both sides, from 0 to the concept's largest energy anywhere; shares of all images per bin
    edges = np.array(card["histogram"]["edges"])
    n_images = dict(query(lens_atlas, "SELECT source_id, n_images FROM sources"))
    for side, source in (("real", "real"), ("generated", "same")):
        energies = [e for (e,) in query(lens_atlas, "SELECT energy FROM energies WHERE concept = ? AND source_id = ?",
                                        [live, source])]
        np.testing.assert_allclose(card["histogram"][side], np.histogram(energies, bins=edges)[0] / n_images[source],
                                   atol=1e-9)
    top = query(lens_atlas, "SELECT max(energy) FROM energies WHERE concept = ?", [live])[0][0]
    assert edges[0] == 0 and math.isclose(edges[-1], top, rel_tol=1e-6)


def test_a_world_atlas_card_shows_the_world_concept_it_detects_and_that_auroc(client, lens_atlas):
    concept, world, auroc = query(lens_atlas, """SELECT concept, world_concept, world_auroc FROM concepts
                                                 WHERE world_concept IS NOT NULL ORDER BY world_auroc DESC LIMIT 1""")[0]
    html = client.get(f"/concepts/{concept}", params={"model": "planted"}).text
    assert f"world: {world} · AUROC {auroc:.2f}" in html


def test_the_papers_2x2_pairs_each_sides_best_image_with_its_counterpart(client, lens_atlas, live):
    quad = client.get(f"/api/concepts/{live}", params={"model": "planted"}).json()["quad"]
    best = dict(query(lens_atlas, "SELECT source_id, item_id FROM exemplars WHERE concept = ? AND rank = 0", [live]))
    (real_x, its_gen), (gen_x, its_real) = quad["real_best"], quad["generated_best"]
    assert (real_x["source_id"], real_x["item_id"]) == ("real", best["real"])
    assert (its_gen["source_id"], its_gen["item_id"]) == ("planted", best["real"])
    assert (gen_x["source_id"], gen_x["item_id"]) == ("planted", best["planted"])
    assert (its_real["source_id"], its_real["item_id"]) == ("real", best["planted"])
    energies = dict(query(lens_atlas, "SELECT image_id, energy FROM energies WHERE concept = ?", [live]))
    for image in (real_x, its_gen, gen_x, its_real):
        assert math.isclose(image["energy"], energies.get(f"{image['source_id']}/{image['item_id']}", 0.0),
                            rel_tol=1e-6)
        assert image["heatmap"] is not None and client.get(image["url"]).status_code == 200
    assert real_x["energy"] > 0 and gen_x["energy"] > 0


def test_heatmap_png_is_the_stored_token_map_as_alpha(client, lens_atlas, live):
    item, rows, cols, blob = query(lens_atlas, "SELECT item_id, grid_rows, grid_cols, heatmap FROM heatmaps "
                                               "WHERE source_id = 'real' AND concept = ? LIMIT 1", [live])[0]
    response = client.get(f"/api/heatmaps/real/{live}/{item}.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.mode == "RGBA" and image.size == (cols, rows)
    np.testing.assert_array_equal(np.asarray(image)[..., 3], np.frombuffer(blob, dtype=np.uint8).reshape(rows, cols))
    assert client.get(f"/api/heatmaps/real/{live}/no-such-item.png").status_code == 404
    assert client.get(f"/api/heatmaps/nowhere/{live}/{item}.png").status_code == 404


def test_nearest_concepts_are_ranked_by_decoder_cosine(client, lens_atlas, live):
    nearest = client.get(f"/api/concepts/{live}").json()["nearest"]
    with torch.no_grad():
        atoms = load_sae(lens_atlas / "models" / "output-sae").eval().dictionary.double().numpy()
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    cosine = atoms @ atoms[live]
    cosine[live] = -np.inf
    assert [c["concept"] for c in nearest["concepts"]] == [int(i) for i in np.argsort(-cosine, kind="stable")[:10]]
    np.testing.assert_allclose([c["cosine"] for c in nearest["concepts"]], np.sort(cosine)[::-1][:10], rtol=1e-5)


def test_the_card_needs_no_model_files(client, lens_atlas, tmp_path_factory, live):
    """Neighbours are ranked at build time: an atlas copied without its models folder shows the same card."""
    copy = tmp_path_factory.mktemp("no-sae") / "atlas"
    shutil.copytree(lens_atlas, copy, ignore=shutil.ignore_patterns("models"))
    with app_client(copy, tmp_path_factory) as bare:
        assert bare.get(f"/api/concepts/{live}").json()["nearest"] == client.get(f"/api/concepts/{live}").json()["nearest"]


def test_fragment_for_htmx_full_page_otherwise(client, live):
    page = client.get(f"/concepts/{live}", params={"model": "planted"})
    fragment = client.get(f"/concepts/{live}", params={"model": "planted"}, headers=HX)
    assert page.status_code == fragment.status_code == 200
    assert page.text.lstrip().lower().startswith("<!doctype html>") and 'class="views"' in page.text
    assert "<html" not in fragment.text
    assert 'id="concept-card"' in fragment.text and 'id="concept-card"' in page.text
    for part in ('class="quad"', 'class="chart chart-histogram"', 'class="deltas"', "Co-occurs in real images",
                 "Nearest concepts by decoder cosine", "data-heat-opacity", 'hx-post="/api/concepts/'):
        assert part in fragment.text, part
    assert "Internal features" not in fragment.text  # this atlas has no internal lens


@pytest.mark.parametrize("path", ["/concepts/48", "/api/concepts/48", "/api/concepts/999/brief",
                                  "/api/heatmaps/real/48/x.png"])
def test_unknown_concepts_are_404(client, path):
    response = client.get(path)
    assert response.status_code == 404 and "no concept" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/concepts/-1", "/api/concepts/abc", "/concepts/1?model=" + "m" * 201])
def test_malformed_requests_are_422(client, path):
    assert client.get(path).status_code == 422


def test_unknown_model_is_404(client):
    assert client.get("/api/concepts/1", params={"model": "nope"}).status_code == 404


# -- user labels ---------------------------------------------------------------------------------------------------

def test_labels_persist_across_app_instances_and_win_everywhere(lens_atlas, tmp_path, live):
    labels = tmp_path / "labels.json"
    settings = Settings(atlas=lens_atlas, labels=labels)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        saved = client.post(f"/api/concepts/{live}/label", data={"label": "  my   favourite  concept "})
        assert saved.status_code == 200 and saved.json()["label"] == "my favourite concept"
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:  # a restart
        card = client.get(f"/api/concepts/{live}").json()
        assert card["label"] == card["user_label"] == "my favourite concept"
        assert client.get(f"/api/concepts/{live}/brief").json()["label"] == "my favourite concept"
        assert [r["concept"] for r in client.get("/api/explorer/search", params={"q": "FAVOURITE"}).json()] == [live]
        assert "my favourite concept" in client.get("/explorer", params={"concept": live}).text
        restored = client.delete(f"/api/concepts/{live}/label").json()
        assert restored["user_label"] is None and restored["label"] == card["automatic_label"]
        assert client.get(f"/api/concepts/{live}").json()["label"] == card["automatic_label"]
    assert json.loads(labels.read_text())["lenses"] and not list(tmp_path.glob("*.tmp"))


def test_labels_survive_a_rebuild_of_the_same_lens_but_not_a_new_lens(lens_atlas, tmp_path, live):
    labels = tmp_path / "labels.json"
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(lens_atlas, rebuilt)  # same output-lens SAE, new atlas folder
    with TestClient(create_app(Settings(atlas=lens_atlas, labels=labels)), base_url="http://127.0.0.1") as client:
        client.post(f"/api/concepts/{live}/label", data={"label": "kept"})
    with TestClient(create_app(Settings(atlas=rebuilt, labels=labels)), base_url="http://127.0.0.1") as client:
        assert client.get(f"/api/concepts/{live}").json()["user_label"] == "kept"
    sae = load_sae(rebuilt / "models" / "output-sae")
    with torch.no_grad():
        sae.b_enc.add_(0.5)  # another SAE: its concept ids mean other things
    sae.save_pretrained(rebuilt / "models" / "output-sae")
    with TestClient(create_app(Settings(atlas=rebuilt, labels=labels)), base_url="http://127.0.0.1") as client:
        assert client.get(f"/api/concepts/{live}").json()["user_label"] is None


def test_a_label_of_200_wide_characters_is_accepted_in_both_encodings(lens_atlas, tmp_path, live):
    label = "\U0001F600" * 200  # 4 UTF-8 bytes, 12 when percent-encoded or as a JSON surrogate pair
    settings = Settings(atlas=lens_atlas, labels=tmp_path / "labels.json")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        assert client.post(f"/api/concepts/{live}/label", data={"label": label}).json()["label"] == label
        assert client.post(f"/api/concepts/{live}/label", json={"label": label[:60]}).json()["label"] == label[:60]


def test_labels_are_escaped_in_html(lens_atlas, tmp_path, live):
    attack = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    settings = Settings(atlas=lens_atlas, labels=tmp_path / "labels.json")
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        fragment = client.post(f"/api/concepts/{live}/label", data={"label": attack}, headers=HX)
        assert fragment.status_code == 200 and 'id="label-block"' in fragment.text and "saved" in fragment.text
        for html in (fragment.text, client.get(f"/concepts/{live}").text,
                     client.get("/explorer/search", params={"q": "script"}).text,
                     client.get("/explorer", params={"concept": live}).text):
            assert "<script>alert" not in html and "<img src=x" not in html
            assert "&lt;script&gt;alert(" in html
        # in the lists of other cards too: a neighbour by decoder cosine and a co-occurrence partner
        card = client.get(f"/api/concepts/{live}").json()
        for other in {card["nearest"]["concepts"][0]["concept"], card["cooccurring"]["real"][0]["concept"]}:
            assert client.post(f"/api/concepts/{other}/label", data={"label": attack}).status_code == 200
        html = client.get(f"/concepts/{live}", headers=HX).text
        assert "<script>alert" not in html and "<img src=x" not in html
        assert html.count("&lt;script&gt;alert(") >= 3  # its own label, and the lists


@pytest.mark.parametrize("body, kind", [
    ({"label": "x" * 201}, "form"), ({"label": " \t "}, "form"), ({"label": ""}, "json"),
    ({"label": "bell\x07"}, "json"), ({"label": "nul\x00"}, "json"),
    ({"name": "no label field"}, "form"), ({"label": 5}, "json"), ("not json", "raw-json"),
    ("label=%FF%FE", "raw-form"),  # percent-encoded bytes that are not UTF-8
])
def test_bad_labels_are_422_with_the_reason(client, live, body, kind):
    if kind == "form":
        response = client.post(f"/api/concepts/{live}/label", data=body)
    elif kind == "json":
        response = client.post(f"/api/concepts/{live}/label", json=body)
    else:
        kind = "application/json" if kind == "raw-json" else "application/x-www-form-urlencoded"
        response = client.post(f"/api/concepts/{live}/label", content=body, headers={"content-type": kind})
    assert response.status_code == 422 and response.json()["detail"]
    assert client.get(f"/api/concepts/{live}").json()["user_label"] is None


@pytest.mark.parametrize("bad, reason", [("y" * 201, "at most 200 characters, got 201"), ("   ", "must not be empty")])
def test_a_refused_label_keeps_the_old_one(lens_atlas, tmp_path, live, bad, reason):
    with TestClient(create_app(Settings(atlas=lens_atlas, labels=tmp_path / "labels.json")),
                    base_url="http://127.0.0.1") as client:
        assert client.post(f"/api/concepts/{live}/label", data={"label": "the old label"}).status_code == 200
        refused = client.post(f"/api/concepts/{live}/label", data={"label": bad}, headers=HX)
        assert refused.status_code == 422 and reason in refused.json()["detail"]
        assert client.get(f"/api/concepts/{live}").json()["label"] == "the old label"
        assert client.get(f"/api/concepts/{live}/brief").json()["label"] == "the old label"
    assert "the old label" in (tmp_path / "labels.json").read_text()


def test_labels_of_unknown_concepts_are_404(client):
    assert client.post("/api/concepts/48/label", data={"label": "x"}).status_code == 404


def test_a_corrupt_label_store_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text("{not json")
    with pytest.raises(LabelError, match="cannot read the label store"):
        LabelStore(path, "lens")
    path.write_text(json.dumps({"format": 99, "lenses": {}}))
    with pytest.raises(LabelError, match="not a label store"):
        LabelStore(path, "lens")


# -- labels with evidence, activation examples, the delta strip ------------------------------------------------------

def test_the_card_carries_its_labels_evidence(client, lens_atlas, live):
    card = client.get(f"/api/concepts/{live}").json()
    label, source, auroc, words, caption_auroc = query(lens_atlas, """SELECT label, label_source, label_auroc,
        caption_words, caption_auroc FROM concepts WHERE concept = ?""", [live])[0]
    assert (card["label"], card["label_source"], card["caption_words"]) == (label, source, words)
    assert card["label_auroc"] == pytest.approx(auroc) and card["caption_auroc"] == pytest.approx(caption_auroc)
    html = client.get(f"/concepts/{live}", headers=HX).text
    assert f"label AUROC {auroc:.2f}" in html and f"held-out AUROC {caption_auroc:.2f}" in html
    # every concept with words or a world concept has a scored label; the scores are AUROCs
    scores = query(lens_atlas, "SELECT label_source, label_auroc FROM concepts WHERE NOT is_dead")
    assert all(0.0 <= a <= 1.0 for s, a in scores if a is not None)
    assert {s for s, _ in scores} <= {"caption", "world", "vlm", "id"}


def test_activation_examples_show_captions_and_energies_and_load_lower_bands(client, lens_atlas, live):
    top = client.get(f"/concepts/{live}", params={"model": "planted"}, headers=HX).text
    for side in ("real", "generated"):
        assert f'hx-get="/concepts/{live}/examples?model=planted&amp;side={side}&amp;band=0"' in top
    card = client.get(f"/api/concepts/{live}", params={"model": "planted"}).json()
    for image in card["exemplars"]["real"]:  # the top images, caption and energy written under each
        assert f'<span class="value">energy {image["energy"]:.3g}</span>' in top
    energies = dict(query(lens_atlas, "SELECT replace(image_id, 'planted/', ''), energy FROM energies "
                                      "WHERE source_id = 'planted' "
                                      "AND concept = ? AND energy > 0", [live]))
    ranked = sorted(energies, key=lambda item: (-energies[item], f"planted/{item}"))
    seen = []
    for band in range(4):
        found = client.get(f"/api/concepts/{live}/examples",
                           params={"model": "planted", "side": "generated", "band": band}).json()
        assert found["source_id"] == "planted" and found["images"], band
        for image in found["images"]:
            rank = ranked.index(image["item_id"])
            assert band * len(ranked) / 4 <= rank < (band + 1) * len(ranked) / 4 + 1  # from its quarter of the ranking
            assert image["energy"] == pytest.approx(energies[image["item_id"]], rel=1e-6)
            assert image["caption"] and image["url"].startswith("/images/planted/")
        seen += [image["item_id"] for image in found["images"]]
        fragment = client.get(f"/concepts/{live}/examples", params={"model": "planted", "side": "generated",
                                                                      "band": band}).text
        assert fragment.count('<figure class="example"') == len(found["images"])
        assert ("band=%d" % (band + 1) in fragment) == (band < 3)  # the next band's button, until the last
    assert len(seen) == len(set(seen))  # bands do not repeat images
    for bad in ({"side": "sideways"}, {"side": "real", "band": 4}, {"side": "real", "band": -1}):
        assert client.get(f"/api/concepts/{live}/examples", params=bad).status_code == 422


def test_the_delta_strip_writes_each_models_delta_and_marks_the_thresholds(client, live):
    card = client.get(f"/api/concepts/{live}").json()
    html = client.get(f"/concepts/{live}", headers=HX).text
    strip = html[html.index('<svg class="deltas"'):]
    strip = strip[:strip.index("</svg>")]
    for d in card["deltas"]:
        assert f'<text class="value" x="384" y="' in strip
        assert f'δ {d["delta"]:.3f} [{d["ci_low"]:.3f}, {d["ci_high"]:.3f}]</text>' in strip
    assert strip.count('<g class="threshold">') == 3  # 0.1, 0.5 and 0.9
    for mark in ("0.1", "0.5", "0.9"):
        assert f'text-anchor="middle">{mark}</text>' in strip
