"""The steering panel's dose-response: a small sweep beside a random-feature control, run in the background.

DESIGN.md section 2b: a steer is judged against random features over seeds and
strengths. From the panel's steer (prompt, features with strengths, mode, target
concept) a sweep steers the form's strengths times each of ``SWEEP_FACTORS`` on
``SWEEP_SEEDS`` seeds (the form's seed and the next), and the same steers with as many
random scored features (same strengths; in add mode each in its own units, so both
arms push equally hard). Every steer goes through the steering service's queue, one
at a time, so interactive steers still get their turn; a full queue is waited out, a
steer past the service's time limit is listed as failed and the sweep goes on.

A sweep is named by its parameters (``sweep_key``): asking again for the same sweep
returns the running or finished job, so the panel polls one URL until it is done, and
after a restart the steers come from the disk cache. At most ``MAX_RUNNING`` sweeps run
at once per generator (``SteeringBusy`` beyond: answered 429 with Retry-After); the
last ``KEEP`` finished ones are remembered.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.steering.evaluation import ARMS, Outcome, Steer, control_features, dose_response, run_steers, summary
from backend.steering.inputs import SteerRequest, cache_key
from backend.steering.service import SteeringBusy, SteeringService

SWEEP_FACTORS = (0.5, 1.0, 2.0)  # multiples of the form's strengths
SWEEP_SEEDS = 2
MAX_RUNNING = 2
KEEP = 32
BUSY_WAIT_S = 5.0  # the longest wait before trying a full queue again


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep steers: one request's settings, its target concept and the control's features."""

    request: SteerRequest
    concept: int
    control: tuple[int, ...]
    live: tuple[bool, ...] = field(repr=False)

    @property
    def key(self) -> str:
        params = {**self.request.steered_params(), "concept": self.concept, "control": list(self.control),
                  "factors": list(SWEEP_FACTORS), "seeds": SWEEP_SEEDS}
        return cache_key("sweep", params)

    def steers(self) -> list[Steer]:
        request = self.request
        base = tuple(e.strength for e in request.edits)
        arms = {"attributed": request.features, "control": self.control}
        return [Steer(self.concept, arm, factor, request.prompt, request.seed + offset, tuple(features), base)
                for factor in SWEEP_FACTORS for offset in range(SWEEP_SEEDS)
                for arm, features in arms.items() if features]

    def fields(self) -> dict[str, Any]:
        """The request fields every steer of the sweep shares."""
        r = self.request
        return {"steps": r.steps, "guidance": r.guidance, "size": r.width if r.width == r.height else None,
                "step_range": list(r.step_range) if r.step_range else None, "conditional_only": r.conditional_only}


def sweep_spec(service: SteeringService, request: SteerRequest, concept: int, pool: list[int],
               live: np.ndarray) -> SweepSpec:
    """The sweep of ``request`` on ``concept``; the control draws as many features from ``pool`` (seeded by the
    request's features and concept, so the same sweep always has the same control)."""
    seed = int(cache_key("control", {"features": list(request.features), "concept": concept})[:8], 16)
    control = control_features(pool, list(request.features), len(request.features), seed)
    return SweepSpec(request, concept, tuple(control), tuple(bool(v) for v in live))


class SweepJob:
    """One sweep running (or run) in a background thread; ``status()`` is its progress and, when done, its result."""

    def __init__(self, service: SteeringService, spec: SweepSpec):
        self.service = service
        self.spec = spec
        self.steers = spec.steers()
        self.outcomes: list[Outcome] = []
        self.started = time.monotonic()
        self.finished: float | None = None
        self.error: str | None = None
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"sweep-{spec.key[:8]}", daemon=True)

    @property
    def done(self) -> bool:
        return self.finished is not None

    def _submit(self, request: SteerRequest) -> dict[str, Any]:
        """One steer through the service's queue, waiting out a full queue."""
        cached = self.service.cached(request)
        if cached is not None:
            return cached
        while True:
            try:
                future = self.service.submit(request)
                break
            except SteeringBusy as busy:
                time.sleep(min(busy.retry_after, BUSY_WAIT_S))
        return future.result()

    def _run(self) -> None:
        try:
            live = np.asarray(self.spec.live, dtype=bool)
            for steer in self.steers:
                if self.service.closed:  # the server is shutting down: the rest of the sweep is not made
                    self.error = "the steering service was shut down"
                    break
                outcome = run_steers(self.service, [steer], mode=self.spec.request.mode, live=live,
                                     fields=self.spec.fields(), submit=self._submit)[0]
                with self._lock:
                    self.outcomes.append(outcome)
        except Exception as exc:  # noqa: BLE001 -- shown to the user with the sweep's status, never lost in a thread
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.finished = time.monotonic()

    def status(self) -> dict[str, Any]:
        """Progress (planned, done, failed, seconds, an estimate of the time left) and, when finished, the result."""
        with self._lock:
            outcomes = list(self.outcomes)
        elapsed = (self.finished or time.monotonic()) - self.started
        failed = [o for o in outcomes if o.reason is not None]
        left = len(self.steers) - len(outcomes)
        rate = len(outcomes) / elapsed if outcomes and elapsed > 0 else None
        spec = self.spec
        record: dict[str, Any] = {
            "key": spec.key, "status": "done" if self.done else "running", "error": self.error,
            "concept": spec.concept, "prompt": spec.request.prompt, "mode": spec.request.mode,
            "features": {"attributed": list(spec.request.features), "control": list(spec.control)},
            "strengths": [e.strength for e in spec.request.edits], "factors": list(SWEEP_FACTORS),
            "seeds": [spec.request.seed + i for i in range(SWEEP_SEEDS)],
            "steers": {"planned": len(self.steers), "done": len(outcomes) - len(failed), "failed": len(failed)},
            "seconds": round(elapsed, 2), "eta_s": round(left / rate, 1) if rate and not self.done else None}
        if self.done:
            baselines = [o.baseline for o in outcomes if o.reason is None]
            record["baseline_energy"] = float(np.mean(baselines)) if baselines else None
            record["dose_response"] = dose_response(outcomes, SWEEP_FACTORS)
            for dose in record["dose_response"]:
                for arm in ARMS:
                    energies = [o.steered for o in outcomes if o.reason is None and o.steer.arm == arm
                                and o.steer.strength == dose["strength"]]
                    dose[arm]["mean_energy"] = float(np.mean(energies)) if energies else None
            record["overall"] = {arm: summary(o for o in outcomes if o.steer.arm == arm) for arm in ARMS}
            record["failures"] = [o.failure() for o in failed]
        return record


class SweepBoard:
    """The sweeps of one steering service: started on demand, found again by their key."""

    def __init__(self, service: SteeringService, max_running: int = MAX_RUNNING, keep: int = KEEP):
        self.service = service
        self.max_running = max_running
        self.keep = keep
        self._jobs: OrderedDict[str, SweepJob] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_start(self, spec: SweepSpec) -> SweepJob:
        """The sweep's job, started if it is new; ``SteeringBusy`` when ``max_running`` sweeps run already."""
        with self._lock:
            job = self._jobs.get(spec.key)
            if job is not None and not (job.done and job.error):  # a sweep that broke is started afresh
                self._jobs.move_to_end(spec.key)
                return job
            running = [j for j in self._jobs.values() if not j.done]
            if len(running) >= self.max_running:
                left = min(len(j.steers) - len(j.outcomes) for j in running)
                raise SteeringBusy(max(1, round(left * self.service.seconds_per_job)))
            job = SweepJob(self.service, spec)
            self._jobs[spec.key] = job
            finished = [k for k, j in self._jobs.items() if j.done]
            for old in finished[:max(0, len(finished) - self.keep)]:
                del self._jobs[old]
        job.thread.start()
        return job


_BOARDS: weakref.WeakKeyDictionary[SteeringService, SweepBoard] = weakref.WeakKeyDictionary()
_BOARDS_LOCK = threading.Lock()


def sweep_board(service: SteeringService) -> SweepBoard:
    """The service's sweep board (one per service, made on first use)."""
    with _BOARDS_LOCK:
        board = _BOARDS.get(service)
        if board is None:
            board = _BOARDS[service] = SweepBoard(service)
        return board
