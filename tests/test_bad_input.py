"""Bad input gives a one-line message or a plain 'no speech' result, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core import pipeline
from core.media import MediaError
from tests import mediagen


def _one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message


@pytest.fixture(scope="module")
def bad(media_dir, talking_video):
    d = media_dir / "bad"
    d.mkdir(exist_ok=True)
    return {
        "empty": mediagen.empty_file(d / "empty.mp4"),
        "text": mediagen.text_file_named(d / "notes.mp4"),
        "truncated": mediagen.truncated_copy(talking_video, d / "truncated.mp4"),
    }


@pytest.mark.parametrize("kind", ["empty", "text", "truncated"])
def test_unreadable_files_raise_one_line(bad, models, kind):
    with pytest.raises(MediaError) as err:
        pipeline.analyze(bad[kind], models)
    _one_line(str(err.value))


def test_video_without_audio_track_says_no_speech(media_dir, models):
    video = mediagen.testsrc_video(media_dir / "noaudio.mp4", seconds=2)
    result = pipeline.analyze(video, models)
    assert result.utterances == [] and "no audio track" in result.message


def test_silent_video_says_no_speech(media_dir, models):
    video = mediagen.testsrc_video(media_dir / "silent.mp4", seconds=3, silent=True)
    result = pipeline.analyze(video, models)
    assert result.utterances == [] and result.message.startswith(pipeline.NO_SPEECH)


def test_speech_only_on_a_second_audio_track_is_named_in_the_message(media_dir, three_sentences_wav, models):
    """A recording with a silent first track and the voice on the second (a screen recorder's
    system sound and microphone): the user is told why nothing was heard and what to do."""
    wav, _ = three_sentences_wav
    two = media_dir / "two_tracks.mp4"
    mediagen.ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-f", "lavfi", "-i",
                    "anullsrc=r=16000:cl=mono", "-i", str(wav), "-map", "0:v", "-map", "1:a", "-map", "2:a",
                    "-t", "3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(two))
    result = pipeline.analyze(two, models, use_cache=False)
    assert result.media.audio_tracks == 2
    assert result.utterances == [] and result.message.startswith(pipeline.NO_SPEECH)
    assert "2 audio tracks" in result.message and "first" in result.message
    _one_line(result.message)


def test_one_frame_video(media_dir, models):
    video = mediagen.one_frame_video(media_dir / "oneframe.mp4")
    result = pipeline.analyze(video, models)
    assert result.utterances == [] and result.message.startswith(pipeline.NO_SPEECH)


def test_cli_reports_bad_file_in_one_line(bad):
    proc = subprocess.run([sys.executable, "-m", "core", "analyze", str(bad["text"])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
