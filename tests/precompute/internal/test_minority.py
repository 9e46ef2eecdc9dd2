"""Minority scores (RAIGen's d * (1 - nu)), greedy NMS and heatmap quantisation on hand-made cases."""

from __future__ import annotations

import math

import pytest
import torch

from precompute.errors import DataError
from precompute.internal.minority import greedy_nms, minority_scores, quantise_maps, top_images


def _case():
    """Ten images of 4 positions: eight look alike (embedding e0), two are different (e1).

    feature 0 fires everywhere (frequent, centroid = global), feature 1 fires on one position of each
    of the two different images (rare and distinct), feature 2 fires on one position of two ordinary
    images (rare, not distinct), feature 3 never fires.
    """
    embeddings = torch.tensor([[1.0, 0.0]] * 8 + [[0.0, 1.0]] * 2)
    sums = torch.zeros(10, 4)
    sums[:, 0] = 4.0
    sums[8:, 1] = 2.0
    sums[:2, 2] = 2.0
    fired = torch.tensor([40, 2, 2, 0])
    return fired, sums, torch.full((10,), 4), embeddings


def test_a_rare_feature_on_distinct_images_ranks_first_and_the_formula_holds():
    fired, sums, counts, embeddings = _case()
    scores = minority_scores(fired, 40, sums, counts, embeddings)
    assert scores.frequency.tolist() == pytest.approx([1.0, 0.05, 0.05, 0.0])  # positions, not images
    assert scores.live.tolist() == [True, True, True, False]
    assert math.isnan(scores.minority[3]) and math.isnan(scores.distinctiveness[3])
    ordered = scores.minority[:3].argsort(descending=True).tolist()
    assert ordered == [1, 2, 0]
    # by hand: global centroid (0.8, 0.2); d = 1 - cos(centroid, global)
    global_centroid = torch.tensor([0.8, 0.2], dtype=torch.float64)
    centroids = torch.tensor([[0.8, 0.2], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    d = 1 - torch.nn.functional.cosine_similarity(centroids, global_centroid[None], dim=1)
    assert scores.distinctiveness[:3].tolist() == pytest.approx(d.tolist())
    d_norm = (d - d.min()) / (d.max() - d.min())
    nu = torch.tensor([1.0, 0.05, 0.05], dtype=torch.float64)
    nu_norm = (nu - nu.min()) / (nu.max() - nu.min())
    assert scores.minority[:3].tolist() == pytest.approx((d_norm * (1 - nu_norm)).tolist())
    assert scores.minority[1] == pytest.approx(1.0) and scores.minority[0] == pytest.approx(0.0)


def test_centroids_weight_images_by_activation():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    sums = torch.tensor([[3.0], [1.0]])
    scores = minority_scores(torch.tensor([2]), 8, sums, torch.tensor([4, 4]), embeddings)
    assert scores.centroids[0].tolist() == pytest.approx([0.75, 0.25])


def test_mismatched_inputs_are_refused():
    fired, sums, counts, embeddings = _case()
    with pytest.raises(DataError, match="same images"):
        minority_scores(fired, 40, sums, counts, embeddings[:5])


def test_nms_keeps_diverse_features_in_score_order():
    centroids = torch.tensor([[1.0, 0.0, 0.0], [0.999, 0.04, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                              [0.0, 0.0, 0.0]])
    scores = torch.tensor([0.9, 0.8, 0.5, 0.7, float("nan")])  # the last feature is dead
    assert greedy_nms(scores, centroids, tau=0.05) == [0, 3, 2]  # 1 duplicates 0
    assert greedy_nms(scores, centroids, tau=0.0) == [0, 1, 3, 2]
    assert greedy_nms(scores, centroids, tau=1.5) == [0]  # everything else is within distance 1
    assert greedy_nms(scores, centroids, tau=0.05, candidates=torch.tensor([False, True, True, True, True])) \
        == [1, 3, 2]


def test_top_images_and_quantised_maps():
    image_scores = torch.tensor([[0.1, 0.0], [0.5, 0.0], [0.3, 2.0]])
    indices, scores = top_images(image_scores, 2)
    assert indices.tolist() == [[1, 2], [2, 0]] and scores[0].tolist() == pytest.approx([0.5, 0.3])
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]]])
    scale, blobs = quantise_maps(maps)
    assert scale.tolist() == [4.0] and list(blobs[0]) == [0, 64, 128, 255]
