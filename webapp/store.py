"""Autosave: every session in SQLite (WAL, synchronous=FULL), one JSON blob per version.

`sessions` holds the current version of each session with a few columns for the list of earlier
sessions; `history` keeps the last HISTORY versions of each, which is what Undo walks back through.
A write returns only after its transaction has committed, so an acknowledged correction survives
a crash, a page reload or a server restart.

Every session has an owner (a login, or a browser's or API client's token: webapp/owners.py).
Each read and write names the owner asking; a session of someone else is answered exactly like one
that does not exist. `owner=None` (the --admin login) reaches every session. Deleting only marks a
session (it can be restored from the page); marked sessions are purged after PURGE_AFTER seconds.
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
from core.types import UserError

HISTORY = 200            # versions kept per session for undo
PURGE_AFTER = 7 * 86400  # seconds a deleted session can still be restored
ANY = None               # the owner that reaches every session (an admin)
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
    data TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    deleted REAL
);
CREATE TABLE IF NOT EXISTS history (
    session_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    saved REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (session_id, version)
);
"""


class StoreError(UserError, RuntimeError):
    """A session could not be found or saved; the message is one line."""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        with self._connect() as db:
            db.executescript(SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(sessions)")}
            for name, kind in (("owner", "TEXT NOT NULL DEFAULT ''"), ("deleted", "REAL")):
                if name not in columns:          # a store written before sessions had owners
                    db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")
            db.execute("CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, updated)")
            db.execute("DELETE FROM history WHERE session_id IN (SELECT id FROM sessions WHERE deleted < ?)",
                       (time.time() - PURGE_AFTER,))
            db.execute("DELETE FROM sessions WHERE deleted < ?", (time.time() - PURGE_AFTER,))

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

    def create(self, session: Session, owner: str = "") -> Session:
        check_session_id(session.id)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (session.id,)).fetchone():
                raise StoreError(f"session {session.id} exists already")
            db.execute("INSERT INTO sessions (id, title, origin, dialogue_id, n_rows, n_corrected, created,"
                       " updated, version, data, owner) VALUES (?, '', '', 0, 0, 0, 0, 0, 0, '{}', ?)",
                       (session.id, owner or ""))
            return self._write(db, session, 1)

    def update(self, session_id: str, change: Callable[[Session], tuple[Session, T]],
               owner: str | None = ANY) -> tuple[Session, T]:
        """Load, apply `change` (which returns the new session and a result), save if it changed.
        Runs under one lock and one transaction: two tabs editing one session never lose an edit."""
        with self._transaction() as db:
            current = self._load(db, session_id, owner)
            new, result = change(current)
            if new.to_dict() == current.to_dict():
                return current, result
            return self._write(db, new, current.version + 1), result

    def undo(self, session_id: str, owner: str | None = ANY) -> Session:
        """Go back to the version before the current one (the current one is discarded)."""
        with self._transaction() as db:
            current = self._load(db, session_id, owner)
            prev = db.execute("SELECT version, data FROM history WHERE session_id = ? AND version < ?"
                              " ORDER BY version DESC LIMIT 1", (session_id, current.version)).fetchone()
            if prev is None:
                raise StoreError("nothing to undo")
            db.execute("DELETE FROM history WHERE session_id = ? AND version >= ?", (session_id, current.version))
            session = Session.from_dict(json.loads(prev[1]))
            return self._write(db, session, prev[0])

    # ------------------------------------------------------------ reading

    def _load(self, db: sqlite3.Connection, session_id: str, owner: str | None = ANY,
              deleted: bool = False) -> Session:
        check_session_id(session_id)
        row = db.execute("SELECT data, owner, deleted FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None or (owner is not ANY and row[1] != owner) or (row[2] is not None) != deleted:
            raise StoreError(f"no session {session_id} here (it belongs to no one you are logged in as, "
                             "or was deleted)")
        return Session.from_dict(json.loads(row[0]))

    def load(self, session_id: str, owner: str | None = ANY) -> Session:
        with self._connect() as db:
            return self._load(db, session_id, owner)

    def can_undo(self, session_id: str, version: int) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM history WHERE session_id = ? AND version < ?",
                              (session_id, version)).fetchone() is not None

    def list(self, owner: str | None = ANY, limit: int = 500) -> list[dict]:
        """`owner`'s live sessions, newest first: id, title, origin, dialogue_id, n_rows,
        n_corrected, created, updated, version."""
        where, args = ("deleted IS NULL", []) if owner is ANY else ("deleted IS NULL AND owner = ?", [owner])
        with self._connect() as db:
            cur = db.execute("SELECT id, title, origin, dialogue_id, n_rows, n_corrected, created, updated,"
                             f" version FROM sessions WHERE {where} ORDER BY updated DESC LIMIT ?",
                             (*args, limit))
            names = [c[0] for c in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def count(self, owner: str | None = ANY) -> int:
        """How many live sessions `owner` has."""
        where, args = ("deleted IS NULL", ()) if owner is ANY else ("deleted IS NULL AND owner = ?", (owner,))
        with self._connect() as db:
            return db.execute(f"SELECT COUNT(*) FROM sessions WHERE {where}", args).fetchone()[0]

    def set_deleted(self, session_id: str, deleted: bool, owner: str | None = ANY) -> Session:
        """Mark a session deleted (hidden, restorable for PURGE_AFTER seconds), or restore it."""
        with self._transaction() as db:
            session = self._load(db, session_id, owner, deleted=not deleted)
            db.execute("UPDATE sessions SET deleted = ? WHERE id = ?",
                       (time.time() if deleted else None, session_id))
            return session

    def next_dialogue_id(self, owner: str | None = ANY) -> int:
        where, args = ("1", ()) if owner is ANY else ("owner = ?", (owner,))
        with self._connect() as db:
            (top,) = db.execute(f"SELECT MAX(dialogue_id) FROM sessions WHERE {where}", args).fetchone()
        return 0 if top is None else int(top) + 1
