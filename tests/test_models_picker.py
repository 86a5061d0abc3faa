"""The model picker (issue #5): the shipped checkpoint and every checkpoint folder copied into the
data folder's models/ are listed with their cards; picking one makes the next analysis use it
(sessions analysed before keep theirs); a broken folder is listed with its problem and picking it
keeps the model in use. Through the Workbench, the page's handlers and gradio_client.

Who may switch (--allow-model-switch, switch_policy.py): the decision for each case; when it is off,
the page shows the cards read-only and /use_model answers one line, the model in use unchanged; an
allowed switch counts against the per-user rate limit. These use stand-in models (no weights loaded)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from core import checkpoint as ck
from core.checkpoint import save_checkpoint, untrained
from core.model import ModelConfig
from webapp import checkpoints
from webapp import switch_policy as sp
from webapp.ratelimit import RateLimited, RateLimiter
from webapp.service import ModelError, ModelHolder, SwitchRefused, Workbench

TINY = "tiny-retrained"


def make_checkpoint(folder: Path, name: str = TINY) -> Path:
    """A tiny checkpoint (random weights) whose card reads like a retrained one."""
    ckpt = untrained(ModelConfig(hidden=16, fusion=32))
    card = ckpt.card
    card.name, card.trained_modalities = name, ["text", "audio"]
    card.data = {"train": {"rows": 120}, "dev": {"rows": 30}}
    card.metrics = {"dev": {"emotion_weighted_f1": 41.5, "sentiment_weighted_f1": 52.25}}
    card.notes = "Retrained on exported clips in a test."
    return save_checkpoint(folder, ckpt.model, card)


def add_broken(models_dir: Path) -> None:
    """Three ways a copied folder goes wrong: bad JSON, pickled weights, weights not matching the card."""
    (models_dir / "bad-json").mkdir()
    (models_dir / "bad-json" / "card.json").write_text("{not json", encoding="utf-8")
    pickled = models_dir / "pickled"
    make_checkpoint(pickled, "pickled")
    (pickled / "model.safetensors").rename(pickled / "model.pt")
    mismatch = make_checkpoint(models_dir / "mismatch", "mismatch")
    card = json.loads((mismatch / "card.json").read_text())
    card["model"]["hidden"] = 24
    (mismatch / "card.json").write_text(json.dumps(card))
    (models_dir / "notes").mkdir()                               # not a checkpoint at all: ignored


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("picker-data")
    make_checkpoint(root / "models" / "tiny")
    add_broken(root / "models")
    return root


# ------------------------------------------------------------------ listing and cards (no model loaded)

def test_listing_finds_shipped_and_copied_checkpoints(shared_data):
    wb = Workbench(ModelHolder(), shared_data)
    entries = {e.key: e for e in wb.checkpoints()}
    assert list(entries)[0] == "shipped" and "shipped" in entries["shipped"].label
    assert {"models/tiny", "models/bad-json", "models/pickled", "models/mismatch"} <= set(entries)
    assert "models/notes" not in entries
    assert entries["models/tiny"].usable and TINY in entries["models/tiny"].label
    assert "not a valid card" in entries["models/bad-json"].problem
    assert "pickled weights are refused" in entries["models/pickled"].problem
    assert str(shared_data) not in entries["models/bad-json"].problem     # no server paths shown
    assert wb.current_model() == "shipped"


def test_card_summary_is_readable(shared_data):
    entry = checkpoints.find(Workbench(ModelHolder(), shared_data).checkpoints(), "models/tiny")
    text = checkpoints.card_markdown(entry)
    for needle in (TINY, "Trained on:** text, audio", "train 120 rows", "dev 30 rows", "emotion 41.5",
                   "sentiment 52.2", "Created:** 20", "Retrained on exported clips"):
        assert needle in text, needle
    facts = entry.to_dict()
    assert facts["metrics"]["dev"] == {"emotion_weighted_f1": 41.5, "sentiment_weighted_f1": 52.25}
    assert facts["rows"] == {"train": 120, "dev": 30} and facts["trained_modalities"] == ["text", "audio"]
    shipped = checkpoints.card_markdown(checkpoints.find(Workbench(ModelHolder(), shared_data).checkpoints(),
                                                         "shipped"))
    dev = ck.read_card(ck.DEFAULT_CHECKPOINT).metrics["dev"]
    assert "Trained on:** text" in shipped
    gate = ck.read_card(ck.DEFAULT_CHECKPOINT).data["voice"]["familiarity"]
    assert (f"Voice:** counted fully up to familiarity distance {gate['full']:.2f}, not at all from "
            f"{gate['none']:.2f}") in shipped
    assert "Voice:**" not in text                        # a card without the gate says nothing about it
    assert f"Dev weighted F1:** emotion {dev['emotion_weighted_f1']:.2f}" in shipped


def test_other_shipped_checkpoints_are_listed_after_the_default(tmp_path, monkeypatch):
    """assets/model-NAME (e.g. the faster MiniLM text model beside the default) is offered as
    shipped/NAME; a folder there without a card is not a checkpoint."""
    assets = tmp_path / "assets"
    make_checkpoint(assets / "model", "default-model")
    make_checkpoint(assets / "model-fast", "fast-model")
    (assets / "model-empty").mkdir()
    monkeypatch.setattr(checkpoints, "DEFAULT_CHECKPOINT", assets / "model")
    entries = checkpoints.scan(tmp_path / "no-models-folder")
    assert [e.key for e in entries] == ["shipped", "shipped/fast"]
    assert entries[1].usable and "fast-model" in entries[1].label and "shipped/fast" in entries[1].label
    assert "shipped with the app (`assets/model-fast`)" in checkpoints.card_markdown(entries[1])
    assert "(`assets/model`)" in checkpoints.card_markdown(entries[0])


def test_a_checkpoint_given_elsewhere_is_listed_once(shared_data, tmp_path):
    elsewhere = make_checkpoint(tmp_path / "elsewhere", "cli-model")
    keys = [e.key for e in Workbench(ModelHolder(str(elsewhere)), shared_data).checkpoints()]
    assert keys.count("checkpoint") == 1
    inside = Workbench(ModelHolder(str(shared_data / "models" / "tiny")), shared_data)
    assert "checkpoint" not in [e.key for e in inside.checkpoints()]
    assert inside.current_model() == "models/tiny"


# ------------------------------------------------------------------ switching (real models)

@pytest.fixture(scope="module")
def wb(models, shared_data):
    return Workbench(ModelHolder(models=models), shared_data)


@pytest.mark.parametrize("key", ["models/bad-json", "models/pickled", "models/mismatch", "../../etc", ""])
def test_a_broken_checkpoint_keeps_the_model_in_use(wb, key):
    before = wb.holder.get()
    with pytest.raises(ModelError) as err:
        wb.use_model(key)
    assert "kept" in str(err.value) and "\n" not in str(err.value) and str(wb.root) not in str(err.value)
    assert wb.holder.get() is before and wb.current_model() == "shipped"


def test_picking_a_checkpoint_makes_the_next_analysis_use_it(wb, models, talking_video):
    first = wb.analyze(talking_video)
    assert first.model["name"] == models.card.name and first.rows
    wb.use_model("models/tiny")
    try:
        assert wb.holder.get().card.name == TINY and wb.current_model() == "models/tiny"
        assert wb.holder.get().whisper_name == models.whisper_name
        second = wb.analyze(talking_video)               # same file: the cache is keyed by the model too
        assert second.model["name"] == TINY and second.model["trained_modalities"] == ["text", "audio"]
        assert len(second.rows) == len(first.rows)
        kept = wb.store.load(first.id)                   # the earlier session keeps its model's results
        assert kept.model["name"] == models.card.name
        assert [r.emotion_probs for r in kept.rows] == [r.emotion_probs for r in first.rows]
        assert [r.emotion_probs for r in second.rows] != [r.emotion_probs for r in first.rows]
    finally:
        wb.use_model("shipped")                          # back to the shipped model for the next tests


@pytest.mark.filterwarnings("ignore:mismatch could not be loaded:UserWarning")
def test_page_handlers_switch_and_refuse(wb, models, shared_data):
    from webapp.model_picker import Picker, PickerHandlers
    h = PickerHandlers(wb, Picker("choice", "refresh", "card", "status"), "banner")
    progress = lambda *a, **k: None
    try:
        out = h.select("models/mismatch", None, progress)
        assert out["choice"]["value"] == "shipped" and "⚠" in out["status"] and "kept" in out["status"]
        assert "banner" not in out                        # nothing changed
        out = h.select("models/tiny", None, progress)
        assert out["choice"]["value"] == "models/tiny" and TINY in out["card"] and "in use" in out["card"]
        assert "decided from" in out["banner"] and "Switched" in out["status"]   # the card names the model

        shutil.copytree(shared_data / "models" / "tiny", shared_data / "models" / "tiny-copy")
        out = h.refresh()                                 # a checkpoint copied in appears on re-scan
        assert "models/tiny-copy" in [key for _, key in out["choice"]["choices"]]
        assert out["choice"]["value"] == "models/tiny"
    finally:
        shutil.rmtree(shared_data / "models" / "tiny-copy", ignore_errors=True)
        wb.use_model("shipped")


# ------------------------------------------------------------------ the API, through gradio_client

def test_api_lists_and_switches_models(models, shared_data, talking_video):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from tests.serving import start_workbench
    demo, server_wb = start_workbench(models, shared_data)
    try:
        client = Client(demo.local_url, verbose=False)
        listing = {m["key"]: m for m in client.predict(api_name="/models")}
        shipped_card = ck.read_card(ck.DEFAULT_CHECKPOINT)          # what the shipped card says
        assert listing["shipped"]["current"] and listing["shipped"]["trained_modalities"] == shipped_card.trained_modalities
        assert listing["models/tiny"]["metrics"]["dev"]["emotion_weighted_f1"] == 41.5
        assert not listing["models/pickled"]["usable"] and listing["models/pickled"]["problem"]

        with pytest.raises(AppError, match="kept"):
            client.predict("models/mismatch", api_name="/use_model")
        with pytest.raises(AppError, match="no checkpoint"):
            client.predict("/etc", api_name="/use_model")
        assert server_wb.holder.get() is models

        now = client.predict("models/tiny", api_name="/use_model")
        assert now["key"] == "models/tiny" and now["current"] and now["name"] == TINY
        assert [m["key"] for m in client.predict(api_name="/models") if m["current"]] == ["models/tiny"]
        session_id, rows = client.predict(handle_file(str(talking_video)), api_name="/analyze")
        assert rows and server_wb.store.load(session_id).model["name"] == TINY
    finally:
        demo.close()


# ------------------------------------------------------------------ who may switch (no weights loaded)

@pytest.mark.parametrize("mode, host, auth, shared, allowed", [
    ("auto", "127.0.0.1", False, False, True),
    ("auto", "localhost", False, False, True),
    ("auto", "LocalHost ", False, False, True),
    ("auto", "::1", False, False, True),
    ("auto", "[::1]", False, False, True),
    ("auto", "0.0.0.0", False, False, False),          # a public Space
    ("auto", "::", False, False, False),
    ("auto", "192.168.1.20", False, False, False),
    ("auto", "", False, False, False),                 # not known to be local
    ("auto", None, False, False, False),
    ("auto", "0.0.0.0", True, False, True),            # visitors must log in
    ("auto", "127.0.0.1", False, True, False),         # a share link makes a local server public
    ("auto", "127.0.0.1", True, True, True),
    ("yes", "0.0.0.0", False, False, True),
    ("no", "127.0.0.1", True, False, False),
])
def test_switch_policy(mode, host, auth, shared, allowed):
    policy = sp.decide(mode, host, auth, shared)
    assert policy.allowed is allowed and policy.why
    if allowed:
        assert policy.refusal == ""
    else:
        assert policy.refusal.startswith("Switching models is off on this server (") and "\n" not in policy.refusal


def test_switch_policy_texts_and_configuration(monkeypatch):
    public = sp.decide("auto", "0.0.0.0", auth=False)
    assert public.refusal == ("Switching models is off on this server (public, no --auth): "
                              "start it with --allow-model-switch yes")
    assert sp.decide("no", "127.0.0.1", auth=False).refusal == \
        "Switching models is off on this server (--allow-model-switch no)"
    monkeypatch.delenv(sp.ENV, raising=False)
    assert sp.mode_from_env() == "auto"
    monkeypatch.setenv(sp.ENV, " NO ")
    assert sp.mode_from_env() == "no" and sp.mode_from_env("yes") == "yes"     # the flag wins
    monkeypatch.setenv(sp.ENV, "maybe")
    with pytest.raises(ValueError, match=sp.ENV):
        sp.mode_from_env()
    with pytest.raises(ValueError, match="auto, yes, no"):
        sp.decide("sometimes", "127.0.0.1", auth=False)


def test_app_refuses_a_bad_setting_before_starting():
    env = {**os.environ, sp.ENV: "maybe"}
    proc = subprocess.run([sys.executable, "app.py"], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"${sp.ENV}='maybe' is not one of auto, yes, no" in proc.stderr


def stand_in(folder: Path = ck.DEFAULT_CHECKPOINT) -> SimpleNamespace:
    """What ModelHolder needs of loaded models, without loading any weights."""
    return SimpleNamespace(card=ck.read_card(folder), whisper_name="base", language="en", device="cpu")


@pytest.fixture
def no_loading(monkeypatch):
    """A switch "loads" stand-ins; `loaded` lists the folders asked for."""
    loaded: list[str] = []
    def fake_load(folder, **kwargs):
        loaded.append(Path(folder).name)
        return stand_in(Path(folder))
    monkeypatch.setattr("webapp.service.load_models", fake_load)
    return loaded


PUBLIC = sp.decide("auto", "0.0.0.0", auth=False)
ANN = SimpleNamespace(username=None, client=SimpleNamespace(host="203.0.113.1"), session_hash="s1")


def test_workbench_refuses_a_switch_when_off_and_counts_one_when_on(shared_data, no_loading):
    wb = Workbench(ModelHolder(models=stand_in()), shared_data, rate=RateLimiter(1), model_switch=PUBLIC)
    before = wb.holder.get()
    for _ in range(3):                                   # refused ones are not counted
        with pytest.raises(SwitchRefused, match="public, no --auth"):
            wb.use_model("models/tiny", user="ip:203.0.113.1")
    assert wb.holder.get() is before and wb.current_model() == "shipped" and no_loading == []
    wb.model_switch = sp.decide("yes", "0.0.0.0", auth=False)
    assert wb.use_model("models/tiny", user="ip:203.0.113.1").key == "models/tiny"
    with pytest.raises(RateLimited, match="Rate limit reached"):
        wb.use_model("shipped", user="ip:203.0.113.1")   # counted before any loading
    assert no_loading == ["tiny"] and wb.current_model() == "models/tiny"
    wb.use_model("shipped", user="ip:203.0.113.2")       # another user: unaffected
    assert wb.current_model() == "shipped"


def test_page_handler_is_read_only_when_switching_is_off(shared_data, no_loading):
    from webapp.model_picker import Picker, PickerHandlers
    wb = Workbench(ModelHolder(models=stand_in()), shared_data, model_switch=PUBLIC)
    before = wb.holder.get()
    h = PickerHandlers(wb, Picker("choice", "refresh", "card", "status"), "banner")
    loaded = h.on_load()
    assert "read-only" in loaded["choice"]["label"] and "Switching models is off" in loaded["status"]
    assert [key for _, key in loaded["choice"]["choices"]][:1] == ["shipped"]
    out = h.select("models/tiny", None, lambda *a, **k: None, ANN)
    assert out["choice"]["value"] == "shipped" and "read-only" in out["choice"]["label"]
    assert TINY in out["card"] and "in use" not in out["card"]          # its card, shown
    note = out["status"].splitlines()[0]
    assert "Switching models is off on this server (public, no --auth)" in note
    assert "--allow-model-switch yes" in note and "banner" not in out
    assert wb.holder.get() is before and wb.current_model() == "shipped" and no_loading == []


@pytest.mark.filterwarnings("ignore:Rate limit reached:UserWarning")
def test_page_handler_switch_counts_against_the_rate_limit(shared_data, no_loading):
    from webapp.model_picker import Picker, PickerHandlers
    wb = Workbench(ModelHolder(models=stand_in()), shared_data, rate=RateLimiter(1))
    h = PickerHandlers(wb, Picker("choice", "refresh", "card", "status"), "banner")
    progress = lambda *a, **k: None
    out = h.select("models/tiny", None, progress, ANN)
    assert out["choice"]["value"] == "models/tiny" and "Switched" in out["status"]
    assert "a switch counts as one" in out["status"] and "Checkpoint used" in out["choice"]["label"]
    out = h.select("shipped", None, progress, ANN)
    assert out["choice"]["value"] == "models/tiny" and "Rate limit reached" in out["status"]
    assert "banner" not in out and wb.current_model() == "models/tiny" and no_loading == ["tiny"]


def test_api_use_model_refused_when_off_allowed_when_on(shared_data, no_loading):
    from gradio_client import Client
    from gradio_client.exceptions import AppError
    from tests.serving import start_workbench
    models = stand_in()
    demo, server_wb = start_workbench(models, shared_data)
    server_wb.model_switch, server_wb.rate = PUBLIC, RateLimiter(1)
    try:
        ann = Client(demo.local_url, verbose=False, headers={"X-Forwarded-For": "203.0.113.1"})
        with pytest.raises(AppError) as err:
            ann.predict("models/tiny", api_name="/use_model")
        message = str(err.value)
        assert "Switching models is off on this server (public, no --auth)" in message
        assert "Traceback" not in message and "\n" not in message.strip()
        assert server_wb.holder.get() is models and no_loading == []
        assert [m["key"] for m in ann.predict(api_name="/models") if m["current"]] == ["shipped"]

        server_wb.model_switch = sp.decide("auto", "0.0.0.0", auth=True)
        now = ann.predict("models/tiny", api_name="/use_model")
        assert now["key"] == "models/tiny" and now["current"] and no_loading == ["tiny"]
        with pytest.raises(AppError, match="Rate limit reached"):
            ann.predict("shipped", api_name="/use_model")
        assert server_wb.current_model() == "models/tiny"
    finally:
        demo.close()
