"""The autosave store: one record per utterance, change records for undo, stores of the old format.

What a user would notice: every change survives a restart, Undo walks back through splits, merges,
added and deleted rows exactly, an edit touches only the row it changed (so it costs the same in a
session of 20 or 20,000 utterances), and a data folder written by the previous release opens with
its sessions and their undo history intact."""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import asdict

import pytest

from tests.test_webapp import make_session
from webapp.session import add_row, delete_row, merge_next, set_dialogue_id, set_field, split_row
from webapp.store import Store, StoreError

EMOTIONS7 = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def content(session) -> dict:
    """What a session holds, without its version and times."""
    d = asdict(session)
    for stamp in ("version", "updated", "created"):
        d.pop(stamp)
    return d


def random_edit(session, rng: random.Random):
    """One random correction a user could make (or the same session when it is refused)."""
    row = rng.choice(session.rows)
    kind = rng.choice(["emotion", "speaker", "text", "split", "merge", "add", "delete", "dialogue"])
    try:
        if kind == "emotion":
            return set_field(session, row.uid, "emotion", rng.choice(EMOTIONS7))
        if kind in ("speaker", "text"):
            return set_field(session, row.uid, kind, f"{kind} {rng.randrange(1000)} two three")
        if kind == "split":
            return split_row(session, row.uid)
        if kind == "merge":
            return merge_next(session, row.uid)[0]
        if kind == "add":
            return add_row(session, row.uid)[0]
        if kind == "delete" and len(session.rows) > 2:
            return delete_row(session, row.uid)
        if kind == "dialogue":
            return set_dialogue_id(session, rng.randrange(50))
    except ValueError:
        pass
    return session


def test_undo_walks_back_through_every_kind_of_change_exactly_and_after_a_restart(tmp_path):
    rng = random.Random(7)
    store = Store(tmp_path / "wb.sqlite3")
    saved = store.create(make_session(8, duration=60.0))
    states = [content(saved)]
    for _ in range(60):
        new, _ = store.update(saved.id, lambda s: (random_edit(s, rng), ""))
        if new.version != saved.version:
            states.append(content(new))
        saved = new
    assert len(states) > 40
    reopened = Store(tmp_path / "wb.sqlite3")                  # a restart: nothing held in memory
    assert content(reopened.load(saved.id)) == states[-1]
    for expected in reversed(states[:-1]):
        assert content(reopened.undo(saved.id)) == expected
        assert content(Store(tmp_path / "wb.sqlite3").load(saved.id)) == expected   # and it is on disk
    with pytest.raises(StoreError, match="nothing to undo"):
        reopened.undo(saved.id)
    assert reopened.list()[0]["n_corrected"] == 0 == reopened.load(saved.id).corrected_count


def test_an_edit_writes_only_the_row_it_changed(tmp_path):
    store = Store(tmp_path / "wb.sqlite3")
    session = store.create(make_session(2000, duration=7000.0))
    with sqlite3.connect(tmp_path / "wb.sqlite3") as db:
        before = dict(db.execute("SELECT uid, data FROM rows WHERE session_id = ?", (session.id,)).fetchall())
        head_before = db.execute("SELECT data FROM sessions").fetchone()[0]
    store.update(session.id, lambda s: (set_field(s, 1234, "emotion", "anger"), ""))
    with sqlite3.connect(tmp_path / "wb.sqlite3") as db:
        after = dict(db.execute("SELECT uid, data FROM rows WHERE session_id = ?", (session.id,)).fetchall())
        head_after, corrected = db.execute("SELECT data, n_corrected FROM sessions").fetchone()
        (change,) = db.execute("SELECT data FROM changes").fetchone()
    assert [uid for uid in after if after[uid] != before[uid]] == [1234]
    assert head_after == head_before and corrected == 1
    assert list(json.loads(change)["rows"]) == ["1234"] and "header" not in json.loads(change)
    assert len(change) < 2000                                   # the undo record is one row, not the session


def test_a_store_of_the_previous_format_opens_with_its_undo_history(tmp_path):
    """The previous release kept one JSON blob per version (sessions.data and history)."""
    path = tmp_path / "old.sqlite3"
    v1 = make_session(3)
    v2 = set_field(v1, 1, "emotion", "anger")
    v3 = split_row(v2, 0)
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT NOT NULL, origin TEXT NOT NULL,
              dialogue_id INTEGER NOT NULL, n_rows INTEGER NOT NULL, n_corrected INTEGER NOT NULL,
              created REAL NOT NULL, updated REAL NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
              owner TEXT NOT NULL DEFAULT '', deleted REAL);
            CREATE TABLE history (session_id TEXT NOT NULL, version INTEGER NOT NULL, saved REAL NOT NULL,
              data TEXT NOT NULL, PRIMARY KEY (session_id, version));""")
        for version, s in enumerate((v1, v2, v3), start=1):
            s.version, s.updated, s.created = version, 100.0 + version, 100.0
            db.execute("INSERT INTO history VALUES (?,?,?,?)", (s.id, version, s.updated, json.dumps(asdict(s))))
        db.execute("INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL)",
                   (v3.id, v3.title, v3.origin, 0, len(v3.rows), v3.corrected_count, 100.0, 103.0, 3,
                    json.dumps(asdict(v3)), "token:abc"))
    store = Store(path)
    assert content(store.load(v3.id, "token:abc")) == content(v3)
    with pytest.raises(StoreError):
        store.load(v3.id, "token:someone-else")
    assert content(store.undo(v3.id)) == content(v2)
    assert content(store.undo(v3.id)) == content(v1)
    with pytest.raises(StoreError, match="nothing to undo"):
        store.undo(v3.id)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("SELECT 1 FROM sqlite_master WHERE name = 'history'").fetchone() is None
