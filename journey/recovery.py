"""The recovery store: created when missing, and checked before a run resumes from it.

Bytewax keeps snapshots in SQLite files (``part-*.sqlite3``, table ``snaps``: the
format of the pinned Bytewax 0.21) and resumes every step from them. A shard's
snapshot carries the layout of the state it holds (``operators.shard.state_layout``);
resuming it under a journey map of another layout would index arrays of one shape as
another. So before the flow reads any input, the newest shard snapshot's layout is
compared with the run's, and a mismatch stops the run with exit 2 and what changed.
"""

import fcntl
import logging
import pickle
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bytewax.recovery import RecoveryConfig, init_db_dir

from config.errors import ConfigError
from config.model import layout_changes
from flows.journey_flow import FLOW_ID, INPUT_STEP, SCORE_STEP
from operators.shard import resumable_layout

log = logging.getLogger(__name__)

RECOVERY_PARTITIONS = 4
"""Recovery store partitions created for a new --recovery-dir (Bytewax spreads state over them)."""
PART_GLOB = "part-*.sqlite3"
"""The names Bytewax gives a store's partitions."""
STAGING_DIR = ".creating"
"""Where a new store's partitions are made before they are moved into it."""
LOCK_FILE = ".lock"
"""Held while a process creates or repairs the store."""


def ensure_store(directory: Path) -> RecoveryConfig:
    """The store at ``directory``, created when it has no partitions (or its creation was cut short).

    Processes that share the directory take turns (a lock file beside the partitions),
    so two first starts do not both create it. Its layout is checked apart
    (``check_layout``), once the shard count is known.
    """
    if directory.exists() and not directory.is_dir():
        msg = f"--recovery-dir {directory} exists and is not a directory"
        raise ConfigError(msg)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(directory):
        staging = directory / STAGING_DIR
        if staging.exists() or _without_tables(directory):  # a creation cut short by a kill
            if not _kept(directory):  # one that kept something is never wiped: reading it says what is wrong
                log.warning("recovery store %s: its creation was interrupted before anything was kept "
                            "in it; creating it again", directory)
                for part in directory.glob(PART_GLOB + "*"):  # with any -wal/-shm files
                    part.unlink()
            _removed(staging)
        if not any(directory.glob(PART_GLOB)):
            _initialise(directory)
    return RecoveryConfig(str(directory))


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the store's lock file while it is created or repaired.

    A filesystem that has no locks (some network and FUSE mounts) is said in the log and
    the store prepared without one: start the processes that share it one by one there.
    """
    with (directory / LOCK_FILE).open("a") as lock:
        locked = True
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError as err:
            log.warning("recovery store %s: cannot lock %s (%s); preparing it unlocked", directory,
                        LOCK_FILE, err.strerror)
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _initialise(directory: Path) -> None:
    """Create the partitions in a staging directory, then move each complete one in.

    Bytewax creates a partition's file before its tables; made in place, a reader (or a
    run after a kill) could meet a partition without tables. A rename is atomic, so the
    store only ever holds whole partitions, and the staging directory, removed last,
    marks a creation that a kill cut short.
    """
    staging = directory / STAGING_DIR
    staging.mkdir(mode=0o700)
    init_db_dir(staging, RECOVERY_PARTITIONS)
    for part in sorted(staging.glob(PART_GLOB)):
        part.replace(directory / part.name)
    _removed(staging)
    log.info("initialised recovery store %s with %d partitions", directory, RECOVERY_PARTITIONS)


def _removed(staging: Path) -> None:
    """Remove the staging directory (already gone is fine); one that stays means exit 2."""
    try:
        shutil.rmtree(staging)
    except FileNotFoundError:
        pass
    except OSError as err:
        msg = (f"--recovery-dir {staging.parent}: cannot remove {staging.name} ({err.strerror}), left by "
               "a creation of the store that was cut short: remove it by hand, or start with a new "
               "--recovery-dir")
        raise ConfigError(msg) from err


def _without_tables(directory: Path) -> bool:
    """Whether a partition lacks its tables (a kill inside Bytewax's creation, before staging)."""
    for part in directory.glob(PART_GLOB):
        try:
            with _read_only(part) as db:
                db.execute("SELECT count(*) FROM parts").fetchone()
        except sqlite3.Error:
            return True
    return False


def _kept(directory: Path) -> bool:
    """Whether any partition holds an execution or a snapshot (a partition without tables holds none)."""
    for part in directory.glob(PART_GLOB):
        try:
            with _read_only(part) as db:
                if db.execute("SELECT EXISTS (SELECT 1 FROM exs) OR EXISTS (SELECT 1 FROM snaps)"
                              ).fetchone()[0]:
                    return True
        except sqlite3.Error:
            continue
    return False


def check_layout(directory: Path, layout: dict[str, object]) -> None:
    """Refuse a store whose newest shard snapshot was written under another state layout."""
    saved = saved_layout(directory)
    if saved is None:
        return
    changes = layout_changes(resumable_layout(saved), layout)
    if changes:
        msg = (f"--recovery-dir {directory} holds state of another journey map layout: "
               f"{'; '.join(changes)}. Resume it with the map that wrote it, or start with a new "
               "--recovery-dir: the run then reads the input topics from the beginning and "
               "replays their history under this map")
        raise ConfigError(msg)


def saved_layout(directory: Path) -> dict[str, Any] | None:
    """The layout of the newest shard snapshot in the store (None: no shard was saved yet).

    A snapshot from before layouts were saved reads as schema 0.
    """
    rows = _rows(directory, "SELECT snap_epoch, ser_change FROM snaps WHERE step_id = ? "
                            "AND ser_change IS NOT NULL ORDER BY snap_epoch DESC LIMIT 1",
                 f"{FLOW_ID}.{SCORE_STEP}")  # the newest of each partition
    newest = max(rows, key=lambda row: row[0], default=None)
    if newest is None:
        return None
    snap = _unpickled(directory, newest[1])
    layout = snap.get("layout") if isinstance(snap, dict) else None
    return layout if isinstance(layout, dict) else {"schema": 0}


@dataclass(frozen=True)
class ResumePoint:
    """Where a run on the store resumes: Bytewax's resume epoch, and each input partition's next offset."""

    epoch: int | None  # None: recorded in partitions of the store that another process holds
    offsets: dict[tuple[str, int], int]

    def describe(self) -> str:
        """One line: the epoch and every partition's offset, topic by topic."""
        topics: dict[str, list[str]] = {}
        for (topic, partition), offset in sorted(self.offsets.items()):
            topics.setdefault(topic, []).append(f"{partition}@{offset if offset >= 0 else 'start'}")
        where = "; ".join(f"{t} {', '.join(parts)}" for t, parts in topics.items()) or "no input read yet"
        if self.epoch is None:
            return ("resuming (the epoch is recorded in another process's partitions of the store) at "
                    f"offsets (partition@next offset) kept here: {where}")
        return f"resuming from epoch {self.epoch} at offsets (partition@next offset): {where}"


def resume_point(directory: Path, part_sep: str) -> ResumePoint | None:
    """Where Bytewax will resume the store (None: nothing was committed yet, a fresh start).

    The same query Bytewax 0.21 runs (``resume_from`` in its ``recovery.rs``): the latest
    execution's lowest worker frontier is the resume epoch, and every step resumes from
    its newest snapshot before that epoch. ``part_sep`` splits the input partitions'
    state keys (``topic<sep>partition``). A process that holds only some partitions of
    the store (a pod with its own volume) sees the offsets kept in them, and may not
    see the epoch.
    """
    exs = _rows(directory, "SELECT ex_num, worker_count, resume_epoch FROM exs")
    fronts = _rows(directory, "SELECT ex_num, worker_index, worker_frontier FROM fronts")
    snaps: dict[str, list[tuple[int, bytes | None]]] = {}
    for key, epoch, blob in _rows(directory, "SELECT state_key, snap_epoch, ser_change FROM snaps "
                                             "WHERE step_id = ?", f"{FLOW_ID}.{INPUT_STEP}"):
        snaps.setdefault(key, []).append((epoch, blob))
    if not exs and not snaps:
        return None
    resume = None
    if exs:
        ex_num, workers, epoch = max(exs)
        progress = dict.fromkeys(range(workers), epoch)
        for ex, worker, frontier in fronts:
            if ex == ex_num:
                progress[worker] = max(progress.get(worker, epoch), frontier)
        resume = min(progress.values())
    offsets: dict[tuple[str, int], int] = {}
    for key, versions in snaps.items():
        before = [v for v in versions if resume is None or v[0] < resume]
        blob = max(before, key=lambda v: v[0])[1] if before else None
        if blob is not None:  # None: the partition's state was discarded
            topic, _, partition = key.rpartition(part_sep)
            offsets[topic, int(partition)] = _unpickled(directory, blob)
    return ResumePoint(resume, offsets)


def _rows(directory: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """``sql``'s rows from each partition of the store, read-only; an unreadable one means exit 2."""
    rows: list[tuple[Any, ...]] = []
    for part in sorted(directory.glob(PART_GLOB)):
        try:
            with _read_only(part) as db:
                rows += db.execute(sql, params).fetchall()
        except sqlite3.Error as err:
            msg = (f"--recovery-dir {directory}: cannot read {part.name} ({err}); it is not a recovery "
                   "store of the Bytewax version journey-stream runs on: start with a new --recovery-dir")
            raise ConfigError(msg) from err
    return rows


def _read_only(part: Path) -> closing[sqlite3.Connection]:
    """A partition of the store, opened read-only (a run may be writing it)."""
    return closing(sqlite3.connect(part.resolve().as_uri() + "?mode=ro", uri=True))


def _unpickled(directory: Path, blob: bytes) -> Any:
    """A saved snapshot's value; one that cannot be read means exit 2 and what to do."""
    try:
        return pickle.loads(blob)
    except Exception as err:
        msg = (f"--recovery-dir {directory}: cannot read its saved state ({err}); it was written by "
               "another version of journey-stream or Bytewax: start with a new --recovery-dir")
        raise ConfigError(msg) from err
