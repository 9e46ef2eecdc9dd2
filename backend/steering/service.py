"""The steering service: generate a prompt unsteered and steered through the internal SAE, and measure both.

DESIGN.md section 2 (control): a request names features of the generator's internal
SAE and their strengths (``precompute.generators.steering``); the service makes the
baseline image and the steered one from the same seed, re-encodes both with the
atlas's output lens (energy model + SAE, ``Lens`` of the encode stage) and reports
the target concepts' energies in each and their difference: a measured effect.

How it serves:

- models (generator, internal SAE, energy model, output SAE) load on the first
  request, in the one worker thread that runs every generation;
- a bounded queue in front of that worker: a full queue raises ``SteeringBusy``
  (answered 429 with Retry-After: the seconds until the job in progress ends and the
  queue has room again, from its denoising steps left and the measured time per step);
- a time limit per request, counted from its submission and checked at every
  denoising step, so a slow request stops instead of holding the worker;
- results on disk (PNG + JSON) under keys of every parameter and the models'
  identity; the unsteered baseline is keyed by (prompt, seed, steps, guidance, size)
  only, made once and reused by every steer of that prompt and seed. The cache
  lives beside the atlas (``<atlas>.cache/steer``): the atlas itself is read-only.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from backend.atlas import NotFound
from backend.steering.inputs import SteeringInputError, SteeringLimits, SteerRequest, cache_key, validate_request
from precompute.config import DiffusersGeneratorConfig, WorldModelGeneratorConfig
from precompute.errors import BlindspotError, ConfigError
from precompute.fileio import write_text_atomic
from precompute.images import save_png

log = logging.getLogger(__name__)

KEY_LENGTH = 32
LARGEST_CHANGES = 5  # concepts listed by how much their energy moved


class SteeringBusy(BlindspotError):
    """The queue is full; try again in ``retry_after`` seconds (answered 429 with ``Retry-After``)."""

    status = 429

    def __init__(self, retry_after: int, waiting: int | None = None):
        queued = f" ({waiting} waiting, one generating)" if waiting is not None else ""
        super().__init__(f"the steering queue is full{queued}; retry in {retry_after} s")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class SteeringUnavailable(BlindspotError):
    """The atlas cannot steer: no internal lens, or a generator whose weights are gone (answered 409)."""

    status = 409


UNMEASURED_RETRY_S = 1  # Retry-After before a single denoising step has been timed (the models are loading)


@dataclass
class JobProgress:
    """The job the worker runs: its denoising steps (all its images) and how many have run, for Retry-After."""

    steps: int
    steps_per_image: int
    done: int = 0
    first_step_at: float | None = None


class SteeringTimeout(BlindspotError, TimeoutError):
    """A request ran past the service's time limit and was stopped (answered 503)."""

    status = 503


@dataclass(frozen=True)
class SteeringParts:
    """Everything the service needs, named explicitly.

    ``point``: the hooked module the internal SAE reads (``unet.mid_block``);
    ``size``: (width, height) of the generated images, for the world model the
    world's image size (its 32x32 output is resized, bicubic, as the generate stage
    does); None: the generator's own. ``typical``: per feature of the internal SAE its
    typical activation where it fires (the internal stage's ``internal_feature_scales``,
    NaN for a feature that never fired), the unit of add-mode strengths; None: add mode
    is refused (a bare SAE has no measured activations).
    """

    generator: WorldModelGeneratorConfig | DiffusersGeneratorConfig
    internal_sae: Path
    point: str
    energy_model: str
    output_sae: Path
    cache: Path
    patch_tokens_only: bool = False
    aggregation: str = "sum"  # encode.energy_aggregation of the atlas
    size: tuple[int, int] | None = None
    device: str = "auto"
    typical: tuple[float, ...] | None = field(default=None, repr=False)


def sae_width(folder: Path, what: str) -> int:
    path = Path(folder) / "config.json"
    try:
        return int(json.loads(path.read_text())["n_concepts"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"no usable {what} SAE at {folder}: {type(exc).__name__}: {exc}") from None


def _sparse(energy: torch.Tensor) -> dict[str, list]:
    """An image's energy vector as its non-zeros: ``{"concepts": [...], "energies": [...]}``."""
    concepts = energy.nonzero().flatten()
    return {"concepts": concepts.tolist(), "energies": energy[concepts].tolist()}


def _dense(record: dict[str, Any], n_concepts: int) -> np.ndarray:
    energy = np.zeros(n_concepts)
    energy[np.asarray(record["energies"]["concepts"], dtype=int)] = record["energies"]["energies"]
    return energy


class SteeringService:
    """Steer one generator of an atlas; see the module docstring. Thread-safe; ``close()`` stops the worker."""

    def __init__(self, parts: SteeringParts, limits: SteeringLimits | None = None):
        self.parts = parts
        self.limits = limits or SteeringLimits()
        self.n_features = sae_width(parts.internal_sae, "internal")
        self.n_concepts = sae_width(parts.output_sae, "output-lens")
        self.cache = Path(parts.cache)
        self._identity: str | None = None
        self._models: dict[str, Any] | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=self.limits.queue_size)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        # for Retry-After: the job in progress, and running means of the seconds per denoising step and per measure
        self._job: JobProgress | None = None
        self._step_s: float | None = None
        self._measure_s = 0.0
        self._load_lock = threading.Lock()
        self._closed = False
        self._seconds_per_job = 5.0  # running mean of a whole request, for a sweep's estimate

    # -- requests ------------------------------------------------------------------------

    @property
    def generator(self) -> str:
        return self.parts.generator.name

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def seconds_per_job(self) -> float:
        """A running mean of the seconds one queued request takes (for Retry-After)."""
        return self._seconds_per_job

    def default_size(self) -> tuple[int, int]:
        if self.parts.size is not None:
            return self.parts.size
        if isinstance(self.parts.generator, DiffusersGeneratorConfig):
            return self.parts.generator.width, self.parts.generator.height
        from precompute.generators.registry import world_model_image_size

        side = world_model_image_size(self.parts.generator)
        return side, side

    def request(self, **fields: Any) -> SteerRequest:
        """Validate raw request fields (``SteeringInputError`` naming the bad one)."""
        request = validate_request(self.limits, n_features=self.n_features, n_concepts=self.n_concepts,
                                   default_steps=self.parts.generator.steps,
                                   default_guidance=self.parts.generator.guidance,
                                   default_size=self.default_size(), **fields)
        if request.mode == "add":
            self.typical_activations(request)
        return request

    def typical_activations(self, request: SteerRequest) -> list[float]:
        """Each edited feature's typical activation (the unit of its add-mode strength); ``SteeringInputError``
        when the atlas measured none or the feature never fired on the captured activations."""
        if self.parts.typical is None:
            raise SteeringInputError("add mode needs the internal features' typical activations, which this "
                                     "steering service was not given (the internal stage measures them); "
                                     "use scale mode")
        typical = [self.parts.typical[e.feature] for e in request.edits]
        silent = [e.feature for e, t in zip(request.edits, typical) if not np.isfinite(t) or t <= 0]
        if silent:
            raise SteeringInputError(f"feature(s) {silent} never fired on {self.generator}'s captured activations, "
                                     "so add mode has no unit for them (strengths are multiples of a feature's "
                                     "typical activation); choose features that fire")
        return typical

    def identity(self) -> str:
        """What the cached images depend on besides the request: generator, SAEs, lens (by content)."""
        if self._identity is None:
            from precompute.digests import file_digest, weights_identity

            generator = self.parts.generator
            if isinstance(generator, WorldModelGeneratorConfig):
                weights = [weights_identity(generator.path or _shipped_world_weights())]
            else:
                weights = [weights_identity(generator.model), generator.unet and weights_identity(generator.unet)]
            self._identity = json.dumps([
                generator.model_dump(mode="json"), weights, self.parts.point,
                file_digest(self.parts.internal_sae / "model.safetensors"), self.parts.energy_model,
                file_digest(self.parts.output_sae / "model.safetensors"), self.parts.patch_tokens_only,
                *(() if self.parts.aggregation == "sum" else (self.parts.aggregation,)),
                None if self.parts.typical is None else cache_key("typical", {"values": list(self.parts.typical)})])
        return self._identity

    def keys(self, request: SteerRequest) -> tuple[str, str]:
        """(baseline key, steered key) of a request."""
        identity = self.identity()
        return cache_key(identity, request.baseline_params()), cache_key(identity, request.steered_params())

    def cached(self, request: SteerRequest) -> dict[str, Any] | None:
        """The result when both images are cached already (no queue, no models), else None."""
        baseline_key, steered_key = self.keys(request)
        baseline, steered = self._record(baseline_key), self._record(steered_key)
        if baseline is None or steered is None:
            return None
        return self._result(request, baseline_key, baseline, steered_key, steered, cached=True)

    def submit(self, request: SteerRequest) -> Future:
        """Queue a request for the worker; its future gives the result. ``SteeringBusy`` when the queue is full;
        ``SteeringTimeout`` once the service is closed (a background sweep then stops instead of restarting it)."""
        if self._closed:
            raise SteeringTimeout("the steering service was shut down")
        future: Future = Future()
        limit = self.limits.timeout_s
        deadline = time.monotonic() + limit if limit is not None else float("inf")
        self._ensure_worker()
        try:
            self._queue.put_nowait((request, future, deadline))
        except queue.Full:
            raise SteeringBusy(self.seconds_until_room(), self._queue.qsize()) from None
        return future

    def seconds_until_room(self) -> int:
        """Whole seconds until the queue has room: the worker takes the next waiting request when the job in
        progress ends, after its denoising steps left (at the measured time per step) and its measures."""
        job = self._job
        if job is None:
            return 1  # the worker is taking the next request right now
        step_s = self._step_s
        if step_s is None and job.done > 1 and job.first_step_at is not None:  # the first job: time its own steps
            step_s = (time.monotonic() - job.first_step_at) / (job.done - 1)
        if step_s is None:
            return UNMEASURED_RETRY_S
        left = max(0, job.steps - job.done)
        images_left = -(-left // job.steps_per_image)
        return max(1, math.ceil(left * step_s + images_left * self._measure_s))

    def steer(self, request: SteerRequest) -> dict[str, Any]:
        """The result of a request: from the cache, or made by the worker (blocking until done)."""
        return self.cached(request) or self.submit(request).result()

    def energy_vectors(self, result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """(baseline, steered) output-lens energies of every concept for a result of this service."""
        records = [self._record(result[side]["key"]) for side in ("baseline", "steered")]
        if any(r is None for r in records):
            raise NotFound("the steering cache no longer holds this result's images")
        return _dense(records[0], self.n_concepts), _dense(records[1], self.n_concepts)

    def image_path(self, key: str) -> Path:
        """The cached PNG of a key; a malformed or unknown key is NotFound (nothing outside the cache)."""
        if len(key) != KEY_LENGTH or any(c not in "0123456789abcdef" for c in key):
            raise NotFound(f"no steering image {key!r}: keys are {KEY_LENGTH} lower-case hex digits")
        path = self.cache / f"{key}.png"
        if not path.is_file():
            raise NotFound(f"no steering image {key!r} in the cache")
        return path

    def close(self) -> None:
        """Stop the worker after the job it is running; queued requests fail, and so do later ones."""
        self._closed = True
        worker = self._worker
        if worker is None:
            return
        while True:
            try:
                _, future, _ = self._queue.get_nowait()
                future.set_exception(SteeringTimeout("the steering service was shut down"))
            except queue.Empty:
                break
        self._queue.put(None)
        worker.join(timeout=self.limits.timeout_s)

    # -- the worker ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker now: it imports the model libraries (seconds), not the weights, before any request."""
        self._ensure_worker()

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name=f"steer-{self.generator}", daemon=True)
                self._worker.start()

    def _work(self) -> None:
        try:  # the libraries _load needs; a failure here shows again, with its reason, when a request loads
            import diffusers  # noqa: F401

            import precompute.encoders
            import precompute.encoders.lens  # noqa: F401
        except Exception:
            log.exception("steering %s: importing the model libraries failed", self.generator)
        while (job := self._queue.get()) is not None:
            request, future, deadline = job
            if not future.set_running_or_notify_cancel():
                continue
            started = time.monotonic()
            try:
                future.set_result(self._run(request, deadline))
            except BaseException as exc:  # the caller sees every failure; the worker goes on
                future.set_exception(exc)
            finally:
                self._job = None
            self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.monotonic() - started)

    def _run(self, request: SteerRequest, deadline: float) -> dict[str, Any]:
        if time.monotonic() > deadline:
            raise SteeringTimeout(f"the request waited past the {self.limits.timeout_s:g} s time limit in the queue")
        baseline_key, steered_key = self.keys(request)
        missing = sum(self._record(key) is None for key in (baseline_key, steered_key))
        self._job = JobProgress(steps=missing * request.steps, steps_per_image=request.steps)
        self.cache.mkdir(parents=True, exist_ok=True)
        models = self._load()
        baseline = self._record(baseline_key)
        if baseline is None:
            baseline = self._make(models, request, None, baseline_key, deadline)
        steered = self._record(steered_key)
        if steered is None:
            steered = self._make(models, request, self._steering(request, models), steered_key, deadline)
        return self._result(request, baseline_key, baseline, steered_key, steered, cached=False)

    def load(self) -> None:
        """Load the models now, in the caller's thread: a batch evaluation does it before its first timed steer,
        so that no steer's time limit pays for the loading."""
        self._load()

    def _load(self) -> dict[str, Any]:
        with self._load_lock:
            if self._models is None:
                self._models = self._load_models()
            return self._models

    def _load_models(self) -> dict[str, Any]:
        from precompute.encoders import load_energy_model
        from precompute.generators.registry import load_diffusers, load_world_model
        from precompute.progress import quiet_library_bars
        from precompute.sae import load_sae
        from precompute.devices import resolve_device
        from precompute.encoders.lens import Lens

        started = time.perf_counter()
        quiet_library_bars()
        generator = self.parts.generator
        device = resolve_device(self.parts.device if self.parts.device != "auto" else generator.device)
        load = load_world_model if isinstance(generator, WorldModelGeneratorConfig) else load_diffusers
        pipeline = load(generator, device).pipeline
        lens = Lens.from_parts(load_energy_model(self.parts.energy_model, device=device),
                               load_sae(self.parts.output_sae, device=device), self.parts.patch_tokens_only,
                               aggregation=self.parts.aggregation)
        internal_sae = load_sae(self.parts.internal_sae, device=device)
        log.info("steering %s: models loaded in %.2f s", self.generator, time.perf_counter() - started)
        return {"pipeline": pipeline, "internal_sae": internal_sae, "lens": lens}

    def _steering(self, request: SteerRequest, models: dict[str, Any]):
        from precompute.generators.registry import capture_config
        from precompute.generators.steering import FeatureEdit, SteeringConfig

        # the guidance layout as capture decides it: [uncond, cond] when guidance > 1, except distilled (FLUX)
        guided = capture_config((self.parts.point,), (-1,), request.steps, request.guidance, models["pipeline"]).guided
        edits = request.edits
        if request.mode == "add":  # the hook adds activation units along unit directions: strength x typical x |W_f|
            norms = models["internal_sae"].dictionary.detach()[list(request.features)].norm(dim=-1).tolist()
            edits = tuple(FeatureEdit(e.feature, e.strength * t * n)
                          for e, t, n in zip(edits, self.typical_activations(request), norms))
        return SteeringConfig(point=self.parts.point, edits=edits, mode=request.mode,
                              steps=request.step_range, guided=guided, conditional_only=request.conditional_only)

    def _make(self, models: dict[str, Any], request: SteerRequest, steering, key: str,
              deadline: float) -> dict[str, Any]:
        """Generate one image (steered when ``steering`` is given), store it, measure it, store the record."""
        from precompute.generators.capture import resolve_module
        from precompute.generators.steering import apply_steering

        pipeline = models["pipeline"]
        denoiser = resolve_module(pipeline, self.parts.point.split(".")[0])

        job = self._job

        def check_deadline(*_: Any) -> None:  # before every denoising step
            now = time.monotonic()
            if now > deadline:
                raise SteeringTimeout(f"generation stopped at the {self.limits.timeout_s:g} s time limit")
            if job is not None:
                job.done += 1
                job.first_step_at = job.first_step_at or now

        started = time.perf_counter()
        with ExitStack() as stack:
            handle = denoiser.register_forward_pre_hook(check_deadline)
            stack.callback(handle.remove)
            if steering is not None:
                stack.enter_context(apply_steering(pipeline, models["internal_sae"], steering))
            image = self._generate(pipeline, request)
        generated = time.perf_counter() - started
        png = self.cache / f"{key}.png"
        save_png(image, png)
        energy = models["lens"].energies([png])[0]
        measured = time.perf_counter() - started - generated
        record = {"key": key, "energies": _sparse(energy), "generate_s": round(generated, 4),
                  "measure_s": round(measured, 4)}
        self._timed(generated / request.steps, measured)
        write_text_atomic(self.cache / f"{key}.json", json.dumps(record))
        return record

    def _timed(self, step_s: float, measure_s: float) -> None:
        """Fold one image's seconds per step (its generation over its steps) and its measure into the means."""
        self._step_s = step_s if self._step_s is None else 0.7 * self._step_s + 0.3 * step_s
        self._measure_s = 0.7 * self._measure_s + 0.3 * measure_s

    def _generate(self, pipeline: Any, request: SteerRequest) -> Image.Image:
        call: dict[str, Any] = {"num_inference_steps": request.steps, "guidance_scale": request.guidance,
                                "generator": torch.Generator().manual_seed(request.seed)}
        generator = self.parts.generator
        if isinstance(generator, DiffusersGeneratorConfig):
            call.update(width=request.width, height=request.height)
            if generator.negative_prompt is not None:
                call["negative_prompt"] = generator.negative_prompt
        image = pipeline(request.prompt, **call).images[0].convert("RGB")
        if image.size != (request.width, request.height):  # the world model's 32x32, as the generate stage resizes
            image = image.resize((request.width, request.height), Image.BICUBIC)
        return image

    def _record(self, key: str) -> dict[str, Any] | None:
        path = self.cache / f"{key}.json"
        if not path.is_file() or not (self.cache / f"{key}.png").is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is made again

    def _result(self, request: SteerRequest, baseline_key: str, baseline: dict, steered_key: str, steered: dict,
                cached: bool) -> dict[str, Any]:
        before, after = _dense(baseline, self.n_concepts), _dense(steered, self.n_concepts)
        change = after - before
        moved = np.lexsort((np.arange(change.size), -np.abs(change)))[:LARGEST_CHANGES]  # largest |change|, then id
        moved = moved[(before[moved] != 0) | (after[moved] != 0)]

        def effect(concepts) -> list[dict[str, Any]]:
            index = np.asarray(concepts, dtype=int)
            return [{"concept": int(c), "baseline": float(b), "steered": float(a), "difference": float(d)}
                    for c, b, a, d in zip(index, before[index], after[index], change[index])]

        described = request.to_dict()
        if request.mode == "add":  # what a strength of 1 means for each feature, in the SAE's codes
            for edit, typical in zip(described["edits"], self.typical_activations(request)):
                edit["typical_activation"] = float(typical)
        return {"generator": self.generator, "request": described, "cached": cached,
                "baseline": {"key": baseline_key, "generate_s": baseline["generate_s"]},
                "steered": {"key": steered_key, "generate_s": steered["generate_s"]},
                "effect": effect(request.concepts), "largest_changes": effect(moved)}

def _shipped_world_weights() -> Path:
    from precompute.generators.registry import WORLD_WEIGHTS

    return WORLD_WEIGHTS

