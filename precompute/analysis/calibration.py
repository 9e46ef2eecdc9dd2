"""The null control every atlas carries, and the temperature rule it calibrates.

**Real half vs real half.** The real images are split into two random halves (a fixed
seed) and the second half is paired with the first, position by position. Both halves
come from the data-generating process, so every concept is, by construction, neither
suppressed nor exaggerated: any flag the blindspot statistics raise on this pair is a
false alarm. The analyze stage runs the same statistics on it (same T, thresholds,
test and FDR) and stores the count as the atlas's *null flags*. A half has n/2 pairs,
so its deltas are noisier than a generator's (paired, n pairs): the control is harder
to pass than a real generator's null.

**Temperature "auto".** The paper's T = 0.8 is set for its lens (DINOv2-with-registers
tokens, a 32,000-concept RA-SAE, 261 tokens summed per image) and comes with no rule;
another energy model has another energy scale, and T decides at which energy difference
delta crosses the 0.1 / 0.9 thresholds (``|E_gen - E_real| > T ln 9``). Noise is the
test's business (a flag also needs q <= fdr), so T only has to say which changes are
large enough to call a blindspot, in the lens's own units:
``T = s Q10(E_real) / ln 9``, the 10th percentile of the live concepts' mean real energy
times ``s`` (``analysis.auto_share``, 1 by default). A concept at that percentile crosses
0.1 when it loses the share s of its energy (s = 1: when it vanishes); a concept at the
median when it loses s Q10 / median. With s = 1 a concept below the 10th percentile
cannot cross at all, however completely it vanishes: with the maximum as energy
(``encode.energy_aggregation``) a concept's mean is about the share of images that show
it, 0.011 for the demo's document background, so the demo sets s = 0.1 and leaves the
size of a flag to the effect-size floor (``analysis.min_change``,
``precompute.analysis.delta``) and its noise to the test. The rule has no scale of
its own (energies 10x larger give a 10x larger T and the same deltas) and does not
depend on the number of pairs. DINOv2's energies cannot be measured here (no weights),
so T = 0.8 stays the default for the paper's lens.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from precompute.errors import BlindspotError

AUTO_QUANTILE = 0.1  # the live concept whose disappearance just crosses the threshold under "auto"
REAL_HALVES = "real-halves"  # the null control's id in the atlas


def real_halves(real: sp.csr_array, seed: int) -> tuple[sp.csr_array, sp.csr_array]:
    """Two disjoint random halves of the real images' energies, (n // 2, K) each, paired by row."""
    n = real.shape[0]
    order = np.random.default_rng(seed).permutation(n)
    half = n // 2
    if half == 0:
        raise BlindspotError("the null control needs at least 2 real images")
    return sp.csr_array(real[order[:half]]), sp.csr_array(real[order[half:2 * half]])


def auto_temperature(real: sp.csr_array, share: float = 1.0) -> float:
    """The "auto" T of the module docstring, from the real images' energies (n_images, K)."""
    if not 0 < share <= 1:
        raise BlindspotError(f"the auto temperature's share must be in (0, 1], got {share}")
    means = np.asarray(real.sum(axis=0)).ravel() / max(real.shape[0], 1)
    live = means[means > 0]
    if live.size == 0:
        raise BlindspotError("temperature = 'auto' needs energies: no concept fires on any real image")
    return share * float(np.quantile(live, AUTO_QUANTILE)) / math.log(9.0)
