"""One error hierarchy, answered in one place: every domain error carries its HTTP status."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app.errors import HANDLED, _status
from backend.atlas import MalformedPath, NotFound
from backend.steering.service import SteeringBusy, SteeringTimeout, SteeringUnavailable
from backend.views.internal import NoInternalLens
from precompute.errors import BlindspotError, ConfigError

ROUTES = Path(__file__).resolve().parents[2] / "app" / "routes"


@pytest.mark.parametrize(("error", "status"), [
    (ConfigError("bad"), 422), (NotFound("no such concept"), 404), (MalformedPath("a NUL"), 400),
    (NoInternalLens("no internal lens"), 409), (SteeringUnavailable("cannot steer"), 409),
    (SteeringBusy(7), 429), (SteeringTimeout("too slow"), 503),
])
def test_each_domain_error_is_answered_with_its_status_and_reason(error, status):
    assert isinstance(error, BlindspotError)
    answered, detail, headers = _status(error)
    assert (answered, detail) == (status, str(error))
    assert headers == ({"Retry-After": "7"} if isinstance(error, SteeringBusy) else None)


def test_a_bug_is_a_500_without_its_message():
    assert _status(KeyError("secret"))[:2] == (500, "the server failed on this request (its log has the details)")
    assert BlindspotError in HANDLED and Exception in HANDLED


def test_no_router_maps_errors_itself():
    # routers raise domain errors; the status lives on the error, the answer in app.errors
    for path in sorted(ROUTES.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        raised = [node for node in ast.walk(tree) if isinstance(node, ast.Raise) and node.exc is not None
                  and "HTTPException" in ast.unparse(node.exc)]
        assert not raised, f"{path.name} raises HTTPException: {[ast.unparse(r) for r in raised]}"
