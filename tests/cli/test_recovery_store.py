"""The recovery store's creation: whole partitions only, one creator at a time, and a creation
cut short by a kill made again at the next start (no broker: the store alone)."""

import logging
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from config.errors import ConfigError
from journey.kafka_io import PART_SEP
from journey.recovery import PART_GLOB, RECOVERY_PARTITIONS, STAGING_DIR, ensure_store, resume_point

ROOT = Path(__file__).resolve().parents[2]

CREATE_STORES = """
import logging
import sys
from pathlib import Path
from journey.recovery import ensure_store
logging.basicConfig(level=logging.INFO)
for i in range(int(sys.argv[2])):
    ensure_store(Path(sys.argv[1]) / f"store-{i}")
"""


def partitions(store: Path) -> list[tuple[int, int]]:
    """Every partition's (index, count), as Bytewax recorded them."""
    rows: list[tuple[int, int]] = []
    for part in sorted(store.glob(PART_GLOB)):
        with closing(sqlite3.connect(part)) as db:
            rows += db.execute("SELECT part_index, part_count FROM parts").fetchall()
    return sorted(rows)


def whole(store: Path) -> bool:
    return partitions(store) == [(i, RECOVERY_PARTITIONS) for i in range(RECOVERY_PARTITIONS)]


def keep_something(store: Path) -> None:
    """An execution recorded in the store, as a run records one when it starts."""
    with closing(sqlite3.connect(store / "part-0.sqlite3")) as db, db:
        db.execute("INSERT INTO exs (ex_num, worker_count, resume_epoch) VALUES (0, 1, 1)")


def test_a_new_store_holds_every_partition_and_nothing_left_of_its_making(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ensure_store(store)
    assert whole(store)
    assert sorted(p.name for p in store.iterdir()) == [".lock", *(f"part-{i}.sqlite3" for i in range(4))]
    assert resume_point(store, PART_SEP) is None  # nothing kept yet: a fresh start


def test_a_reader_never_meets_a_partition_without_its_tables(tmp_path: Path) -> None:
    """Another process reads stores while they are created (as a test or an operator reading
    where a run resumes does): each read either sees nothing yet or whole partitions."""
    count = 40
    maker = subprocess.Popen([sys.executable, "-c", CREATE_STORES, str(tmp_path), str(count)], cwd=ROOT,
                             stderr=subprocess.PIPE, text=True)
    reads = 0
    try:
        while maker.poll() is None:
            for store in tmp_path.glob("store-*"):
                assert resume_point(store, PART_SEP) is None
                reads += 1
    finally:
        _, err = maker.communicate(timeout=60)
    assert maker.returncode == 0, err[-2000:]
    assert reads > count
    assert all(whole(tmp_path / f"store-{i}") for i in range(count))


def test_processes_that_start_together_on_a_new_shared_store_create_it_once(tmp_path: Path) -> None:
    makers = [subprocess.Popen([sys.executable, "-c", CREATE_STORES, str(tmp_path), "1"], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True) for _ in range(4)]
    logs = [m.communicate(timeout=60)[1] for m in makers]
    assert [m.returncode for m in makers] == [0] * 4, logs
    assert whole(tmp_path / "store-0")
    assert sum("initialised recovery store" in log for log in logs) == 1  # the others found it made


@pytest.mark.parametrize("cut", ["between two moves", "after the last move", "inside an older creation"])
def test_a_creation_cut_short_is_made_again_at_the_next_start(
        tmp_path: Path, cut: str, caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "store"
    ensure_store(store)
    if cut == "inside an older creation":  # made in place: a partition without its tables
        (store / "part-3.sqlite3").write_bytes(b"")
    else:
        (store / STAGING_DIR).mkdir()
        if cut == "between two moves":
            (store / "part-3.sqlite3").replace(store / STAGING_DIR / "part-3.sqlite3")
    with caplog.at_level(logging.INFO, logger="journey.recovery"):
        ensure_store(store)
    assert "its creation was interrupted before anything was kept in it; creating it again" in caplog.text
    assert whole(store)
    assert not (store / STAGING_DIR).exists()


def test_a_store_that_kept_something_is_never_made_again(tmp_path: Path) -> None:
    """A partition lost from a store in use is Bytewax's to refuse: the store is not wiped."""
    store = tmp_path / "store"
    ensure_store(store)
    keep_something(store)
    (store / "part-3.sqlite3").unlink()
    (store / STAGING_DIR).mkdir()
    ensure_store(store)
    assert partitions(store) == [(i, RECOVERY_PARTITIONS) for i in range(3)]
    assert resume_point(store, PART_SEP) is not None
    assert not (store / STAGING_DIR).exists()


def test_a_file_where_the_store_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        ensure_store(tmp_path / "store")
