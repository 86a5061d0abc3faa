"""The annotation workbench: session edits, autosave, MELD export/import, and the app end to end
through gradio_client (upload → analyse → change a label → export → the CSV reloads with it)."""

from __future__ import annotations

import sqlite3
import zipfile
from pathlib import Path

import pytest

from core.labels import EMOTIONS
from tests.serving import start_workbench
from core.meld import COLUMNS, read_meld_csv
from webapp import charts, export, importer, paths, views
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
    frame = views.table_frame(s)
    assert list(frame.columns) == ["id", "start", "end", "speaker", "text", "emotion", "sentiment",
                                   "confidence", "edited"]
    assert frame.iloc[2]["edited"] == "✎ sentiment" and frame.iloc[0]["edited"] == ""
    assert "Annotator" in views.detail_markdown(s, 2)
    assert "untrained" in views.model_banner({"trained": False})
    banner = views.model_banner({"name": "meld-text", "trained": True, "trained_modalities": ["text"],
                                 "metrics": {"dev": {"emotion_weighted_f1": 61.2}}})
    assert "trained on **text**" in banner and "face" in banner and "61.2" in banner


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
    frame = views.problems_frame(first.problems)
    assert set(frame.columns) == {"row", "column", "problem"} and len(frame) >= 5
    assert to_meld_rows(first)[2].end == 5.0


# ------------------------------------------------------------------ the page's handlers (no browser)

@pytest.fixture
def handlers(tmp_path):
    from webapp.handlers import Handlers, Page
    from webapp.service import ModelHolder, Workbench
    wb = Workbench(ModelHolder(), tmp_path / "data")
    page = Page(**{name: name for name in Page.__dataclass_fields__})   # components stand-ins
    session = wb.store.create(make_session())
    return Handlers(wb, page), session.id


def _value(update):
    return update.get("value") if isinstance(update, dict) else update


@pytest.mark.filterwarnings("ignore:Reverted:UserWarning")
def test_handlers_save_valid_corrections_and_revert_invalid_ones(handlers):
    import pandas as pd
    h, sid = handlers
    out = h.field("emotion")(sid, 0, "furious")
    assert "Reverted" in out["status"] and _value(out["ed_emotion"]) == "joy"
    out = h.field("emotion")(sid, 0, "anger")
    assert "Saved" in out["status"] and h.wb.store.load(sid).rows[0].emotion == "anger"
    assert out["table"].iloc[0]["edited"] == "✎ emotion"

    frame = views.table_frame(h.wb.store.load(sid))
    frame.loc[1, "sentiment"], frame.loc[2, "speaker"] = "great", "Zoe"
    out = h.table_edit(sid, 0, frame)
    stored = h.wb.store.load(sid)
    assert stored.rows[2].speaker == "Zoe" and stored.rows[1].sentiment == "positive"
    assert "Reverted" in out["status"] and out["table"].iloc[1]["sentiment"] == "positive"
    out = h.table_edit(sid, 0, pd.concat([frame, frame.tail(1)]))   # a stale table: nothing applied
    assert "out of date" in out["status"]

    h.split(sid, 1, "4.0")
    assert len(h.wb.store.load(sid).rows) == 4
    h.merge(sid, 1)
    h.add(sid, 2)
    assert [r.ops for r in h.wb.store.load(sid).rows][3] == ["added"]
    h.delete(sid, 0)
    assert len(h.wb.store.load(sid).rows) == 3
    h.undo(sid, None)
    assert len(h.wb.store.load(sid).rows) == 4

    restored = h.load(sid)                         # a page reload
    assert "Restored" in restored["status"] and restored["remembered"] == sid
    assert h.load("0123456789abcdef")["sid"] == ""  # unknown session: a blank page, no error


# ------------------------------------------------------------------ the app, through gradio_client

@pytest.fixture(scope="module")
def app(models, tmp_path_factory):
    demo, wb = start_workbench(models, tmp_path_factory.mktemp("workbench-data"))
    yield demo, wb
    demo.close()


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client
    return Client(app[0].local_url, verbose=False)


def test_api_analyse_correct_export_reload(app, client, talking_video, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/analyze", "/edit", "/export", "/export_zip", "/import_meld", "/sessions"} <= set(endpoints)

    session_id, rows = client.predict(handle_file(str(talking_video)), api_name="/analyze")
    assert len(rows) == 3 and rows[0]["text"]
    target = next(e for e in ("anger", "sadness") if e != rows[1]["emotion"])
    rows = client.predict(session_id, 1, "emotion", target, api_name="/edit")
    assert rows[1]["emotion"] == target and rows[1]["corrected"] == ["emotion"]
    with pytest.raises(AppError, match="not an emotion"):
        client.predict(session_id, 1, "emotion", "furious", api_name="/edit")

    csv_file = client.predict(session_id, api_name="/export")
    table = read_meld_csv(csv_file)
    assert table.ok, table.problems
    assert [r.emotion for r in table.rows][1] == target
    assert [r.utterance_id for r in table.rows] == [0, 1, 2]
    assert len({r.dialogue_id for r in table.rows}) == 1

    zip_file = client.predict(session_id, api_name="/export_zip")
    names = zipfile.ZipFile(zip_file).namelist()
    dialogue = table.rows[0].dialogue_id
    assert sorted(n.rsplit("/", 1)[-1] for n in names if n.endswith(".mp4")) == \
        [f"dia{dialogue}_utt{u}.mp4" for u in range(3)]

    # a server restart: a new workbench over the same data folder has the correction
    from webapp.service import Workbench
    again = Workbench(app[1].holder, app[1].root)
    assert again.store.load(session_id).rows[1].emotion == target
    assert session_id in [s["id"] for s in client.predict(api_name="/sessions")]


def test_api_import_reports_problems(client, tmp_path):
    from gradio_client import handle_file
    csv_path = tmp_path / "messy.csv"
    csv_path.write_bytes(MESSY.encode("utf-8"))
    ids, problems = client.predict(handle_file(str(csv_path)), None, api_name="/import_meld")
    assert len(ids) == 2 and any("happy" in p for p in problems)
    rows = client.predict(ids[0], api_name="/session")
    assert len(rows) == 3 and rows[0]["text"] == "I’m fine"


def test_api_import_with_video_cuts_clips_at_the_csv_times(client, talking_video, tmp_path):
    from gradio_client import handle_file
    from core.media import probe
    csv_path = tmp_path / "two.csv"
    csv_path.write_text("Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,StartTime,EndTime\n"
                        'Kids are talking,Ann,joy,positive,9,0,"0:00:00,400","0:00:02,400"\n'
                        'Lovely weather,Bob,neutral,neutral,9,1,"0:00:04,000","0:00:06,000"\n', encoding="utf-8")
    ids, problems = client.predict(handle_file(str(csv_path)), handle_file(str(talking_video)),
                                   api_name="/import_meld")
    assert len(ids) == 1 and all("Season" in p or "Episode" in p or "Sr No." in p for p in problems)
    rows = client.predict(ids[0], 1, "end", "6.5", api_name="/edit")
    assert rows[1]["end"] == 6.5
    with zipfile.ZipFile(client.predict(ids[0], api_name="/export_zip")) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".mp4"))
        assert [n.rsplit("/", 1)[-1] for n in names] == ["dia9_utt0.mp4", "dia9_utt1.mp4"]
        z.extract(names[1], tmp_path)
    assert abs(probe(tmp_path / names[1]).duration - 2.5) < 0.2     # cut at the corrected end


@pytest.mark.parametrize("kind", ["empty", "text", "truncated"])
def test_bad_files_get_one_line_errors_and_the_server_keeps_serving(client, talking_video, tmp_path, kind):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from tests import mediagen
    bad = {"empty": lambda: mediagen.empty_file(tmp_path / "empty.mp4"),
           "text": lambda: mediagen.text_file_named(tmp_path / "notes.mp4"),
           "truncated": lambda: mediagen.truncated_copy(Path(talking_video), tmp_path / "cut.mp4")}[kind]()
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(bad)), api_name="/analyze")
    message = str(err.value)
    assert message and "\n" not in message and "Traceback" not in message
    assert isinstance(client.predict(api_name="/sessions"), list)
