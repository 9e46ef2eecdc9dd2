"""Downloader against a local misbehaving server: reasons, retries, limits and cache resume."""

from __future__ import annotations

import json

import pytest

from precompute.errors import BadItem, ConfigError
from precompute.images import load_rgb
from precompute.sources.download import FAILURES_FILE, Downloader

FAST = dict(timeout_s=0.3, retries=2, backoff_s=0.01, max_bytes=20_000, workers=4)


def outcome_of(result) -> str:
    return result.reason if isinstance(result, BadItem) else "ok"


def test_fetch_many_reasons_retries_and_resume(image_server, tmp_path):
    paths = {
        "good": "/color/ff0000.png",
        "missing": "/status/404",
        "forbidden": "/status/403",
        "gone": "/status/410",
        "flaky": "/flaky/dl",
        "ratelimited": "/ratelimit/dl",
        "always-500": "/status/500",
        "slow": "/slow",
        "html": "/html",
        "huge-declared": "/huge-declared",
        "huge-stream": "/huge-stream",
        "corrupt": "/corrupt.png",
        "redirect": "/redirect",
    }
    urls = [image_server.url(path) for path in paths.values()] + ["ftp://example.org/a.png", "not a url"]
    names = list(paths) + ["ftp", "garbage"]
    image_server.reset()

    with Downloader(tmp_path / "cache", **FAST) as downloader:
        results = list(downloader.fetch_many(urls))
        stats = dict(downloader.stats)

    assert [index for index, _ in results] == list(range(len(urls))), "yields in input order"
    got = {name: result for name, (_, result) in zip(names, results)}
    assert {name: outcome_of(result) for name, result in got.items()} == {
        "good": "ok",
        "missing": "http-404",
        "forbidden": "http-403",
        "gone": "http-410",
        "flaky": "ok",
        "ratelimited": "ok",
        "always-500": "http-500",
        "slow": "timeout",
        "html": "not-an-image",
        "huge-declared": "too-large",
        "huge-stream": "too-large",
        "corrupt": "undecodable",
        "redirect": "ok",
        "ftp": "bad-url",
        "garbage": "bad-url",
    }
    assert all(result.detail for result in got.values() if isinstance(result, BadItem))
    assert load_rgb(got["good"]).getpixel((0, 0)) == (255, 0, 0)
    assert load_rgb(got["redirect"]).getpixel((0, 0)) == (0, 255, 0)

    counts = image_server.counts
    # Final 4xx: one request each. Transient failures: retried, retries+1 attempts.
    assert counts["/status/404"] == counts["/status/403"] == counts["/status/410"] == 1
    assert counts["/flaky/dl"] == 2 and counts["/ratelimit/dl"] == 2
    assert counts["/status/500"] == 3 and counts["/slow"] == 3
    assert counts["/html"] == counts["/corrupt.png"] == 1
    assert stats["retries"] == 1 + 1 + 2 + 2  # flaky, ratelimited, always-500, slow

    failures = [json.loads(line) for line in (tmp_path / "cache" / FAILURES_FILE).read_text().splitlines()]
    reasons = {record["reason"] for record in failures}
    assert reasons == {"http-404", "http-403", "http-410", "not-an-image", "undecodable"}
    assert not list((tmp_path / "cache").rglob("*.tmp")), "cache writes are atomic"

    # Re-run: cached successes and permanent failures make no request at all.
    cached = ["good", "missing", "forbidden", "gone", "flaky", "ratelimited", "html", "corrupt", "redirect"]
    image_server.reset()
    with Downloader(tmp_path / "cache", **FAST) as downloader:
        results_again = downloader.fetch_many([urls[names.index(name)] for name in cached])
        again = {name: result for name, (_, result) in zip(cached, results_again)}
        # Transient failures are not remembered: they are tried again.
        retried = downloader.fetch(image_server.url("/status/500"))
    assert sum(image_server.counts.values()) == 3
    assert image_server.counts["/status/500"] == 3 and outcome_of(retried) == "http-500"
    for name in cached:
        assert outcome_of(again[name]) == outcome_of(got[name]), name
        if not isinstance(got[name], BadItem):
            assert again[name] == got[name]


def test_long_retry_after_gives_up_without_waiting(image_server, tmp_path):
    image_server.reset()
    with Downloader(tmp_path, **FAST) as downloader:
        result = downloader.fetch(image_server.url("/ratelimit-long"))
    assert outcome_of(result) == "http-429"
    assert image_server.counts["/ratelimit-long"] == 1
    assert not (tmp_path / FAILURES_FILE).exists(), "429 is not a permanent failure"


def test_fetch_images_decodes_on_workers(image_server, tmp_path):
    urls = [image_server.url("/color/0000ff.png"), image_server.url("/status/404")]
    with Downloader(tmp_path, **FAST) as downloader:
        fresh = list(downloader.fetch_images(urls))
        cached = list(downloader.fetch_images(urls))
    for results in (fresh, cached):
        assert results[0][1].mode == "RGB" and results[0][1].getpixel((0, 0)) == (0, 0, 255)
        assert results[1][1].reason == "http-404"


def test_torn_failures_line_is_ignored(tmp_path):
    (tmp_path / FAILURES_FILE).write_text('{"key": "abc", "reason": "http-404"}\n{"key": "de', encoding="utf-8")
    with Downloader(tmp_path, **FAST) as downloader:
        assert set(downloader._failures) == {"abc"}


@pytest.mark.parametrize("option", [{"timeout_s": 0}, {"retries": -1}, {"workers": 0}, {"max_bytes": 0}])
def test_bad_options(tmp_path, option):
    with pytest.raises(ConfigError):
        Downloader(tmp_path, **option)
