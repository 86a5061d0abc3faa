"""Autosave: every session in SQLite (WAL, synchronous=FULL), one JSON blob per version.

`sessions` holds the current version of each session with a few columns for the list of earlier
sessions; `history` keeps the last HISTORY versions of each, which is what Undo walks back through.
A write returns only after its transaction has committed, so an acknowledged correction survives
a crash, a page reload or a server restart.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from .paths import check_session_id
from .session import Session

HISTORY = 200            # versions kept per session for undo
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    origin TEXT NOT NULL,
    dialogue_id INTEGER NOT NULL,
    n_rows INTEGER NOT NULL,
    n_corrected INTEGER NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    session_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    saved REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (session_id, version)
);
"""


class StoreError(RuntimeError):
    """A session could not be found or saved; the message is one line."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # ------------------------------------------------------------ writing

    def _write(self, db: sqlite3.Connection, session: Session, version: int) -> Session:
        now = time.time()
        session.version, session.updated = version, now
        session.created = session.created or now
        blob = json.dumps(session.to_dict(), ensure_ascii=False, allow_nan=False)
        db.execute(
            "INSERT INTO sessions (id, title, origin, dialogue_id, n_rows, n_corrected, created, updated,"
            " version, data) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET title=excluded.title,"
            " origin=excluded.origin, dialogue_id=excluded.dialogue_id, n_rows=excluded.n_rows,"
            " n_corrected=excluded.n_corrected, updated=excluded.updated, version=excluded.version,"
            " data=excluded.data",
            (session.id, session.title, session.origin, session.dialogue_id, len(session.rows),
             session.corrected_count, session.created, now, version, blob))
        db.execute("INSERT OR REPLACE INTO history (session_id, version, saved, data) VALUES (?,?,?,?)",
                   (session.id, version, now, blob))
        db.execute("DELETE FROM history WHERE session_id = ? AND version <= ?", (session.id, version - HISTORY))
        return session

    def create(self, session: Session) -> Session:
        check_session_id(session.id)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (session.id,)).fetchone():
                raise StoreError(f"session {session.id} exists already")
            return self._write(db, session, 1)

    def update(self, session_id: str, change: Callable[[Session], tuple[Session, T]]) -> tuple[Session, T]:
        """Load, apply `change` (which returns the new session and a result), save if it changed.
        Runs under one lock and one transaction: two tabs editing one session never lose an edit."""
        with self._transaction() as db:
            current = self._load(db, session_id)
            new, result = change(current)
            if new.to_dict() == current.to_dict():
                return current, result
            return self._write(db, new, current.version + 1), result

    def undo(self, session_id: str) -> Session:
        """Go back to the version before the current one (the current one is discarded)."""
        with self._transaction() as db:
            current = self._load(db, session_id)
            prev = db.execute("SELECT version, data FROM history WHERE session_id = ? AND version < ?"
                              " ORDER BY version DESC LIMIT 1", (session_id, current.version)).fetchone()
            if prev is None:
                raise StoreError("nothing to undo")
            db.execute("DELETE FROM history WHERE session_id = ? AND version >= ?", (session_id, current.version))
            session = Session.from_dict(json.loads(prev[1]))
            return self._write(db, session, prev[0])

    # ------------------------------------------------------------ reading

    def _load(self, db: sqlite3.Connection, session_id: str) -> Session:
        check_session_id(session_id)
        row = db.execute("SELECT data FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise StoreError(f"no session {session_id} in this workbench")
        return Session.from_dict(json.loads(row[0]))

    def load(self, session_id: str) -> Session:
        with self._connect() as db:
            return self._load(db, session_id)

    def can_undo(self, session_id: str, version: int) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM history WHERE session_id = ? AND version < ?",
                              (session_id, version)).fetchone() is not None

    def list(self, limit: int = 500) -> list[dict]:
        """Newest first: id, title, origin, dialogue_id, n_rows, n_corrected, created, updated."""
        with self._connect() as db:
            cur = db.execute("SELECT id, title, origin, dialogue_id, n_rows, n_corrected, created, updated,"
                             " version FROM sessions ORDER BY updated DESC LIMIT ?", (limit,))
            names = [c[0] for c in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def next_dialogue_id(self) -> int:
        with self._connect() as db:
            (top,) = db.execute("SELECT MAX(dialogue_id) FROM sessions").fetchone()
        return 0 if top is None else int(top) + 1
