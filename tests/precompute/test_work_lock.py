"""One run per work folder: a second run stops at once naming the first; writers never share a temp file."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pytest

from backend.atlas import Atlas
from precompute.pipeline import LOCK_FILE, WorkFolderBusy, run_pipeline, work_folder_lock
from precompute.stages.shards import ShardStore
from tests.conftest import BASIC_STAGES, silent_progress, world_config

WORLD_TOML = """
[run]
name = "locked"
n_items = {n}

[source]
kind = "world"
seed = 3
size = 32

[[generators]]
name = "planted-a"
kind = "planted"
seed = 1
"""


def precompute_process(config, out) -> subprocess.Popen:
    """``blindspot precompute`` as a user runs it."""
    return subprocess.Popen([sys.executable, "-c", "from app.cli import main; main()", "precompute", str(config),
                             "--out", str(out), "--stages", ",".join(BASIC_STAGES)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def gated_precompute_process(config, out, gate) -> subprocess.Popen:
    """The same run, which waits at its first progress step until ``gate`` exists (so it holds the work folder
    for as long as the test needs, however busy the machine)."""
    script = f"""
import time
from contextlib import contextmanager
from pathlib import Path
from precompute.config import load_config
from precompute.pipeline import run_pipeline

@contextmanager
def gated(total, description, unit):
    def advance(n=1):
        while not Path({str(gate)!r}).exists():
            time.sleep(0.05)
    yield advance

run_pipeline(load_config({str(config)!r}), Path({str(out)!r}), stages={list(BASIC_STAGES)!r}, progress=gated)
"""
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_precompute_runs_on_one_work_folder_one_refuses_naming_the_other(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(WORLD_TOML.format(n=60))
    out, gate = tmp_path / "atlas", tmp_path / "go"
    lock = tmp_path / "atlas.work" / LOCK_FILE
    first = gated_precompute_process(config, out, gate)
    deadline = time.monotonic() + 120
    while not (lock.is_file() and f'"pid": {first.pid}' in lock.read_text()):  # the first run holds the folder
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = precompute_process(config, out)
    second_out, second_err = second.communicate(timeout=300)
    gate.touch()  # the first goes on
    first_out, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second_err  # stopped cleanly, with the message, not a crash
    assert "Traceback" not in first_err + second_err
    message = second_err.strip().splitlines()
    assert len(message) == 1 and f"in use by another run (pid {first.pid} on {socket.gethostname()}" in message[0]
    assert "started 20" in message[0] and "--work" in message[0]
    atlas = Atlas(out)  # whole: it opens, verified
    try:
        assert atlas.count_items() == 60
    finally:
        atlas.close()
    assert not [p for p in (tmp_path / "atlas.work").rglob("*.part")]


def test_the_lock_is_free_again_after_a_run_and_after_its_holder_dies(tmp_path):
    work = tmp_path / "work"
    with work_folder_lock(work):
        with pytest.raises(WorkFolderBusy, match=f"pid {os.getpid()} on {socket.gethostname()}"):
            run_pipeline(world_config(n_items=4), tmp_path / "atlas", work=work, stages=BASIC_STAGES,
                         progress=silent_progress)
    run_pipeline(world_config(n_items=4), tmp_path / "atlas", work=work, stages=BASIC_STAGES,
                 progress=silent_progress)
    # a holder killed with SIGKILL: the system drops its lock, no stale lock is left behind
    script = ("import time; from pathlib import Path; from precompute.pipeline import work_folder_lock\n"
              f"with work_folder_lock(Path({str(work)!r})):\n    print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkFolderBusy, match=f"pid {holder.pid}"):
            with work_folder_lock(work):
                pass
    finally:
        holder.kill()
        holder.wait()
    with work_folder_lock(work):
        pass


def test_writers_of_one_shard_at_once_never_take_each_others_temp_file(tmp_path):
    store = ShardStore(tmp_path / "stage", "digest")
    table = pa.table({"item_id": [f"i{i}" for i in range(2000)], "value": list(range(2000))})
    failures = []

    def write(writer: int):
        for attempt in range(40):
            try:
                store.write(0, {"items": table}, {"writer": writer, "attempt": attempt})
            except Exception as exc:  # noqa: BLE001 - any failed write is what this test looks for
                failures.append(repr(exc))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert store.read_shard(0, "items", table.schema).equals(table)
    assert not list((tmp_path / "stage").rglob("*.part"))


def test_writers_of_one_capture_file_at_once_never_take_each_others_temp_file(tmp_path):
    import torch

    from precompute.stages.generate import _write_capture

    store = ShardStore(tmp_path / "generate", "digest")
    tensors = {"positions": torch.ones(4000, 64, dtype=torch.float16), "pooled": torch.ones(8, 64),
               "image_index": torch.zeros(4000, dtype=torch.int64)}
    drained = {("unet.mid_block", 3): tensors}
    failures = []

    def write():
        for _ in range(40):
            try:
                _write_capture(store, 0, drained)
            except Exception as exc:  # noqa: BLE001 - any failed write is what this test looks for
                failures.append(repr(exc))

    threads = [threading.Thread(target=write) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    assert not list((tmp_path / "generate").rglob("*.part"))
