"""core.media on real files made on the fly: every container, audio-only files, and broken input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from core import media
from core.media import MediaError
from tests import mediagen as mg

pytestmark = pytest.mark.skipif(not mg.have_espeak(), reason="needs espeak-ng")

D = 2.5                      # seconds of every generated test video
SRC = "testsrc=size=320x240:rate=25"


def _av(out: Path, speech: Path, vcodec: list[str], acodec: list[str], *extra: str) -> Path:
    """testsrc video under the speech track (padded with silence), exactly D seconds."""
    mg.ffmpeg("-f", "lavfi", "-i", SRC, "-i", str(speech), "-af", "apad", "-t", f"{D}",
              "-c:v", *vcodec, "-pix_fmt", "yuv420p", "-c:a", *acodec, *extra, str(out))
    return out


VP9 = ["libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"]
X264 = ["libx264", "-preset", "ultrafast"]


def _webm_without_duration(out: Path, speech: Path, vcodec: list[str] = VP9) -> Path:
    """A WebM written to a pipe, as a browser's MediaRecorder does: no duration, no cues."""
    # an output -t would let the muxer write the duration up front: limit the inputs instead
    padded = out.with_suffix(".padded.wav")
    mg.ffmpeg("-i", str(speech), "-af", "apad", "-t", f"{D}", str(padded))
    cmd = [mg.FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-t", f"{D}", "-i", SRC,
           "-i", str(padded), "-c:v", *vcodec, "-c:a", "libopus", "-f", "webm", "pipe:1"]
    with open(out, "wb") as f:
        subprocess.run(cmd, stdout=f, check=True)
    return out


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> dict[str, Path]:
    """All media the tests read, made once in a temp folder."""
    d = tmp_path_factory.mktemp("media")
    speech = mg.speak("Kids are talking by the door.", d / "speech.wav")
    files = {"speech_wav": speech}
    files["mp4"] = _av(d / "v.mp4", speech, X264, ["aac"])
    files["webm"] = _av(d / "v.webm", speech, VP9, ["libopus"])
    files["webm_nodur"] = _webm_without_duration(d / "nodur.webm", speech)
    files["webm_vp8_nodur"] = _webm_without_duration(
        d / "vp8.webm", speech, ["libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"])
    files["mov"] = _av(d / "v.mov", speech, X264, ["aac"])
    files["mkv"] = _av(d / "v.mkv", speech, X264, ["libopus"])
    files["avi"] = _av(d / "v.avi", speech, ["mpeg4", "-q:v", "5"], ["pcm_s16le"])
    for ext, codec in (("wav", "pcm_s16le"), ("mp3", "libmp3lame"), ("m4a", "aac")):
        files[ext] = d / f"a.{ext}"
        mg.ffmpeg("-i", str(speech), "-af", "apad", "-t", f"{D}", "-c:a", codec, str(files[ext]))
    files["silent"] = d / "silent.mp4"
    mg.ffmpeg("-f", "lavfi", "-i", SRC, "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono",
              "-t", f"{D}", "-c:v", *X264, "-pix_fmt", "yuv420p", "-c:a", "aac", str(files["silent"]))
    files["noaudio"] = d / "noaudio.mp4"
    mg.ffmpeg("-f", "lavfi", "-i", SRC, "-t", f"{D}", "-c:v", *X264, "-pix_fmt", "yuv420p",
              str(files["noaudio"]))
    files["red"] = d / "red.mp4"
    mg.ffmpeg("-f", "lavfi", "-i", "color=c=red:s=320x240:r=25", "-t", "1", "-c:v", *X264,
              "-pix_fmt", "yuv420p", str(files["red"]))
    # Frame N is a flat grey of luma 3*N: which frame came back can be read off its colour.
    files["index"] = d / "index.mp4"
    mg.ffmpeg("-f", "lavfi", "-i", "color=black:s=64x48:r=25,geq=lum='3*N':cb=128:cr=128",
              "-t", "3", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", str(files["index"]))
    return files


VIDEOS = ["mp4", "webm", "webm_nodur", "webm_vp8_nodur", "mov", "mkv", "avi"]
AUDIOS = ["wav", "mp3", "m4a"]


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


@pytest.mark.parametrize("kind", VIDEOS)
def test_video_containers(lib, kind):
    info = media.probe(lib[kind])
    assert info.has_video and info.has_audio
    assert abs(info.duration - D) < 0.1, info
    assert (info.width, info.height) == (320, 240)
    assert abs(info.fps - 25) < 0.01
    assert info.video_codec and info.audio_codec and info.audio_tracks == 1 and info.audio_start < 0.01   # (Opus: 6 ms of codec delay)

    audio = media.load_audio(lib[kind])
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / media.SAMPLE_RATE - D) < 0.1
    assert np.all(np.abs(audio) <= 1.0)
    assert _rms(audio[: 16000]) > 0.02           # the speech is in the first ~1.8 s
    assert _rms(audio[int(2.1 * 16000):]) < 0.01  # the padding is silent

    times = [0.2, 1.2, 2.3]
    frames = media.read_frames(lib[kind], times)
    assert frames.shape == (3, 240, 320, 3) and frames.dtype == np.uint8
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(frames[i].astype(int) - frames[j].astype(int)).mean() > 1.0


@pytest.mark.parametrize("kind", ["webm_nodur", "webm_vp8_nodur"])
def test_webm_without_duration_header(lib, kind):
    header = subprocess.run([mg.FFMPEG, "-hide_banner", "-i", str(lib[kind])],
                            capture_output=True, text=True).stderr
    assert "Duration: N/A" in header              # the test file really lacks it
    assert abs(media.probe(lib[kind]).duration - D) < 0.1
    late = media.read_frames(lib[kind], [2.2, 2.4])   # seeks without an index
    ref = media.read_frames(lib["webm"], [2.2, 2.4])
    assert np.abs(late.astype(int) - ref.astype(int)).mean() < 4


@pytest.mark.parametrize("kind", AUDIOS)
def test_audio_only(lib, kind):
    info = media.probe(lib[kind])
    assert info.has_audio and not info.has_video
    assert abs(info.duration - D) < 0.1, info
    audio = media.load_audio(lib[kind])
    assert abs(len(audio) / media.SAMPLE_RATE - D) < 0.1
    assert _rms(audio[: 16000]) > 0.02
    with pytest.raises(MediaError, match="no video"):
        media.read_frames(lib[kind], [0.5])


def test_silent_track_is_silent(lib):
    audio = media.load_audio(lib["silent"])
    assert abs(len(audio) / media.SAMPLE_RATE - D) < 0.1
    assert _rms(audio) < 1e-3


def test_load_audio_other_rate(lib):
    assert abs(len(media.load_audio(lib["wav"], sr=8000)) - D * 8000) < 800


def test_frames_are_rgb(lib):
    frames = media.read_frames(lib["red"], [0.0, 0.5])
    assert frames.shape == (2, 240, 320, 3)
    assert frames[..., 0].mean() > 200 and frames[..., 2].mean() < 60 and frames[..., 1].mean() < 60


def _level(n: int) -> float:
    """The RGB value of frame n of the index video (luma 3n, limited range)."""
    return float(np.clip((3 * n - 16) * 255 / 219, 0, 255))


def test_frames_are_the_ones_on_screen(lib):
    # unsorted, repeated, before 0 and past the end; the last group forces a seek
    times = [0.5, 1.01, 0.5, 1.55, -3.0, 2.3, 2.96, 10.0]
    expect = [12, 25, 12, 38, 0, 57, 74, 74]
    frames = media.read_frames(lib["index"], times)
    assert frames.shape == (len(times), 48, 64, 3)
    got = frames[:, 10, 10, :].astype(float)
    for g, n in zip(got, expect):
        assert np.all(np.abs(g - _level(n)) <= 3), (g, n)
    late = media.read_frames(lib["index"], [2.3, 2.5])           # seek path only
    assert abs(late[0, 10, 10, 0] - _level(57)) <= 3 and abs(late[1, 10, 10, 0] - _level(62)) <= 3


def test_frames_past_the_video_stream(lib, tmp_path):
    """Audio that outlasts the picture: times after the last frame give the last frame."""
    longer = tmp_path / "longer.mp4"
    mg.ffmpeg("-i", str(lib["index"]), "-f", "lavfi", "-t", "5", "-i", "anullsrc=r=16000:cl=mono",
              "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(longer))
    assert media.probe(longer).duration > 4.9
    frames = media.read_frames(longer, [1.0, 2.9, 4.5, 4.9])
    assert [abs(f[10, 10, 0] - _level(n)) <= 3 for f, n in zip(frames, [25, 72, 74, 74])] == [True] * 4


def test_frames_scaled_even_and_empty(lib):
    frames = media.read_frames(lib["mp4"], [1.0], max_side=101)
    h, w = frames.shape[1:3]
    assert max(h, w) <= 101 and h % 2 == 0 and w % 2 == 0 and w > h
    assert media.read_frames(lib["mp4"], [], max_side=160).shape == (0, 120, 160, 3)


def test_cut_clip(lib, tmp_path):
    src_dir = lib["mp4"].parent
    before = sorted(p.name for p in src_dir.iterdir())
    out = media.cut_clip(lib["mp4"], 0.5, 1.7, tmp_path / "clip.mp4")
    info = media.probe(out)
    assert abs(info.duration - 1.2) < 0.15 and info.has_video and info.has_audio
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    # end past the file is clamped; a webm source gives an mp4 too
    out2 = media.cut_clip(lib["webm_nodur"], 1.0, 99.0, tmp_path / "tail.mp4")
    assert abs(media.probe(out2).duration - (D - 1.0)) < 0.15
    # audio-only: an mp4 with just an AAC track
    out3 = media.cut_clip(lib["wav"], 0.2, 1.0, tmp_path / "a.mp4")
    info3 = media.probe(out3)
    assert not info3.has_video and info3.has_audio and abs(info3.duration - 0.8) < 0.15
    assert sorted(p.name for p in src_dir.iterdir()) == before
    with pytest.raises(MediaError):
        media.cut_clip(lib["mp4"], 2.0, 2.0, tmp_path / "none.mp4")
    with pytest.raises(MediaError):
        media.cut_clip(lib["mp4"], 5.0, 9.0, tmp_path / "none.mp4")


def test_remux_to_temp(lib):
    src_dir = lib["webm_nodur"].parent
    before = sorted(p.name for p in src_dir.iterdir())
    out = media.remux_to_temp(lib["webm_nodur"])
    try:
        assert out.parent != src_dir and out.exists()
        assert abs(media.probe(out).duration - D) < 0.1
    finally:
        media.discard_temp(out)
    assert not out.parent.exists()
    assert sorted(p.name for p in src_dir.iterdir()) == before


@pytest.mark.parametrize("suffix, acodec", [(".mp4", "aac"), (".mkv", "libopus"), (".ts", "aac")])
def test_audio_is_laid_on_the_video_timeline(lib, tmp_path, suffix, acodec):
    """A track that starts 1.5 s after the picture: each sample is heard where a player plays it,
    so utterance times and clips match the picture (MPEG-TS: both streams start 1.4 s in)."""
    late = tmp_path / f"late{suffix}"
    mg.ffmpeg("-f", "lavfi", "-i", SRC, "-itsoffset", "1.5", "-i", str(lib["speech_wav"]), "-map", "0:v",
              "-map", "1:a", "-t", "4", "-c:v", *X264, "-pix_fmt", "yuv420p", "-c:a", acodec, str(late))
    speech = media.load_audio(lib["speech_wav"])
    audio = media.load_audio(late)
    assert abs(len(audio) / media.SAMPLE_RATE - (1.5 + len(speech) / media.SAMPLE_RATE)) < 0.1
    assert _rms(audio[: int(1.4 * 16000)]) < 1e-3           # silence until the track starts ...
    assert _rms(audio[int(1.5 * 16000): int(2.5 * 16000)]) > 0.02   # ... then the speech
    assert media.probe(late).audio_start == pytest.approx(1.5, abs=0.05)
    with pytest.raises(media.LimitError, match="starts after"):   # the silence counts towards the limit
        media.load_audio(late, max_seconds=1.0)


def test_audio_segment():
    a = np.arange(16000 * 2, dtype=np.float32)
    assert len(media.audio_segment(a, 0.5, 1.0)) == 8000
    assert len(media.audio_segment(a, 1.5, 9.0)) == 8000
    assert len(media.audio_segment(a, 3.0, 4.0)) == 0
    assert len(media.audio_segment(a, 1.0, 0.5)) == 0


def _assert_one_line(err: MediaError) -> str:
    msg = str(err)
    assert msg and "\n" not in msg and "Traceback" not in msg and len(msg) < 220
    return msg


@pytest.mark.parametrize("fn", [media.probe, media.load_audio,
                                lambda p: media.read_frames(p, [0.0])])
def test_bad_files(lib, tmp_path, fn):
    empty = mg.empty_file(tmp_path / "empty.mp4")
    text = mg.text_file_named(tmp_path / "notes.mp4")
    trunc = mg.truncated_copy(lib["mp4"], tmp_path / "cut.mp4")      # moov atom is at the end
    with pytest.raises(MediaError) as e:
        fn(empty)
    assert _assert_one_line(e.value) == "The file is empty."
    with pytest.raises(MediaError) as e:
        fn(text)
    msg = _assert_one_line(e.value)
    assert "not a readable video or audio file" in msg and "truncated" not in msg
    with pytest.raises(MediaError) as e:
        fn(trunc)
    assert "truncated" in _assert_one_line(e.value)
    with pytest.raises(MediaError) as e:
        fn(tmp_path / "missing.mp4")
    assert "not found" in _assert_one_line(e.value)


def test_no_audio_track(lib):
    info = media.probe(lib["noaudio"])
    assert info.has_video and not info.has_audio
    with pytest.raises(MediaError) as e:
        media.load_audio(lib["noaudio"])
    assert _assert_one_line(e.value) == "The file has no audio track."


def test_no_streams(tmp_path):
    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    mkv = tmp_path / "subs.mkv"
    mg.ffmpeg("-i", str(srt), str(mkv))
    with pytest.raises(MediaError) as e:
        media.probe(mkv)
    assert "no video or audio" in _assert_one_line(e.value)


def test_rotated_video_comes_upright(lib, tmp_path):
    rot = tmp_path / "rot.mp4"
    mg.ffmpeg("-display_rotation:v:0", "90", "-i", str(lib["mp4"]), "-c", "copy", str(rot))
    info = media.probe(rot)
    assert (info.width, info.height) == (240, 320)
    upright = media.read_frames(rot, [1.0]).astype(int)[0]
    plain = media.read_frames(lib["mp4"], [1.0]).astype(int)[0]
    assert upright.shape == (320, 240, 3)
    assert np.abs(np.rot90(plain, 1) - upright).mean() < 2


def test_mp3_cover_art_is_not_video(lib, tmp_path):
    cover = mg.face_image(tmp_path / "cover.png", size=(64, 64))
    tagged = tmp_path / "tagged.mp3"
    mg.ffmpeg("-i", str(lib["mp3"]), "-i", str(cover), "-map", "0", "-map", "1", "-c", "copy",
              "-disposition:v", "attached_pic", str(tagged))
    info = media.probe(tagged)
    assert info.has_audio and not info.has_video
    assert abs(len(media.load_audio(tagged)) / media.SAMPLE_RATE - D) < 0.1


def test_ensure_ffmpeg_on_path(monkeypatch):
    import shutil
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    if shutil.which("ffmpeg"):
        pytest.skip("a system ffmpeg is installed")
    found = media.ensure_ffmpeg_on_path()
    assert shutil.which("ffmpeg") == found
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    assert out.startswith("ffmpeg version")


def test_frames_without_b_frames_are_at_most_a_few_frames_early(tmp_path):
    """skip_b_frames (the face grid's reads): the decoder skips B-frames, so a time may show the
    last other frame before it, never a later one and never more than 3 frames (the B-frame run)
    early. Frame N is a flat grey of luma 3*N, as in the index video, here with B-frames."""
    video = tmp_path / "index_b.mp4"
    mg.ffmpeg("-f", "lavfi", "-i", "color=black:s=64x48:r=25,geq=lum='3*N':cb=128:cr=128", "-t", "3",
              "-c:v", "libx264", "-qp", "2", "-bf", "3", "-pix_fmt", "yuv420p", str(video))
    times = [0.5, 1.01, 1.55, 2.3, 2.5, 2.96]
    exact = [12, 25, 38, 57, 62, 74]

    def numbers(frames):
        return [round((float(f[10, 10, 0]) * 219 / 255 + 16) / 3) for f in frames]
    assert numbers(media.read_frames(video, times)) == exact
    got = numbers(media.read_frames(video, times, skip_b_frames=True))
    assert all(0 <= e - g <= 3 for e, g in zip(exact, got)), (got, exact)
    assert got != exact                       # B-frames were skipped
