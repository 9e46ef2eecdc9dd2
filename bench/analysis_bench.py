"""Benchmark: the analysis stage from stored codes at the paper's scale.

10,000 pairs, 32,000 concepts, k = 5 active concepts per token, 261 tokens per image
(synthetic codes with a Zipf-like concept popularity). Measures, for the real set and
one generator: per-image energies from token codes, the co-occurrence Z^T Z, delta with
a 1,000-resample paired bootstrap, datapoint scores, the co-occurrence spectra
(top-100 eigenvectors, alignment), the concept card's tables (top Z^T Z partners,
energy histograms), and the flags' test for ``--generators`` generators (the measured one
and copies with a random half of its concepts scaled, so some change and some do not)
plus the real-half null control: paired sign-flip p-values, Benjamini-Hochberg q-values,
gated flags. Reports wall time and peak memory (RSS).

    python bench/analysis_bench.py [--items 10000] [--concepts 32000] [--k 5] [--tokens 261]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import scipy.sparse as sp

from precompute.analysis.calibration import real_halves
from precompute.analysis.cooccurrence import (Cooccurrence, eigenvector_alignment, epsilon_grid, l0_curve, top_eigen,
                                               top_partners)
from precompute.analysis.datapoints import datapoint_scores
from precompute.analysis.delta import concept_stats, delta_histogram
from precompute.analysis.energies import energy_histograms


def synthetic_codes(rng, items, concepts, k, tokens, chunk_items):
    """Yield (image index offset, token codes CSR (chunk_items * tokens, concepts)) chunks."""
    popularity = 1.0 / np.arange(1, concepts + 1) ** 0.8
    popularity /= popularity.sum()
    for start in range(0, items, chunk_items):
        n = min(chunk_items, items - start) * tokens
        active = rng.choice(concepts, size=(n, k), p=popularity)
        values = rng.exponential(1.0, size=(n, k)).astype(np.float32)
        rows = np.repeat(np.arange(n), k)
        yield start, sp.csr_array((values.ravel(), (rows, active.ravel())), shape=(n, concepts))


def encode_side(chunks, concepts, tokens):
    """Per-image energies (sum over tokens) and Z^T Z from stored token-code chunks."""
    cooc = Cooccurrence(concepts)
    energy_parts = []
    for _start, codes in chunks:
        n_images = codes.shape[0] // tokens
        image_of_token = sp.csr_array((np.ones(codes.shape[0], dtype=np.float32),
                                       (np.repeat(np.arange(n_images), tokens), np.arange(codes.shape[0]))),
                                      shape=(n_images, codes.shape[0]))
        energy_parts.append(image_of_token @ codes)  # sum over tokens, sparse
        cooc.add(codes)
    return sp.vstack(energy_parts).tocsr(), cooc.matrix()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--concepts", type=int, default=32_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=261)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--generators", type=int, default=5, help="generators whose flags are tested")
    args = parser.parse_args()

    made = time.perf_counter()
    stored = [list(synthetic_codes(np.random.default_rng(seed), args.items, args.concepts, args.k, args.tokens, 200))
              for seed in (1, 2)]
    print(f"(making the synthetic codes, not timed: {time.perf_counter() - made:.1f} s)")

    timings = {}
    start = time.perf_counter()
    real, real_cooc = encode_side(stored[0], args.concepts, args.tokens)
    generated, gen_cooc = encode_side(stored[1], args.concepts, args.tokens)
    timings["energies + co-occurrence from codes"] = time.perf_counter() - start

    t = time.perf_counter()
    stats = concept_stats(real, generated, resamples=args.bootstrap)
    delta_histogram(stats.delta)
    timings[f"delta + {args.bootstrap}-resample bootstrap"] = time.perf_counter() - t

    scaled = []
    for seed in range(1, args.generators):  # further generators: a random half of the concepts scaled by 0.5-1.5
        factors = np.ones(args.concepts)
        half = np.random.default_rng(seed).random(args.concepts) < 0.5
        factors[half] = np.random.default_rng(seed + 100).uniform(0.5, 1.5, half.sum())
        scaled.append(sp.csr_array(generated @ sp.diags_array(factors)))
    t = time.perf_counter()
    flagged = []
    for other in [generated, *scaled]:
        tested = concept_stats(real, other, resamples=0, uncertainty="none")
        flagged.append(int((tested.suppressed | tested.exaggerated).sum()))
    first, second = real_halves(real, seed=0)
    null = concept_stats(first, second, resamples=0, uncertainty="none")
    timings[f"flags' test: {args.generators} generators + the null control"] = time.perf_counter() - t
    print(f"flags per generator {flagged}; null control flags {int((null.suppressed | null.exaggerated).sum())} "
          f"(the paper's thresholds alone: {int((null.suppressed_paper | null.exaggerated_paper).sum())})")

    t = time.perf_counter()
    datapoint_scores(real, generated)
    timings["datapoint scores"] = time.perf_counter() - t

    t = time.perf_counter()
    l0_curve(real_cooc, epsilon_grid(real_cooc))
    l0_curve(gen_cooc, epsilon_grid(real_cooc))
    _, real_vectors = top_eigen(real_cooc, 100)
    _, gen_vectors = top_eigen(gen_cooc, 100)
    eigenvector_alignment(real_vectors, gen_vectors)
    timings["co-occurrence l0, top-100 spectra, alignment"] = time.perf_counter() - t

    t = time.perf_counter()
    top_partners(real_cooc)
    top_partners(gen_cooc)
    energy_histograms({"real": real, "generated": generated})
    timings["card tables: Z^T Z partners, energy histograms"] = time.perf_counter() - t

    total = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"items={args.items} concepts={args.concepts} k={args.k} tokens/image={args.tokens}")
    print(f"energy nnz per set: {real.nnz:,}; Z^T Z nnz: {real_cooc.nnz:,}")
    for name, seconds in timings.items():
        print(f"  {name:48s} {seconds:7.1f} s")
    print(f"total {total:.1f} s, peak RSS {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
