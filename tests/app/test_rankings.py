"""Blindspot rankings: page, htmx fragment and JSON agree; filters, paging, "load more", CSV and Parquet exports."""

from __future__ import annotations

import csv
import io
import re
from urllib.parse import parse_qs, urlsplit

import duckdb
import pyarrow.parquet as pq
import pytest

from backend.views.rankings import to_csv
from tests.app.charts import app_client, query

HX = {"HX-Request": "true"}


@pytest.fixture(scope="module")
def stats(lens_atlas):
    """The concept statistics read straight from the atlas file, to check the views against."""
    db = duckdb.connect(str(lens_atlas / "atlas.duckdb"), read_only=True)
    try:
        return db.execute("""SELECT s.*, c.is_dead FROM concept_stats s JOIN concepts c USING (concept)""").fetchdf()
    finally:
        db.close()


def ranked_ids(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="ranked[^"]*" data-concept="(\d+)"', html)]


def test_page_fragment_and_json_show_the_same_ranking(client):
    params = {"model": "planted", "direction": "suppressed", "limit": 8}
    data = client.get("/api/rankings", params=params).json()
    page = client.get("/rankings", params=params)
    fragment = client.get("/rankings", params=params, headers=HX)
    assert page.status_code == fragment.status_code == 200
    assert "<html" in page.text and "<html" not in fragment.text
    assert fragment.text.lstrip().startswith('<div id="rankings"')
    ids = [r["concept"] for r in data["rows"]]
    assert ids and ranked_ids(page.text) == ranked_ids(fragment.text) == ids
    assert [r["rank"] for r in data["rows"]] == list(range(1, len(ids) + 1))
    first = data["rows"][0]
    assert f'href="/concepts/{first["concept"]}?model=planted"' in page.text
    assert f'src="/{first["real_exemplar"]}"' in page.text  # the best real exemplar's thumbnail


@pytest.mark.parametrize("model", ["planted", "same"])
@pytest.mark.parametrize("direction", ["suppressed", "exaggerated"])
def test_ranking_holds_exactly_the_flagged_live_concepts_in_delta_order(client, stats, model, direction):
    data = client.get("/api/rankings", params={"model": model, "direction": direction, "limit": 1000}).json()
    expected = stats[(stats.source_id == model) & stats[direction] & ~stats.is_dead]
    assert data["total"] == len(expected) == len(data["rows"])
    assert {r["concept"] for r in data["rows"]} == set(expected.concept)
    deltas = [r["delta"] for r in data["rows"]]
    assert deltas == sorted(deltas, reverse=direction == "exaggerated")
    assert all(r["delta"] < 0.1 if direction == "suppressed" else r["delta"] > 0.9 for r in data["rows"])


def test_filters_select_significant_concepts_in_a_frequency_range(client, stats):
    # under the paper's thresholds alone, where "significant only" is a filter (the atlas's flags all are)
    planted = stats[(stats.source_id == "planted") & stats.suppressed_paper & ~stats.is_dead]
    low, high = sorted(planted.nu_real)[len(planted) // 4], sorted(planted.nu_real)[3 * len(planted) // 4]
    data = client.get("/api/rankings", params={"model": "planted", "flags": "paper", "significant": "true",
                                               "min_freq": low, "max_freq": high, "limit": 1000}).json()
    expected = planted[planted.significant & planted.nu_real.between(low, high)]
    assert {r["concept"] for r in data["rows"]} == set(expected.concept)
    assert data["total"] < len(planted)  # the filters removed something
    assert parse_qs(urlsplit(data["links"]["csv"]).query)["significant"] == ["true"]


@pytest.mark.parametrize("sort,key,descending", [("relative_delta", "relative_delta", False),
                                                 ("frequency", "nu_real", True), ("confidence", "ci_high", False)])
def test_sort_keys(client, sort, key, descending):
    rows = client.get("/api/rankings", params={"model": "planted", "sort": sort, "limit": 1000}).json()["rows"]
    values = [r[key] for r in rows]
    assert values == sorted(values, reverse=descending)


def test_pages_join_up_and_load_more_appends_the_next_rows(client):
    """Under the paper's thresholds alone: the lens fixture has too few flags of its own to page."""
    everything = client.get("/api/rankings", params={"model": "planted", "flags": "paper", "limit": 1000}).json()
    assert everything["total"] > 6, "the fixture needs enough blindspots to page"
    first = client.get("/api/rankings", params={"model": "planted", "flags": "paper", "limit": 3}).json()
    second = client.get("/api/rankings", params={"model": "planted", "flags": "paper", "limit": 3, "offset": 3}).json()
    assert [r["concept"] for r in first["rows"] + second["rows"]] == [r["concept"] for r in everything["rows"][:6]]
    assert [r["rank"] for r in second["rows"]] == [4, 5, 6]

    page = client.get("/rankings", params={"model": "planted", "flags": "paper", "limit": 3}).text
    more = re.search(r'hx-get="([^"]+)" hx-target="closest tr" hx-swap="outerHTML"\s+hx-push-url="([^"]+)"', page)
    assert more, "a 'load more' control"
    rows_url, pushed = (m.replace("&amp;", "&") for m in more.groups())
    appended = client.get(rows_url, headers=HX).text
    assert ranked_ids(appended) == [r["concept"] for r in second["rows"]]
    assert "<table" not in appended  # rows only, to append in place
    # the address after "load more" reproduces every row on screen
    assert ranked_ids(client.get(pushed).text) == [r["concept"] for r in everything["rows"][:6]]

    last = client.get("/rankings/rows", params={"model": "planted", "flags": "paper", "limit": 3,
                                                "offset": everything["total"] - 2}).text
    assert len(ranked_ids(last)) == 2 and "load more" not in last
    beyond = client.get("/api/rankings", params={"model": "planted", "flags": "paper", "offset": 10_000}).json()
    assert beyond["rows"] == [] and beyond["next_offset"] is None


@pytest.mark.parametrize("params", [{}, {"direction": "exaggerated", "significant": "true"},
                                    {"sort": "frequency", "min_freq": 0.2}])
def test_csv_and_parquet_exports_hold_the_json_rows(client, params):
    params = {"model": "planted", **params}
    rows = client.get("/api/rankings", params={**params, "limit": 1000}).json()["rows"]
    exported_csv = client.get("/api/rankings.csv", params=params)
    assert exported_csv.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported_csv.headers["content-disposition"]
    from_csv = list(csv.DictReader(io.StringIO(exported_csv.text)))
    from_parquet = pq.read_table(io.BytesIO(client.get("/api/rankings.parquet", params=params).content)).to_pylist()
    assert len(from_csv) == len(from_parquet) == len(rows)
    for json_row, csv_row, parquet_row in zip(rows, from_csv, from_parquet):
        assert int(csv_row["concept"]) == parquet_row["concept"] == json_row["concept"]
        assert csv_row["label"] == parquet_row["label"] == json_row["label"]
        assert float(csv_row["delta"]) == pytest.approx(json_row["delta"]) == parquet_row["delta"]
        assert parquet_row["significant"] == json_row["significant"]
        assert parquet_row["real_exemplar"] == json_row["real_exemplar"]


def test_user_labels_replace_the_atlas_labels(lens_atlas, tmp_path_factory):
    with app_client(lens_atlas, tmp_path_factory) as fresh:
        concept = fresh.get("/api/rankings", params={"model": "planted"}).json()["rows"][0]["concept"]
        fresh.app.state.explorer.labels.set(concept, "bird <feeder> & co")
        rows = fresh.get("/api/rankings", params={"model": "planted"}).json()["rows"]
        assert rows[0]["label"] == "bird <feeder> & co"
        page = fresh.get("/rankings", params={"model": "planted"}).text
        assert "bird &lt;feeder&gt; &amp; co" in page and "<feeder>" not in page
        assert "bird <feeder> & co" in fresh.get("/api/rankings.csv", params={"model": "planted"}).text


@pytest.mark.parametrize("path", ["/rankings", "/api/rankings", "/api/rankings.csv", "/api/rankings.parquet",
                                  "/rankings/rows"])
def test_unknown_model_is_404(client, path):
    answer = client.get(path, params={"model": "no-such-model"})
    assert answer.status_code == 404
    assert "planted" in answer.json()["detail"]  # names the models there are


@pytest.mark.parametrize("params", [{"direction": "sideways"}, {"sort": "label"}, {"min_freq": 1.5},
                                    {"max_freq": -0.1}, {"min_freq": "often"}, {"min_freq": 0.6, "max_freq": 0.2},
                                    {"limit": 0}, {"limit": 5000}, {"offset": -1}, {"significant": "maybe"}])
def test_bad_parameters_are_422(client, params):
    paths = ["/api/rankings", "/rankings", "/rankings/rows"]
    if not {"limit", "offset"} & set(params):  # the exports take the filters, never a page
        paths += ["/api/rankings.csv", "/api/rankings.parquet"]
    for path in paths:
        assert client.get(path, params=params).status_code == 422, (path, params)


def test_an_atlas_without_analysis_explains_itself(world_atlas, tmp_path_factory):
    with app_client(world_atlas, tmp_path_factory) as plain:
        page = plain.get("/rankings")
        assert page.status_code == 200 and "without the analyze stage" in page.text
        data = plain.get("/api/rankings").json()
        assert data["analysed"] is False and data["rows"] == [] and data["total"] == 0
        assert plain.get("/api/rankings.csv").text.strip().split(",")[:2] == ["rank", "concept"]
        assert pq.read_table(io.BytesIO(plain.get("/api/rankings.parquet").content)).num_rows == 0


FORMULAS = ['=HYPERLINK("http://evil.example/","x")', "+1+1", "-2+3", "@SUM(A1:A2)"]


def test_csv_neutralises_labels_that_start_like_a_formula_and_only_the_csv(lens_atlas, tmp_path_factory):
    with app_client(lens_atlas, tmp_path_factory) as fresh:
        rows = fresh.get("/api/rankings", params={"model": "planted", "flags": "paper", "limit": 1000}).json()["rows"]
        concepts = [r["concept"] for r in rows[:len(FORMULAS)]]
        assert len(concepts) == len(FORMULAS)
        for concept, label in zip(concepts, FORMULAS):
            fresh.app.state.explorer.labels.set(concept, label)
        fresh.app.state.explorer.labels.set(rows[len(FORMULAS)]["concept"], "a plain - label = fine")
        params = {"model": "planted", "flags": "paper"}
        exported = {int(r["concept"]): r for r in csv.DictReader(io.StringIO(
            fresh.get("/api/rankings.csv", params=params).text, newline=""))}
        for concept, label in zip(concepts, FORMULAS):
            assert exported[concept]["label"] == "'" + label  # read as text by a spreadsheet
        assert exported[rows[len(FORMULAS)]["concept"]]["label"] == "a plain - label = fine"
        negative = [r for r in rows if r["relative_delta"] < 0]
        assert negative and float(exported[negative[0]["concept"]]["relative_delta"]) < 0  # numbers stay numbers
        parquet = {r["concept"]: r["label"] for r in pq.read_table(io.BytesIO(
            fresh.get("/api/rankings.parquet", params=params).content)).to_pylist()}
        json_labels = {r["concept"]: r["label"] for r in fresh.get("/api/rankings", params={
            **params, "limit": 1000}).json()["rows"]}
        for concept, label in zip(concepts, FORMULAS):
            assert parquet[concept] == json_labels[concept] == label  # Parquet and JSON keep the label as it is


def test_csv_neutralises_tab_and_carriage_return_starts_in_any_text_cell():
    # labels cannot hold control characters; the other text cells (world concept, exemplar paths) are checked too
    rows = [{"rank": 1, "concept": 7, "label": "ok", "world_concept": "\tx", "real_exemplar": "\r=1", "delta": -0.5}]
    exported = next(csv.DictReader(io.StringIO(to_csv(rows), newline="")))
    assert exported["world_concept"] == "'\tx" and exported["real_exemplar"] == "'\r=1"
    assert exported["delta"] == "-0.5" and exported["label"] == "ok"


def test_rows_carry_label_evidence_and_energies_and_the_label_score_filters(client, lens_atlas):
    everything = client.get("/api/rankings", params={"model": "planted", "limit": 1000}).json()["rows"]
    scores = dict(query(lens_atlas, "SELECT concept, label_auroc FROM concepts"))
    for row in everything:
        assert row["label_auroc"] == pytest.approx(scores[row["concept"]]) if scores[row["concept"]] is not None \
            else row["label_auroc"] is None
    cut = sorted(r["label_auroc"] for r in everything if r["label_auroc"] is not None)[len(everything) // 2]
    kept = client.get("/api/rankings", params={"model": "planted", "limit": 1000, "min_label_auroc": cut}).json()
    assert {r["concept"] for r in kept["rows"]} == {r["concept"] for r in everything
                                                    if r["label_auroc"] is not None and r["label_auroc"] >= cut}
    assert 0 < kept["total"] < len(everything)
    assert "min_label_auroc" in kept["links"]["csv"]
    exported = list(csv.DictReader(io.StringIO(client.get(kept["links"]["csv"]).text)))
    assert len(exported) == kept["total"] and all(float(r["label_auroc"]) >= cut for r in exported)
    assert client.get("/api/rankings", params={"min_label_auroc": 1.5}).status_code == 422


def test_the_page_says_delta_is_about_energy_and_shows_energies_beside_frequencies(client):
    page = client.get("/rankings", params={"model": "planted"}).text
    assert "far less often" not in page and "not how often the concept fires" in page
    header = page[page.index('<table class="grid rankings">'):page.index("</thead>")]
    for column in ("label AUROC", "delta of energy", "mean energy real &rarr; gen", "fires on real &rarr; gen"):
        assert column in header
    thumbs = re.findall(r'<img class="thumb" src="[^"]+" alt="best real exemplar" title="[^"]+" width="(\d+)"', page)
    assert thumbs and all(int(w) >= 64 for w in thumbs)


def test_user_labels_reach_the_exports(client):
    first = client.get("/api/rankings", params={"model": "planted", "limit": 1}).json()["rows"][0]
    client.post(f"/api/concepts/{first['concept']}/label", data={"label": "exported name"})
    try:
        rows = list(csv.DictReader(io.StringIO(client.get("/api/rankings.csv", params={"model": "planted"}).text)))
        mine = next(r for r in rows if int(r["concept"]) == first["concept"])
        assert mine["label"] == "exported name" and mine["user_label"] == "True"
        table = pq.read_table(io.BytesIO(client.get("/api/rankings.parquet", params={"model": "planted"}).content))
        assert "exported name" in table.column("label").to_pylist()
    finally:
        client.delete(f"/api/concepts/{first['concept']}/label")


def test_the_atlas_flags_are_the_paper_thresholds_that_survive_the_test(client, stats):
    for direction in ("suppressed", "exaggerated"):
        gated = client.get("/api/rankings", params={"model": "planted", "direction": direction, "limit": 1000}).json()
        paper = client.get("/api/rankings", params={"model": "planted", "direction": direction, "flags": "paper",
                                                    "limit": 1000}).json()
        planted = stats[(stats.source_id == "planted") & ~stats.is_dead]
        assert {r["concept"] for r in gated["rows"]} == set(planted[planted[direction]].concept)
        assert {r["concept"] for r in paper["rows"]} == set(planted[planted[f"{direction}_paper"]].concept)
        assert {r["concept"] for r in gated["rows"]} <= {r["concept"] for r in paper["rows"]}
        assert all(r["q_value"] is not None and r["q_value"] <= 0.05 for r in gated["rows"])
        assert "flags=paper" in paper["links"]["csv"]
    assert client.get("/api/rankings", params={"flags": "loose"}).status_code == 422
