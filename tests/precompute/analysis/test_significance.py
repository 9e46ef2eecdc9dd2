"""The test the paper lacks: paired sign-flip p-values, Benjamini-Hochberg, gated flags and the null control.

Every property is checked against inputs whose truth is known: concepts with no effect (the generator draws
from the same distribution as the data), concepts with a real effect, and the degenerate cases.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from precompute.analysis.calibration import auto_temperature, real_halves
from precompute.analysis.delta import column_quantiles, concept_stats
from precompute.analysis.significance import benjamini_hochberg, signflip_pvalues
from precompute.errors import BlindspotError


def sparse_energies(rng, n, k, density=0.05, scale=1.0):
    """Zero-inflated, heavy-tailed energies like an SAE's: most concepts rare, a few large values."""
    fires = rng.random((n, k)) < density
    return sp.csr_array(rng.lognormal(0.0, 1.0, (n, k)) * scale * fires)


@pytest.mark.parametrize("rule, slack", [("hoeffding", 1.0), ("normal", 1.3)])
def test_pvalues_are_valid_when_nothing_changed(rule, slack):
    """4,000 concepts with no effect: the share of p <= alpha is at most alpha (Hoeffding: far below)."""
    rng = np.random.default_rng(0)
    real, generated = sparse_energies(rng, 300, 4000), sparse_energies(rng, 300, 4000)
    p = signflip_pvalues(real, generated, rule)
    for alpha in (0.1, 0.05, 0.01):
        assert (p <= alpha).mean() <= alpha * slack
    if rule == "hoeffding":  # conservative: a bound, never below the exact randomisation p-value's scale
        assert (p <= 0.05).mean() < 0.01


def test_pvalues_find_a_real_effect_and_are_symmetric():
    rng = np.random.default_rng(1)
    real = sparse_energies(rng, 400, 6, density=0.3).toarray()
    generated = real.copy()
    generated[:, 0] *= 0.5  # half the energy: suppressed
    generated[:, 1] *= 2.0  # twice the energy: exaggerated
    p = signflip_pvalues(sp.csr_array(real), sp.csr_array(generated))
    assert p[0] < 1e-6 and p[1] < 1e-6
    assert np.all(p[2:] == 1.0)  # identical energies: no evidence at all
    swapped = signflip_pvalues(sp.csr_array(generated), sp.csr_array(real))
    np.testing.assert_allclose(p, swapped)


def test_hoeffding_bound_is_never_below_the_exact_signflip_pvalue():
    """On 10 pairs the 1,024 sign flips can be enumerated: the bound must lie above the exact p-value."""
    rng = np.random.default_rng(2)
    d = rng.lognormal(size=(10, 50)) * (rng.random((10, 50)) < 0.6) * rng.choice([-1, 1], size=(10, 50), p=[0.2, 0.8])
    signs = np.array(np.meshgrid(*[[-1, 1]] * 10)).reshape(10, -1).T  # (1024, 10)
    flipped = np.abs(signs @ np.abs(d))  # (1024, 50)
    exact = (flipped >= np.abs(d.sum(0)) - 1e-12).mean(0)
    bound = signflip_pvalues(sp.csr_array(np.zeros_like(d)), sp.csr_array(d))
    assert np.all(bound >= exact - 1e-12)


def test_benjamini_hochberg_matches_its_definition():
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(size=40), rng.uniform(0, 1e-3, size=10)])
    q = benjamini_hochberg(p)
    m = p.size
    ranks = np.argsort(np.argsort(p)) + 1
    expected = np.array([min(1.0, min(m * p[j] / ranks[j] for j in range(m) if p[j] >= p[i])) for i in range(m)])
    np.testing.assert_allclose(q, expected)
    live = np.arange(m) % 2 == 0
    partial = benjamini_hochberg(p, live)
    assert np.all(np.isnan(partial[~live]))
    np.testing.assert_allclose(partial[live], benjamini_hochberg(p[live]))


def test_a_generator_with_no_effect_gets_no_flags_while_the_paper_thresholds_flag_many():
    """The failure this module exists for: at a small T the paper's thresholds flag noise; the gated flags do not."""
    rng = np.random.default_rng(4)
    real, generated = sparse_energies(rng, 500, 2000), sparse_energies(rng, 500, 2000)
    stats = concept_stats(real, generated, temperature=0.005, resamples=0, uncertainty="none")
    assert (stats.suppressed_paper | stats.exaggerated_paper).sum() > 100
    assert not (stats.suppressed | stats.exaggerated).any()


def test_flags_are_never_looser_than_the_paper_and_a_real_blindspot_is_flagged():
    rng = np.random.default_rng(5)
    real = sparse_energies(rng, 600, 300, density=0.2).toarray()
    generated = sparse_energies(rng, 600, 300, density=0.2).toarray()
    generated[:, 0] = 0.0  # never drawn
    generated[:, 1] = real[:, 1] * 3 + 1  # far too often
    stats = concept_stats(sp.csr_array(real), sp.csr_array(generated), temperature=0.05, resamples=0,
                          uncertainty="none")
    assert stats.suppressed[0] and stats.exaggerated[1]
    assert np.all(stats.suppressed <= stats.suppressed_paper) and np.all(stats.exaggerated <= stats.exaggerated_paper)
    assert np.all(stats.significant[stats.suppressed | stats.exaggerated])
    assert (stats.suppressed | stats.exaggerated)[2:].sum() <= 1  # noise concepts: at most a rare false discovery


def test_fewer_than_twenty_pairs_never_flag():
    real = sp.csr_array(np.full((10, 3), 5.0))
    generated = sp.csr_array(np.zeros((10, 3)))
    stats = concept_stats(real, generated, resamples=0, uncertainty="none")
    assert stats.suppressed_paper.all()  # delta is sigmoid(-5 / 0.8): below 0.1
    assert np.all(np.isnan(stats.p_value)) and np.all(np.isnan(stats.q_value))
    assert not stats.suppressed.any() and not stats.significant.any()


def test_real_halves_are_disjoint_random_halves():
    real = sp.csr_array(np.arange(21, dtype=float)[:, None] + 1)
    first, second = real_halves(real, seed=0)
    assert first.shape == second.shape == (10, 1)
    values = np.concatenate([first.toarray().ravel(), second.toarray().ravel()])
    assert len(set(values)) == 20 and set(values) <= set(range(1, 22))
    again, _ = real_halves(real, seed=0)
    np.testing.assert_array_equal(first.toarray(), again.toarray())
    with pytest.raises(BlindspotError):
        real_halves(sp.csr_array(np.ones((1, 3))), seed=0)


def test_auto_temperature_follows_the_energy_scale():
    """Energies 10x larger give a 10x larger T and the same deltas: the rule has no scale of its own."""
    rng = np.random.default_rng(6)
    real = sparse_energies(rng, 800, 200, density=0.1)
    t = auto_temperature(real)
    assert t > 0 and auto_temperature(real * 10) == pytest.approx(10 * t)
    # a concept at the 10th percentile of mean energy crosses delta 0.1 exactly when it vanishes
    means = np.asarray(real.mean(axis=0)).ravel()
    assert 1 / (1 + np.exp(np.quantile(means[means > 0], 0.1) / t)) == pytest.approx(0.1)
    # more pairs from the same distribution: about the same T
    assert auto_temperature(sparse_energies(rng, 4000, 200, density=0.1)) == pytest.approx(t, rel=0.15)
    with pytest.raises(BlindspotError, match="auto"):
        auto_temperature(sp.csr_array((5, 3)))
    # with a share s, that concept crosses when it loses the share s of its energy
    half = auto_temperature(real, share=0.5)
    assert half == pytest.approx(t / 2)
    q10 = np.quantile(means[means > 0], 0.1)
    assert 1 / (1 + np.exp(0.5 * q10 / half)) == pytest.approx(0.1)
    with pytest.raises(BlindspotError, match="share"):
        auto_temperature(real, share=0.0)


def test_column_quantiles_count_the_implicit_zeros():
    """Against numpy's "lower" quantile of the dense columns: negative, zero and positive entries, explicit zeros,
    an empty column, at the ends and in between."""
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(37, 6)) * (rng.random((37, 6)) < [0.0, 0.1, 0.5, 0.9, 1.0, 0.3])
    matrix = sp.csr_array(dense)
    matrix.data[::7] = 0.0  # explicit zeros stored in the matrix
    dense = matrix.toarray()
    for q in (0.0, 0.1, 0.25, 0.5, 0.9, 0.999):
        np.testing.assert_array_equal(column_quantiles(matrix, q), np.quantile(dense, q, axis=0, method="lower"))


def test_the_effect_size_floor_drops_a_small_significant_shift_and_keeps_a_blindspot():
    """A high-energy concept that loses 10% of its energy in every pair crosses the paper's threshold at a small T
    and is significant; with ``min_change = 0.3`` only the concept that lost most of its energy stays flagged."""
    rng = np.random.default_rng(6)
    real = rng.uniform(80, 100, size=(400, 3))
    generated = real.copy()
    generated[:, 0] *= 0.9  # a small, consistent shift
    generated[:, 1] *= 0.2  # drawn far more weakly
    generated[:, 2] *= 1.0 + rng.normal(0, 0.01, size=400)  # noise around no change
    options = dict(temperature=3.0, resamples=0, uncertainty="none")
    paper = concept_stats(sp.csr_array(real), sp.csr_array(generated), **options)
    floored = concept_stats(sp.csr_array(real), sp.csr_array(generated), min_change=0.3, **options)
    assert paper.suppressed[:2].all() and paper.significant[0]
    assert not floored.suppressed[0] and floored.suppressed[1]
    assert not (floored.suppressed | floored.exaggerated)[2]
    np.testing.assert_array_equal(paper.delta, floored.delta)  # the floor gates flags only, never delta itself


def test_the_floor_above_a_baseline_finds_a_concept_that_fires_everywhere():
    """A concept with energy ~5 on every image and ~12 where it detects its object: the generator draws the object
    in a quarter as many images, so the mean falls ~20% (under a 30% floor of E_real) while the energy above the
    baseline halves. Measured above its 10th-percentile baseline the floor keeps that flag; a rare concept (baseline
    0) keeps the floor of E_real, so its 10% shift stays unflagged; without a floor neither rule changes."""
    rng = np.random.default_rng(8)
    n = 2000
    shows = rng.random(n) < 0.2
    real = np.stack([5 + rng.normal(0, 0.3, n) + 7 * shows,
                     np.where(rng.random(n) < 0.3, rng.uniform(80, 100, n), 0.0)], axis=1)
    generated = real.copy()
    drawn = shows & (rng.random(n) < 0.25)
    generated[shows & ~drawn, 0] -= 7
    generated[:, 1] *= 0.9
    options = dict(temperature=0.1, resamples=0, uncertainty="none", min_change=0.3)
    plain = concept_stats(sp.csr_array(real), sp.csr_array(generated), **options)
    based = concept_stats(sp.csr_array(real), sp.csr_array(generated), baseline_quantile=0.1, **options)
    assert plain.suppressed_paper.all() and plain.significant.all()
    assert not plain.suppressed.any()
    assert based.suppressed[0] and not based.suppressed[1]
    assert based.baseline[0] == pytest.approx(5 - 0.3 * 1.28, abs=0.1) and based.baseline[1] == 0
    np.testing.assert_array_equal(plain.delta, based.delta)
    unfloored = concept_stats(sp.csr_array(real), sp.csr_array(generated), baseline_quantile=0.1,
                              **{**options, "min_change": 0.0})
    assert unfloored.suppressed.all() and not unfloored.baseline.any()
