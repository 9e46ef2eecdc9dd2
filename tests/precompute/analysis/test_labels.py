"""Concept labels with evidence: caption words chosen on half the real images, scored on the other half."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from precompute.analysis.labels import (EnergyRanks, _label_scores, caption_label_evidence, caption_vocabulary,
                                        chosen_labels, held_out_split)

WORDS = ["apple", "boat", "cat", "dog", "egg", "fish"]


def world(n: int = 2000, flip: float = 0.1, seed: int = 0) -> tuple[sp.csr_array, list[str]]:
    """Concept k fires on an image when its caption names WORDS[k], except for a share ``flip`` of images."""
    rng = np.random.default_rng(seed)
    named = rng.random((n, len(WORDS))) < 0.3
    captions = [" ".join(["a picture of"] + [w for w, on in zip(WORDS, row) if on] + ["and things"]) for row in named]
    fires = named ^ (rng.random(named.shape) < flip)
    return sp.csr_array(np.where(fires, rng.exponential(1.0, fires.shape) + 0.1, 0.0)), captions


def test_labels_name_the_words_that_predict_the_concept_and_score_them_on_held_out_images():
    energies, captions = world()
    words, auroc = caption_label_evidence(energies, captions, seed=0)
    assert [[w for w, _ in label] for label in words] == [[w] for w in WORDS]  # a weak second word is dropped
    # 10% of the images flip each concept: well above chance, below 1
    assert np.all((auroc > 0.8) & (auroc < 0.97)), auroc


def test_shuffled_captions_score_chance():
    """The control: the same energies with the captions of other images. Words still get chosen (by noise on the
    fit half), and the held-out score says they mean nothing."""
    energies, captions = world()
    shuffled = list(np.random.default_rng(1).permutation(captions))
    words, auroc = caption_label_evidence(energies, shuffled, seed=0)
    assert all(words)  # labels exist ...
    assert np.all(np.abs(auroc - 0.5) < 0.08), auroc  # ... and score as chance


def test_the_score_is_the_auroc_of_the_concepts_energy_for_captions_naming_the_label():
    energies, captions = world(n=600, flip=0.3, seed=2)
    dense_energy = energies.toarray()
    dense_energy[:40, 0] = 2.0  # ties among the images where a concept fires are ranked alike
    vocabulary, present = caption_vocabulary(captions, min_count=1)
    labels = [[("apple", 1.0), ("boat", 1.0)], [("cat", 1.0)], [], [("dog", 1.0), ("egg", 1.0), ("fish", 1.0)],
              [("egg", 1.0)], [("fish", 1.0), ("apple", 1.0)]]
    got = _label_scores(labels, vocabulary, present, EnergyRanks.of(sp.csr_array(dense_energy)))
    dense, column = present.toarray(), {w: i for i, w in enumerate(vocabulary)}
    for k, label in enumerate(labels):
        if not label:
            assert np.isnan(got[k])
            continue
        named = sum(dense[:, column[w]] for w, _ in label) > 0
        assert got[k] == pytest.approx(roc_auc_score(named, dense_energy[:, k]))


def test_the_split_is_seeded_disjoint_and_covers_every_image():
    fit, held = held_out_split(101, seed=3)
    again = held_out_split(101, seed=3)
    assert np.array_equal(fit, again[0]) and np.array_equal(held, again[1])
    assert len(set(fit) & set(held)) == 0 and sorted([*fit, *held]) == list(range(101))
    assert abs(held.size - 50) <= 1
    assert not np.array_equal(held, held_out_split(101, seed=4)[1])


def test_the_better_scored_label_is_chosen_and_a_vlm_label_wins():
    chosen = chosen_labels(vlm=[None, None, "a red star", None, None],
                           caption=["star, red", "grass", "sky", "", ""],
                           caption_auroc=np.array([0.7, 0.9, 0.6, np.nan, np.nan]),
                           world=["star", "grass", None, "shadow", None],
                           world_auroc=np.array([0.95, 0.8, np.nan, 0.7, np.nan]))
    assert chosen["label"] == ["star", "grass", "a red star", "shadow", "#4"]
    assert chosen["label_source"] == ["world", "caption", "vlm", "world", "id"]
    np.testing.assert_allclose(chosen["label_auroc"], [0.95, 0.9, np.nan, 0.7, np.nan])
