"""Writing a world sample to disk in the local-folder source format."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from precompute.errors import ConfigError
from precompute.world import World, write_samples


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_write_samples_in_folder_format(tmp_path):
    advanced = []
    written = write_samples(tmp_path, 20, seed=1, size=32, workers=1, progress=advanced.append)
    assert written == 20 and sum(advanced) == 20
    captions, annotations = _read(tmp_path / "captions.jsonl"), _read(tmp_path / "annotations.jsonl")
    world = World(seed=1, size=32)
    for index, (cap, ann) in enumerate(zip(captions, annotations, strict=True)):
        sample = world.sample(index)
        assert cap == {"file": f"images/{sample.item_id}.png", "caption": sample.caption}
        assert ann == {"file": cap["file"], "concepts": list(sample.annotations)}
        with Image.open(tmp_path / cap["file"]) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
            assert image.tobytes() == sample.image.tobytes()
    assert not list(tmp_path.glob(".*tmp")) and not list((tmp_path / "images").glob(".*"))


def test_two_workers_write_the_same_files_as_one(tmp_path):
    n = 150  # three chunks
    write_samples(tmp_path / "one", n, seed=2, size=16, workers=1)
    write_samples(tmp_path / "two", n, seed=2, size=16, workers=2)
    assert (tmp_path / "one/captions.jsonl").read_text() == (tmp_path / "two/captions.jsonl").read_text()
    assert (tmp_path / "one/annotations.jsonl").read_text() == (tmp_path / "two/annotations.jsonl").read_text()
    last = f"images/w2-{n - 1:06d}.png"
    assert (tmp_path / "one" / last).read_bytes() == (tmp_path / "two" / last).read_bytes()


@pytest.mark.parametrize("kwargs", [{"n": -1}, {"n": 5, "workers": 0}, {"n": 5, "size": 2}])
def test_bad_arguments_are_config_errors(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        write_samples(tmp_path, **kwargs)
