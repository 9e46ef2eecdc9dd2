"""The web defences in a real browser: every page family satisfies its Content-Security-Policy (no violation while
it loads and is used), and a page on another site cannot change a label, by form or by no-cors fetch."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager

import duckdb
import httpx
import pytest

pytestmark = pytest.mark.slow

# Collected before any page script runs (an init script is the browser's, so the page's CSP does not stop it).
WATCH_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => window.__cspViolations.push(
  `${event.violatedDirective} blocked ${event.blockedURI || "inline"} (${event.sourceFile}:${event.lineNumber})`));
"""


@pytest.fixture(scope="module")
def facts(internal_atlas):
    with duckdb.connect(str(internal_atlas / "atlas.duckdb"), read_only=True) as db:
        concept = db.execute("SELECT concept FROM concepts WHERE NOT is_dead ORDER BY concept LIMIT 1").fetchone()[0]
        item = db.execute("SELECT item_id FROM items ORDER BY position LIMIT 1").fetchone()[0]
        feature = db.execute("SELECT feature FROM internal_features WHERE kept ORDER BY minority_rank LIMIT 1"
                             ).fetchone()[0]
    return {"concept": concept, "item": item, "feature": feature}


def violations(page, console: list[str]) -> list[str]:
    return page.evaluate("() => window.__cspViolations") + [m for m in console if "Content Security Policy" in m]


def use_explorer(page):
    page.wait_for_selector("#plot[data-points]", timeout=60_000)
    page.wait_for_selector("#concept-card")  # the card swapped in by htmx
    with page.expect_response(lambda r: "/explorer/search" in r.url):
        page.fill("#search", "a")  # the label search (an htmx request as the user types)
    page.press("#search", "Enter")  # Enter in the controls' form: it must not submit (an inline handler did)
    page.select_option("#colour", index=1)


def use_concept(page):
    page.locator("[data-heat-opacity]").first.fill("0.3")  # the heatmap opacity: a style property set by script


def use_filters(page):
    # a filter changed: htmx fetches the view again and swaps it in
    with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true"):
        page.locator("form.filters select").first.select_option(index=0)
    page.wait_for_load_state("networkidle")


PAGES = {
    "overview": ("/", None),
    "explorer": ("/explorer?model=world-model&concept={concept}", use_explorer),
    "concept card": ("/concepts/{concept}?model=world-model", use_concept),
    "rankings": ("/rankings", use_filters),
    "compare": ("/compare", None),
    "datapoints": ("/datapoints", use_filters),
    "pair": ("/pairs/{item}", None),
    "co-occurrence": ("/cooccurrence", use_filters),
    "frequency": ("/frequency", use_filters),
    "internal": ("/internal", None),
    "internal feature": ("/internal/world-model/features/{feature}", use_concept),
    "steer": ("/steer?generator=world-model&prompt=a+red+circle&features={feature}:20&concept={concept}",
              lambda page: page.wait_for_selector("figure.steer-image img", timeout=120_000)),
    "error page": ("/concepts/99999", None),
}


@pytest.mark.parametrize("name", PAGES)
def test_no_page_violates_its_content_security_policy(browser, internal_server, facts, name):
    path, use = PAGES[name]
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.add_init_script(WATCH_VIOLATIONS)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        answer = page.goto(internal_server + path.format(**facts))
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")
        if use is not None:
            use(page)
        page.wait_for_load_state("networkidle")
        assert violations(page, console) == []
    finally:
        context.close()


class HostilePage(http.server.BaseHTTPRequestHandler):
    """Another site's page: ``/form`` posts a label to the explorer by a plain form, ``/fetch`` by a no-cors fetch."""

    target = ""

    def do_GET(self):  # noqa: N802 - the http.server API
        url = f"{self.target}/api/concepts/0/label"
        if self.path == "/form":
            script = "document.getElementById('f').submit();"
        else:
            script = (f'fetch("{url}", {{method: "POST", mode: "no-cors", body: "label=pwned+by+fetch", '
                      'headers: {"Content-Type": "application/x-www-form-urlencoded"}});')
        body = (f'<!doctype html><body><form id="f" method="post" action="{url}">'
                f'<input name="label" value="pwned by form"></form><script>{script}</script></body>')
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@contextmanager
def hostile_site(target: str):
    """The hostile page on another origin: ``localhost`` and a port of its own, the explorer being 127.0.0.1."""
    handler = type("Hostile", (HostilePage,), {"target": target})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_page_on_another_site_cannot_change_a_label(browser, live_server):
    before = httpx.get(f"{live_server}/api/concepts/0").json()["label"]
    context = browser.new_context()
    page = context.new_page()
    try:
        with hostile_site(live_server) as hostile:
            for kind in ("fetch", "form"):
                with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/label")) as post:
                    page.goto(f"{hostile}/{kind}")  # the browser sends the post ...
                page.wait_for_load_state("networkidle")
                if kind == "form":  # ... the form's answer is the page it lands on (a no-cors fetch's answer is
                    assert post.value.response().status == 403  # withheld by Cross-Origin-Resource-Policy)
                    assert "refused" in page.inner_text("body")
                # ... and the label stays as it was
                assert httpx.get(f"{live_server}/api/concepts/0").json()["label"] == before, kind
    finally:
        context.close()
