"""API fuzzing from the OpenAPI schema: whatever a client sends, the server never answers 5xx.

Schemathesis generates requests for every operation of the app's schema (valid and
invalid parameters, odd strings, huge numbers); the check is ``not_a_server_error``
plus the declared-status and content-type conformance of each response.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from app.main import create_app
from app.settings import Settings
from backend.atlas import Atlas


@pytest.fixture(scope="module")
def api_schema(lens_atlas, tmp_path_factory):
    labels = tmp_path_factory.mktemp("fuzz") / "labels.json"
    app = create_app(Settings(atlas=lens_atlas, labels=labels))
    app.state.atlas = Atlas(lens_atlas)  # the lifespan's work, for transports that skip it
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    app.state.atlas.close()


def fuzz_operation(operation, failures: list[str], examples: int = 15) -> None:
    """Send ``examples`` generated requests to one operation; record every 5xx answer."""

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def run(case):
        response = case.call()
        if response.status_code >= 500:
            failures.append(f"{operation.label} {case.path_parameters} {case.query} {case.body!r:.200}: "
                            f"{response.status_code} {response.text[:200]}")

    run()


def test_no_request_makes_the_server_fail(api_schema):
    # One hypothesis run per operation (schemathesis' own pytest plugin does not run on this pytest).
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        fuzz_operation(operation, failures)
    assert len(operations) >= 5  # the schema lists the app's routes
    assert not failures, "\n".join(failures[:20])
