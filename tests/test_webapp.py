"""The annotation workbench: session edits, autosave, MELD export/import, and the app end to end
through gradio_client (upload → analyse → change a label → export → the CSV reloads with it)."""

from __future__ import annotations

import sqlite3
import zipfile
from types import SimpleNamespace
from pathlib import Path

import pytest

from core.labels import EMOTIONS
from tests.serving import start_workbench
from core.meld import COLUMNS, read_meld_csv
from webapp import charts, checks, export, importer, owners, paths, views
from webapp.session import (EditError, Row, Session, merge_next, set_dialogue_id, set_field,
                            split_row, to_meld_rows, vtt_text)
from webapp.store import Store, StoreError


def make_session(n: int = 3, duration: float = 10.0) -> Session:
    rows = []
    for i in range(n):
        probs = [0.0] * len(EMOTIONS)
        probs[EMOTIONS.index("joy")] = 0.7
        probs[EMOTIONS.index("neutral")] = 0.3
        row = Row(uid=i, start=i * 3.0, end=i * 3.0 + 2.0, text=f"word{i} one two three",
                  emotion="joy", sentiment="positive", emotion_probs=probs, sentiment_probs=[0.1, 0.2, 0.7])
        row.original = {f: getattr(row, f) for f in ("start", "end", "speaker", "text", "emotion", "sentiment")}
        rows.append(row)
    return Session(id=paths.new_session_id(), title="talk.mp4", duration=duration, rows=rows, next_uid=n)


# ------------------------------------------------------------------ session edits (pure)

def test_labels_accept_only_valid_values_and_mark_the_row():
    s = make_session()
    t = set_field(s, 1, "emotion", " Anger ")
    assert t.rows[1].emotion == "anger" and s.rows[1].emotion == "joy"      # pure: input untouched
    assert t.rows[1].corrected_fields == ["emotion"] and not t.rows[0].corrected
    for bad in ("angry", "", "=1+1", None):
        with pytest.raises(EditError):
            set_field(t, 1, "emotion", bad)
    with pytest.raises(EditError):
        set_field(t, 1, "sentiment", "happy")
    assert set_field(t, 1, "emotion", "joy").rows[1].corrected_fields == []   # back to the model: unmarked


def test_times_text_and_speaker_are_validated():
    s = make_session()
    assert set_field(s, 0, "start", "0:00:00,500").rows[0].start == 0.5
    assert set_field(s, 0, "end", "1,75").rows[0].end == 1.75
    for name, value in (("start", "2.0"), ("end", "99"), ("start", "-1"), ("end", "soon")):
        with pytest.raises(EditError):
            set_field(s, 0, name, value)
    with pytest.raises(EditError):
        set_field(s, 0, "text", "   ")
    assert set_field(s, 0, "speaker", "  Ross\n Geller ").rows[0].speaker == "Ross Geller"


def test_split_and_merge():
    s = make_session()
    t = split_row(s, 1, "3.5")
    assert [r.text for r in t.rows[1:3]] == ["word1", "one two three"]
    assert (t.rows[1].end, t.rows[2].start) == (3.5, 3.5) and t.rows[2].uid == 3
    assert "split" in t.rows[1].corrected_fields and "split" in t.rows[2].corrected_fields
    with pytest.raises(EditError):
        split_row(s, 1, "9")                         # outside the utterance
    u, note = merge_next(t, 1)
    assert len(u.rows) == 3 and u.rows[1].text == "word1 one two three"
    assert (u.rows[1].start, u.rows[1].end) == (3.0, 5.0) and "merged" in u.rows[1].corrected_fields
    v, note = merge_next(set_field(s, 0, "emotion", "anger"), 0)
    assert v.rows[0].emotion == "anger" and "emotion differed" in note
    with pytest.raises(EditError):
        merge_next(s, 2)                             # the last one


def test_chart_follows_corrections():
    s = set_field(make_session(), 1, "emotion", "sadness")
    assert s.rows[0].shown_emotion_probs()[EMOTIONS.index("joy")] == 0.7
    assert s.rows[1].shown_emotion_probs() == [1.0 if e == "sadness" else 0.0 for e in EMOTIONS]
    fig = charts.timeline(s, selected=1)
    assert fig.layout.height == charts.HEIGHT
    bars = {t.name: t for t in fig.data}
    assert set(EMOTIONS) <= set(bars) and bars["sadness"].y[1] == 1.0 and bars["joy"].y[1] == 0.0
    assert bars["joy"].y[0] == 0.7                                  # uncorrected: the model's own
    assert list(bars["sadness"].marker.line.width)[1] > list(bars["sadness"].marker.line.width)[0]


def test_table_and_detail_views():
    s = set_field(make_session(), 2, "sentiment", "negative")
    frame = views.table_frame(s, selected=1)
    assert list(frame.columns) == ["id", "emotion", "sentiment", "confidence", "start", "end", "speaker",
                                   "text", "notes"]
    assert list(frame["id"]) == ["0", "▶ 1", "2"]                  # the selected row is marked
    assert frame.iloc[2]["notes"] == "✎ sentiment ⚠ MELD never pairs joy with negative (it has positive)"
    assert frame.iloc[0]["notes"] == ""
    assert "Annotator" in views.detail_markdown(s, 2)
    assert "untrained" in views.model_banner({"trained": False})
    banner = views.model_banner({"name": "meld-text-minilm-ctx3+1", "trained": True, "trained_modalities": ["text"],
                                 "metrics": {"dev": {"emotion_weighted_f1": 61.2}}})
    # one plain sentence: no checkpoint jargon, and it says what decides and what is only shown
    assert banner.startswith("Emotion and sentiment are decided from the words;")
    assert "the voice and the face" in banner and "minilm" not in banner and "fused" not in banner
    assert "the words and the voice" in views.model_banner({"trained": True, "trained_modalities": ["text", "audio"]})


def test_table_orders_and_filters_for_review():
    s = make_session(4)
    for uid, conf in ((0, 0.9), (1, 0.4), (2, 0.6), (3, 0.5)):
        s.rows[uid].emotion_probs = [conf] + [(1 - conf) / 6] * 6
        s.rows[uid].emotion = s.rows[uid].original["emotion"] = "anger"
    s = set_field(s, 2, "emotion", "sadness")
    low = views.table_frame(s, views.TableView(order="low"))
    assert list(low["id"]) == ["1", "3", "2", "0"]                  # lowest confidence first
    assert list(views.table_frame(s, views.TableView(emotion="sadness"))["id"]) == ["2"]
    assert list(views.table_frame(s, views.TableView(state="corrected"))["id"]) == ["2"]
    assert list(views.table_frame(s, views.TableView(state="todo"))["id"]) == ["0", "1", "3"]
    mix = views.mix_markdown(s)
    assert "anger 3 (75 %)" in mix and "sadness 1 (25 %)" in mix and "positive 4 (100 %)" in mix
    assert views.speakers(set_field(set_field(s, 0, "speaker", "Ann"), 1, "speaker", "Bob")) in (["Ann", "Bob"], ["Bob", "Ann"])


def test_overlaps_are_flagged_on_the_row_and_in_the_chart():
    s = set_field(make_session(), 1, "start", "1.5")          # row 0 ends at 2.0
    issues = checks.overlaps(s)
    assert [(i.position, i.kind) for i in issues] == [(1, "overlap")] and "before utterance 0 ends" in issues[0].message
    assert "⚠" in views.table_frame(s).iloc[1]["notes"] and "overlap" not in views.table_frame(s).iloc[0]["notes"]
    fig = charts.timeline(s)
    assert any("overlap 1" in (a.text or "") for a in fig.layout.annotations)
    assert not checks.overlaps(make_session())


def test_export_refuses_invalid_rows_naming_them(tmp_path):
    from webapp.service import ExportRefused, ModelHolder, Workbench
    wb = Workbench(ModelHolder(), tmp_path / "data")
    s = make_session(4)
    s.rows[1].emotion = ""
    s.rows[2].start = None
    s.rows[3].start, s.rows[3].end = 9.5, 9.0
    saved = wb.store.create(s, "me")
    with pytest.raises(ExportRefused) as err:
        wb.export_csv(saved.id, "me")
    message = str(err.value)
    for needle in ("utterance 1: no emotion", "utterance 2: no start", "utterance 3: ends (9.00 s) before it starts"):
        assert needle in message, message
    assert not list((tmp_path / "data").rglob("*.csv"))           # nothing written
    fixed = wb.apply(saved.id, lambda x: (_fix(x), ""), "me")[0]
    assert read_meld_csv(wb.export_csv(fixed.id, "me")).ok


def _fix(s):
    s = set_field(s, 1, "emotion", "joy")
    s.rows[2].start = 6.0
    s.rows[3].start, s.rows[3].end = 9.0, 9.5
    return s


def test_vtt_subtitles():
    text = vtt_text(set_field(make_session(), 0, "speaker", "Ann"))
    assert text.startswith("WEBVTT") and "00:00:00.000 --> 00:00:02.000" in text and "Ann: word0" in text


# ------------------------------------------------------------------ store

def test_store_autosaves_undoes_and_survives_a_restart(tmp_path):
    db = tmp_path / "wb.sqlite3"
    store = Store(db)
    s = store.create(make_session())
    assert s.version == 1
    s2, _ = store.update(s.id, lambda x: (set_field(x, 0, "emotion", "fear"), ""))
    s3, _ = store.update(s.id, lambda x: (set_field(x, 1, "text", "changed"), ""))
    assert (s2.version, s3.version) == (2, 3)
    unchanged, _ = store.update(s.id, lambda x: (x, ""))
    assert unchanged.version == 3                                   # nothing new: no new version
    reopened = Store(db)                                            # a server restart
    assert reopened.load(s.id).rows[1].text == "changed"
    assert reopened.list()[0]["n_corrected"] == 2
    assert reopened.undo(s.id).rows[1].text != "changed"
    assert reopened.undo(s.id).rows[0].emotion == "joy"
    with pytest.raises(StoreError):
        reopened.undo(s.id)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(paths.PathError):
        reopened.load("../../etc/passwd")


def test_uploaded_names_stay_inside_the_data_folder(tmp_path):
    assert paths.safe_filename("../../etc/passwd") == "passwd"
    assert paths.safe_filename("C:\\Users\\me\\Vidéo 1.MP4") == "Video_1.mp4"
    assert paths.safe_filename("...") == "upload"
    with pytest.raises(paths.PathError):
        paths.inside(tmp_path, "..", "x")
    with pytest.raises(paths.PathError):
        paths.session_dir(tmp_path, "../abc")


# ------------------------------------------------------------------ export / import

def test_export_csv_is_meld_and_formula_safe(tmp_path):
    s = set_field(make_session(), 0, "text", "=HYPERLINK(\"http://x\")")
    s = set_field(s, 1, "speaker", "@admin")
    s = set_dialogue_id(s, 7)
    path = export.export_csv(s, tmp_path)
    raw = path.read_text(encoding="utf-8")
    header = raw.splitlines()[0]
    assert header == ",".join(COLUMNS)
    assert "'=HYPERLINK" in raw and ",'@admin," in raw               # neutralised
    assert '"0:00:03,000","0:00:05,000"' in raw
    table = read_meld_csv(path)
    assert table.ok, table.problems
    assert [(r.dialogue_id, r.utterance_id) for r in table.rows] == [(7, 0), (7, 1), (7, 2)]
    assert table.rows[0].utterance == "=HYPERLINK(\"http://x\")" and table.rows[1].speaker == "@admin"


def test_sessions_belong_to_their_owner_and_can_be_renamed_deleted_restored(tmp_path):
    from webapp.service import ModelHolder, Workbench
    wb = Workbench(ModelHolder(), tmp_path / "data")
    mine = wb.store.create(make_session(), "token:ann")
    theirs = wb.store.create(make_session(), "token:bob")
    assert [x["id"] for x in wb.sessions("token:ann")] == [mine.id]
    for attempt in (lambda: wb.session(theirs.id, "token:ann"),
                    lambda: wb.apply(theirs.id, lambda x: (set_field(x, 0, "emotion", "fear"), ""), "token:ann"),
                    lambda: wb.undo(theirs.id, "token:ann"), lambda: wb.export_csv(theirs.id, "token:ann"),
                    lambda: wb.delete(theirs.id, "token:ann"), lambda: wb.rename(theirs.id, "x", "token:ann")):
        with pytest.raises(StoreError, match="no session"):
            attempt()
    assert wb.session(theirs.id, None).title == "talk.mp4"          # an admin reaches every session
    assert wb.rename(mine.id, "  Interview   with Ann ", "token:ann").title == "Interview with Ann"
    wb.delete(mine.id, "token:ann")
    assert wb.sessions("token:ann") == []
    with pytest.raises(StoreError):
        wb.session(mine.id, "token:ann")
    assert wb.restore(mine.id, "token:ann").id == mine.id
    assert [x["title"] for x in wb.sessions("token:ann")] == ["Interview with Ann"]


def test_export_zip_without_media_lists_missing_clips(tmp_path):
    report = export.export_zip(make_session(2), None, tmp_path)
    names = zipfile.ZipFile(report.path).namelist()
    base = export.base_name(make_session())
    assert f"{base}/{base}.csv" in names and f"{base}/MISSING_CLIPS.txt" in names
    assert report.clips == 0 and len(report.skipped) == 2


MESSY = ("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,StartTime,EndTime\r\n"
         '1,"Iâ€™m fine",Ann,joy,positive,4,0,"0:00:01,000","0:00:02,000"\r\n'
         '2,Who cares,Bob,happy,positive,4,1,"0:00:02,500","0:00:03,000"\r\n'
         '3,Later,Ann,neutral,neutral,4,2,"1:2:3","0:00:05,000"\r\n'
         '4,Bye,Bob,sadness,negative,5,0,"0:00:06,000","0:00:07,000"\r\n')


def test_import_lists_problems_and_keeps_every_row(tmp_path):
    csv_path = tmp_path / "messy.csv"
    csv_path.write_bytes(MESSY.encode("utf-8"))
    imported = importer.read(csv_path)
    sessions = importer.sessions_from(imported, "messy.csv", paths.new_session_id)
    assert [(s.dialogue_id, len(s.rows)) for s in sessions] == [(4, 3), (5, 1)]
    first = sessions[0]
    assert first.rows[0].text == "I’m fine"                          # mojibake repaired
    assert first.rows[1].emotion == "" and first.rows[2].start is None
    text = "\n".join(first.problems)
    for needle in ("Season", "Episode", "'happy'", "bad time", "mojibake) repaired: row 2"):
        assert needle in text, needle
    frame = views.problems_frame(first)
    assert list(frame.columns) == ["CSV row", "table id", "column", "problem"] and len(frame) >= 5
    happy = frame[frame["problem"].str.contains("happy")].iloc[0]
    assert (happy["CSV row"], happy["table id"]) == ("3", "1")      # the file's row 3 is the table's 1
    assert "import problem (CSV row 3)" in views.table_frame(first).iloc[1]["notes"]
    assert to_meld_rows(first)[2].end == 5.0


def test_import_problems_land_in_their_own_dialogue(tmp_path):
    csv_path = tmp_path / "two.csv"
    csv_path.write_text("Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,StartTime,EndTime\n"
                        'Hi,Ann,joy,positive,1,0,"0:00:01,000","0:00:02,000"\n'
                        "\n"                                       # an empty line: numbers must not drift
                        'Yes,Bob,joy,positive,2,0,"0:00:01,000","0:00:02,000"\n'
                        'No,Bob,furious,negative,2,1,"0:00:03,000","0:00:04,000"\n', encoding="utf-8")
    first, second = importer.sessions_from(importer.read(csv_path), "two.csv", paths.new_session_id)
    assert not any("furious" in p for p in first.problems)
    assert [p for p in second.problems if "furious" in p][0].startswith("row 5, Emotion")
    frame = views.problems_frame(second)
    furious = frame[frame["problem"].str.contains("furious")].iloc[0]
    assert furious["table id"] == "1" and furious["CSV row"] == "5"


# ------------------------------------------------------------------ the page's handlers (no browser)

@pytest.fixture
def handlers(tmp_path):
    from webapp.corrections import Corrections
    from webapp.handlers import Handlers
    from webapp.render import Page, Renderer
    from webapp.service import ModelHolder, Workbench
    wb = Workbench(ModelHolder(), tmp_path / "data")
    page = Page(**{name: name for name in Page.__dataclass_fields__})   # components stand-ins
    render = Renderer(wb, page)
    session = wb.store.create(make_session(), owners.for_token(TOKEN))
    return Handlers(render), Corrections(render), session.id


TOKEN = "a-browser-token-0123456789"
VIEW = views.TableView()
REQ = SimpleNamespace(username=None, cookies={owners.COOKIE: TOKEN}, headers={}, session_hash="page-1")


def _value(update):
    return update.get("value") if isinstance(update, dict) else update


@pytest.mark.filterwarnings("ignore:Reverted:UserWarning")
def test_handlers_save_valid_corrections_and_revert_invalid_ones(handlers):
    import pandas as pd
    h, c, sid = handlers
    out = c.field("emotion")(sid, "0", VIEW, "furious", request=REQ)
    assert "Reverted" in out["status"] and _value(out["ed_emotion"]) == "joy"
    out = c.field("emotion")(sid, "0", VIEW, "anger", request=REQ)
    assert "Saved" in out["status"] and h.wb.store.load(sid).rows[0].emotion == "anger"
    assert out["table"].iloc[0]["notes"] == "✎ emotion ⚠ MELD never pairs anger with positive (it has negative)"
    assert "⚠ Check the labels: utterance 0: MELD never pairs anger with positive" in out["status"]

    frame = views.table_frame(h.wb.store.load(sid))
    frame.loc[1, "sentiment"], frame.loc[2, "speaker"] = "great", "Zoe"
    out = c.table_edit(sid, 0, VIEW, frame, request=REQ)
    stored = h.wb.store.load(sid)
    assert stored.rows[2].speaker == "Zoe" and stored.rows[1].sentiment == "positive"
    assert "Reverted" in out["status"] and out["table"].iloc[1]["sentiment"] == "positive"
    out = c.table_edit(sid, 0, VIEW, pd.concat([frame, frame.tail(1)]), request=REQ)   # a stale table: nothing applied
    assert "out of date" in out["status"]

    c.split(sid, 1, VIEW, "4.0", request=REQ)
    assert len(h.wb.store.load(sid).rows) == 4
    c.merge(sid, 1, VIEW, request=REQ)
    c.add(sid, 2, VIEW, request=REQ)
    assert [r.ops for r in h.wb.store.load(sid).rows][3] == ["added"]
    c.delete(sid, 0, VIEW, request=REQ)
    assert len(h.wb.store.load(sid).rows) == 3
    c.undo(sid, None, VIEW, request=REQ)
    assert len(h.wb.store.load(sid).rows) == 4

    restored = h.load(sid, request=REQ)            # a page reload
    assert "Restored" in restored["status"] and restored["remembered"] == sid
    assert h.load("0123456789abcdef", request=REQ)["sid"] == ""   # unknown session: a blank page, no error
    other = SimpleNamespace(username=None, cookies={owners.COOKIE: "another-browser-token-000"}, headers={})
    assert h.load(sid, request=other)["sid"] == ""   # someone else's: not shown


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_field_is_saved_on_the_row_it_was_typed_for(handlers):
    """The editor showed row 0; the save of its speaker arrives after row 2 was selected."""
    h, c, sid = handlers
    c.field("speaker")(sid, "0", VIEW, "Zed", request=REQ)          # ed_uid "0": what the browser sent
    rows = h.wb.store.load(sid).rows
    assert rows[0].speaker == "Zed" and rows[2].speaker == ""
    c.field("text")(sid, "0", VIEW, "typed for row zero", request=REQ)
    assert h.wb.store.load(sid).rows[0].text == "typed for row zero"


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_failures_stay_in_the_status_line(handlers, tmp_path):
    from tests import mediagen
    h, c, sid = handlers
    out = h.analyse(str(mediagen.text_file_named(tmp_path / "notes.mp4")), True, False, None, REQ, progress=lambda *a, **k: None)
    assert out["status"].startswith("✖ **Analysis of notes.mp4 failed:**") and "Traceback" not in out["status"]
    out = c.export_csv(sid, SimpleNamespace(username=None, cookies={owners.COOKIE: "not-the-owner-token-000000"}))
    assert "✖" in out["status"] and "no session" in out["status"] and out["export_file"] is None
    out = c.field("start")(sid, "1", VIEW, "1.5", request=REQ)             # overlaps row 0 (0-2 s): saved, warned
    assert "Saved" in out["status"] and "overlap" in out["status"].lower()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bulk_relabel_and_label_keys(handlers):
    h, c, sid = handlers
    out = c.bulk(sid, 0, VIEW, "0-1", "sadness", "", "Ann", request=REQ)
    rows = h.wb.store.load(sid).rows
    assert [(r.emotion, r.speaker) for r in rows] == [("sadness", "Ann"), ("sadness", "Ann"), ("joy", "")]
    assert "Set emotion = sadness, speaker = Ann on 2 utterance(s)" in out["status"]
    assert "Ann" in out["bulk_speaker"]["choices"] or ("Ann", "Ann") in out["bulk_speaker"]["choices"]
    out = c.bulk(sid, 0, VIEW, "7-9", "joy", "", "", request=REQ)
    assert "✖" in out["status"] and "not in this session" in out["status"]
    c.key(sid, 2, VIEW, "emotion:fear@123", request=REQ)
    assert h.wb.store.load(sid).rows[2].emotion == "fear"
    c.key(sid, 2, VIEW, "emotion:=cmd@1", request=REQ)                    # not a label: ignored
    assert h.wb.store.load(sid).rows[2].emotion == "fear"
    # a suggested speaker named everywhere at once: the rows are named by that speaker
    out = c.bulk(sid, 0, VIEW, "ann", "", "", "Rachel", request=REQ)
    assert [r.speaker for r in h.wb.store.load(sid).rows] == ["Rachel", "Rachel", ""], out["status"]
    out = c.bulk(sid, 0, VIEW, "Monica", "", "", "Ross", request=REQ)     # nobody of that name
    assert "✖" in out["status"] and "speaker" in out["status"]




def test_an_audio_only_file_plays_over_its_waveform(tmp_path, three_sentences_wav):
    """Not an empty dark box: the player's picture is the file's waveform (bright where speech is)."""
    import numpy as np
    from core import media
    from webapp import media_prep
    staged = media_prep.stage(three_sentences_wav[0], tmp_path / "media")
    assert staged.playable.suffix == ".mp4" and media.probe(staged.playable).has_video
    frame = media.read_frames(staged.playable, [1.0])[0].astype(float)
    bright = (frame.mean(axis=2) > 90).mean(axis=0)          # share of bright pixels in each column
    assert frame.std() > 20 and bright.max() > 0.1, frame.std()
    speech, pause = bright[: len(bright) // 8].max(), bright.min()
    assert speech > pause                                     # taller where the speech is than in a pause


def test_import_with_its_video_runs_the_model_and_keeps_the_labels(models, talking_video, tmp_path):
    from webapp.service import ModelHolder, Workbench
    wb = Workbench(ModelHolder(models=models), tmp_path / "data")
    csv_path = tmp_path / "two.csv"
    csv_path.write_text("Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,StartTime,EndTime\n"
                        'Kids are talking by the door,Ann,anger,negative,9,0,"0:00:00,300","0:00:02,600"\n'
                        'The weather is lovely this morning,Bob,joy,positive,9,1,"0:00:04,000","0:00:06,500"\n'
                        'No times here,Bob,fear,negative,9,2,,\n', encoding="utf-8")
    (session,), _ = wb.import_csv(csv_path, talking_video, owner="me", run_model=True)
    rows = session.rows
    assert [r.emotion for r in rows] == ["anger", "joy", "fear"]            # the annotation is the CSV's
    assert not any(r.corrected for r in rows)
    assert all(len(r.emotion_probs) == 7 and r.confidence for r in rows[:2]) and not rows[2].emotion_probs
    faces = [o for o in rows[0].opinions if o["modality"] == "face"]
    assert faces and faces[0]["present"]                                   # the face was read
    assert "read 2 row(s)" in session.message and "1 row(s) without times" in session.message
    assert "Imported label" in views.detail_markdown(session, 0) and "Fused" in views.detail_markdown(session, 0)
    (plain,), _ = wb.import_csv(csv_path, None, owner="me", run_model=True)   # no video: nothing to read
    assert not any(r.emotion_probs for r in plain.rows)


def test_subtitles_sit_above_the_controls_and_empty_sessions_are_marked():
    text = vtt_text(make_session())
    assert "00:00:00.000 --> 00:00:02.000 line:78%" in text        # not at the bottom, under the controls
    listed = views.session_choices([{"updated": 0, "title": "silence.mp4", "n_rows": 0, "n_corrected": 0, "id": "a"},
                                    {"updated": 0, "title": "talk.mp4", "n_rows": 3, "n_corrected": 1, "id": "b"}])
    assert "empty: no speech" in listed[0][0] and "3 utt. · 1 corrected" in listed[1][0]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_an_import_without_media_says_what_is_missing(handlers, tmp_path):
    h, c, sid = handlers
    csv_path = tmp_path / "one.csv"
    csv_path.write_text("Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,StartTime,EndTime\n"
                        'Hello,Ann,joy,positive,4,0,"0:00:01,000","0:00:02,000"\n', encoding="utf-8")
    out = h.import_csv(str(csv_path), None, True, VIEW, request=REQ, progress=lambda *a, **k: None)
    assert "Imported 1 row(s)" in out["status"] and "No video or audio was given" in out["status"]
    assert out["table"].iloc[0]["emotion"] == "joy"


def test_a_label_pair_meld_never_has_is_flagged_and_never_blocks_an_export():
    """The heads are read apart, so a row can read "anger · positive"; an annotator who changes the
    emotion may leave the sentiment as it was. MELD never pairs them: the row's notes, the "with a
    problem" view and the detail say so; the export is not held up (a warning, not an error)."""
    s = set_field(make_session(), 1, "emotion", "anger")           # joy/positive rows: now anger/positive
    issues = checks.label_pairs(s)
    assert [(i.position, i.kind) for i in issues] == [(1, "pair")]
    assert "MELD never pairs anger with positive (it has negative)" in views.table_frame(s).iloc[1]["notes"]
    assert "⚠" not in views.table_frame(s).iloc[0]["notes"]
    assert views.visible_positions(s, views.TableView(state="problems")) == [1]
    annotator = next(line for line in views.detail_markdown(s, 1).splitlines() if "Annotator" in line)
    assert "MELD never pairs anger with positive" in annotator
    assert not checks.export_problems(s) and to_meld_rows(s)[1].emotion == "anger"
    fixed = set_field(s, 1, "sentiment", "negative")
    assert not checks.label_pairs(fixed) and "MELD never" not in views.detail_markdown(fixed, 1)
    for emotion, sentiment, flagged in (("surprise", "negative", False), ("surprise", "positive", False),
                                        ("surprise", "neutral", True), ("neutral", "positive", True),
                                        ("sadness", "negative", False), ("joy", "negative", True)):
        row = set_field(set_field(make_session(), 0, "emotion", emotion), 0, "sentiment", sentiment)
        assert bool(checks.label_pairs(row)) is flagged, (emotion, sentiment)


def test_every_label_pair_in_meld_train_passes_the_pair_check():
    from core.labels import unusual_pair
    train = Path(__file__).resolve().parents[2] / "shared" / "data" / "meld" / "train_sent_emo.csv"
    if not train.is_file():
        pytest.skip(f"MELD train labels not found at {train}")
    import pandas as pd
    pairs = pd.read_csv(train, usecols=["Emotion", "Sentiment"]).drop_duplicates()
    assert len(pairs) == 8 and all(unusual_pair(e, s) == "" for e, s in pairs.itertuples(index=False))
    assert unusual_pair("anger", "positive") and unusual_pair("", "positive") == "" and unusual_pair("anger", "") == ""


def test_the_detail_says_in_plain_words_what_decided():
    s = make_session()
    s.rows[0].opinions = [
        {"modality": "text", "present": True, "used_in_fusion": True, "emotion_probs": [0, 0, 0, 0, 1, 0, 0]},
        {"modality": "audio", "present": True, "used_in_fusion": True, "emotion_probs": [1, 0, 0, 0, 0, 0, 0]},
        {"modality": "face", "present": True, "used_in_fusion": False, "emotion_probs": [0, 0, 0, 1, 0, 0, 0]}]
    text = views.detail_markdown(s, 0)
    assert "**Decided from** the words and the voice." in text
    assert "The voice says **anger**, the words say **neutral**." in text


def test_the_detail_says_when_an_unfamiliar_voice_counted_less_or_not_at_all():
    s = make_session()
    text = {"modality": "text", "present": True, "used_in_fusion": True, "emotion_probs": [0, 0, 0, 1, 0, 0, 0]}
    voice = {"modality": "audio", "present": True, "used_in_fusion": True, "emotion_probs": [1, 0, 0, 0, 0, 0, 0],
             "fusion_share": 0.41, "note": "sounds unlike the voices it learned from: counted at 41%"}
    s.rows[0].opinions = [text, voice]
    shown = views.detail_markdown(s, 0)
    assert "The voice counted at 41% of its weight: it sounds unlike the voices the voice model learned from" in shown
    voice_row = next(line for line in shown.splitlines() if line.startswith("| Voice"))
    assert "counted at 41%" in voice_row and "**anger**" in voice_row      # its own opinion is still shown
    s.rows[0].opinions = [text, {**voice, "used_in_fusion": False, "fusion_share": 0.0}]
    shown = views.detail_markdown(s, 0)
    assert "**Decided from** the words." in shown and "The voice was set aside" in shown
    assert "The voice says **anger**" not in shown        # it did not take part
    s.rows[0].opinions = [text, {**voice, "fusion_share": 1.0}]
    assert "counted" not in views.decided_line(s.rows[0].opinions)


def test_a_long_session_is_shown_a_page_at_a_time_around_the_selection():
    """20,000 rows redrawn on every edit took seconds (18 s for the chart alone): the table lists the
    page of 500 holding the selected row and the chart draws the 300 utterances around it."""
    from webapp import charts, views
    session = make_session(1200, duration=4000.0)
    frame, info = views.table_page(session, views.TableView(), 700)
    assert len(frame) == views.TABLE_PAGE and frame["id"].iloc[0] == "500"
    assert f"{views.SELECTED_MARK}700" in set(frame["id"]) and "rows 501–1000" in info
    small, small_info = views.table_page(make_session(5), views.TableView(), 2)
    assert len(small) == 5 and "rows" not in small_info
    assert views.shown_positions(session, views.TableView(), 700) == list(range(500, 1000))
    fig = charts.timeline(session, 650)
    ids = {d[0] for trace in fig.data if trace.customdata is not None for d in trace.customdata}
    assert ids == set(range(600, 900))
    assert any("600–899 of 1200" in a.text for a in fig.layout.annotations)


def test_with_no_utterance_selected_every_editor_field_is_emptied_as_gradio_applies_it(handlers):
    """The editor's fields are cleared when no row is selected (a new session with no speech). One
    update dict had been shared by four fields, and Gradio pops its "value" as it applies it, so
    only the first was cleared: after a silent video the editor still showed the previous
    video's text, end time and split point (seen in the browser). Applied here by Gradio's own
    function, field after field as it walks the outputs."""
    import gradio as gr
    from gradio.blocks import postprocess_update_dict
    h, _, _ = handlers
    out = h.r.editor(None, None)
    for name in ["ed_start", "ed_end", "ed_text", "split_at", "ed_speaker"]:
        applied = postprocess_update_dict(gr.Textbox(), out[name], postprocess=False)
        assert applied.get("value") == "", (name, applied)
