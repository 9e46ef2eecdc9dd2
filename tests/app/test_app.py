"""The web app over a small world atlas: pages, JSON twins, images, and bad requests."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from precompute.errors import AtlasError


@pytest.fixture(scope="module")
def client(world_atlas):
    with TestClient(create_app(Settings(atlas=world_atlas)), base_url="http://127.0.0.1") as test_client:
        yield test_client


def test_overview_page_shows_sources_stages_and_pairs(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert "test-world" in html and "planted-a" in html
    assert "not available yet" not in html  # stage notes are phrased for the page
    assert html.count('<tr class="pair"') == 24
    assert "not run" in html  # stages this atlas was built without say so


def test_json_twin_matches_the_page_data(client):
    params = {"offset": 30, "limit": 5}
    data = client.get("/api/overview", params=params).json()
    assert data["n_items"] == 40
    assert [p["position"] for p in data["pairs"]] == [30, 31, 32, 33, 34]
    assert set(data["pairs"][0]["images"]) == {"real", "planted-a", "plain"}
    assert {e["concept"] for e in data["planted_effects"]} == {"star", "shadow"}
    # the page at the same offset shows the same pairs, in the same order, with the same images
    page = client.get("/", params=params)
    assert page.status_code == 200
    html = page.text
    assert re.findall(r'<tr class="pair" data-item="([^"]+)"', html) == [p["item_id"] for p in data["pairs"]]
    shown = re.findall(r'<img src="/([^"]+)" alt="[^"]* image of ', html)
    assert shown == [p["images"][s["source_id"]]["path"] for p in data["pairs"] for s in data["sources"]
                     if s["source_id"] in p["images"]]
    assert f'{data["n_items"]} image-caption pairs' in html


def test_images_are_served_and_confined_to_the_atlas(client):
    path = client.get("/api/overview").json()["pairs"][0]["images"]["real"]["path"]
    image = client.get("/" + path)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
    for escape in ("/images/../atlas.duckdb", "/images/%2e%2e/atlas.duckdb", "/images/..%2fatlas.duckdb",
                   "/images//etc/passwd", "/images/%2fetc%2fpasswd", "/images/real/nope.png"):
        assert client.get(escape).status_code == 404, escape


@pytest.mark.parametrize("params", [{"offset": -1}, {"limit": 0}, {"limit": 10_000}, {"offset": "x"}])
def test_bad_parameters_are_422(client, params):
    assert client.get("/api/overview", params=params).status_code == 422


def test_world_ground_truth_endpoint(client):
    rows = client.get("/api/world/frequencies").json()
    shadow = {r["source_id"]: r["frequency"] for r in rows if r["concept"] == "shadow"}
    assert shadow["planted-a"] == 1.0


def test_a_folder_that_is_not_an_atlas_fails_with_the_reason(tmp_path):
    with pytest.raises(AtlasError, match="not an atlas"):
        with TestClient(create_app(Settings(atlas=tmp_path)), base_url="http://127.0.0.1"):
            pass


def test_an_atlas_of_another_schema_version_is_refused_with_what_to_do(world_atlas, tmp_path):
    import shutil

    import duckdb

    old = tmp_path / "old"
    shutil.copytree(world_atlas, old)
    with duckdb.connect(str(old / "atlas.duckdb")) as db:
        db.execute("UPDATE atlas_info SET value = '2' WHERE key = 'schema_version'")
    with pytest.raises(AtlasError, match=r"schema version 2.*blindspot precompute"):
        with TestClient(create_app(Settings(atlas=old)), base_url="http://127.0.0.1"):
            pass


def test_overview_lists_blindspots_of_an_analysed_atlas(lens_atlas):
    with TestClient(create_app(Settings(atlas=lens_atlas)), base_url="http://127.0.0.1") as test_client:
        data = test_client.get("/api/overview").json()
        assert data["analysed"] is True
        assert set(data["blindspots"]) == {"planted", "same"}
        for sides in data["blindspots"].values():
            for direction, rows in sides.items():
                assert all((r["delta"] < 0.1) if direction == "suppressed" else (r["delta"] > 0.9) for r in rows)
        page = test_client.get("/").text
        assert "<h2>Blindspots</h2>" in page


def test_unanalysed_atlas_shows_no_blindspot_section(client):
    assert "<h2>Blindspots</h2>" not in client.get("/").text


def test_pages_data_and_assets_are_compressed_and_images_are_not(lens_atlas, tmp_path_factory):
    """gzip for HTML, JSON, CSS, JS and the binary point payload (sent compressed once computed); PNGs are
    compressed already and go as they are."""
    import gzip

    from tests.app.charts import app_client

    with app_client(lens_atlas, tmp_path_factory) as client:
        gz = {"Accept-Encoding": "gzip"}
        card = client.get("/api/concepts/0").json()
        image = card["quad"]["real_best"][0]["url"] if card["quad"]["real_best"] else "/images/real/00000.png"
        for url, kind in [("/", "text/html"), ("/explorer", "text/html"), ("/api/overview", "application/json"),
                          ("/static/style.css", "text/css"), ("/static/explorer.js", "text/javascript"),
                          ("/static/vendor/regl-scatterplot.js", "text/javascript"),
                          ("/static/vendor/htmx.min.js", "text/javascript"),
                          ("/api/explorer/points.bin?model=planted", "application/octet-stream")]:
            response = client.get(url, headers=gz)
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind), url
            assert response.headers.get("content-encoding") == "gzip", url
            assert "Accept-Encoding" in response.headers.get("vary", ""), url
        plain = client.get("/api/explorer/points.bin?model=planted", headers={"Accept-Encoding": "identity"})
        assert "content-encoding" not in plain.headers
        raw = client.stream("GET", "/api/explorer/points.bin?model=planted", headers=gz)
        with raw as response:
            assert gzip.decompress(b"".join(response.iter_raw())) == plain.content  # the same payload
        png = client.get(image, headers=gz)
        assert png.headers["content-type"] == "image/png" and "content-encoding" not in png.headers
