"""The world lens read out through the encoder's heads: one coordinate per world concept, one token per family."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from precompute.encoders import load_energy_model
from precompute.encoders.base import split_tokens, training_rows
from precompute.encoders.lens import Lens
from precompute.errors import ConfigError
from precompute.sae import build_sae
from precompute.world import CONCEPTS, World, concept_matrix


@pytest.fixture(scope="module")
def heads():
    return load_energy_model("world-heads")


@pytest.fixture(scope="module")
def images():
    samples = World(seed=0, size=64).sample_many(0, 300)
    return np.stack([s.image for s in samples]), concept_matrix([s.scene for s in samples])


def test_the_heads_tokens_are_the_world_concepts_with_one_group_per_family(heads, images):
    tokens = heads.encode(images[0][:8]).tokens
    assert heads.name == "world-heads" and heads.dim == len(CONCEPTS) and tokens.shape == (8, 65, len(CONCEPTS))
    assert float(tokens.min()) >= 0 and float(tokens.max()) <= 1
    groups = heads.token_groups
    # every coordinate in exactly one family; eight families (shape, colour, ..., the extras)
    assert groups.shape == (8, len(CONCEPTS)) and torch.equal(groups.sum(0), torch.ones(len(CONCEPTS)))
    # the trunk layout is the encoder's own tokens, without groups; both give the internal lens the same embedding
    trunk = load_energy_model("world")
    assert trunk.token_groups is None and trunk.dim == 128
    assert torch.allclose(trunk.embed(images[0][:4]), heads.embed(images[0][:4]))


def test_the_heads_tokens_see_each_world_concept_where_an_sae_on_the_trunk_does_not(heads, images):
    """The oracle of this layout (each coordinate summed over the image's tokens) detects every world concept, the
    absences included (solid, plain_white, count_one), which no concept of an SAE on the trunk's tokens does."""
    from precompute.encoders.train_world_lens import detectability

    tokens = torch.cat([heads.encode(chunk).tokens for chunk in np.array_split(images[0], 3)])
    scores = detectability(tokens.sum(dim=1).numpy(), images[1], [c.name for c in CONCEPTS])
    by_name = {row["world_concept"]: row for row in scores["table"]}
    for name in ("solid", "plain_white", "count_one", "wood", "sun", "purple"):
        assert by_name[name]["auroc"] >= 0.95 and by_name[name]["concept"] == [c.name for c in CONCEPTS].index(name)
    # the control: the same coordinates shuffled across images detect nothing
    shuffled = tokens.sum(dim=1).numpy()[np.random.default_rng(0).permutation(len(tokens))]
    assert detectability(shuffled, images[1], [c.name for c in CONCEPTS])["mean_auroc"] < 0.7


def test_a_position_s_codes_are_the_sum_of_its_families_codes(heads, images):
    torch.manual_seed(0)
    sae = build_sae("topk", input_dim=heads.dim, n_concepts=24, k=2)
    lens = Lens.from_parts(heads, sae, patch_tokens_only=False)
    tokens = heads.encode(images[0][:3]).tokens
    codes = lens.token_codes(tokens)
    assert codes.shape == (3, 65, 24)
    by_family = torch.stack([sae.encode_codes(tokens * mask) for mask in heads.token_groups]).sum(0)
    assert torch.allclose(codes, by_family, atol=1e-6)
    # without groups (the trunk and DINOv2 layouts) the lens is the SAE on the tokens as they are
    assert torch.equal(split_tokens(tokens, None)[..., 0, :], tokens)
    rows = training_rows(tokens, heads.token_groups)
    assert rows.shape[1] == heads.dim and bool((rows.abs().amax(dim=1) > 0).all())
    assert len(rows) <= 3 * 65 * 8 and len(training_rows(tokens, None)) == 3 * 65


def test_the_heads_sae_needs_the_heads_tokens():
    from precompute.config import parse_config

    with pytest.raises(ConfigError, match="'world-heads' is the SAE of the world encoder's 'world-heads' tokens"):
        parse_config({"source": {"kind": "world"}, "generators": [{"name": "p", "kind": "planted"}],
                      "encode": {"energy_model": "world", "sae": "world-heads"}})
    with pytest.raises(ConfigError, match="readout must be one of"):
        from precompute.encoders.world_encoder import WorldEnergyModel

        WorldEnergyModel(readout="factors")


def test_the_trunk_lens_sae_on_the_heads_tokens_is_refused_naming_both(heads):
    from precompute.encoders.world_encoder import SHIPPED_SAE
    from precompute.sae import load_sae

    with pytest.raises(ConfigError, match=r"takes tokens of dimension 128, but the energy model 'world-heads' gives "
                                          r"tokens of dimension 48"):
        Lens(heads, load_sae(SHIPPED_SAE))


def test_the_maximum_says_whether_an_image_shows_a_shape_the_sum_how_much_of_it(heads):
    """The demo's energy (``encode.energy_aggregation = "max"``): a shape's detector has about the same energy on
    images with three or four objects of that shape as on images with one, where the sum grows with the count. With
    the sum, a generator that draws more objects than asked raises every shape concept (README, "The world lens")."""
    from precompute.encoders.train_world_lens import detectability
    from precompute.encoders.world_encoder import SHIPPED_HEADS_SAE
    from precompute.sae import load_sae

    samples = World(seed=5, size=64).sample_many(0, 900)
    pixels, presence = np.stack([s.image for s in samples]), concept_matrix([s.scene for s in samples])
    names = [c.name for c in CONCEPTS]
    one = presence[:, names.index("count_one")]
    many = presence[:, names.index("count_three")] | presence[:, names.index("count_four")]
    sae = load_sae(SHIPPED_HEADS_SAE)
    ratios = {}
    for aggregation in ("sum", "max"):
        lens = Lens.from_parts(heads, sae, patch_tokens_only=False, aggregation=aggregation)
        with torch.no_grad():
            energy = torch.cat([lens.energy(lens.token_codes(heads.encode(chunk).tokens))
                                for chunk in np.array_split(pixels, 6)]).numpy()
        table = {row["world_concept"]: row for row in detectability(energy, presence, names)["table"]}
        for shape in ("circle", "square"):
            shows = presence[:, names.index(shape)]
            assert table[shape]["auroc"] >= 0.95 and (shows & many).sum() >= 20
            column = energy[:, table[shape]["concept"]]
            ratios[aggregation, shape] = column[shows & many].mean() / column[shows & one].mean()
    for shape in ("circle", "square"):
        assert ratios["sum", shape] >= 1.25
        assert 0.9 <= ratios["max", shape] <= 1.1
    with pytest.raises(ConfigError, match="aggregation"):
        Lens.from_parts(heads, sae, patch_tokens_only=False, aggregation="mean")
