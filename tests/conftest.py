"""Shared fixtures: generated media (never committed) and models loaded once per test session."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from tests import mediagen

# Analyses cached by earlier runs (or by older code) must never make a test pass: a fresh cache per run.
os.environ["WORKBENCH_ANALYSIS_CACHE"] = tempfile.mkdtemp(prefix="analysis_cache_")

THREE_SENTENCES = ["Kids are talking by the door.",
                   "The weather is lovely this morning.",
                   "Please close the window before you leave."]


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def three_sentences_wav(media_dir):
    if not mediagen.have_espeak():
        pytest.fail("espeak-ng is required for the speech tests: apt-get install espeak-ng")
    return mediagen.speech_with_pauses(THREE_SENTENCES, media_dir / "three.wav", pause=1.5)


@pytest.fixture(scope="session")
def talking_video(media_dir, three_sentences_wav):
    """A smiling face (skimage astronaut) looped under three spoken sentences."""
    wav, _ = three_sentences_wav
    return mediagen.talking_video(wav, media_dir / "talking.mp4", size="640x360")


@pytest.fixture(scope="session")
def models():
    from core.pipeline import load_models
    return load_models()


@pytest.fixture
def isolated_copy(tmp_path):
    """Copy a file into a fresh folder, so a test can check nothing is written beside it."""
    def copy(src):
        dst = tmp_path / "in" / src.name
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(src, dst)
        return dst
    return copy
