"""Run configs: the paper's defaults, and errors that name the key before any work."""

from pathlib import Path

import pytest

from precompute.config import load_config, parse_config
from precompute.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_paper_defaults_fill_unset_generation_settings():
    config = parse_config({
        "source": {"kind": "world"},
        "generators": [
            {"kind": "diffusers", "name": "sd15", "model": "benjamin-paine/stable-diffusion-v1-5"},
            {"kind": "diffusers", "name": "sd21", "model": "stabilityai/stable-diffusion-2-1"},
            {"kind": "diffusers", "name": "kandinsky", "model": "kandinsky-community/kandinsky-2-1"},
            {"kind": "diffusers", "name": "pixart", "model": "PixArt-alpha/PixArt-XL-2-1024-MS"},
            {"kind": "diffusers", "name": "mine", "model": "/", "steps": 20},
        ],
    })
    settings = {g.name: (g.steps, g.guidance, g.width, g.height) for g in config.generators}
    assert settings["sd15"] == (50, 7.5, 512, 512)
    assert settings["sd21"] == (50, 7.5, 512, 512)
    assert settings["kandinsky"] == (100, 4.0, 512, 512)
    assert settings["pixart"] == (50, 7.5, 512, 512)
    assert settings["mine"][0] == 20  # an explicit value wins over the default
    assert config.run.n_items == 10_000
    assert (config.analysis.temperature, config.analysis.suppressed_below, config.analysis.exaggerated_above) == (
        0.8, 0.1, 0.9)


def test_every_problem_is_named_with_its_key(tmp_path):
    path = write(tmp_path, """
[run]
n_itmes = 5
[source]
kind = "world"
size = "big"
[[generators]]
name = "g"
kind = "diffusers"
model = "m"
steps = "fifty"
dtype = "fp8"
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "run.n_itmes: unknown key" in message
    assert "source.size:" in message and "'big'" in message
    assert "generators[0].steps:" in message and "'fifty'" in message
    assert "generators[0].dtype:" in message and "fp8" in message


def test_missing_files_are_reported_before_work(tmp_path):
    path = write(tmp_path, '[source]\nkind = "urls"\npath = "no-such-list.csv"\n')
    with pytest.raises(ConfigError, match=r"source\.path: file not found: .*no-such-list\.csv"):
        load_config(path)


def test_a_missing_folder_is_called_a_folder_and_the_config_is_named(tmp_path):
    path = write(tmp_path, '[source]\nkind = "folder"\npath = "no-such-folder"\n')
    with pytest.raises(ConfigError) as missing:
        load_config(path)
    message = str(missing.value)
    assert message.startswith(f"invalid config {path}:")
    assert f"source.path: folder not found: {tmp_path / 'no-such-folder'}" in message
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"source\.path: expected a folder, found a file: .*a-file"):
        load_config(write(tmp_path, '[source]\nkind = "folder"\npath = "a-file"\n'))


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "data").mkdir()
    config = load_config(write(tmp_path, '[source]\nkind = "folder"\npath = "data"\n'))
    assert config.source.path == tmp_path / "data"


@pytest.mark.parametrize("text, needle", [
    ('[source]\nkind = "world"\n[[generators]]\nname = "real"\nkind = "planted"\n', "'real' is reserved"),
    ('[source]\nkind = "world"\n[[generators]]\nname = "a"\nkind = "planted"\n[[generators]]\nname = "a"\n'
     'kind = "planted"\n', "repeated: a"),
    ('[source]\nkind = "paint"\n', "source"),
    ('[analysis]\nsuppressed_below = 0.9\nexaggerated_above = 0.1\n[source]\nkind = "world"\n', "must be below"),
    ('not toml at all = = =', "not valid TOML"),
    ('[source]\nkind = "world"\n[[generators]]\nname = "g"\nkind = "planted"\n[[generators.effects]]\n'
     'effect = "suppress"\nconcept = "strar"\nrate = 0.5\n', r"generators\[0\]\.effects\[0\].*strar.*star"),
    ('[source]\nkind = "world"\n[[generators]]\nname = "g"\nkind = "planted"\n[[generators.effects]]\n'
     'effect = "suppress"\nconcept = "star"\nrate = 0.5\nreplace_with = "red"\n', "same family"),
])
def test_invalid_configs_fail_with_a_reason(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path, text))


def test_digest_changes_with_content_only():
    a = parse_config({"source": {"kind": "world"}, "run": {"n_items": 10}})
    b = parse_config({"run": {"n_items": 10}, "source": {"kind": "world"}})
    c = parse_config({"source": {"kind": "world"}, "run": {"n_items": 11}})
    assert a.digest() == b.digest() != c.digest()


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.toml")))
def test_shipped_configs_are_valid(tmp_path, name):
    """Every example config validates once its data files exist (they are the user's to provide)."""
    import shutil
    import tomllib

    data = tomllib.loads((CONFIGS / name).read_text())
    for key in ("path",):
        if key in data["source"]:
            target = tmp_path / data["source"][key]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch() if target.suffix else target.mkdir()
    shutil.copy(CONFIGS / name, tmp_path / name)
    config = load_config(tmp_path / name)
    assert config.run.name
