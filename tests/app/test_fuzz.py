"""Fuzzing: whatever a client sends, the server never answers 5xx.

Schemathesis generates requests for every operation of the app's schema (valid and
invalid parameters, odd strings, huge numbers); the checks are ``not_a_server_error``
and ``content_type_conformance`` (each answer's media type is one the schema declares
for it: a CSV or Parquet export declared as JSON fails). Status conformance is not
checked: the 400/404/409 answers of the domain errors are not in the schema. The file and
image routes are fuzzed by hand as well, through a real uvicorn and raw request lines
(so nothing normalises the path on the way): NUL bytes, names past the file system's
limits, traversal in every spelling, odd encodings; each answer is a 4xx with a reason.
"""

from __future__ import annotations

import socket

import duckdb
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import Failure, FailureGroup, content_type_conformance, not_a_server_error
from schemathesis.python import asgi

from app.main import create_app
from app.settings import Settings
from backend.atlas import Atlas
from tests.browser.conftest import serve


@pytest.fixture(scope="module")
def api_schema(lens_atlas, tmp_path_factory):
    labels = tmp_path_factory.mktemp("fuzz") / "labels.json"
    # the fuzzing client calls itself "testserver" in the Host header: answer that name as well
    app = create_app(Settings(atlas=lens_atlas, labels=labels, allow_hosts=(asgi.HOST,)))
    app.state.atlas = Atlas(lens_atlas)  # the lifespan's work, for transports that skip it
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.atlas.close()


# No 5xx, and every answer's media type is one the schema declares for its operation and status.
CHECKS = [not_a_server_error, content_type_conformance]


def fuzz_operation(operation, failures: list[str], examples: int = 15) -> None:
    """Send ``examples`` generated requests to one operation; record every answer that fails ``CHECKS``."""

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def run(case):
        response = case.call()
        try:
            case.validate_response(response, checks=CHECKS)
        except (Failure, FailureGroup) as failed:  # one failed check, or a group of them
            failures.append(f"{operation.label} {case.path_parameters} {case.query} {case.body!r:.200}: "
                            f"{response.status_code} {response.headers.get('content-type')} "
                            f"{response.content[:120]!r}: {str(failed)[:300]}")

    run()


def test_no_request_makes_the_server_fail(api_schema):
    # One hypothesis run per operation (schemathesis' own pytest plugin does not run on this pytest).
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        fuzz_operation(operation, failures)
    assert len(operations) >= 5  # the schema lists the app's routes
    assert not failures, "\n".join(failures[:20])


# Hostile path segments, as raw bytes of the request line (percent-encoded where a raw byte cannot be sent).
HOSTILE = [
    b"%00", b"a%00b.png", b"%00/../../atlas.duckdb", b"x" * 256, b"x" * 300 + b".png", b"%78" * 256,
    b"a/" * 2100, b"../../../../etc/passwd", b"..%2f..%2fatlas.duckdb", b"%2e%2e%2f%2e%2e%2fatlas.duckdb",
    b"..%5c..%5catlas.duckdb", b"%252e%252e%252fatlas.duckdb", b"%c0%ae%c0%ae%c0%afatlas.duckdb", b"%ff%fe%fd",
    b"%ed%a0%80", b"%e2%80%ae", "\N{GRINNING FACE}".encode(), b"%F0%9F%98%80", "\u00fc".encode(), b"%0a",
    b"%0d%0aX-Injected:%20yes", b"%7f", b"%01", b".", b"..", b"~", b"%20", b"a%2fb", b"%3f", b"%23", b"%",
    b"%zz", b"con", b"/etc/passwd", b"%2fetc%2fpasswd",
]


def file_routes(atlas) -> list[str]:
    """Every route that serves a file or an image, with ``{x}`` where a hostile segment goes."""
    with duckdb.connect(str(atlas / "atlas.duckdb"), read_only=True) as db:
        source, concept, item = db.execute("SELECT source_id, concept, item_id FROM heatmaps LIMIT 1").fetchone()
        image = db.execute("SELECT path FROM images LIMIT 1").fetchone()[0]
    folder = image.rsplit("/", 1)[0]
    return ["/images/{x}", f"/{folder}/{{x}}", "/images/{x}/0.png", "/static/{x}", "/static/vendor/{x}",
            f"/api/heatmaps/{{x}}/{concept}/{item}.png", f"/api/heatmaps/{source}/{concept}/{{x}}.png",
            f"/api/heatmaps/{source}/{{x}}/{item}.png", f"/api/internal/{{x}}/features/0/heatmaps/{item}.png",
            "/api/internal/planted/features/0/heatmaps/{x}.png", "/api/steer/images/{x}.png", "/pairs/{x}",
            "/api/pairs/{x}", "/concepts/{x}", "/api/concepts/{x}", "/internal/{x}/features/0",
            "/api/internal/{x}/minority"]


def raw_get(port: int, target: bytes) -> tuple[int, bytes]:
    """Send one GET with ``target`` as the request line's bytes; the status and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture(scope="module")
def server_port(lens_atlas, tmp_path_factory):
    with serve(lens_atlas, tmp_path_factory.mktemp("fuzz-files") / "labels.json") as base:
        yield int(base.rsplit(":", 1)[1])


def test_file_routes_answer_every_malformed_path_with_a_4xx(server_port, lens_atlas):
    answers = {}
    for route in file_routes(lens_atlas):
        for segment in HOSTILE:
            target = route.encode().replace(b"{x}", segment)
            answers[target] = raw_get(server_port, target)
    failures = [f"{t[:120]!r}: {status} {body[:120]!r}" for t, (status, body) in answers.items()
                if not 400 <= status < 500 or not body.strip()]
    assert not failures, "\n".join(failures[:20])
    assert len(answers) >= 500


def test_image_paths_no_file_can_have_are_400_with_the_reason(server_port, lens_atlas):
    with duckdb.connect(str(lens_atlas / "atlas.duckdb"), read_only=True) as db:
        folder = db.execute("SELECT path FROM images LIMIT 1").fetchone()[0].rsplit("/", 1)[0]
    for segment, reason in ((b"a%00b.png", b"control characters"), (b"%01x.png", b"control characters"),
                            (b"x" * 256, b"at most 255 bytes"), (b"%78" * 300, b"at most 255 bytes"),
                            (b"a/" * 2100, b"at most 4096 bytes")):
        status, body = raw_get(server_port, f"/{folder}/".encode() + segment)
        assert status == 400 and reason in body, (segment[:20], status, body[:200])
    for segment in (b"../../atlas.duckdb", b"..%2f..%2fatlas.duckdb", b"%2e%2e%2f%2e%2e%2fatlas.duckdb",
                    b"nope.png", b"%F0%9F%98%80.png"):  # a name no image has, in a well-formed encoding
        status, body = raw_get(server_port, f"/{folder}/".encode() + segment)
        assert status == 404 and b"no image" in body, (segment, status, body[:200])
