"""The atlas path always names a whole atlas: a writer killed at any step of its publication, readers during a
rebuild, and a file system that cannot exchange two folders."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import duckdb
import pytest

from backend.atlas import Atlas
from precompute.atlas import writer
from precompute.atlas.writer import ATLAS_DB, AtlasBuilder
from precompute.errors import AtlasError


def build(target, run_name):
    with AtlasBuilder(target) as atlas:
        atlas.set_info("run_name", run_name)
        atlas.db.execute("INSERT INTO items VALUES ('a', 0, 'a red circle')")
        atlas.commit()


def run_name(target) -> str:
    """The run name of the atlas at ``target``, opened and verified as the server opens it."""
    atlas = Atlas(target)
    try:
        return atlas.info()["run_name"]
    finally:
        atlas.close()


def killed_build(target, step: str, exchange: bool = True) -> subprocess.CompletedProcess:
    """Rebuild ``target`` in a child process that SIGKILLs itself when its commit reaches ``step``."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from precompute.atlas import writer

        if not {exchange}:
            writer.exchange = lambda a, b: False  # a file system that cannot exchange two folders

        class Killed(writer.AtlasBuilder):
            def _reached(self, step):
                if step == {step!r}:
                    os.kill(os.getpid(), signal.SIGKILL)

        with Killed(Path({str(target)!r})) as atlas:
            atlas.set_info("run_name", "second")
            atlas.db.execute("INSERT INTO items VALUES ('b', 0, 'a blue star')")
            atlas.commit()
        """)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("step, expected", [("closed", "first"), ("swapped", "second")])
def test_a_writer_killed_between_the_steps_leaves_a_whole_atlas_at_the_path(tmp_path, step, expected):
    target = tmp_path / "atlas"
    build(target, "first")
    result = killed_build(target, step)
    assert result.returncode == -9, result.stderr  # it died at that step, by SIGKILL
    assert run_name(target) == expected  # the old atlas before the swap, the new one after: never none
    build(target, "third")  # the next build removes what the killed one left
    assert run_name(target) == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]


def test_a_first_build_killed_before_publishing_leaves_nothing_at_the_path(tmp_path):
    target = tmp_path / "atlas"
    result = killed_build(target, "closed")
    assert result.returncode == -9
    assert not target.exists()
    with pytest.raises(AtlasError, match="not an atlas"):
        Atlas(target)
    build(target, "first")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]


def test_without_exchange_a_writer_killed_between_its_two_renames_is_put_right(tmp_path):
    # the fallback's window: the old atlas is moved aside, the new one not yet renamed in
    target = tmp_path / "atlas"
    build(target, "first")
    assert killed_build(target, "moved-aside", exchange=False).returncode == -9
    assert not target.exists()
    with pytest.raises(AtlasError, match="previous atlas at .*previous"):  # the reader says where it is
        Atlas(target)
    build(target, "second")  # the next build puts it back first, then replaces it
    assert run_name(target) == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas"]


def test_readers_opening_the_atlas_during_rebuilds_always_find_a_whole_one(tmp_path):
    target = tmp_path / "atlas"
    build(target, "build-0")
    seen, failures, stop = set(), [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                with duckdb.connect(str(target / ATLAS_DB), read_only=True) as db:
                    seen.add(db.execute("SELECT value FROM atlas_info WHERE key = 'run_name'").fetchone()[0])
            except Exception as exc:  # noqa: BLE001 - any failure to read is what this test looks for
                failures.append(repr(exc))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for i in range(1, 13):
            build(target, f"build-{i}")
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert not failures, failures[:3]
    assert len(seen) > 1  # the readers did see the atlas change under them


def test_the_exchange_swaps_two_folders(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "from-a").touch()
    (tmp_path / "b").mkdir()
    if not writer.exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("this file system cannot exchange two folders (the writer falls back to two renames)")
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["from-a"]
    assert list((tmp_path / "a").iterdir()) == []
