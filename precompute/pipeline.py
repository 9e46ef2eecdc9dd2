"""The pipeline: run a config's stages in order, each resumable, and say which do not exist yet.

Stages (DESIGN.md section 4): sample, generate, encode, train, analyze, internal, build. A stage
that is not built yet is reported as such, never faked; ``build`` publishes whatever
the finished stages produced as an atlas.

One run at a time owns a work folder: ``run_pipeline`` holds a lock on ``WORK/.lock``
(``flock``, released by the system when the process ends, however it ends), and a
second run on the same folder stops at once with a message naming the first (pid,
host, start time, command) instead of redoing its work beside it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from precompute.atlas.schema import SCHEMA_VERSION
from precompute.atlas.stages import STAGE_NAMES, STAGES
from precompute.atlas.writer import ATLAS_DB, open_read_only
from precompute.config import RunConfig
from precompute.errors import BlindspotError, ConfigError
from precompute.progress import progress_bar, quiet_library_bars
from precompute.stages.common import SHARD_SIZE, ProgressFactory, StageContext

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


class WorkFolderBusy(BlindspotError):
    """Another run holds the work folder's lock."""


@contextmanager
def work_folder_lock(work: Path) -> Iterator[None]:
    """Hold ``WORK/.lock`` for the block; ``WorkFolderBusy`` naming the holder when another process has it.

    The lock is ``flock`` on the file (POSIX; on a system without ``fcntl`` runs are not locked): the system
    drops it when its process ends, so a killed run never leaves a stale lock. The file keeps the holder's
    pid, host, start time and command for the message."""
    try:
        import fcntl
    except ImportError:  # Windows
        log.warning("no file locks on this system: nothing stops two runs from sharing %s", work)
        yield
        return
    work.mkdir(parents=True, exist_ok=True)
    with open(work / LOCK_FILE, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkFolderBusy(f"the work folder {work} is in use by another run ({_holder(handle)}); "
                                 "wait for it to end, or give this run another work folder (--work)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(handle) -> str:
    """Who holds the lock, from what it wrote in the file (it writes just after it takes the lock: wait a little)."""
    for _ in range(20):
        handle.seek(0)
        try:
            holder = json.loads(handle.read())
            return (f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: "
                    f"{holder['command']}")
        except (json.JSONDecodeError, KeyError, TypeError):
            time.sleep(0.05)
    return "a process that has not said who it is yet"




@dataclass
class PipelineReport:
    """What a pipeline run did: stage manifests, and notes on what it could not do."""

    ran: list[str] = field(default_factory=list)
    manifests: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def default_work_dir(out: Path) -> Path:
    """Where stage outputs live while a run builds ``out``: a sibling ``<out>.work`` folder."""
    out = Path(out).resolve()
    return out.parent / f"{out.name}.work"


def atlas_is_current(out: Path, config: RunConfig) -> bool:
    """True when ``out`` holds an atlas built from exactly this config."""
    path = Path(out) / ATLAS_DB
    if not path.is_file():
        return False
    import duckdb

    try:
        with open_read_only(out) as db:
            facts = dict(db.execute("SELECT key, value FROM atlas_info "
                                    "WHERE key IN ('config_digest', 'schema_version')").fetchall())
    except duckdb.Error:
        return False
    # an atlas written by an older version of the software is rebuilt, even from the same config
    return facts.get("config_digest") == config.digest() and facts.get("schema_version") == str(SCHEMA_VERSION)


def parse_stages(names: str | Sequence[str] | None) -> list[str]:
    """Validate a ``--stages`` selection (comma-separated or a list)."""
    if names is None:
        return list(STAGE_NAMES)
    chosen = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in chosen if n not in STAGE_NAMES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)}; expected some of: {', '.join(STAGE_NAMES)}")
    return [n for n in STAGE_NAMES if n in chosen]


def run_pipeline(
    config: RunConfig,
    out: Path,
    *,
    work: Path | None = None,
    stages: Sequence[str] | None = None,
    progress: ProgressFactory = progress_bar,
    say: Callable[[str], None] = log.info,
    shard_size: int = SHARD_SIZE,
) -> PipelineReport:
    """Run the chosen stages (default: all) of ``config`` and publish the atlas at ``out``; ``WorkFolderBusy``
    when another run holds the work folder."""
    chosen = parse_stages(stages)
    quiet_library_bars()
    ctx = StageContext(config=config, work=Path(work) if work else default_work_dir(out), progress=progress,
                       shard_size=shard_size)
    with work_folder_lock(ctx.work):
        return _run_stages(ctx, chosen, Path(out), say)


def _run_stages(ctx: StageContext, chosen: list[str], out: Path, say: Callable[[str], None]) -> PipelineReport:
    from precompute.stages.analyze import run_analyze
    from precompute.stages.build import run_build
    from precompute.stages.encode import run_encode
    from precompute.stages.generate import run_generate
    from precompute.stages.sample import run_sample
    from precompute.stages.train import run_train

    config = ctx.config
    (ctx.work / "config.json").write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True))
    # Unknown or unreachable models fail here, before any work.
    if "generate" in chosen:
        from precompute.stages.generate import preflight

        preflight(ctx)
    if {"train", "encode", "analyze"} & set(chosen):
        ctx.energy_model()
    report = PipelineReport()
    lens = None  # the output lens (energy model + SAE), loaded once for encode and analyze
    for stage in STAGES:
        if stage.name not in chosen or (stage.name == "internal" and not config.internal):
            continue  # a config without [[internal]] tables asks for no internal lens
        if not stage.available:
            report.notes.append(f"stage {stage.name} ({stage.description}): not available yet, {stage.note}")
            say(report.notes[-1])
            continue
        say(f"stage {stage.name}: {stage.description}")
        if stage.name == "sample":
            report.manifests.append(run_sample(ctx))
        elif stage.name == "generate":
            manifests, notes = run_generate(ctx)
            report.manifests.extend(manifests)
            for note in notes:
                say(note)
            report.notes.extend(notes)
        elif stage.name == "train":
            trained = run_train(ctx)
            if trained is None:
                say("using the SAE the config names")
            else:
                report.manifests.append(trained)
        elif stage.name in ("encode", "analyze"):
            from precompute.stages.encode import open_lens

            lens = lens or open_lens(ctx)
            if stage.name == "encode":
                report.manifests.extend(run_encode(ctx, lens))
            else:
                report.manifests.append(run_analyze(ctx, lens))
        elif stage.name == "internal":
            from precompute.stages.internal import run_internal

            report.manifests.extend(run_internal(ctx))
        elif stage.name == "build":
            report.manifests.append(run_build(ctx, out))
        report.ran.append(stage.name)
    return report
