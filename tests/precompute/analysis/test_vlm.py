"""VLM labels: the alpha-masked exemplar of appendix F.2 goes to an OpenAI-compatible endpoint."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb
import numpy as np
import pytest
from PIL import Image

from precompute.analysis.vlm import VLMLabeler, alpha_masked
from precompute.config import parse_config
from precompute.pipeline import run_pipeline
from tests.conftest import silent_progress


@pytest.fixture
def endpoint():
    """A local chat-completions stand-in: answers 'wood grain.' or fails, and keeps the requests."""
    state = {"requests": [], "fail": False}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append((self.path, dict(self.headers), body))
            if state["fail"]:
                self.send_response(500)
                self.end_headers()
                return
            payload = json.dumps({"choices": [{"message": {"content": " wood grain. "}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", state
    finally:
        server.shutdown()
        server.server_close()


def test_alpha_mask_keeps_only_where_the_concept_is():
    image = Image.new("RGB", (32, 32), (200, 100, 50))
    heatmap = np.zeros((4, 4), dtype=np.float32)
    heatmap[0, 0] = 3.0
    masked = Image.open(io.BytesIO(alpha_masked(image, heatmap)))
    assert masked.mode == "RGBA" and masked.size == (32, 32)
    alpha = np.asarray(masked)[..., 3]
    assert alpha[1, 1] > 200 and alpha[30, 30] == 0


def test_label_request_and_failure(endpoint, monkeypatch):
    url, state = endpoint
    monkeypatch.setenv("TEST_VLM_KEY", "secret")
    labeler = VLMLabeler(url, "some-vlm", api_key_env="TEST_VLM_KEY", timeout_s=5)
    png = alpha_masked(Image.new("RGB", (8, 8)), np.ones((2, 2)))
    assert labeler.label_many({3: png, 7: png}) == {3: "wood grain", 7: "wood grain"}
    path, headers, body = state["requests"][0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer secret"
    image_part = body["messages"][0]["content"][1]["image_url"]["url"]
    assert image_part.startswith("data:image/png;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(image_part.split(",", 1)[1]))).mode == "RGBA"
    assert "areas without the concept were removed" in body["messages"][0]["content"][0]["text"]
    state["fail"] = True
    assert labeler.label_many({3: png}) == {}  # a failure leaves the concept unlabelled


def test_analyze_labels_concepts_and_survives_a_failing_endpoint(lens_atlas, tiny_dinov2, endpoint, tmp_path):
    from tests.conftest import lens_config

    url, state = endpoint
    work = tmp_path / "work"
    shutil.copytree(lens_atlas.parent / f"{lens_atlas.name}.work", work)
    data = lens_config(tiny_dinov2).model_dump(mode="json")
    data["labels"] = {"vlm_endpoint": url, "vlm_model": "some-vlm", "vlm_max_concepts": 5}
    config = parse_config(data)
    run_pipeline(config, tmp_path / "labelled", work=work, stages=["analyze", "build"], progress=silent_progress)
    with duckdb.connect(str(tmp_path / "labelled" / "atlas.duckdb"), read_only=True) as db:
        labelled = db.execute("SELECT count(*) FROM concepts WHERE vlm_label = 'wood grain' "
                              "AND label = 'wood grain'").fetchone()[0]
    assert labelled == len(state["requests"]) and 1 <= labelled <= 5
    state["fail"] = True
    data["labels"]["vlm_max_concepts"] = 4  # a new config digest: the analysis runs again
    run_pipeline(parse_config(data), tmp_path / "unlabelled", work=work, stages=["analyze", "build"],
                 progress=silent_progress)
    with duckdb.connect(str(tmp_path / "unlabelled" / "atlas.duckdb"), read_only=True) as db:
        assert db.execute("SELECT count(*) FROM concepts WHERE vlm_label IS NOT NULL").fetchone()[0] == 0
