"""Distribution-level analysis: energy difference delta per concept, with its uncertainty.

Seed 001, section 3 and appendix D.3: ``E_real[k]`` and ``E_gen[k]`` are the mean
energies of concept k over the real and generated sets, and
``delta[k] = sigmoid((E_gen[k] - E_real[k]) / T)`` with T = 0.8. delta < 0.1 flags a
suppressed blindspot, delta > 0.9 an exaggerated one: those are the paper's flags
(``suppressed_paper`` / ``exaggerated_paper``). The atlas's flags add a test the paper
lacks (``precompute.analysis.significance``): a concept is flagged only when delta crosses
the threshold *and* its paired sign-flip test survives Benjamini-Hochberg control at
``fdr`` over the generator's live concepts, so a flag is never looser than the paper's.
With ``min_change > 0`` a flag also needs an effect the size of the concept itself:
``|E_gen - E_real| >= min_change * E_real``. delta's T is one energy scale for all
concepts, so a concept far above it crosses the threshold on a small relative shift
(on a randomised embedded world at 2,000 pairs and T = 2.9, a "square" concept moved from
89.8 to 81.4: delta 0.043, q 8e-5, while the share of images with a square did not
change); there such shifts come from the other parts of the image changing (an added
frame, more objects), not from the concept being drawn less or more.
With ``baseline_quantile`` the floor is measured against the energy above the concept's
baseline B (that quantile of its energy over the real images, zeros included):
``|E_gen - E_real| >= min_change * (E_real - B)``. A concept that carries energy on nearly
every image keeps it whether or not the generator draws what the concept detects: on the
embedded world a TopK lens's "three objects" concept has energy about 4.8 on every image
and 12 on images with three objects, so a generator that draws three objects in a quarter
as many images moves its mean from 6.1 to 4.9 (-20%, under a 30% floor of E_real) while
the energy above the baseline falls by more than half. The rarer concepts have B = 0 and
the floor of E_real.
Each delta also carries a paired bootstrap confidence interval (resampling items, so a
real image and its generated counterpart stay together) or, as an option, the
half-width of appendix K's McDiarmid bound, for display.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats

from precompute.analysis.significance import concept_qvalues
from precompute.errors import BlindspotError


# Seed 001 appendix D, section 4.6: frequency vs delta uses a sigmoid twice as sharp (T = 0.4 beside the paper's
# 0.8); the atlas keeps that ratio at any temperature (``concept_stats.delta_sharp``).
FREQUENCY_SHARPENING = 2.0


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


@dataclass(frozen=True)
class ConceptStats:
    """Per-concept statistics of one generator against the real images (arrays of length K)."""

    e_real: np.ndarray
    e_gen: np.ndarray
    delta: np.ndarray
    relative_delta: np.ndarray
    nu_real: np.ndarray  # share of real images where the concept fires
    nu_gen: np.ndarray
    suppressed_paper: np.ndarray  # bool: delta below the threshold (the paper's flag)
    exaggerated_paper: np.ndarray  # bool: delta above the threshold
    p_value: np.ndarray  # paired sign-flip test of E_gen = E_real; NaN where not computable or not live
    q_value: np.ndarray  # Benjamini-Hochberg over the live concepts; NaN likewise
    fdr: float
    min_change: float  # effect-size floor of the flags, a share of E_real - baseline (0: none, the paper's rule)
    baseline: np.ndarray  # energy the floor is measured above (zeros unless baseline_quantile is set)
    ci_low: np.ndarray
    ci_high: np.ndarray

    @property
    def live(self) -> np.ndarray:
        """Concepts that fire on some real or generated image (the ones tested)."""
        return (self.nu_real > 0) | (self.nu_gen > 0)

    @property
    def significant(self) -> np.ndarray:
        """E_gen differs from E_real at the false discovery rate ``fdr`` (False where q is not computable)."""
        return np.nan_to_num(self.q_value, nan=np.inf) <= self.fdr

    @property
    def large(self) -> np.ndarray:
        """The mean energy moved by at least ``min_change`` of its real value above the baseline (all True at 0)."""
        return np.abs(self.e_gen - self.e_real) >= self.min_change * np.maximum(self.e_real - self.baseline, 0.0)

    @property
    def suppressed(self) -> np.ndarray:
        """The atlas's flag: below the paper's threshold, significant, and at least ``min_change`` in size."""
        return self.suppressed_paper & self.significant & self.large

    @property
    def exaggerated(self) -> np.ndarray:
        return self.exaggerated_paper & self.significant & self.large


def check_pair(real: sp.csr_array, generated: sp.csr_array) -> None:
    """Refuse energy matrices that cannot be compared, naming the mismatch."""
    if real.shape[0] == 0:
        raise BlindspotError("no real images: the energy matrix of the real set is empty")
    if generated.shape[0] == 0:
        raise BlindspotError("the generator has no images: its energy matrix is empty")
    if real.shape != generated.shape:
        raise BlindspotError(f"real and generated energies must be paired: shapes {real.shape} vs {generated.shape}")
    for name, matrix in (("real", real), ("generated", generated)):
        if not np.all(np.isfinite(matrix.data)):
            raise BlindspotError(f"the {name} energies contain NaN or infinite values")


def column_means(matrix: sp.csr_array) -> np.ndarray:
    return np.asarray(matrix.sum(axis=0)).ravel() / matrix.shape[0]


def column_quantiles(matrix: sp.csr_array, q: float) -> np.ndarray:
    """Each column's ``q`` quantile over all its rows, implicit zeros included (numpy's "lower" rule), without
    densifying: a column's zeros fill the ranks between its negative and its positive entries."""
    n, columns = matrix.shape
    rank = int(np.floor(q * (n - 1)))
    csc = sp.csc_array(matrix)
    stored = np.diff(csc.indptr)
    column = np.repeat(np.arange(columns), stored)
    values = csc.data[np.lexsort((csc.data, column))]  # each column's entries in ascending order, columns in turn
    negative = np.bincount(column[csc.data < 0], minlength=columns)
    zeros = n - stored
    below, stored_rank = rank < negative, rank >= negative + zeros  # else the rank falls on an implicit zero
    picked = below | stored_rank
    out = np.zeros(columns)
    out[picked] = values[(csc.indptr[:-1] + np.where(below, rank, rank - zeros))[picked]]
    return out


def firing_frequency(matrix: sp.csr_array) -> np.ndarray:
    """Share of rows (images) where each concept is non-zero."""
    positive = matrix.copy()
    positive.data = (positive.data > 0).astype(np.float32)
    return column_means(positive)


def bootstrap_delta(real: sp.csr_array, generated: sp.csr_array, temperature: float, resamples: int,
                    seed: int = 0, level: float = 0.95, chunk: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of delta under a paired bootstrap over items.

    A resample is a multinomial weight vector over the n items, so the resampled mean
    difference of every concept at once is ``w @ (G - R) / n``: one sparse-dense
    product per chunk of resamples, never a Python loop over concepts.
    """
    n, k = real.shape
    difference = (generated - real).tocsc().T.tocsr()  # (K, n) so the product is K x chunk
    rng = np.random.default_rng(seed)
    deltas = np.empty((resamples, k), dtype=np.float32)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float32).T  # (n, size)
        means = (difference @ weights).T / n  # (size, K)
        deltas[start:start + size] = sigmoid(means / temperature)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(deltas, [tail, 1.0 - tail], axis=0)
    return low, high


def mcdiarmid_halfwidth(real: sp.csr_array, generated: sp.csr_array, temperature: float,
                        level: float = 0.95) -> np.ndarray:
    """Half-width epsilon of appendix K's bound at confidence ``level``, per concept.

    Theorem 4: P(|delta_hat - delta| > eps) <= 2 exp(-2 n eps^2 / L^2) with L = M / 4
    for energies in [a, b], M = b - a. With the temperature the sigmoid is
    1/(4T)-Lipschitz, so L = M / (4T). Solving for eps at failure probability
    1 - level gives eps = L sqrt(ln(2 / (1 - level)) / (2 n)).
    """
    n = real.shape[0]
    both = sp.vstack([real, generated]).tocsc()
    high = np.asarray(both.max(axis=0).todense()).ravel()
    low = np.minimum(np.asarray(both.min(axis=0).todense()).ravel(), 0.0)
    lipschitz = (high - low) / (4.0 * temperature)
    return lipschitz * np.sqrt(np.log(2.0 / (1.0 - level)) / (2.0 * n))


def concept_stats(real: sp.csr_array, generated: sp.csr_array, *, temperature: float = 0.8,
                  suppressed_below: float = 0.1, exaggerated_above: float = 0.9, fdr: float = 0.05,
                  min_change: float = 0.0, baseline_quantile: float | None = None, pvalue_rule: str = "hoeffding",
                  uncertainty: str = "bootstrap", resamples: int = 1000, seed: int = 0) -> ConceptStats:
    """All per-concept statistics of one generator against the real set.

    ``resamples = 0`` with ``uncertainty = "none"`` skips the interval (NaN), for
    controls whose flags are counted but never shown with an interval. ``baseline_quantile``: the floor's
    baseline, that quantile of each concept's energy over ``real`` (module docstring; unset: 0).
    """
    check_pair(real, generated)
    e_real, e_gen = column_means(real), column_means(generated)
    delta = sigmoid((e_gen - e_real) / temperature)
    total = e_gen + e_real
    relative = np.divide(e_gen - e_real, total, out=np.zeros_like(total), where=total > 0)
    if uncertainty == "bootstrap" and resamples > 0:
        low, high = bootstrap_delta(real, generated, temperature, resamples, seed)
    elif uncertainty in ("bootstrap", "mcdiarmid"):
        half = mcdiarmid_halfwidth(real, generated, temperature)
        low, high = np.clip(delta - half, 0, 1), np.clip(delta + half, 0, 1)
    elif uncertainty == "none":
        low = high = np.full(delta.shape, np.nan)
    else:
        raise BlindspotError(f"uncertainty must be 'bootstrap', 'mcdiarmid' or 'none', got {uncertainty!r}")
    nu_real, nu_gen = firing_frequency(real), firing_frequency(generated)
    p, q = concept_qvalues(real, generated, (nu_real > 0) | (nu_gen > 0), pvalue_rule)
    return ConceptStats(
        e_real=e_real, e_gen=e_gen, delta=delta, relative_delta=relative, nu_real=nu_real, nu_gen=nu_gen,
        suppressed_paper=delta < suppressed_below, exaggerated_paper=delta > exaggerated_above,
        p_value=p, q_value=q, fdr=fdr, min_change=min_change,
        baseline=(np.zeros_like(e_real) if baseline_quantile is None or not min_change
                  else column_quantiles(real, baseline_quantile)),
        ci_low=low.astype(np.float64), ci_high=high.astype(np.float64),
    )


def delta_histogram(delta: np.ndarray, bins: int = 100) -> dict:
    """Appendix D.3: counts of delta in ``bins`` equal bins over [0, 1] (plotted on a log scale), with skewness."""
    counts, edges = np.histogram(delta, bins=bins, range=(0.0, 1.0))
    return {"counts": counts.tolist(), "edges": edges.tolist(), "skewness": float(stats.skew(delta))}


def pearson_matrix(deltas: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Pearson r of delta between every pair of generators (seed 001, section 4.2)."""
    names = sorted(deltas)
    if len(names) < 2:
        return names, np.ones((len(names), len(names)))
    return names, np.corrcoef(np.stack([deltas[name] for name in names]))
