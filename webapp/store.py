"""Autosave: every session in SQLite (WAL, synchronous=FULL), one record per utterance.

`sessions` holds each session's header (its fields except the rows, and the order of the rows'
uids) with a few columns for the list of earlier sessions; `rows` holds one JSON record per
utterance; `changes` holds, for each of the last HISTORY versions of a session, what that version
replaced (the old records of the rows it touched, and the old header if it changed): Undo puts
those back. An edit therefore writes the rows it changed and one small change record, whatever the
size of the session, and a write returns only after its transaction has committed, so an
acknowledged correction survives a crash, a page reload or a server restart.

The current version of recently used sessions is kept in memory (checked against the version
column on every read), so reading a session does not parse it again. Sessions are immutable values
(webapp/session.py): a change returns a new Session sharing the rows it did not touch, and the
store finds the changed rows by identity.

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
from collections import OrderedDict
from itertools import compress
from operator import is_not
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from .paths import check_session_id
from .session import Row, Session
from core.types import UserError

HISTORY = 200            # versions kept per session for undo
PURGE_AFTER = 7 * 86400  # seconds a deleted session can still be restored
ANY = None               # the owner that reaches every session (an admin)
CACHE_ROWS = 200_000     # rows of recently used sessions kept in memory, all sessions together
FORMAT = 2               # PRAGMA user_version: 2 = one record per row and change records
STAMPS = ("version", "updated", "created")      # kept in columns, not in the header record
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
CREATE TABLE IF NOT EXISTS rows (
    session_id TEXT NOT NULL,
    uid INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (session_id, uid)
);
CREATE TABLE IF NOT EXISTS changes (
    session_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    previous INTEGER NOT NULL,
    saved REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (session_id, version)
);
"""


class StoreError(UserError, RuntimeError):
    """A session could not be found or saved; the message is one line."""


# ------------------------------------------------------------------ sessions as records

def header(session: Session) -> dict[str, Any]:
    """The session's own fields (not its rows, version or times), with the order of its rows."""
    out = {f.name: getattr(session, f.name) for f in fields(Session) if f.name not in ("rows", *STAMPS)}
    out["order"] = [r.uid for r in session.rows]
    return out


def assemble(head: dict[str, Any], rows: dict[int, dict], stamps: dict[str, Any]) -> Session:
    """A Session from its header record, its row records by uid and its version/times."""
    known = {k: v for k, v in head.items() if k in Session.__dataclass_fields__ and k != "rows"}
    names = Row.__dataclass_fields__
    order = head.get("order", [])
    return Session(**known, **stamps,
                   rows=[Row(**{k: v for k, v in rows[uid].items() if k in names}) for uid in order])


def diff(old: Session, new: Session) -> tuple[dict[int, Row | None], dict[int, Row | None], bool]:
    """(rows before, rows after, order changed): the rows `new` changed, added (before: None) or
    removed (after: None), by uid. Rows shared by identity are skipped without a look (in C)."""
    before: dict[int, Row | None] = {}
    after: dict[int, Row | None] = {}
    if len(old.rows) == len(new.rows):
        touched = list(compress(range(len(new.rows)), map(is_not, old.rows, new.rows)))
        if all(old.rows[i].uid == new.rows[i].uid for i in touched):
            for i in touched:
                a, b = old.rows[i], new.rows[i]
                if a != b:
                    before[a.uid], after[b.uid] = a, b
            return before, after, False
    old_by_uid = {r.uid: r for r in old.rows}
    new_by_uid = {r.uid: r for r in new.rows}
    for uid, b in new_by_uid.items():
        a = old_by_uid.get(uid)
        if a is not b and a != b:
            before[uid], after[uid] = a, b
    for uid, a in old_by_uid.items():
        if uid not in new_by_uid:
            before[uid], after[uid] = a, None
    return before, after, True


def header_changed(old: Session, new: Session) -> bool:
    """Did a field of the session itself (not its rows or stamps) change?"""
    return any(getattr(old, f.name) != getattr(new, f.name) for f in fields(Session) if f.name not in ("rows", *STAMPS))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _row_record(row: Row | None) -> dict | None:
    return None if row is None else asdict(row)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, Session] = OrderedDict()
        with self._connect() as db:
            db.executescript(SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(sessions)")}
            for name, kind in (("owner", "TEXT NOT NULL DEFAULT ''"), ("deleted", "REAL")):
                if name not in columns:          # a store written before sessions had owners
                    db.execute(f"ALTER TABLE sessions ADD COLUMN {name} {kind}")
            db.execute("CREATE INDEX IF NOT EXISTS sessions_owner ON sessions (owner, updated)")
            if db.execute("PRAGMA user_version").fetchone()[0] < FORMAT:
                _migrate(db)
            old = time.time() - PURGE_AFTER
            for table in ("rows", "changes"):
                db.execute(f"DELETE FROM {table} WHERE session_id IN (SELECT id FROM sessions WHERE deleted < ?)",
                           (old,))
            db.execute("DELETE FROM sessions WHERE deleted < ?", (old,))

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

    # ------------------------------------------------------------ the memory of recent sessions

    def _remember(self, session: Session) -> Session:
        with self._lock:
            self._cache[session.id] = session
            self._cache.move_to_end(session.id)
            while len(self._cache) > 1 and sum(len(s.rows) for s in self._cache.values()) > CACHE_ROWS:
                self._cache.popitem(last=False)
        return session

    def _forget(self, session_id: str) -> None:
        with self._lock:
            self._cache.pop(session_id, None)

    # ------------------------------------------------------------ writing

    def _save(self, db: sqlite3.Connection, old: Session | None, new: Session, version: int,
              record_change: bool, previous: int | None = None, changes: tuple | None = None) -> Session:
        """Write what `new` changed since `old` (everything when `old` is None) as `version`;
        with `record_change`, keep what it replaced so that undo can put it back. `changes` is
        diff(old, new) when the caller has it already."""
        now = time.time()
        if old is None:
            before: dict[int, Row | None] = {}
            after: dict[int, Row | None] = {r.uid: r for r in new.rows}
            head_changed = True
        else:
            before, after, order_changed = changes or diff(old, new)
            head_changed = order_changed or header_changed(old, new)
        for uid, row in after.items():
            if row is None:
                db.execute("DELETE FROM rows WHERE session_id = ? AND uid = ?", (new.id, uid))
            else:
                db.execute("INSERT OR REPLACE INTO rows (session_id, uid, data) VALUES (?,?,?)",
                           (new.id, uid, _dumps(asdict(row))))
        if old is None:
            corrected = new.corrected_count
        else:       # counted from what changed, not over the whole session
            (known,) = db.execute("SELECT n_corrected FROM sessions WHERE id = ?", (new.id,)).fetchone()
            corrected = (known + sum(r.corrected for r in after.values() if r is not None)
                         - sum(r.corrected for r in before.values() if r is not None))
        new.version, new.updated, new.created = version, now, (old.created if old else new.created) or now
        sets = ("title = ?, origin = ?, dialogue_id = ?, n_rows = ?, n_corrected = ?, updated = ?, version = ?,"
                " created = ?")
        args: list[Any] = [new.title, new.origin, new.dialogue_id, len(new.rows), corrected, now, version,
                           new.created]
        if head_changed:
            sets += ", data = ?"
            args.append(_dumps(header(new)))
        db.execute(f"UPDATE sessions SET {sets} WHERE id = ?", (*args, new.id))
        if record_change and old is not None:
            change = {"rows": {str(uid): _row_record(row) for uid, row in before.items()}}
            for uid in after:
                change["rows"].setdefault(str(uid), None)          # added rows: undo removes them
            if head_changed:
                change["header"] = header(old)
            db.execute("INSERT OR REPLACE INTO changes (session_id, version, previous, saved, data)"
                       " VALUES (?,?,?,?,?)", (new.id, version, old.version if previous is None else previous,
                                               now, _dumps(change)))
            db.execute("DELETE FROM changes WHERE session_id = ? AND version <= ?", (new.id, version - HISTORY))
        return self._remember(new)

    def create(self, session: Session, owner: str = "") -> Session:
        check_session_id(session.id)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (session.id,)).fetchone():
                raise StoreError(f"session {session.id} exists already")
            db.execute("INSERT INTO sessions (id, title, origin, dialogue_id, n_rows, n_corrected, created,"
                       " updated, version, data, owner) VALUES (?, '', '', 0, 0, 0, 0, 0, 0, '{}', ?)",
                       (session.id, owner or ""))
            return self._save(db, None, session, 1, record_change=False)

    def update(self, session_id: str, change: Callable[[Session], tuple[Session, T]],
               owner: str | None = ANY) -> tuple[Session, T]:
        """Load, apply `change` (which returns the new session and a result), save if it changed.
        Runs under one lock and one transaction: two tabs editing one session never lose an edit."""
        with self._transaction() as db:
            current = self._load(db, session_id, owner)
            new, result = change(current)
            if new is current:
                return current, result
            changes = diff(current, new)
            if not changes[0] and not changes[2] and not header_changed(current, new):
                return current, result
            return self._save(db, current, new, current.version + 1, record_change=True, changes=changes), result

    def undo(self, session_id: str, owner: str | None = ANY) -> Session:
        """Go back to the version before the current one (the current one is discarded)."""
        with self._transaction() as db:
            current = self._load(db, session_id, owner)
            found = db.execute("SELECT previous, data FROM changes WHERE session_id = ? AND version = ?",
                               (session_id, current.version)).fetchone()
            if found is None:
                raise StoreError("nothing to undo")
            previous = _revert(current, json.loads(found[1]))
            db.execute("DELETE FROM changes WHERE session_id = ? AND version >= ?", (session_id, current.version))
            return self._save(db, current, previous, found[0], record_change=False)

    # ------------------------------------------------------------ reading

    def _load(self, db: sqlite3.Connection, session_id: str, owner: str | None = ANY,
              deleted: bool = False) -> Session:
        check_session_id(session_id)
        found = db.execute("SELECT owner, deleted, version, updated, created FROM sessions WHERE id = ?",
                           (session_id,)).fetchone()
        if found is None or (owner is not ANY and found[0] != owner) or (found[1] is not None) != deleted:
            raise StoreError(f"no session {session_id} here (it belongs to no one you are logged in as, "
                             "or was deleted)")
        with self._lock:
            cached = self._cache.get(session_id)
        if cached is not None and cached.version == found[2] and cached.updated == found[3]:
            return self._remember(cached)
        (data,) = db.execute("SELECT data FROM sessions WHERE id = ?", (session_id,)).fetchone()
        rows = {uid: json.loads(text) for uid, text in
                db.execute("SELECT uid, data FROM rows WHERE session_id = ?", (session_id,))}
        session = assemble(json.loads(data), rows, {"version": found[2], "updated": found[3], "created": found[4]})
        return self._remember(session)

    def load(self, session_id: str, owner: str | None = ANY) -> Session:
        with self._connect() as db:
            db.execute("BEGIN")              # one snapshot: the header and the rows of one version
            try:
                return self._load(db, session_id, owner)
            finally:
                db.execute("COMMIT")

    def can_undo(self, session_id: str, version: int) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM changes WHERE session_id = ? AND version = ?",
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


def _revert(current: Session, change: dict[str, Any]) -> Session:
    """The session as it was before the version whose change record is `change`."""
    old_rows = change.get("rows", {})
    names = Row.__dataclass_fields__
    restored = {int(uid): Row(**{k: v for k, v in rec.items() if k in names})
                for uid, rec in old_rows.items() if rec is not None}
    gone = {int(uid) for uid, rec in old_rows.items() if rec is None}
    by_uid = {r.uid: r for r in current.rows} if "header" in change else None
    if "header" in change:
        head = change["header"]
        known = {k: v for k, v in head.items() if k in Session.__dataclass_fields__ and k not in ("rows", *STAMPS)}
        rows = [restored.get(uid) or by_uid[uid] for uid in head.get("order", [])]
        return Session(**known, rows=rows, version=current.version, updated=current.updated,
                       created=current.created)
    rows = [restored.get(r.uid, r) for r in current.rows if r.uid not in gone]
    out = Session(**{f.name: getattr(current, f.name) for f in fields(Session) if f.name != "rows"}, rows=rows)
    return out


def _migrate(db: sqlite3.Connection) -> None:
    """Rewrite a store of format 1 (one JSON blob per version) as rows and change records; the
    undo history of each session is kept (each old version becomes a change record)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        has_history = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'history'").fetchone()
        for sid, data in db.execute("SELECT id, data FROM sessions").fetchall():
            blob = json.loads(data or "{}")
            if "rows" not in blob:
                continue
            current = Session.from_dict(blob)
            db.execute("DELETE FROM rows WHERE session_id = ?", (sid,))
            for row in current.rows:
                db.execute("INSERT INTO rows (session_id, uid, data) VALUES (?,?,?)", (sid, row.uid, _dumps(asdict(row))))
            db.execute("UPDATE sessions SET data = ? WHERE id = ?", (_dumps(header(current)), sid))
            if not has_history:
                continue
            versions = db.execute("SELECT version, saved, data FROM history WHERE session_id = ? ORDER BY version",
                                  (sid,)).fetchall()
            for (v0, _, d0), (v1, saved, d1) in zip(versions, versions[1:]):
                old, new = Session.from_dict(json.loads(d0)), Session.from_dict(json.loads(d1))
                before, after, order_changed = diff(old, new)
                change: dict[str, Any] = {"rows": {str(u): _row_record(r) for u, r in before.items()}}
                for uid in after:
                    change["rows"].setdefault(str(uid), None)
                if order_changed or header(old) != header(new):
                    change["header"] = header(old)
                db.execute("INSERT OR REPLACE INTO changes (session_id, version, previous, saved, data)"
                           " VALUES (?,?,?,?,?)", (sid, v1, v0, saved, _dumps(change)))
        if has_history:
            db.execute("DROP TABLE history")
        db.execute(f"PRAGMA user_version = {FORMAT}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
