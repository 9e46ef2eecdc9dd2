"""What a steering request may ask, checked before any work: limits, the validated request, its cache keys.

Every input is bounded (prompt length, feature ids that exist in the internal SAE,
strengths, steps, guidance, image size, measured concepts), so a request either
runs within known cost or is refused with a message naming the field, what was
expected and what came (``SteeringInputError``, answered as 422).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from precompute.errors import BlindspotError, ConfigError
from precompute.generators.steering import MODES, FeatureEdit

SEED_LIMIT = 2**63 - 1  # torch.Generator.manual_seed takes 63-bit seeds
# add: multiples of each feature's typical activation; scale: 1 doubles the feature where it fires
DEFAULT_STRENGTH = {"add": 1.0, "scale": 1.0}


class SteeringInputError(BlindspotError):
    """A steering request outside what the service accepts; the message names the field."""


@dataclass(frozen=True)
class SteeringLimits:
    """Bounds of a request, and the service's queue and time limit.

    Scale-mode strengths multiply a feature by ``1 + strength``: -1 removes it,
    ``max_scale`` is the largest amplification. Add-mode strengths are multiples of each
    feature's typical activation (the 90th percentile of its code where it fires), so
    ``max_add`` means the same for every feature and every model.
    ``timeout_s``: each request's time limit, counted from its submission (the server's
    guard against a runaway request); None: no limit (batch evaluations, which record a
    failed steer and go on instead).
    """

    max_prompt_chars: int = 300
    max_features: int = 8
    max_scale: float = 20.0
    max_add: float = 50.0
    min_steps: int = 1
    max_steps: int = 100
    max_guidance: float = 30.0
    min_size: int = 16
    max_size: int = 1024
    max_concepts: int = 32
    queue_size: int = 4
    timeout_s: float | None = 60.0

    def __post_init__(self) -> None:
        if self.queue_size < 1 or (self.timeout_s is not None and not self.timeout_s > 0) or self.min_steps < 1 \
                or self.max_steps < self.min_steps:
            raise ConfigError(f"steering limits need queue_size >= 1, timeout_s > 0 (or None: no limit) and "
                              f"1 <= min_steps <= max_steps, got {self}")


@dataclass(frozen=True)
class SteerRequest:
    """One validated request: generate ``prompt`` with ``seed`` unsteered and steered, and measure both.

    ``step_range``: steered denoising steps ``[start, stop)`` (None: all);
    ``concepts``: output-lens concepts whose energy is reported.
    """

    prompt: str
    edits: tuple[FeatureEdit, ...]
    mode: str
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    step_range: tuple[int, int] | None
    conditional_only: bool
    concepts: tuple[int, ...]

    @property
    def features(self) -> tuple[int, ...]:
        return tuple(e.feature for e in self.edits)

    def baseline_params(self) -> dict[str, Any]:
        """What the unsteered image depends on: it is made once per these and reused."""
        return {"prompt": self.prompt, "seed": self.seed, "steps": self.steps, "guidance": self.guidance,
                "width": self.width, "height": self.height}

    def steered_params(self) -> dict[str, Any]:
        """What the steered image depends on (every parameter but the measured concepts)."""
        return {**self.baseline_params(), "mode": self.mode, "conditional_only": self.conditional_only,
                "step_range": list(self.step_range) if self.step_range else None,
                "edits": [[e.feature, e.strength] for e in self.edits]}

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["edits"] = [{"feature": e.feature, "strength": e.strength} for e in self.edits]
        return record


def cache_key(identity: str, params: dict[str, Any]) -> str:
    """32 hex digits naming a cached image: the models' identity and every parameter it depends on."""
    canonical = json.dumps({"identity": identity, **params}, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()


def _number(name: str, value: Any, low: float, high: float, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise SteeringInputError(f"{name} must be {kind} in [{low:g}, {high:g}], got {value!r}")
    return value if integer else float(value)


def validate_request(
    limits: SteeringLimits,
    *,
    n_features: int,
    n_concepts: int,
    default_steps: int,
    default_guidance: float,
    default_size: tuple[int, int],
    prompt: Any,
    features: Any,
    mode: Any = "scale",
    seed: Any = 0,
    steps: Any = None,
    guidance: Any = None,
    size: Any = None,
    step_range: Any = None,
    conditional_only: Any = True,
    concepts: Any = (),
) -> SteerRequest:
    """A ``SteerRequest`` from raw request fields, or ``SteeringInputError`` naming the first bad one.

    ``features``: a list of ``{"feature": id, "strength": s}`` (or ``[id, s]`` pairs);
    ``size``: the side of a square image (default: the generator's own size).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise SteeringInputError(f"prompt must be a non-empty string, got {prompt!r}")
    if len(prompt) > limits.max_prompt_chars:
        raise SteeringInputError(f"prompt must be at most {limits.max_prompt_chars} characters, got {len(prompt)}")
    if mode not in MODES:
        raise SteeringInputError(f"mode must be one of {list(MODES)}, got {mode!r}")
    edits = _edits(limits, features, n_features, mode)
    steps = default_steps if steps is None else _number("steps", steps, limits.min_steps, limits.max_steps, True)
    guidance = default_guidance if guidance is None else _number("guidance", guidance, 0.0, limits.max_guidance)
    if size is None:
        width, height = default_size
    else:
        width = height = _number("size", size, limits.min_size, limits.max_size, True)
    if step_range is not None:
        if not isinstance(step_range, (list, tuple)) or len(step_range) != 2:
            raise SteeringInputError(f"step_range must be [start, stop], got {step_range!r}")
        start = _number("step_range start", step_range[0], 0, steps - 1, True)
        stop = _number("step_range stop", step_range[1], start + 1, steps, True)
        step_range = (start, stop)
    if not isinstance(conditional_only, bool):
        raise SteeringInputError(f"conditional_only must be true or false, got {conditional_only!r}")
    if not isinstance(concepts, (list, tuple)) or len(concepts) > limits.max_concepts:
        raise SteeringInputError(f"concepts must be a list of at most {limits.max_concepts} concept ids, "
                                 f"got {concepts!r}")
    concepts = tuple(dict.fromkeys(_number("concept", c, 0, n_concepts - 1, True) for c in concepts))
    return SteerRequest(prompt=prompt, edits=edits, mode=mode, seed=_number("seed", seed, 0, SEED_LIMIT, True),
                        steps=steps, guidance=guidance, width=width, height=height, step_range=step_range,
                        conditional_only=conditional_only, concepts=concepts)


def _edits(limits: SteeringLimits, features: Any, n_features: int, mode: str) -> tuple[FeatureEdit, ...]:
    if not isinstance(features, (list, tuple)) or not 1 <= len(features) <= limits.max_features:
        raise SteeringInputError(f"features must be a list of 1 to {limits.max_features} "
                                 f"{{feature, strength}} entries, got {features!r}")
    low, high = (-1.0, limits.max_scale) if mode == "scale" else (-limits.max_add, limits.max_add)
    edits, seen = [], set()
    for entry in features:
        if isinstance(entry, dict) and set(entry) == {"feature", "strength"}:
            feature, strength = entry["feature"], entry["strength"]
        elif isinstance(entry, (list, tuple)) and len(entry) == 2:
            feature, strength = entry
        else:
            raise SteeringInputError(f"each feature must be {{\"feature\": id, \"strength\": s}}, got {entry!r}")
        feature = _number("feature", feature, 0, n_features - 1, True)
        if feature in seen:
            raise SteeringInputError(f"feature {feature} is listed twice; give each feature once")
        seen.add(feature)
        edits.append(FeatureEdit(feature, _number(f"strength of feature {feature} ({mode} mode)", strength, low, high)))
    return tuple(edits)
