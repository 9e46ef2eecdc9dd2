"""Steering over HTTP (httpx ASGI client): results with image URLs, cache hits, baseline reuse, 422, 429, 409."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from backend.steering.atlas import service_for
from backend.steering.inputs import SteeringLimits
from tests.conftest import build_atlas, one_torch_thread
from tests.steering_support import add_internal_lens, steerable_config, world_captions

PROMPT = world_captions(1)[0]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def steerable_atlas(tmp_path_factory, world_internal_sae, world_output_sae):
    atlas = build_atlas(tmp_path_factory.mktemp("steer-api") / "atlas", steerable_config())
    return add_internal_lens(atlas, world_internal_sae, world_output_sae)


async def with_client(atlas, scenario):
    """Run ``scenario(client, app)`` against the app, its lifespan started and stopped around it."""
    app = create_app(Settings(atlas=atlas))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await scenario(client, app)


def run(atlas, scenario):
    return asyncio.run(with_client(atlas, scenario))


def body(**overrides):
    return {"prompt": PROMPT, "features": [{"feature": 2, "strength": 6.0}], "mode": "add", "seed": 1,
            "concepts": [0, 3], **overrides}


def test_steer_returns_both_images_and_the_effect_then_hits_the_cache(steerable_atlas):
    async def scenario(client, app):
        first = await client.post("/api/steer", json=body())
        again = await client.post("/api/steer", json=body())
        other = await client.post("/api/steer", json=body(features=[{"feature": 2, "strength": -6.0}]))
        images = [await client.get(first.json()[side]["url"]) for side in ("baseline", "steered")]
        return first, again, other, images

    first, again, other, images = run(steerable_atlas, scenario)
    assert first.status_code == 200, first.text
    result = first.json()
    assert result["cached"] is False
    assert [e["concept"] for e in result["effect"]] == [0, 3]
    assert all(e["difference"] == pytest.approx(e["steered"] - e["baseline"]) for e in result["effect"])
    assert all(image.status_code == 200 and image.content.startswith(b"\x89PNG") for image in images)
    assert images[0].content != images[1].content
    assert again.json() == {**result, "cached": True}
    # another steer of the same prompt and seed reuses the baseline image
    assert other.json()["baseline"] == result["baseline"] and other.json()["steered"] != result["steered"]


@pytest.mark.parametrize("payload, message", [
    (body(prompt=""), "prompt"),
    (body(features=[{"feature": 99999, "strength": 1.0}]), "feature must be an integer"),
    (body(mode="scale", features=[{"feature": 1, "strength": 100.0}]), "strength"),
    (body(steps=5000), "steps"),
    (body(size=100000), "size"),
    (body(prompt="word " * 100), "at most 300 characters"),
    (body(concepts=[10**6]), "concept"),
    (body(colour="red"), "colour"),
    (body(generator="planted"), "no internal lens for generator"),
])
def test_bad_inputs_get_a_clear_4xx(steerable_atlas, payload, message):
    async def scenario(client, app):
        return await client.post("/api/steer", json=payload)

    answer = run(steerable_atlas, scenario)
    assert answer.status_code == (404 if "generator" in payload else 422)
    assert message in answer.text


def test_a_full_queue_answers_429_with_retry_after(steerable_atlas):
    gate, running = threading.Event(), threading.Event()

    async def scenario(client, app):
        app.state.steering["world-model"].close()
        service = service_for(app.state.atlas, "world-model", limits=SteeringLimits(queue_size=1))
        app.state.steering["world-model"] = service
        original = service._run

        def held(request, deadline):
            running.set()
            gate.wait(30)
            return original(request, deadline)

        service._run = held
        first = asyncio.create_task(client.post("/api/steer", json=body(seed=11)))
        while not running.is_set():  # the worker holds the first request
            await asyncio.sleep(0.01)
        second = asyncio.create_task(client.post("/api/steer", json=body(seed=12)))
        while service._queue.qsize() < 1:  # the second waits in the queue
            await asyncio.sleep(0.01)
        refused = await client.post("/api/steer", json=body(seed=13))
        gate.set()
        return refused, await asyncio.gather(first, second)

    refused, done = run(steerable_atlas, scenario)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "queue is full" in refused.json()["detail"]
    assert [d.status_code for d in done] == [200, 200]


def test_steering_images_are_confined_to_the_cache(steerable_atlas):
    async def scenario(client, app):
        return [await client.get(f"/api/steer/images/{key}.png")
                for key in ("0" * 32, "..%2f..%2fatlas%2fatlas.duckdb", "%2e%2e", "A" * 32)]

    assert [a.status_code for a in run(steerable_atlas, scenario)] == [404] * 4


def test_an_atlas_without_internal_lens_says_so(world_atlas):
    async def scenario(client, app):
        return [await client.post("/api/steer", json=body()),
                await client.get("/api/internal/plain/minority"),
                await client.get("/api/internal/plain/features/0"),
                await client.get("/api/concepts/0/features")]

    answers = run(world_atlas, scenario)
    assert [a.status_code for a in answers] == [409] * 4
    assert all("no internal lens" in a.json()["detail"] for a in answers)


def test_status_lists_the_steerable_generator(steerable_atlas):
    async def scenario(client, app):
        return await client.get("/api/steer")

    status = run(steerable_atlas, scenario).json()
    assert status["generators"]["world-model"]["features"] == 256
    assert status["generators"]["world-model"]["size"] == [32, 32]
    assert status["limits"]["queue_size"] >= 1
