"""SAE encoding throughput vs a bare matmul of the same shape, in one run.

    .venv/bin/python bench/sae_bench.py [--tokens 4096] [--dim 768] [--concepts 32000]
                                         [--k 5] [--repeats 5] [--threads 2]

Measures, on fp32 CPU with ``torch.set_num_threads(threads)``, tokens/s of

* ``matmul``: ``torch.addmm(b, x, W_enc.T)`` (the floor: one GEMM and its output);
* ``topk``: ``TopKSAE.encode`` in eval mode (k largest per token);
* ``batchtopk``: ``BatchTopKSAE.encode`` in eval mode (inference threshold);
* ``... codes-only``: ``encode_codes``, the inference fast path that sparsifies in
  place and returns only the codes (one output buffer, like the matmul).

Each is timed ``repeats`` times after one warm-up, interleaved; the best and median
wall time and the median process CPU time (robust to other processes' load) are
reported, each with its throughput ratio to the matmul. Target: SAE encoding >= 70% of the matmul's throughput.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from precompute.sae import BatchTopKConfig, BatchTopKSAE, SAEConfig, TopKSAE


def _timings(cases: dict, repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds per call for each case, interleaved round by round
    so that load from other processes on a shared machine hits every case alike."""
    for fn in cases.values():
        fn()  # warm-up: allocator, thread pool, kernels
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--concepts", type=int, default=32_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    topk = TopKSAE(SAEConfig(input_dim=args.dim, n_concepts=args.concepts, k=args.k)).eval()
    batchtopk = BatchTopKSAE(BatchTopKConfig(input_dim=args.dim, n_concepts=args.concepts, k=args.k)).eval()
    batchtopk.load_state_dict(topk.state_dict(), strict=False)
    x = torch.randn(args.tokens, args.dim)
    with torch.no_grad():  # a threshold giving about k active concepts per token
        pre, _ = topk.encode(x[:256])
        batchtopk.set_threshold(float(pre.topk(args.k, dim=-1).values[:, -1].mean()))
    weight_t, bias = topk.W_enc.detach().t(), topk.b_enc.detach()

    with torch.inference_mode():
        cases = {
            "matmul": lambda: torch.addmm(bias, x, weight_t),
            "topk": lambda: topk.encode(x),
            "batchtopk": lambda: batchtopk.encode(x),
            "topk codes-only": lambda: topk.encode_codes(x),
            "batchtopk codes-only": lambda: batchtopk.encode_codes(x),
        }
        wall, cpu = _timings(cases, args.repeats)
        assert_same = torch.equal(topk.encode(x)[1], topk.encode_codes(x))
        l0 = float((batchtopk.encode(x)[1] > 0).sum(-1).float().mean())

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"nproc {os.cpu_count()}, threads {torch.get_num_threads()}")
    print(f"shape: {args.tokens} tokens x {args.dim} dim -> {args.concepts} concepts, k={args.k}, fp32")
    print(f"{args.repeats} interleaved rounds; ratio = throughput relative to the bare matmul")
    header = ("case", "best ms", "tokens/s", "ratio", "median ms", "ratio", "cpu-s med", "ratio")
    print("{:22s} {:>8s} {:>9s} {:>7s}  {:>9s} {:>7s}  {:>9s} {:>7s}".format(*header))
    best = {name: min(t) for name, t in wall.items()}
    median = {name: statistics.median(t) for name, t in wall.items()}
    cpu_median = {name: statistics.median(t) for name, t in cpu.items()}
    for name in wall:
        print(
            f"{name:22s} {best[name] * 1e3:8.1f} {args.tokens / best[name]:9.0f} "
            f"{best['matmul'] / best[name]:7.1%}  {median[name] * 1e3:9.1f} "
            f"{median['matmul'] / median[name]:7.1%}  {cpu_median[name]:9.2f} "
            f"{cpu_median['matmul'] / cpu_median[name]:7.1%}"
        )
    print(f"encode_codes equals encode()[1]: {assert_same}")
    print(f"batchtopk mean L0 at the calibrated threshold: {l0:.2f}")


if __name__ == "__main__":
    main()
