"""The model picker (issue #5): the shipped checkpoint and every checkpoint folder copied into the
data folder's models/ are listed with their cards; picking one makes the next analysis use it
(sessions analysed before keep theirs); a broken folder is listed with its problem and picking it
keeps the model in use. Through the Workbench, the page's handlers and gradio_client."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core import checkpoint as ck
from core.checkpoint import save_checkpoint, untrained
from core.model import ModelConfig
from webapp import checkpoints
from webapp.service import ModelError, ModelHolder, Workbench

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
    assert f"Dev weighted F1:** emotion {dev['emotion_weighted_f1']:.2f}" in shipped


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
        assert TINY in out["banner"] and "Switched" in out["status"]

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
        assert listing["shipped"]["current"] and listing["shipped"]["trained_modalities"] == ["text"]
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
