"""The explorer's web defences: the Host allow-list, cross-site refusal of state changes, security headers on
every answer, and errors as pages for a browser and JSON for the API."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.security import allowed_hosts, host_name
from app.settings import Settings

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
PAGES = ["/", "/explorer", "/concepts/0", "/rankings", "/compare", "/datapoints", "/cooccurrence", "/frequency",
         "/internal", "/steer"]


def label_of(client, concept: int) -> str:
    return client.get(f"/api/concepts/{concept}").json()["label"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.",
                                  "[::2]:8000", "", "127.0.0.1:80:80"])
def test_a_request_for_another_host_is_refused(client, host):
    # DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example
    for path in ("/", "/api/overview", "/images/real/0.png", "/static/style.css"):
        answer = client.get(path, headers={"Host": host})
        if host == "localhost.":  # the root of the DNS is the same name
            assert answer.status_code in (200, 404), path
            continue
        assert answer.status_code == 400, (host, path)
        assert "--allow-host" in answer.text


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8000", "localhost:8000", "LOCALHOST", "[::1]:8000"])
def test_loopback_hosts_are_answered(client, host):
    assert client.get("/api/overview", headers={"Host": host}).status_code == 200


def test_allowed_hosts_add_the_bound_address_and_the_named_ones():
    assert allowed_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("0.0.0.0") == {"localhost", "127.0.0.1", "::1"}  # every interface: no name to add
    assert {"192.168.1.5", "atlas.lan"} <= allowed_hosts("192.168.1.5", ["Atlas.LAN"])
    assert host_name("[::1]:8000") == "::1" and host_name("Atlas.Lan.:80") == "atlas.lan"
    assert host_name("a:b") is None and host_name("[::1]x") is None


def test_allow_host_names_are_answered_and_star_answers_any(lens_atlas, tmp_path):
    settings = Settings(atlas=lens_atlas, labels=tmp_path / "labels.json", allow_hosts=("atlas.lan",))
    with TestClient(create_app(settings), base_url="http://atlas.lan:8000") as named:
        assert named.get("/api/overview").status_code == 200
        assert named.get("/api/overview", headers={"Host": "other.lan"}).status_code == 400
    settings = Settings(atlas=lens_atlas, labels=tmp_path / "labels.json", allow_hosts=("*",))
    with TestClient(create_app(settings), base_url="http://anything.example") as anyone:
        assert anyone.get("/api/overview").status_code == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},                              # a form POST or fetch from another site
    {"Origin": "http://127.0.0.1:9999"},                            # another port: another origin
    {"Origin": "null"},                                             # a sandboxed frame or a data: page
    {"Sec-Fetch-Site": "cross-site"},                               # a no-cors fetch says where it comes from
    {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1"},  # another port of the same host
])
def test_a_cross_site_label_edit_is_refused_and_not_saved(client, headers):
    before = label_of(client, 1)
    for body, content_type in ((b"label=pwned", "application/x-www-form-urlencoded"),
                               (b'{"label": "pwned"}', "text/plain")):
        answer = client.post("/api/concepts/1/label", content=body,
                             headers={"Content-Type": content_type, **headers})
        assert answer.status_code == 403, answer.text
        assert "refused" in answer.json()["detail"]
    assert label_of(client, 1) == before


def test_cross_site_posts_to_every_state_changing_route_are_refused(client):
    for path in ("/api/concepts/2/label", "/api/explorer/selection", "/explorer/selection", "/api/steer"):
        answer = client.post(path, json={}, headers={"Sec-Fetch-Site": "cross-site"})
        assert answer.status_code == 403, path
    for method in ("put", "patch", "delete"):
        assert getattr(client, method)("/api/concepts/2/label", headers={"Origin": "http://evil.example"}
                                       ).status_code == 403


@pytest.mark.parametrize("headers", [
    {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"},  # the explorer's own pages
    {"Origin": "http://127.0.0.1"},                                    # a browser without Sec-Fetch-Site
    {},                                                                # curl, a script: no browser session to abuse
])
def test_same_origin_and_non_browser_label_edits_are_saved(client, headers):
    answer = client.post("/api/concepts/3/label", data={"label": "kept"}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert label_of(client, 3) == "kept"
    client.post("/api/concepts/3/label", data={"label": ""})


def test_every_answer_carries_the_security_headers(client):
    answers = {path: client.get(path) for path in [*PAGES, "/static/style.css", "/api/overview", "/no-such-page",
                                                   "/images/real/nope.png", "/concepts/999999"]}
    answers["refused host"] = client.get("/", headers={"Host": "evil.example"})
    for name, answer in answers.items():
        policy = answer.headers.get("content-security-policy", "")
        assert "default-src 'none'" in policy and "script-src 'self'" in policy, name
        assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy, name
        assert answer.headers["x-content-type-options"] == "nosniff", name
        assert answer.headers["x-frame-options"] == "DENY", name
        assert answer.headers["referrer-policy"] == "same-origin", name
        assert answer.headers["cross-origin-resource-policy"] == "same-origin", name
    # only the explorer's WebGL scatter (regl compiles its draw calls) may evaluate code
    assert [n for n, a in answers.items() if "unsafe-eval" in a.headers["content-security-policy"]] == ["/explorer"]


def test_a_server_error_is_a_page_with_the_same_headers(lens_atlas, tmp_path):
    app = create_app(Settings(atlas=lens_atlas, labels=tmp_path / "labels.json"))

    @app.get("/boom")
    def boom():
        raise RuntimeError("a bug")

    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as failing:
        page = failing.get("/boom", headers={"Accept": BROWSER_ACCEPT})
        assert page.status_code == 500 and "<html" in page.text and "a bug" not in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert failing.get("/boom").json() == {"detail": "the server failed on this request (its log has the details)"}


@pytest.mark.parametrize("path, status, reason", [
    ("/concepts/999999", 404, "999999"), ("/no-such-page", 404, "Not Found"),
    ("/rankings?sort=bogus", 422, "sort"), ("/pairs/no-such-item", 404, "no-such-item"),
])
def test_errors_are_pages_for_a_browser_and_json_for_the_api(client, path, status, reason):
    page = client.get(path, headers={"Accept": BROWSER_ACCEPT})
    assert page.status_code == status and page.headers["content-type"].startswith("text/html")
    assert "<html" in page.text and 'class="notice error"' in page.text and reason in page.text
    assert 'href="/explorer"' in page.text  # the explorer's header: the user can go on from here
    fragment = client.get(path, headers={"Accept": BROWSER_ACCEPT, "HX-Request": "true"})
    assert fragment.status_code == status and "<html" not in fragment.text and reason in fragment.text
    for accept in ("application/json", "*/*", "application/json, text/html;q=0.5"):
        answer = client.get(path, headers={"Accept": accept})
        assert answer.status_code == status and reason in str(answer.json()["detail"])
    api = client.get("/api" + path, headers={"Accept": BROWSER_ACCEPT})
    assert api.status_code in (404, 422) and "detail" in api.json()  # /api/ answers JSON whatever it asks
