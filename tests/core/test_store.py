"""The SQLite store: schema versions, damaged files, locks and uniqueness."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import threading

import pytest

from mas_jupyter.core.errors import ConflictError
from mas_jupyter.core.models import Session
from mas_jupyter.core.store import SCHEMA_VERSION, Store, StoreError


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_new_database_gets_the_current_schema_in_wal_mode(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    assert store._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    assert store._query("PRAGMA journal_mode")[0][0] == "wal"
    assert store.integrity_ok()
    store.close()


def test_migration_from_an_empty_version_zero_file(tmp_path):
    path = tmp_path / "s.sqlite"
    sqlite3.connect(path).close()  # a file at version 0
    store = Store(str(path))
    assert store._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    store.close()
    Store(str(path)).close()  # reopening at the current version migrates nothing


def test_newer_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE future (x)")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before = digest(path)
    with pytest.raises(StoreError, match="newer than this mas_jupyter understands"):
        Store(str(path))
    assert digest(path) == before


def test_damaged_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    before = digest(path)
    with pytest.raises(StoreError, match="damaged.*left untouched"):
        Store(str(path))
    assert digest(path) == before


def test_database_locked_by_another_process_gives_a_clear_error(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(str(path)).close()
    # Another process holds an exclusive lock while we open the store.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3,sys;db=sqlite3.connect(sys.argv[1],isolation_level=None);"
            "db.execute('PRAGMA locking_mode=EXCLUSIVE');db.execute('BEGIN EXCLUSIVE');"
            "print('locked',flush=True);sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        import mas_jupyter.core.store as store_module

        with pytest.raises(StoreError, match="locked by another process"):
            store_module.Store(str(path), timeout=0.2)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        holder.stdout.close()


def test_unique_names_are_enforced_by_the_database_across_threads(tmp_path):
    store = Store(str(tmp_path / "s.sqlite"))
    outcomes: list[str] = []

    def insert(i: int) -> None:
        session = Session(id=f"id-{i}", name="same", kind="quick", workspace=f"/w/{i}")
        try:
            store.insert_session(session, generate_name=False)
            outcomes.append("won")
        except ConflictError:
            outcomes.append("lost")

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(outcomes) == ["lost"] * 15 + ["won"]
    assert store.count_sessions() == 1
    store.close()


def test_a_version_one_database_migrates_forward_keeping_its_rows(tmp_path):
    from mas_jupyter.core.store import MIGRATIONS, _statements

    path = tmp_path / "s.sqlite"
    db = sqlite3.connect(path)
    for statement in _statements(MIGRATIONS[0]):
        db.execute(statement)
    db.execute(
        "INSERT INTO sessions (id, name, kind, status, workspace, created_at, updated_at, "
        "row_state) VALUES ('i', 'old', 'quick', 'active', '/w', 0, 0, 'ready')"
    )
    db.execute(
        "INSERT INTO workers (id, session_id, name, kind, backend, argv, runtime, status, cols, "
        "rows, created_at, updated_at) VALUES ('w', 'i', 'bot', 'agent', 'demo', '[\"x\"]', "
        "'pty', 'exited', 80, 24, 0, 0)"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    store = Store(str(path))
    assert store._query("PRAGMA user_version")[0][0] == SCHEMA_VERSION
    assert store.get_session("old").id == "i"
    worker = store.get_worker("i", "bot")
    assert worker.argv == ["x"] and worker.env == {}
    store.close()
