"""The internal lens and the steering panel in a real browser: from a feature to two measured images, by URL."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import ARTIFACTS

pytestmark = pytest.mark.slow


def test_a_steering_round_trip_shows_two_images_and_a_shareable_url(page, internal_server):
    page.goto(f"{internal_server}/internal")
    first = page.locator("table.internal-ranking tbody tr").first
    feature = int(first.get_attribute("data-feature"))
    first.get_by_role("link", name="steer").click()
    page.wait_for_url(re.compile(r"/steer\?"))
    page.fill('input[name="prompt"]', "a small red circle on grass")
    page.fill('input[name="features"]', f"{feature}:6")
    page.fill('input[name="concept"]', "0, 1")
    page.get_by_role("button", name="steer").click()
    page.wait_for_selector('figure.steer-image[data-side="steered"] img', timeout=120_000)
    images = page.locator("figure.steer-image img")
    assert images.count() == 2
    page.wait_for_function("() => [...document.querySelectorAll('figure.steer-image img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    assert page.locator("table.effect tbody tr").count() >= 2
    query = parse_qs(urlsplit(page.url).query)
    assert query["features"] == [f"{feature}:6"] and query["prompt"] == ["a small red circle on grass"]
    # the URL is the steer: opening it again shows the same result (now from the cache)
    shared = page.url
    page.goto(shared)
    page.wait_for_selector(".steer-result[data-cached='true']", timeout=60_000)
    assert page.locator("figure.steer-image img").count() == 2


def test_a_bad_feature_is_named_in_the_panel(page, internal_server):
    page.goto(f"{internal_server}/steer?generator=world-model&prompt=a+blue+square&features=abc")
    page.wait_for_selector("#steer-result .notice.error")
    assert "id:strength" in page.locator("#steer-result").inner_text()


def test_steer_with_these_runs_a_dose_response_against_random_features(page, internal_server, internal_atlas):
    from backend.atlas import Atlas

    atlas = Atlas(internal_atlas)
    try:
        concept = atlas.rows("""SELECT p.concept FROM attribution_probes p WHERE p.source_id = 'world-model'
                                AND p.auroc IS NOT NULL AND EXISTS (SELECT 1 FROM attributions a WHERE
                                a.concept = p.concept AND a.source_id = p.source_id AND a.score > 0)
                                ORDER BY p.auroc DESC LIMIT 1""")[0]["concept"]
    finally:
        atlas.close()
    page.goto(f"{internal_server}/steer?generator=world-model&concept={concept}&sweep=true")
    page.wait_for_selector(".steer-sweep[data-status]", timeout=60_000)  # progress (or the finished sweep)
    page.wait_for_selector('.steer-sweep[data-status="done"] svg.chart-lines', timeout=180_000)
    assert page.locator('.steer-sweep polyline.line').count() == 2  # the proposed features and the control
    assert page.locator("table.sweep tbody tr").count() == 6
    assert page.locator('figure.steer-image[data-side="steered"] img').count() == 1
    page.screenshot(path=str(ARTIFACTS / "steer-sweep.png"), full_page=True)
