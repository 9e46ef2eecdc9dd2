"""Co-occurrence spectra (l0 against epsilon, eigen-spectra, eigenvector alignment) and frequency vs delta."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from tests.app.charts import app_client, charts, marks

HX = {"HX-Request": "true"}


def test_cooccurrence_json_holds_every_sets_curves_and_the_alignment(client, atlas_db):
    data = client.get("/api/cooccurrence", params={"model": "same"}).json()
    assert list(data["l0"]) == ["real", "planted", "same"] and list(data["spectra"]) == ["real", "planted", "same"]
    for curve in data["l0"].values():
        assert curve["epsilon"] == sorted(curve["epsilon"])
        assert curve["l0"] == sorted(curve["l0"], reverse=True)  # fewer entries survive a higher threshold
    eigen = atlas_db.execute("SELECT eigenvalue FROM cooccurrence_spectrum WHERE source_id = 'real' "
                             "ORDER BY rank").fetchall()
    assert data["spectra"]["real"]["eigenvalue"] == pytest.approx([e for (e,) in eigen])
    assert data["spectra"]["real"]["rank"][0] == 1
    rows = atlas_db.execute("SELECT real_rank, gen_rank, cosine FROM eigenvector_alignment "
                            "WHERE source_id = 'same'").fetchall()
    size = max(r for r, _, _ in rows) + 1
    matrix = np.array(data["alignment"], dtype=float)
    assert matrix.shape == (size, size)
    for i, j, cosine in rows[:: max(1, len(rows) // 50)]:
        assert matrix[i, j] == pytest.approx(cosine)
    assert data["diagonal_mean"] == pytest.approx(np.mean(np.diagonal(matrix)))


def test_cooccurrence_page_draws_the_three_charts(client):
    data = client.get("/api/cooccurrence", params={"model": "planted"}).json()
    page = client.get("/cooccurrence", params={"model": "planted"}).text
    drawn = charts(page)
    assert marks(drawn["l0-curve"], "line") == marks(drawn["eigen-spectra"], "line") == 3
    size = len(data["alignment"])
    assert marks(drawn["alignment-heatmap"], "cell") == size * size
    fragment = client.get("/cooccurrence", params={"model": "planted"}, headers=HX).text
    assert fragment.strip() in page and "<html" not in fragment


@pytest.mark.parametrize("y,column", [("delta_sharp", "delta_sharp"), ("delta", "delta")])
def test_frequency_plots_every_live_concept(client, atlas_db, y, column):
    data = client.get("/api/frequency", params={"model": "planted", "y": y}).json()
    stored = atlas_db.execute(f"""SELECT s.concept, s.nu_real, s.{column} FROM concept_stats s JOIN concepts c
                                  USING (concept) WHERE s.source_id = 'planted' AND NOT c.is_dead
                                  ORDER BY s.concept""").fetchall()
    assert data["concepts"]["concept"] == [c for c, _, _ in stored]
    assert data["concepts"]["value"] == pytest.approx([v for _, _, v in stored])
    nu = np.array([f for _, f, _ in stored])
    expected = spearmanr(nu, np.abs(np.array([v for _, _, v in stored]) - 0.5)).statistic
    assert data["spearman"] == pytest.approx(expected)
    page = client.get("/frequency", params={"model": "planted", "y": y}).text
    assert marks(charts(page)["frequency-scatter"], "point") == len(stored)


def test_frequency_on_a_log_axis_leaves_out_concepts_that_never_fire_on_real_images(client):
    data = client.get("/api/frequency", params={"model": "planted", "scale": "log"}).json()
    placeable = sum(1 for f in data["concepts"]["nu_real"] if f > 0)
    assert data["n_never_real"] == len(data["concepts"]["nu_real"]) - placeable
    page = client.get("/frequency", params={"model": "planted", "scale": "log"}).text
    assert marks(charts(page)["frequency-scatter"], "point") == placeable


def test_the_paper_default_is_the_sharp_sigmoid(client):
    data = client.get("/api/frequency").json()
    assert data["y"] == "delta_sharp" and data["scale"] == "linear" and data["model"] == "planted"


@pytest.mark.parametrize("path", ["/cooccurrence", "/api/cooccurrence", "/frequency", "/api/frequency"])
def test_unknown_model_is_404(client, path):
    assert client.get(path, params={"model": "no-such-model"}).status_code == 404


@pytest.mark.parametrize("params", [{"y": "energy"}, {"scale": "sqrt"}])
def test_bad_parameters_are_422(client, params):
    for path in ("/frequency", "/api/frequency"):
        assert client.get(path, params=params).status_code == 422


def test_an_atlas_without_analysis_explains_itself(world_atlas, tmp_path_factory):
    with app_client(world_atlas, tmp_path_factory) as plain:
        for path in ("/cooccurrence", "/frequency"):
            page = plain.get(path)
            assert page.status_code == 200 and "without the analyze stage" in page.text
        assert plain.get("/api/cooccurrence").json()["l0"] == {}
        assert plain.get("/api/frequency").json()["concepts"]["concept"] == []


@pytest.mark.parametrize("y, sharpening", [("delta_sharp", 2.0), ("delta", 1.0)])
def test_frequency_says_which_temperature_its_y_axis_uses(client, atlas_db, y, sharpening):
    """The sharper sigmoid is at T / 2 (0.4 at the paper's 0.8), the other at the atlas's own T, whatever T is."""
    own = float(atlas_db.execute("SELECT value FROM atlas_info WHERE key = 'temperature'").fetchone()[0])
    data = client.get("/api/frequency", params={"model": "planted", "y": y}).json()
    assert data["temperature"] == pytest.approx(own / sharpening)
    temperature = f"{data['temperature']:.3g}"
    page = client.get("/frequency", params={"model": "planted", "y": y}).text
    assert f'<b class="temperature">T = {temperature}</b>' in page
    axes = next(g for g in charts(page)["frequency-scatter"].iter() if g.get("class") == "axes")
    assert any(f"T = {temperature}" in (t.text or "") for t in axes.iter())  # on the axis label too


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_a_click_on_the_frequency_chart_opens_the_nearest_concepts_card(client, scale):
    data = client.get("/api/frequency", params={"model": "planted", "scale": scale}).json()
    placed = [i for i, f in enumerate(data["concepts"]["nu_real"]) if f > 0]
    i = placed[len(placed) // 2]
    at = {"at_x": data["concepts"]["nu_real"][i], "at_y": data["concepts"]["value"][i]}
    answer = client.get("/frequency/nearest", params={"model": "planted", "scale": scale, **at}, follow_redirects=False)
    same_spot = [c for c, f, v in zip(data["concepts"]["concept"], data["concepts"]["nu_real"], data["concepts"]["value"])
                 if f == at["at_x"] and v == at["at_y"]]
    assert answer.status_code == 303 and answer.headers["location"] == f"/concepts/{min(same_spot)}?model=planted"
