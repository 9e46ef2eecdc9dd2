"""Real-browser fixtures: the app served by uvicorn in a thread, driven by Playwright through Debian's chromium.

No browser is ever downloaded: Playwright launches ``/usr/bin/chromium`` (``apt-get install chromium``, done by
``.ci/run``). Headless chromium has no GPU here; WebGL (which regl-scatterplot needs) runs on SwiftShader, ANGLE's
software Vulkan renderer. With chromium 150 that works with the flags below; ``--enable-unsafe-swiftshader`` keeps
the software fallback allowed in versions that gate it behind that flag (``--use-gl=swiftshader`` and
``--use-angle=swiftshader`` gave the same renderer and are not needed).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("BLINDSPOT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--enable-unsafe-swiftshader"]
ARTIFACTS = Path(__file__).parent / "artifacts"


@contextmanager
def serve(atlas: Path, labels: Path):
    """The app over ``atlas`` on a free loopback port (label store ``labels``); yields the base URL."""
    import uvicorn

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(atlas=atlas, labels=labels))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def live_server(lens_atlas, tmp_path_factory):
    """The app over the lens atlas (its own label store); yields the base URL."""
    with serve(lens_atlas, tmp_path_factory.mktemp("browser-labels") / "labels.json") as base:
        yield base


@pytest.fixture(scope="session")
def internal_server(internal_atlas, tmp_path_factory):
    """The app over an atlas with the world model's internal lens, so it can steer; yields the base URL."""
    if not CHROMIUM.is_file():  # do not build the atlas for nothing
        pytest.skip(f"no chromium at {CHROMIUM} (install Debian's: apt-get install -y chromium)")
    with serve(internal_atlas, tmp_path_factory.mktemp("browser-labels") / "labels.json") as base:
        yield base


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (install Debian's: apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def page(browser, request):
    """A fresh 1440x900 page; console errors and page errors fail the test; a screenshot is kept as an artifact."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error.stack or error}"))
    # a 422 is the answer some tests provoke on purpose (a refused label): the browser and htmx log it, the page
    # shows it to the user, so it is no error here
    page.on("console", lambda message: errors.append(f"console: {message.text}")
            if message.type == "error" and not re.search(r"(status of|Error Code) 422", message.text) else None)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
    context.close()
    assert not errors, errors
