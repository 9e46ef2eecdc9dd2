"""The analysis settings every page states come from the atlas's own record."""

from __future__ import annotations

import json

from backend.query import analysis_settings


class RecordedAtlas:
    """Just the part of an atlas ``analysis_settings`` reads: its info row."""

    def __init__(self, info: dict):
        self._info = info

    def info(self) -> dict:
        return self._info


def test_the_recorded_floor_fdr_and_resolved_temperature_are_what_the_pages_state():
    atlas = RecordedAtlas({"temperature": 2.88, "config": json.dumps(
        {"analysis": {"temperature": "auto", "fdr": 0.1, "min_change": 0.3, "baseline_quantile": 0.1}})})
    settings = analysis_settings(atlas)
    assert settings == {"suppressed_below": 0.1, "exaggerated_above": 0.9, "fdr": 0.1, "min_change": 0.3,
                        "baseline_quantile": 0.1, "temperature": 2.88}


def test_an_atlas_that_records_no_analysis_gets_the_papers_rule_and_no_floor():
    settings = analysis_settings(RecordedAtlas({"config": "not json"}))
    assert settings["temperature"] == 0.8 and settings["min_change"] == 0.0 and settings["fdr"] == 0.05
    assert settings["baseline_quantile"] == 0.0
