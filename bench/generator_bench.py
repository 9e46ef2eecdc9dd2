"""Generator overhead: our diffusers generator vs the bare pipeline call, and the cost of capture.

    .venv/bin/python bench/generator_bench.py [--model PATH] [--n 16] [--batch 4] [--steps 4]
                                              [--size 64] [--repeats 5] [--threads 1]

Same prompts, seeds (one ``torch.Generator`` per prompt, from ``item_seed``) and
settings for the three contestants:

* ``bare``: ``pipeline(prompt=..., generator=[...], num_inference_steps, guidance_scale,
  width, height)`` over batches, the PIL images discarded;
* ``ours``: ``PipelineGenerator`` (seed hashing, OOM guard, RGB conversion, black-image
  flag), the stage's per-batch call;
* ``ours+capture``: the same with ``unet.mid_block`` captured at the last step
  (conditional half, budget 256 positions, fp16 position rows + pooled means).

Rounds are interleaved (bare, ours, capture; then rotated) and each contestant's median
over ``repeats`` rounds is reported, in wall time and in CPU time of this process (the
machine is shared, so CPU time is the steadier number). Without ``--model`` a tiny
random-weight Stable Diffusion pipeline (the tests' one) is built in a temp folder: the
smallest model is the worst case for relative overhead.
Targets: ours / bare <= 1.10; (ours+capture) / ours <= 1.10.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from precompute.config import DiffusersGeneratorConfig  # noqa: E402
from precompute.generators.registry import make_diffusers_generator  # noqa: E402
from precompute.generators.seeding import item_generators, item_seed  # noqa: E402

CAPTIONS = ["a red circle on grass", "two blue squares on a wooden table", "a yellow star above a green triangle",
            "a striped purple square with a shadow"]


def _timed(run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no spin-waiting on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temp:
        model = args.model
        if model is None:
            from tests.precompute.generators.tiny_pipelines import save_tiny_sd

            model = save_tiny_sd(Path(temp) / "tiny-sd")
        settings = {"name": "bench", "kind": "diffusers", "model": str(model), "steps": args.steps, "guidance": 7.5,
                    "width": args.size, "height": args.size, "batch_size": args.batch, "dtype": "fp32"}
        ours = make_diffusers_generator(DiffusersGeneratorConfig(**settings), "cpu")
        capture = make_diffusers_generator(DiffusersGeneratorConfig(**settings, capture=("unet.mid_block",)), "cpu")
        capture.pipeline = ours.pipeline  # one set of weights for all three contestants
        pipeline = ours.pipeline
        captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.n)]
        ids = [f"item-{i}" for i in range(args.n)]
        call = {"num_inference_steps": args.steps, "guidance_scale": 7.5, "width": args.size, "height": args.size}

        def bare() -> None:
            for start in range(0, args.n, args.batch):
                seeds = [item_seed("bench", 0, item) for item in ids[start:start + args.batch]]
                pipeline(prompt=captions[start:start + args.batch], generator=item_generators(seeds), **call)

        def generator(make) -> None:
            for start in range(0, args.n, args.batch):
                make(captions[start:start + args.batch], ids[start:start + args.batch])
            make.drain_capture()

        contestants = {"bare": bare, "ours": lambda: generator(ours), "ours+capture": lambda: generator(capture)}
        generator(capture)  # warm-up: kernels, allocator
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in contestants}
        order = list(contestants)
        for round_ in range(args.repeats):
            for name in order[round_ % 3:] + order[:round_ % 3]:
                times[name].append(_timed(contestants[name]))

    wall = {name: statistics.median(t[0] for t in runs) for name, runs in times.items()}
    cpu = {name: statistics.median(t[1] for t in runs) for name, runs in times.items()}
    print(f"# generator bench {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, python "
          f"{platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"# {args.n} images, batch {args.batch}, {args.steps} steps, {args.size}x{args.size}, guidance 7.5, "
          f"median of {args.repeats} interleaved rounds")
    print("| contestant | wall s | img/s | CPU s |")
    print("| --- | ---: | ---: | ---: |")
    for name in contestants:
        print(f"| {name} | {wall[name]:.3f} | {args.n / wall[name]:.1f} | {cpu[name]:.3f} |")
    print(f"ours / bare: wall {wall['ours'] / wall['bare']:.3f}, CPU {cpu['ours'] / cpu['bare']:.3f} (target <= 1.10)")
    print(f"capture / ours: wall {wall['ours+capture'] / wall['ours']:.3f}, "
          f"CPU {cpu['ours+capture'] / cpu['ours']:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
