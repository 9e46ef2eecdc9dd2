"""The overview of an analysed atlas: blindspots link to their cards under the user's labels; pairs name their columns."""

from __future__ import annotations

import re

from tests.app.charts import query


def test_blindspot_rows_link_to_their_cards_and_show_user_labels(client, lens_atlas):
    page = client.get("/").text
    tables = re.findall(r'<table class="grid blindspots" data-model="([^"]+)" data-direction="(\w+)">(.*?)</table>',
                        page, re.S)
    assert {(m, d) for m, d, _ in tables} == {(m, d) for m in ("planted", "same")
                                              for d in ("suppressed", "exaggerated")}
    linked = 0
    for model, direction, body in tables:
        for concept in re.findall(r'data-concept="(\d+)"', body):
            assert f'href="/concepts/{concept}?model={model}"' in body
            linked += 1
    assert linked > 0
    concept = int(re.findall(r'data-concept="(\d+)"', tables[0][2])[0])
    automatic = query(lens_atlas, "SELECT label FROM concepts WHERE concept = ?", [concept])[0][0]
    client.post(f"/api/concepts/{concept}/label", data={"label": "my own name for it"})
    try:
        relabelled = client.get("/").text
        assert f"#{concept} my own name for it</a>" in relabelled
        assert f"#{concept} {automatic}</a>" not in relabelled
        blindspots = client.get("/api/overview").json()["blindspots"]
        assert any(b["label"] == "my own name for it" for sides in blindspots.values() for rows in sides.values()
                   for b in rows)
    finally:
        client.delete(f"/api/concepts/{concept}/label")


def test_the_pairs_table_names_the_source_of_every_column(client):
    page = client.get("/", params={"limit": 3}).text
    header = page[page.index('<table class="grid pairs-table">'):]
    header = header[:header.index("</thead>")]
    assert re.findall(r'<th class="source" data-source="([^"]+)">', header) == ["real", "planted", "same"]
    rows = re.findall(r'<tr class="pair" data-item="([^"]+)">(.*?)</tr>', page, re.S)
    assert len(rows) == 3
    for item, row in rows:
        cells = re.findall(r'<td class="thumb-cell" data-source="([^"]+)"><a href="([^"]+)"><img src="([^"]+)"', row)
        assert [c[0] for c in cells] == ["real", "planted", "same"]
        for source, href, src in cells:
            assert src.startswith(f"/images/{source}/")
            assert href == f"/pairs/{item}?model={'planted' if source == 'real' else source}"


def test_every_generator_flag_count_stands_beside_the_null_controls(client, atlas_db):
    data = client.get("/api/overview").json()
    counts = {c["source_id"]: c for c in data["flag_counts"]}
    stored = dict(atlas_db.execute("""SELECT source_id, count(*) FILTER (WHERE suppressed) FROM concept_stats
                                      GROUP BY 1""").fetchall())
    assert {m: c["n_suppressed"] for m, c in counts.items()} == stored
    nulls = {n["control"]: n for n in data["null_controls"]}
    assert nulls["real-halves"]["flagged"] == 0 and nulls["real-halves"]["pairs"] == data["n_items"] // 2
    page = client.get("/").text
    assert re.search(r'<tr class="null-control" data-control="real-halves">.*?<b class="null-flags">0</b>', page, re.S)
    for model, count in counts.items():
        assert f'<tr data-model="{model}">' in page


def test_paper_thresholds_only_on_request_and_never_fewer(client):
    atlas = client.get("/api/overview").json()["blindspots"]
    paper = client.get("/api/overview", params={"flags": "paper"}).json()["blindspots"]
    for model, sides in atlas.items():
        for direction, rows in sides.items():
            assert all(r["significant"] for r in rows)  # the atlas's flags are significant by definition
            assert len(paper[model][direction]) >= len(rows)
    assert client.get("/api/overview", params={"flags": "loose"}).status_code == 422
    assert 'href="/?flags=paper"' in client.get("/").text
