"""The [[internal]] tables of a run config: defaults, and errors that name the key."""

from __future__ import annotations

import pytest

from precompute.config import load_config, parse_config
from precompute.errors import ConfigError


def _config(internal: list[dict], capture=("unet.mid_block",), **generator) -> dict:
    return {
        "source": {"kind": "world"},
        "generators": [{"name": "wm", "kind": "world-model", "steps": 10, "capture": list(capture), **generator},
                       {"name": "planted", "kind": "planted"}],
        "internal": internal,
    }


def test_defaults_follow_the_generator_and_raigen():
    config = parse_config(_config([{"generator": "wm"}], capture=("unet.mid_block", "unet.up_blocks.0")))
    table = config.internal[0]
    assert table.point == "unet.mid_block" and table.step == -1  # the first capture point, the last step
    assert (table.expansion, table.k, table.lr, table.epochs, table.batch_size) == (16, 32, 3e-4, 1.0, 4096)
    assert table.aux_coefficient == pytest.approx(1 / 32) and sum(table.group_fractions) == pytest.approx(1.0)
    assert table.group_fractions[0] < table.group_fractions[1]  # a small first group and a large second
    assert parse_config(_config([])).internal == ()


@pytest.mark.parametrize(("internal", "generator", "message"), [
    ([{"generator": "nope"}], {}, r"internal\[0\]\.generator: 'nope' is not a generator .*wm, planted"),
    ([{"generator": "planted"}], {}, r"internal\[0\]\.generator: 'planted' captures no activations"),
    ([{"generator": "wm", "point": "unet.down_blocks.1"}], {}, r"internal\[0\]\.point: 'unet.down_blocks.1' is not "
                                                               r"captured"),
    ([{"generator": "wm", "step": 3}], {}, r"internal\[0\]\.step: step 3 is not captured .*\[-1\] of 10 steps"),
    ([{"generator": "wm", "step": 9}], {"capture_steps": [-1]}, None),  # -1 of 10 steps is step 9
    ([{"generator": "wm"}, {"generator": "wm"}], {}, r"internal: one table per generator; repeated: wm"),
    ([{"generator": "wm", "group_fractions": [0.5, 0.6]}], {}, r"internal\[0\]\.group_fractions: .*summing to 1"),
    ([{"generator": "wm", "expanson": 8}], {}, r"internal\[0\]\.expanson: unknown key"),
    ([{"generator": "wm", "probe": {"holdout": 1.5}}], {}, r"internal\[0\]\.probe\.holdout"),
])
def test_bad_internal_tables_name_the_key(internal, generator, message):
    if message is None:
        assert parse_config(_config(internal, **generator)).internal[0].step == 9
        return
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(internal, **generator))


def test_the_demo_config_asks_for_the_world_models_internal_lens():
    from importlib.resources import files

    config = load_config(files("precompute") / "configs" / "demo.toml")
    (table,) = config.internal
    assert table.generator == "world-model" and table.point == "unet.mid_block" and table.semantic_model == "world"
