"""The paper's analyses on synthetic sparse energies whose answers are known."""

import numpy as np
import pytest
import scipy.sparse as sp

from precompute.analysis.cooccurrence import Cooccurrence, eigenvector_alignment, l0_curve, top_eigen
from precompute.analysis.datapoints import datapoint_scores
from precompute.analysis.delta import concept_stats, delta_histogram, pearson_matrix
from precompute.errors import BlindspotError


def energies(n=400, k=30, seed=0, density=0.3):
    rng = np.random.default_rng(seed)
    dense = rng.exponential(1.0, (n, k)) * (rng.random((n, k)) < density)
    return dense


@pytest.fixture
def pair():
    real = energies(seed=1)
    generated = energies(seed=2)
    real[:, 0] *= 10.0  # a strong concept (mean energy about 3) ...
    generated[:, 0] = 0.0  # ... never drawn: suppressed
    generated[:, 1] = real[:, 1] + 3.0 * (real[:, 1] > 0) + 2.0  # concept 1 exaggerated
    generated[:, 2] = real[:, 2]  # concept 2 reproduced exactly
    return real, generated


def test_delta_matches_the_formula_and_flags_blindspots(pair):
    real, generated = pair
    result = concept_stats(sp.csr_array(real), sp.csr_array(generated), resamples=200)
    expected = 1 / (1 + np.exp(-(generated.mean(0) - real.mean(0)) / 0.8))
    np.testing.assert_allclose(result.delta, expected, rtol=1e-6)
    np.testing.assert_allclose(result.relative_delta[1], (generated[:, 1].mean() - real[:, 1].mean())
                               / (generated[:, 1].mean() + real[:, 1].mean()))
    assert result.suppressed[0] and not result.suppressed[2]
    assert result.exaggerated[1] and not result.exaggerated[2]
    assert result.delta[2] == 0.5
    np.testing.assert_allclose(result.nu_real, (real > 0).mean(0))


def test_confidence_intervals_separate_real_effects_from_noise(pair):
    real, generated = pair
    result = concept_stats(sp.csr_array(real), sp.csr_array(generated), resamples=300)
    assert result.significant[0] and result.significant[1]
    assert not result.significant[2]  # identical energies: the interval is exactly 0.5
    assert np.all(result.ci_low <= result.delta + 1e-6) and np.all(result.delta <= result.ci_high + 1e-6)
    # Unrelated noise concepts are mostly not significant at 95%.
    assert result.significant[3:].mean() < 0.3


def test_mcdiarmid_bound_is_wider_than_the_bootstrap(pair):
    real, generated = pair
    boot = concept_stats(sp.csr_array(real), sp.csr_array(generated), resamples=300)
    bound = concept_stats(sp.csr_array(real), sp.csr_array(generated), uncertainty="mcdiarmid")
    assert np.all(bound.ci_high - bound.ci_low >= boot.ci_high - boot.ci_low - 1e-9)


def test_bad_inputs_name_the_problem():
    good = sp.csr_array(np.ones((3, 4)))
    with pytest.raises(BlindspotError, match="paired"):
        concept_stats(good, sp.csr_array(np.ones((2, 4))))
    with pytest.raises(BlindspotError, match="no images"):
        concept_stats(good, sp.csr_array((0, 4)))
    nan = np.ones((3, 4))
    nan[1, 1] = np.nan
    with pytest.raises(BlindspotError, match="NaN"):
        concept_stats(good, sp.csr_array(nan))


def test_histogram_and_pearson():
    delta = np.array([0.05, 0.5, 0.5, 0.5, 0.95, 0.99])
    histogram = delta_histogram(delta, bins=10)
    assert sum(histogram["counts"]) == 6 and histogram["counts"][5] == 3
    names, r = pearson_matrix({"b": delta, "a": delta * 2, "c": 1 - delta})
    assert names == ["a", "b", "c"]
    np.testing.assert_allclose(r, [[1, 1, -1], [1, 1, -1], [-1, -1, 1]], atol=1e-12)


def test_datapoint_scores_find_the_copied_and_the_diverging_pair():
    real = energies(n=50, k=20, seed=3)
    generated = energies(n=50, k=20, seed=4)
    generated[7] = real[7]  # a memorized pair
    generated[9] = real[9] + 10  # a diverging pair
    scores = datapoint_scores(sp.csr_array(real), sp.csr_array(generated))
    assert np.argmin(scores["l2"]) == 7 and scores["l2"][7] == 0
    assert np.argmax(scores["l2"]) == 9
    dense = (1 / (1 + np.exp(-(generated - real) / 0.8))).mean(1)
    np.testing.assert_allclose(scores["mean_sigmoid"], dense, rtol=1e-6)


def test_cooccurrence_is_sparse_and_spectral_tools_agree_with_dense():
    rng = np.random.default_rng(0)
    codes = [sp.csr_array(rng.random((40, 60)) * (rng.random((40, 60)) < 0.05)) for _ in range(5)]
    accumulator = Cooccurrence(60)
    for batch in codes:
        accumulator.add(batch)
    stacked = sp.vstack(codes).toarray()
    dense = stacked.T @ stacked / stacked.shape[0]
    np.testing.assert_allclose(accumulator.matrix().toarray(), dense, atol=1e-12)
    epsilons = np.array([0.0, 1e-3, 1e-2])
    assert l0_curve(accumulator.matrix(), epsilons).tolist() == [(dense > e).sum() for e in epsilons]
    values, vectors = top_eigen(accumulator.matrix(), count=5)
    np.testing.assert_allclose(values, np.sort(np.linalg.eigvalsh(dense))[::-1][:5], rtol=1e-6)
    alignment = eigenvector_alignment(vectors, vectors)
    np.testing.assert_allclose(np.diag(alignment), 1.0, atol=1e-6)


def test_randomized_spectrum_of_a_large_matrix_matches_lanczos():
    from scipy.sparse.linalg import eigsh

    rng = np.random.default_rng(1)
    popularity = 1 / np.arange(1, 801) ** 0.8
    active = rng.choice(800, size=(6000, 4), p=popularity / popularity.sum())
    codes = sp.csr_array((rng.exponential(1.0, 24000), (np.repeat(np.arange(6000), 4), active.ravel())),
                         shape=(6000, 800))
    matrix = (codes.T @ codes).tocsr()
    values, vectors = top_eigen(matrix, count=20)
    reference = np.sort(eigsh(matrix.astype(np.float64), k=20, which="LA")[0])[::-1]
    np.testing.assert_allclose(values[:10], reference[:10], rtol=1e-3)
    np.testing.assert_allclose(values, reference, rtol=1e-2)  # the tail of the subspace is looser
    residual = np.linalg.norm(matrix @ vectors - vectors * values, axis=0) / values
    assert residual[:10].max() < 1e-2  # the leading eigenvectors are accurate


def test_atom_matching_recovers_a_permuted_dictionary_and_its_delta_ranking():
    import torch

    from precompute.analysis.stability import delta_stability, match_atoms

    torch.manual_seed(0)
    atoms = torch.randn(50, 16)
    order = torch.randperm(50)
    shuffled = atoms[order] + 0.01 * torch.randn(50, 16)
    match, cosine = match_atoms(atoms, shuffled, chunk=7)
    assert (order[match] == torch.arange(50)).all() and cosine.min() > 0.99
    delta = np.linspace(0, 1, 50)
    report = delta_stability(delta, delta[order.numpy()], match, cosine)
    assert report["spearman"] == pytest.approx(1.0) and report["matched"] == 50
    # the first dictionary's last 20 atoms replaced by fresh random ones (a dead concept keeps its initialisation):
    # they are not matched, and the report says how many of the live concepts were
    wide = torch.randn(50, 256)
    fresh = wide.clone()
    fresh[30:] = torch.randn(20, 256)
    match, cosine = match_atoms(wide, fresh)
    live = np.arange(50) < 40
    report = delta_stability(delta, delta, match, cosine, live=live)
    assert report["live"] == 40 and report["matched"] == 30 and report["matched_live"] == 30
