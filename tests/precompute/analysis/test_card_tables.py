"""The concept card's precomputed lists: co-occurrence partners, decoder neighbours, energy histograms."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from precompute.analysis.cooccurrence import Cooccurrence, top_partners
from precompute.analysis.energies import energy_histograms
from precompute.analysis.neighbours import nearest_atoms


def test_partners_are_the_top_of_each_row_of_ztz_as_a_cosine_in_blocks():
    rng = np.random.default_rng(0)
    codes = sp.random(400, 60, density=0.08, random_state=1, format="csr") * 3
    cooc = Cooccurrence(60)
    cooc.add(codes)
    matrix = cooc.matrix()
    dense = matrix.toarray()
    scale = np.sqrt(np.diag(dense))
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.nan_to_num(dense / np.outer(scale, scale))
    np.fill_diagonal(cosine, 0)
    ids, weights = top_partners(matrix, top=5)
    assert ids.shape == weights.shape == (60, 5)
    for concept in rng.choice(60, 20, replace=False):
        found = ids[concept][ids[concept] >= 0]
        expected = np.sort(cosine[concept][cosine[concept] > 0])[::-1][:5]
        np.testing.assert_allclose(weights[concept][: found.size], expected, rtol=1e-5)
        np.testing.assert_allclose(cosine[concept, found], expected, rtol=1e-5)
        assert concept not in found


def test_a_concept_with_few_partners_lists_only_those():
    matrix = sp.csr_array(np.array([[4.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 9.0]]))
    ids, weights = top_partners(matrix, top=5)
    assert ids.shape == (3, 2)  # at most K - 1 partners
    assert ids[0].tolist() == [1, -1] and ids[2].tolist() == [-1, -1]
    np.testing.assert_allclose(weights[0], [1.0, 0.0])  # 2 / sqrt(4 * 1)


def test_nearest_atoms_are_exact_decoder_cosines_without_the_atom_itself():
    atoms = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    atoms[7] = atoms[3] * 5  # same direction, other length: cosine 1
    ids, cosines = nearest_atoms(atoms, top=4, block=64)
    unit = atoms / atoms.norm(dim=1, keepdim=True)
    full = (unit @ unit.T).numpy()
    np.fill_diagonal(full, -np.inf)
    np.testing.assert_allclose(cosines, np.sort(full, axis=1)[:, ::-1][:, :4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full[np.arange(300)[:, None], ids], cosines, rtol=1e-5, atol=1e-6)  # ties in any order
    assert ids[3, 0] == 7 and ids[7, 0] == 3 and np.isclose(cosines[3, 0], 1.0)


def test_energy_histograms_share_one_axis_per_concept_across_sets():
    real = sp.csr_array(np.array([[1.0, 0.0], [2.0, 0.0], [4.0, 0.5]]))
    generated = sp.csr_array(np.array([[8.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    upper, counts = energy_histograms({"real": real, "gen": generated}, bins=4)
    np.testing.assert_allclose(upper, [8.0, 0.5])
    assert counts["real"][0].tolist() == [1, 1, 1, 0]  # bins of width 2: 1 in [0, 2), 2 in [2, 4), 4 in [4, 6)
    assert counts["gen"][0].tolist() == [0, 0, 0, 1]  # the maximum falls in the last bin
    assert counts["real"][1].tolist() == [0, 0, 0, 1] and counts["gen"][1].sum() == 0
    assert counts["real"].sum() == real.nnz  # only the images where the concept fires are counted
