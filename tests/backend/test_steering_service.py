"""The steering service: measured effect, disk cache, baseline reuse, validation, queue, time limit, from_atlas."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from backend.atlas import NotFound
from backend.steering.atlas import service_for
from backend.steering.inputs import SteeringInputError, SteeringLimits
from backend.steering.service import SteeringBusy, SteeringParts, SteeringService, SteeringTimeout
from backend.views.internal import NoInternalLens
from precompute.config import WorldModelGeneratorConfig
from tests.conftest import build_atlas, one_torch_thread
from tests.steering_support import POINT, activation_scale, add_internal_lens, steerable_config, world_captions

PROMPT = world_captions(1)[0]
STEPS = 4


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def typical(world_internal_sae):
    """Each internal feature's typical activation on the world model's bottleneck (add mode's unit)."""
    return tuple(activation_scale(world_internal_sae).typical.tolist())


def make_service(tmp_path, internal_sae, output_sae, typical=None, **limits) -> SteeringService:
    generator = WorldModelGeneratorConfig(name="world-model", kind="world-model", steps=STEPS, device="cpu")
    parts = SteeringParts(generator=generator, internal_sae=internal_sae, point=POINT, energy_model="world",
                          output_sae=output_sae, cache=tmp_path / "cache", size=(64, 64), device="cpu",
                          typical=typical)
    return SteeringService(parts, SteeringLimits(**limits))


@pytest.fixture(scope="module")
def service(tmp_path_factory, world_internal_sae, world_output_sae, typical):
    made = make_service(tmp_path_factory.mktemp("steer"), world_internal_sae, world_output_sae, typical)
    yield made
    made.close()


@pytest.fixture(scope="module")
def first(service):
    """One steer with a strong add of feature 3 (8 times its typical activation), measured on three concepts."""
    request = service.request(prompt=PROMPT, features=[{"feature": 3, "strength": 8.0}], mode="add", seed=5,
                              concepts=[0, 1, 2])
    return request, service.steer(request)


def counting_generations(service, monkeypatch) -> list:
    calls = []
    original = service._generate

    def spy(pipeline, request):
        calls.append(request)
        return original(pipeline, request)

    monkeypatch.setattr(service, "_generate", spy)
    return calls


def test_result_carries_both_images_and_the_measured_effect(service, first):
    from precompute.encoders import load_energy_model
    from precompute.sae import load_sae

    request, result = first
    assert result["cached"] is False and result["generator"] == "world-model"
    baseline, steered = service.image_path(result["baseline"]["key"]), service.image_path(result["steered"]["key"])
    assert baseline.read_bytes() != steered.read_bytes()
    assert [e["concept"] for e in result["effect"]] == [0, 1, 2]
    # the energies are the output lens's: the sum of SAE codes over all tokens of the stored PNG
    model, sae = load_energy_model("world"), load_sae(service.parts.output_sae)
    for key, path in (("baseline", baseline), ("steered", steered)):
        from PIL import Image

        energy = sae.encode_codes(model.encode([Image.open(path).convert("RGB")]).tokens).sum(1)[0]
        torch.testing.assert_close(torch.tensor([e[key] for e in result["effect"]]), energy[:3], rtol=1e-4, atol=1e-4)
    for e in result["effect"] + result["largest_changes"]:
        assert e["difference"] == pytest.approx(e["steered"] - e["baseline"])
    assert abs(result["largest_changes"][0]["difference"]) > 0.1  # a strong steer moves some concept


def test_a_cache_hit_returns_the_same_result_without_generating(service, first, monkeypatch):
    request, result = first
    calls = counting_generations(service, monkeypatch)
    started = time.perf_counter()
    again = service.steer(service.request(prompt=PROMPT, features=[[3, 8]], mode="add", seed=5, concepts=[0, 1, 2]))
    assert time.perf_counter() - started < 1.0
    assert calls == []
    assert again["cached"] is True
    assert {**again, "cached": False} == result


def test_the_baseline_is_made_once_and_reused(service, first, monkeypatch):
    _, result = first
    baseline_png = service.image_path(result["baseline"]["key"])
    stamp = baseline_png.stat().st_mtime_ns
    calls = counting_generations(service, monkeypatch)
    other = service.steer(service.request(prompt=PROMPT, features=[{"feature": 3, "strength": -4.0}], mode="add",
                                          seed=5))
    assert other["baseline"]["key"] == result["baseline"]["key"]
    assert other["steered"]["key"] != result["steered"]["key"]
    assert len(calls) == 1  # only the steered image was generated
    assert baseline_png.stat().st_mtime_ns == stamp


def test_strength_zero_reproduces_the_baseline_bytes(service):
    result = service.steer(service.request(prompt=PROMPT, features=[{"feature": 3, "strength": 0.0}], seed=9,
                                           concepts=[4]))
    baseline, steered = service.image_path(result["baseline"]["key"]), service.image_path(result["steered"]["key"])
    assert baseline.read_bytes() == steered.read_bytes()
    assert result["effect"][0]["difference"] == 0.0


@pytest.mark.parametrize("fields, message", [
    ({"prompt": ""}, "prompt must be a non-empty string"),
    ({"prompt": "x" * 301}, "at most 300 characters"),
    ({"features": []}, "1 to 8"),
    ({"features": [{"feature": 256, "strength": 1.0}]}, r"feature must be an integer in \[0, 255\]"),
    ({"features": [{"feature": 1, "strength": 1.0}, {"feature": 1, "strength": 2.0}]}, "listed twice"),
    ({"features": [{"feature": 1, "strength": 25.0}]}, r"scale mode\) must be a number in \[-1, 20\]"),
    ({"features": [{"feature": 1, "strength": -2.0}]}, r"\[-1, 20\]"),
    ({"features": [{"feature": 1}]}, "each feature must be"),
    ({"mode": "add", "features": [{"feature": 1, "strength": 1e6}]}, r"\[-50, 50\]"),
    ({"mode": "boost"}, "mode must be one of"),
    ({"steps": 0}, r"steps must be an integer in \[1, 100\]"),
    ({"steps": 1000}, r"\[1, 100\]"),
    ({"guidance": -1}, "guidance"),
    ({"size": 4096}, r"size must be an integer in \[16, 1024\]"),
    ({"seed": -1}, "seed"),
    ({"step_range": [3, 2]}, "step_range stop"),
    ({"step_range": [0, 5]}, r"step_range stop must be an integer in \[1, 4\]"),
    ({"concepts": [32]}, r"concept must be an integer in \[0, 31\]"),
    ({"concepts": list(range(33))}, "at most 32"),
    ({"conditional_only": "yes"}, "true or false"),
])
def test_bad_inputs_are_refused_with_the_reason_before_any_model_loads(tmp_path, world_internal_sae,
                                                                        world_output_sae, fields, message):
    service = make_service(tmp_path, world_internal_sae, world_output_sae)
    good = {"prompt": PROMPT, "features": [{"feature": 1, "strength": 1.0}]}
    with pytest.raises(SteeringInputError, match=message):
        service.request(**{**good, **fields})
    assert service._models is None


def test_a_full_queue_is_busy_with_a_retry_time(tmp_path, world_internal_sae, world_output_sae, monkeypatch):
    service = make_service(tmp_path, world_internal_sae, world_output_sae, queue_size=1)
    gate, running = threading.Event(), threading.Event()

    def blocked(request, deadline):
        running.set()
        gate.wait(10)
        return {"done": request.seed}

    monkeypatch.setattr(service, "_run", blocked)
    request = service.request(prompt=PROMPT, features=[[1, 1.0]])
    held = service.submit(request)
    assert running.wait(10)
    waiting = service.submit(request)
    with pytest.raises(SteeringBusy) as busy:
        service.submit(request)
    assert busy.value.retry_after >= 1
    gate.set()
    assert held.result(10) == waiting.result(10) == {"done": 0}
    assert service.submit(request).result(10) == {"done": 0}  # room again once the queue drained
    service.close()
    with pytest.raises(SteeringTimeout, match="shut down"):  # a closed service takes no more work
        service.submit(request)


def test_retry_after_is_the_time_until_the_queue_has_room(tmp_path, world_internal_sae, world_output_sae):
    # every denoising step made slow (0.15 s) and steady, so the time until the queue has room is known
    from precompute.generators.capture import resolve_module

    service = make_service(tmp_path, world_internal_sae, world_output_sae, queue_size=1)
    service._load()
    denoiser = resolve_module(service._models["pipeline"], POINT.split(".")[0])
    handle = denoiser.register_forward_pre_hook(lambda *_: time.sleep(0.15))
    try:
        def steer(seed: int):
            return service.request(prompt=PROMPT, features=[[1, 1.0]], seed=seed, steps=6)

        service.steer(steer(1))  # the service times its steps on a first steer
        running = service.submit(steer(2))  # two images of 6 steps: about 2 s
        deadline = time.monotonic() + 30
        while service._queue.qsize():  # the worker has taken it ...
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.4)  # ... and is a few steps into its first image
        service.submit(steer(3))  # the queue (one place) is full
        refused_at = time.monotonic()
        with pytest.raises(SteeringBusy, match=r"queue is full \(1 waiting, one generating\)") as busy:
            service.submit(steer(4))
        running.result(60)
        room_after = time.monotonic() - refused_at  # the worker takes the waiting request: room again
    finally:
        handle.remove()
        service.close()
    assert room_after - 1.0 <= busy.value.retry_after <= room_after + 1.5, (busy.value.retry_after, room_after)


def test_a_request_past_its_time_limit_stops_and_the_worker_goes_on(tmp_path, world_internal_sae, world_output_sae,
                                                                     monkeypatch):
    # the slow request needs 100 x 2 x 0.05 s; 2 s leaves a quick one room on a busy machine
    service = make_service(tmp_path, world_internal_sae, world_output_sae, timeout_s=2.0)
    service._load()
    slow = service.request(prompt=PROMPT, features=[[1, 1.0]], steps=100)
    pipeline = service._models["pipeline"]
    hooks = len(pipeline.unet._forward_pre_hooks)
    original = pipeline.unet.forward

    def slow_forward(*args, **kw):
        time.sleep(0.05)
        return original(*args, **kw)

    monkeypatch.setattr(pipeline.unet, "forward", slow_forward)
    with pytest.raises(SteeringTimeout, match="2 s"):
        service.submit(slow).result(30)
    assert len(pipeline.unet._forward_pre_hooks) == hooks and not pipeline.unet.mid_block._forward_hooks
    monkeypatch.setattr(pipeline.unet, "forward", original)
    quick = service.request(prompt=PROMPT, features=[[1, 1.0]], steps=2)
    assert service.submit(quick).result(30)["cached"] is False
    service.close()


@pytest.mark.parametrize("key", ["../atlas", "A" * 32, "0" * 31, "0" * 32, "0" * 31 + "/"])
def test_images_are_served_only_from_the_cache_by_key(service, key):
    with pytest.raises(NotFound):
        service.image_path(key)


def test_from_atlas_needs_an_internal_lens(world_atlas):
    with pytest.raises(NoInternalLens, match="no internal lens"):
        service_for(world_atlas)


def test_from_atlas_reads_the_contract_layout(tmp_path, world_internal_sae, world_output_sae):
    atlas = add_internal_lens(build_atlas(tmp_path / "atlas", steerable_config()), world_internal_sae,
                              world_output_sae)
    with pytest.raises(NotFound, match="no internal lens for generator 'nope'"):
        service_for(atlas, "nope")
    service = service_for(atlas)
    assert service.generator == "world-model" and service.parts.point == POINT
    assert service.cache == tmp_path / "atlas.cache" / "steer"
    assert service.default_size() == (32, 32)
    result = service.steer(service.request(prompt=PROMPT, features=[[2, 3.0]], concepts=[1]))
    assert service.image_path(result["steered"]["key"]).parent == tmp_path / "atlas.cache" / "steer"
    assert result["request"]["steps"] == 4  # the atlas generator's own settings are the defaults
    service.close()


def test_add_strengths_are_multiples_of_each_features_typical_activation(service, typical, first):
    request, result = first
    assert result["request"]["edits"] == [{"feature": 3, "strength": 8.0, "typical_activation": typical[3]}]
    models = service._load()
    config = service._steering(request, models)
    norm = float(models["internal_sae"].dictionary[3].detach().norm())
    # the hook adds activation units along the unit direction: 8 typical activations of feature 3's atom
    assert config.edits[0].feature == 3 and config.edits[0].strength == pytest.approx(8.0 * typical[3] * norm)
    assert 0 < typical[3] < float("inf")


def test_add_mode_needs_a_typical_activation(tmp_path, world_internal_sae, world_output_sae, typical):
    silent = list(typical)
    silent[5] = float("nan")  # a feature that never fired on the captured activations
    service = make_service(tmp_path, world_internal_sae, world_output_sae, tuple(silent))
    with pytest.raises(SteeringInputError, match=r"feature\(s\) \[5\] never fired"):
        service.request(prompt=PROMPT, features=[[5, 1.0]], mode="add")
    assert service.request(prompt=PROMPT, features=[[5, 1.0]], mode="scale").mode == "scale"
    bare = make_service(tmp_path, world_internal_sae, world_output_sae)
    with pytest.raises(SteeringInputError, match="add mode needs the internal features' typical activations"):
        bare.request(prompt=PROMPT, features=[[1, 1.0]], mode="add")


def test_without_a_time_limit_a_slow_request_runs_to_the_end(tmp_path, world_internal_sae, world_output_sae,
                                                           monkeypatch):
    service = make_service(tmp_path, world_internal_sae, world_output_sae, timeout_s=None)
    service.load()
    pipeline = service._models["pipeline"]
    original = pipeline.unet.forward

    def slow_forward(*args, **kw):
        time.sleep(0.05)
        return original(*args, **kw)

    monkeypatch.setattr(pipeline.unet, "forward", slow_forward)
    started = time.monotonic()
    result = service.submit(service.request(prompt=PROMPT, features=[[1, 1.0]], steps=12)).result(60)
    assert time.monotonic() - started > 1.0 and result["cached"] is False  # past what a 0.5 s limit would allow
    before, after = service.energy_vectors(result)
    assert before.shape == after.shape == (service.n_concepts,)
    service.close()
