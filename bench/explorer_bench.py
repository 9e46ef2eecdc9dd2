"""Benchmark: the explorer at the paper's scale (issue 6's performance targets).

Builds the synthetic atlas of ``analysis_views_bench.py`` (32,000 concepts, 10,000 pairs,
four generators), serves it with ``blindspot serve`` in a process of its own on loopback
(as a user runs it; the clients below run in this process) and measures:

1. the point payload: its size and the time to serve it (first request and cached);
2. the explorer's first load in headless chromium: navigation start to the scatter having
   drawn every point (``performance.now()`` when the page sets ``#plot[data-points]``, right
   after regl-scatterplot's draw resolves, caught by a MutationObserver the benchmark installs,
   so any version of the page is timed alike), each run in a fresh browser context (empty cache);
3. the concept card (the htmx fragment the explorer loads on click) under load: N clients
   on loopback for S seconds, each requesting random concepts of random models back to back;
   then, as a floor, the same load on a small static file for up to 10 s (the machine's
   speed varies from run to run; the floor says how fast it serves anything at the time).

    python bench/explorer_bench.py [--concepts 32000] [--items 10000] [--loads 5] [--clients 20] [--seconds 30]
    python bench/explorer_bench.py --atlas demo-atlas --loads 9 --seconds 0   # an atlas you built, first load only

Targets: payload <= 600 KB; first load <= 1.5 s; card p99 <= 100 ms with 20 clients, 0 errors.
The first load is also split into its steps (medians of performance.now() marks and the resource timings):
the HTML, the scatter bundle and the point payload received, and the points drawn; with the bytes each
asset took on the wire (gzip) and uncompressed.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from analysis_views_bench import synthetic_atlas_in

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--enable-unsafe-swiftshader"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(atlas: Path) -> tuple[str, subprocess.Popen]:
    """``blindspot serve`` in a process of its own, as a user runs it; returns once it answers."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", str(atlas), "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/concepts/0", timeout=5).status_code == 200:  # answers once the card index is read
                return base, server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not answer within 120 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def payload(base: str, model: str, repeats: int = 10) -> None:
    with httpx.Client(base_url=base) as client:
        for colour in ("delta", "frequency"):
            url = f"/api/explorer/points.bin?model={model}&colour={colour}"
            start = time.perf_counter()
            response = client.get(url)
            first = time.perf_counter() - start
            wire = len(response.read()) if response.headers.get("content-encoding") != "gzip" else int(
                response.headers.get("content-length", 0))
            body = response.content
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                client.get(url)
                times.append(time.perf_counter() - start)
            print(f"| payload `{url}` | {len(body):,} bytes ({len(body) / 1024:.0f} KB), {wire / 1024:.0f} KB gzip "
                  f"| first {1000 * first:.0f} ms, cached median {1000 * statistics.median(times):.1f} ms |")


# After the scatter has drawn: navigation start to each step, and every asset's size on the wire and unpacked.
STEPS = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const resources = performance.getEntriesByType('resource');
    const find = (part) => resources.find((r) => r.name.includes(part));
    const bundle = find('regl-scatterplot.js'), points = find('points.bin');
    return {html: nav.responseEnd, parsed: nav.domContentLoadedEventEnd, bundle: bundle ? bundle.responseEnd : null,
            points: points ? points.responseEnd : null, drawn: window.drawnAt,
            sizes: [nav, ...resources].map((r) => [r.name.split('/').pop().split('?')[0] || 'page',
                                                   r.encodedBodySize, r.decodedBodySize])};
}"""


# Installed before the page's own scripts: the time the page marks the scatter as drawn.
DRAWN = """new MutationObserver((changes, observer) => {
    if (document.getElementById('plot')?.dataset.points) { window.drawnAt = performance.now(); observer.disconnect(); }
}).observe(document, {subtree: true, attributes: true, attributeFilter: ['data-points']});"""


def first_load(base: str, models: list[str], loads: int) -> None:
    from playwright.sync_api import sync_playwright

    runs = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for model in (models * loads)[:loads]:
            context = browser.new_context(viewport={"width": 1440, "height": 900})
            page = context.new_page()
            page.add_init_script(DRAWN)
            page.goto(f"{base}/explorer?model={model}")
            page.wait_for_selector("#plot[data-points]", timeout=60_000)
            runs.append(page.evaluate(STEPS))
            points = page.get_attribute("#plot", "data-points")
            context.close()
        browser.close()
    drawn = [r["drawn"] / 1000 for r in runs]
    print(f"| explorer first load, {loads} fresh contexts | {points} points drawn | median {statistics.median(drawn):.2f} s, "
          f"max {max(drawn):.2f} s; each run: {', '.join(f'{t:.2f}' for t in drawn)} |")
    steps = {k: statistics.median(r[k] for r in runs if r[k] is not None) for k in ("html", "parsed", "bundle", "points")}
    print(f"| first load steps (medians) | | HTML {steps['html']:.0f} ms, DOM parsed {steps['parsed']:.0f} ms, "
          f"bundle {steps['bundle']:.0f} ms, payload {steps['points']:.0f} ms, drawn {1000 * statistics.median(drawn):.0f} ms |")
    sizes = ", ".join(f"{name} {wire / 1024:.0f} of {raw / 1024:.0f} KB" for name, wire, raw in runs[-1]["sizes"]
                      if raw > 2048)
    print(f"| bytes on the wire (gzip) of unpacked | | {sizes} |")


def card_load(base: str, models: list[str], concepts: int, clients: int, seconds: float, what: str = "card") -> None:
    """``clients`` closed-loop clients for ``seconds``: concept cards, or (``what="floor"``) a small static file,
    the same load on what the server does least for: how fast this machine serves anything right now."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, headers={"HX-Request": "true"}, timeout=30) as client:
            while time.monotonic() < stop:
                url = (f"/concepts/{rng.randrange(concepts)}?model={rng.choice(models)}" if what == "card"
                       else f"/static/style.css?{rng.randrange(concepts)}")
                start = time.perf_counter()
                try:
                    status = client.get(url).status_code
                except httpx.HTTPError as exc:
                    status = repr(exc)
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if status != 200:
                        errors.append(f"{url}: {status}")

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ms = [1000 * t for t in latencies]
    name = "concept card fragment" if what == "card" else "floor: a static file (/static/style.css)"
    print(f"| {name}, {clients} clients x {seconds:.0f} s | {len(ms)} requests, {len(errors)} errors, "
          f"{len(ms) / seconds:.1f} req/s | p50 {percentile(ms, 0.5):.0f} ms, p95 {percentile(ms, 0.95):.0f} ms, "
          f"p99 {percentile(ms, 0.99):.0f} ms |")
    if errors:
        print("errors:", errors[:5])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, help="serve this atlas instead of building the synthetic one")
    parser.add_argument("--concepts", type=int, default=32_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30, help="of the card load (0: no card load)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        atlas = args.atlas or synthetic_atlas_in(folder, args.concepts, args.items)
        base, server = serve(atlas)
        try:
            view = httpx.get(f"{base}/api/explorer", timeout=30).json()
            models, concepts = view["models"], view["n_concepts"]
            print(f"atlas {atlas}: {concepts} concepts, models {', '.join(models)}\n")
            print("| measure | size / count | time |\n| --- | --- | --- |")
            payload(base, models[0])
            first_load(base, models, args.loads)
            if args.seconds > 0:
                card_load(base, models, concepts, args.clients, args.seconds)
                card_load(base, models, concepts, args.clients, min(args.seconds, 10), what="floor")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
