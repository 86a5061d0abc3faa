"""Speech that is not English. Whisper is told to write English (the words model's language), so
French speech used to come out as invented English words with no sign that anything was wrong.
Now the language Whisper hears is kept with the analysis, the page and the CLI warn in one line,
and the user may have the words written in the language spoken. Real Whisper on espeak-ng speech."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from core import pipeline, transcribe
from core.types import Analysis, SpokenLanguage
from tests import mediagen

FRENCH = "Je suis tellement heureux de te voir aujourd'hui. C'est une journée magnifique, vraiment."
WARNING = "does not sound like English"


@pytest.fixture(scope="module")
def french_video(tmp_path_factory):
    if not mediagen.have_espeak():
        pytest.skip("needs espeak-ng")
    folder = tmp_path_factory.mktemp("french")
    wav = mediagen.speak(FRENCH, folder / "fr.wav", voice="fr")
    return mediagen.talking_video(wav, folder / "french.mp4")


def test_the_warning_names_the_language_and_spares_english():
    french = SpokenLanguage("fr", 0.89, 0.01)
    note = transcribe.language_note(french, "en")
    assert WARNING in note and "French (89%; English 1%)" in note and "English words" in note
    assert "The transcript is in French" in transcribe.language_note(french, None)
    assert transcribe.language_note(SpokenLanguage("en", 0.9, 0.9), "en") == ""
    # the least English-sounding English clip measured (a RAVDESS actor): Whisper's top guess German
    assert transcribe.language_note(SpokenLanguage("de", 0.45, 0.40), "en") == ""
    assert transcribe.language_note(None, "en") == ""            # an English-only Whisper says nothing


def test_english_speech_gets_no_warning(talking_video, models):
    analysis = pipeline.analyze(talking_video, models)
    assert analysis.language is not None and analysis.language.code == "en" and analysis.language.english > 0.5
    assert analysis.message == ""


def test_french_speech_is_flagged_and_can_be_written_in_french(french_video, models, tmp_path):
    told = pipeline.analyze(french_video, models, use_cache=False)
    assert told.language.code == "fr" and told.language.english < 0.3
    assert WARNING in told.message and "French" in told.message
    assert told.utterances and all(p.emotion for p in told.utterances)     # still analysed: nothing lost
    again = Analysis.from_dict(json.loads(json.dumps(told.to_dict())))     # kept with the analysis (and its cache)
    assert again.language == told.language and again.message == told.message

    heard = pipeline.analyze(french_video, models, any_language=True)
    words = " ".join(p.utterance.text for p in heard.utterances).lower()
    assert "tellement heureux" in words and "vraiment" in words, words       # the words as spoken
    assert "The transcript is in French" in heard.message
    cached = pipeline.analyze(french_video, models)                        # the cache keeps the two apart
    assert [p.utterance.text for p in cached.utterances] == [p.utterance.text for p in told.utterances]


def test_the_cli_warns_and_still_prints_the_table(french_video):
    proc = subprocess.run([sys.executable, "-m", "core", "analyze", str(french_video)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert WARNING in proc.stdout and "emotion" in proc.stdout and "0.00" in proc.stdout


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_page_says_it_in_the_status_line_and_the_box_writes_french(french_video, models, tmp_path):
    from webapp import owners, views
    from webapp.handlers import Handlers
    from webapp.render import Page, Renderer
    from webapp.service import ModelHolder, Workbench
    wb = Workbench(ModelHolder(models=models), tmp_path / "data")
    h = Handlers(Renderer(wb, Page(**{name: name for name in Page.__dataclass_fields__})))
    request = SimpleNamespace(username=None, cookies={owners.COOKIE: "a-browser-token-0123456789"}, headers={},
                              session_hash="page-1")
    quiet = dict(progress=lambda *a, **k: None)
    told = h.analyse(str(french_video), True, False, views.TableView(), request, **quiet)
    assert WARNING in told["status"] and "French" in told["status"], told["status"]
    heard = h.analyse(str(french_video), True, True, views.TableView(), request, **quiet)
    session = wb.store.load(heard["sid"])
    assert "heureux" in " ".join(r.text for r in session.rows).lower()
    assert "The transcript is in French" in heard["status"]
