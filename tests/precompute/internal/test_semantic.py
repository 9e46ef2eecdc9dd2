"""Semantic embeddings of the internal lens and the labels they give features."""

from __future__ import annotations

import torch

from precompute.internal.semantic import Semantic, _world_pass, feature_labels


def test_one_world_encoder_pass_gives_its_embeddings_and_concept_probabilities():
    from precompute.encoders import load_energy_model
    from precompute.world import World

    model = load_energy_model("world")
    world = World(seed=1, size=64)
    images = [world.sample(i).image for i in range(4)]
    embeddings, probabilities = _world_pass(model, images)
    assert torch.allclose(embeddings, model.embed(images).cpu(), atol=1e-6)
    assert torch.allclose(probabilities, model.concept_probabilities(images).cpu(), atol=1e-6)


def test_a_feature_is_named_after_the_world_concept_its_images_show_more_often():
    probabilities = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.1]])
    semantic = Semantic(torch.eye(4), probabilities, ("star", "shadow"))
    sums = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [5.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    # feature 0 fires on the shadow image; feature 1 everywhere alike (nothing stands out); feature 2 is dead
    assert feature_labels(sums, semantic, ["a"] * 4) == ["shadow", "", ""]


def test_without_world_concepts_a_feature_is_named_by_caption_words():
    captions = ["a red star on grass"] * 6 + ["a blue circle on sky"] * 6
    sums = torch.zeros(12, 2)
    sums[:6, 0] = 1.0
    sums[6:, 1] = 1.0
    labels = feature_labels(sums, Semantic(torch.eye(12)), captions)
    assert labels[0] in {"red", "star", "grass"} and labels[1] in {"blue", "circle", "sky"}
