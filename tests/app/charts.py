"""Helpers for the analysis-view tests: pull the server-rendered SVG charts out of a page and count their marks."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import duckdb
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

SVG = "{http://www.w3.org/2000/svg}"


def app_client(atlas, tmp_path_factory) -> TestClient:
    """A client of the app over ``atlas`` with a label store of its own (the atlas folder stays untouched)."""
    labels = tmp_path_factory.mktemp("labels") / "labels.json"
    return TestClient(create_app(Settings(atlas=atlas, labels=labels)), base_url="http://127.0.0.1")


def query(atlas, sql, params=None) -> list[tuple]:
    """Rows straight from the atlas file, to check the app against."""
    db = duckdb.connect(str(atlas / "atlas.duckdb"), read_only=True)
    try:
        return db.execute(sql, params or []).fetchall()
    finally:
        db.close()


def charts(html: str) -> dict[str, ET.Element]:
    """Every ``<svg class="chart ...">`` of a page, parsed as XML, keyed by the id of its enclosing figure
    (or by its position when the figure has no id). Parsing fails loudly on malformed markup."""
    found: dict[str, ET.Element] = {}
    for i, match in enumerate(re.finditer(r'<figure class="chart-box[^"]*"(?: (?:id|data-model)="([^"]*)")?>\s*'
                                          r"(<svg .*?</svg>)", html, re.S)):
        found[match.group(1) or str(i)] = ET.fromstring(match.group(2))
    return found


def marks(svg: ET.Element, kind: str) -> int:
    """How many marks of ``kind`` (bar, point, line, cell) a chart draws, compact groups included."""
    counted = sum(1 for e in svg.iter() if e.get("class") == kind)
    grouped = {"point": ("point-group", "data-points"), "cell": ("cell-group", "data-cells")}.get(kind)
    if grouped:
        counted += sum(int(e.get(grouped[1])) for e in svg.iter() if e.get("class") == grouped[0])
    return counted


def series_marks(svg: ET.Element, kind: str) -> dict[str, int]:
    """Marks per data series (``<g class="series" data-series=...>``)."""
    return {g.get("data-series"): sum(1 for e in g.iter() if e.get("class") == kind)
            for g in svg.iter(f"{SVG}g") if g.get("class") == "series"}
