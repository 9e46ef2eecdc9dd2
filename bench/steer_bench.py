"""Steering on the world generator, CPU: cold and cached requests over HTTP, and the hook's overhead.

    .venv/bin/python bench/steer_bench.py [--atlas ATLAS] [--steps 25] [--repeats 9] [--cached 50] [--threads 1]

Requests go through the real app (``create_app`` + httpx's ASGI transport, no
network): POST /api/steer with an add-mode steer of three internal features,
measuring two output-lens concepts.

* ``first``: the first request of a fresh app: loads the world model, the internal
  SAE, the world encoder and the output SAE, generates the baseline and the steered
  image and measures both. The model libraries are already imported, as they are in
  a server whose steering worker imported them at start-up; their import time is
  reported on its own line.
* ``cold``: a request with models loaded but nothing cached (a new seed each time):
  baseline + steered generation + measurement.
* ``cached``: the same request again, answered from the disk cache.
* ``hook overhead``: the same generation (prompt, seed, steps) with and without the
  steering hook (scale mode, three features), interleaved rounds, median ratio.

Without ``--atlas`` a world atlas is built in a temp folder with the tests' small
internal SAE (Matryoshka BatchTopK fitted on the world model's bottleneck) and
output SAE (TopK on world-encoder tokens); with ``--atlas`` its own lens is used.
Targets: first and cold <= 3 s; cached median <= 50 ms; hooked / plain <= 1.15.
"""

from __future__ import annotations

import time

_started = time.perf_counter()
import diffusers  # noqa: E402, F401  (timed: the libraries a steering worker imports at start-up)
import transformers  # noqa: E402, F401

IMPORT_S = time.perf_counter() - _started

import argparse  # noqa: E402
import asyncio  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from backend.steering.inputs import DEFAULT_STRENGTH  # noqa: E402
from precompute.generators.steering import FeatureEdit, SteeringConfig, apply_steering  # noqa: E402

PROMPT = "a picture of three small red stars on a wooden table"


def build_atlas(folder: Path) -> Path:
    """A small world atlas with the world model, plus the tests' internal and output SAEs in the contract layout."""
    from tests.conftest import build_atlas as build
    from tests.steering_support import add_internal_lens, fit_internal_sae, fit_output_sae, steerable_config

    atlas = build(folder / "atlas", steerable_config())
    return add_internal_lens(atlas, fit_internal_sae(folder / "internal"), fit_output_sae(folder / "output"))


async def measure(atlas: Path, steps: int, repeats: int, cached_n: int) -> dict:
    app = create_app(Settings(atlas=atlas))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1",
                                     timeout=120) as client:
            service = next(iter(app.state.steering.values()))
            features = [[f, DEFAULT_STRENGTH["add"]] for f in range(3)]  # typical activations of each feature

            async def post(seed: int) -> float:
                started = time.perf_counter()
                answer = await client.post("/api/steer", json={"prompt": PROMPT, "features": features, "mode": "add",
                                                                "seed": seed, "steps": steps, "concepts": [0, 1]})
                answer.raise_for_status()
                return time.perf_counter() - started

            base = time.time_ns() % 10**12  # seeds no earlier run used: an atlas's steering cache never answers
            first = await post(base)
            cold = [await post(base + 1 + i) for i in range(repeats)]
            cached = [await post(base) for _ in range(cached_n)]
            return {"first": first, "cold": cold, "cached": cached, "pipeline": service._models["pipeline"],
                    "sae": service._models["internal_sae"], "point": service.parts.point,
                    "guidance": service.parts.generator.guidance}


def hook_overhead(pipeline, sae, point: str, steps: int, guidance: float, repeats: int) -> tuple[float, float, float]:
    config = SteeringConfig(point=point, edits=(FeatureEdit(0, 2.0), FeatureEdit(1, 2.0), FeatureEdit(2, -1.0)),
                            mode="scale", guided=guidance > 1)

    def generate() -> None:
        pipeline(PROMPT, num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(0))

    def hooked() -> None:
        with apply_steering(pipeline, sae, config):
            generate()

    plain_s, hooked_s = [], []
    generate()  # warm-up
    for round_ in range(repeats):
        order = [(generate, plain_s), (hooked, hooked_s)]
        for run, times in order if round_ % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            run()
            times.append(time.perf_counter() - started)
    plain, steered = statistics.median(plain_s), statistics.median(hooked_s)
    return plain, steered, steered / plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--atlas", type=Path, help="an atlas with an internal lens for the world model")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (the world model's default: 25)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--cached", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as temp:
        atlas = args.atlas or build_atlas(Path(temp))
        if args.atlas is None:
            print(f"built a temp atlas with the tests' small SAEs in {time.perf_counter() - _started:.1f} s")
        result = asyncio.run(measure(atlas, args.steps, args.repeats, args.cached))
        plain, hooked, ratio = hook_overhead(result["pipeline"], result["sae"], result["point"], args.steps,
                                             result["guidance"], args.repeats)

    cold, cached = statistics.median(result["cold"]), statistics.median(result["cached"])
    print(f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, python {platform.python_version()}, "
          f"torch {torch.__version__}, threads {args.threads}, steps {args.steps}")
    print(f"library import (diffusers + transformers): {IMPORT_S:.2f} s")
    print(f"first request (models load, nothing cached): {result['first']:.2f} s   target <= 3 s")
    print(f"cold request (models loaded, not cached), median of {args.repeats}: {cold:.2f} s "
          f"(min {min(result['cold']):.2f}, max {max(result['cold']):.2f})   target <= 3 s")
    print(f"cached request, median of {args.cached}: {cached * 1000:.1f} ms "
          f"(min {min(result['cached']) * 1000:.1f}, max {max(result['cached']) * 1000:.1f})   target <= 50 ms")
    print(f"generation without hook {plain:.3f} s, with hook {hooked:.3f} s: ratio {ratio:.3f}   target <= 1.15")


if __name__ == "__main__":
    main()
