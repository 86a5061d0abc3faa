"""Bring an uploaded or recorded file into a session folder and make a copy every browser can play.

* the upload is copied under a safe name whose extension the server picks from the container
  ffmpeg found (never the user's: `x.html` holding a WAV is staged as `source_x.wav`); it is what
  the pipeline reads and clips are cut from;
* an H.264 MP4 plays as it is; a WebM (webcam recordings: no duration, no index) is re-muxed so the
  player can seek; any other video is re-encoded to H.264 MP4;
* an audio-only file plays over a picture of its waveform (so the player shows something, and subtitles).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from core import media
from core.types import MediaInfo

from .paths import safe_filename

PLAYS_AS_IS = {(".mp4", "h264"), (".m4v", "h264"), (".mov", "h264")}
WEBM_CODECS = {"vp8", "vp9", "av1"}
WEBM_AUDIO = {"opus", "vorbis"}
# the extension a staged file gets, by the first name of ffmpeg's demuxer (core.media.ALLOWED_FORMATS)
EXTENSIONS = {"mov": ".mp4", "matroska": ".mkv", "avi": ".avi", "mp3": ".mp3", "wav": ".wav",
              "w64": ".w64", "flac": ".flac", "ogg": ".ogg", "aac": ".aac", "mpegts": ".ts",
              "mpeg": ".mpg", "asf": ".asf", "flv": ".flv", "aiff": ".aiff", "caf": ".caf",
              "amr": ".amr", "ac3": ".ac3", "png_pipe": ".png", "jpeg_pipe": ".jpg",
              "webp_pipe": ".webp", "bmp_pipe": ".bmp", "gif": ".gif"}
# through 16-bit samples: NaN or infinite float samples (which make the AAC encoder fail) become
# plain numbers; the playable copy loses nothing audible
WAVE_SIZE, WAVE_PAD = "960x300", 60          # the waveform picture of an audio-only file, and its margin
WAVE_COLOR, WAVE_BACKGROUND = "0x818cf8", "0x1e293b"
CLEAN_AUDIO = ("-af", "aformat=sample_fmts=s16")


@dataclass
class StagedMedia:
    source: Path        # the upload, copied: analysed and cut into clips
    playable: Path      # what the player shows
    info: MediaInfo


def stage(upload: str | Path, folder: Path) -> StagedMedia:
    """Copy `upload` into `folder` and prepare a playable version; MediaError if unreadable."""
    upload = Path(upload)
    found = media.probe(upload)               # refuse empty, truncated, non-media files first
    folder.mkdir(parents=True, exist_ok=True)
    stem = safe_filename(upload.name).rpartition(".")[0] or safe_filename(upload.name)
    source = folder / ("source_" + stem.replace(".", "_") + media_extension(found))
    shutil.copyfile(upload, source)
    info = media.probe(source)
    suffix = source.suffix.lower()
    if not info.has_video:
        playable = _audio_with_picture(source, folder / "playable.mp4", info)
    elif (suffix, info.video_codec) in PLAYS_AS_IS:
        playable = source
    elif suffix == ".webm" and info.video_codec in WEBM_CODECS:
        playable = _ffmpeg([*media.input_args(source), "-map", "0:v:0", "-map", "0:a?", "-c", "copy",
                            str(folder / "playable.webm")], folder / "playable.webm")
    else:
        playable = _ffmpeg([*media.input_args(source), "-map", "0:v:0", "-map", "0:a?", "-c:v", "libx264",
                            "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
                            "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", *CLEAN_AUDIO, "-c:a", "aac",
                            "-movflags", "+faststart", str(folder / "playable.mp4")],
                           folder / "playable.mp4")
    return StagedMedia(source, playable, info)


def media_extension(info: MediaInfo) -> str:
    """The extension a file gets from what ffmpeg found in it (not from its name)."""
    first = info.container.split(",")[0]
    if first == "mov" and not info.has_video:
        return ".m4a"
    if first == "matroska" and (not info.has_video or info.video_codec in WEBM_CODECS) \
            and (not info.has_audio or info.audio_codec in WEBM_AUDIO):
        return ".webm"
    if first == "asf":
        return ".wmv" if info.has_video else ".wma"
    try:
        return EXTENSIONS[first]
    except KeyError:        # probe() only accepts ALLOWED_FORMATS: a name missing above is a bug here
        raise media.MediaError(f"This file's format ({info.container or 'unknown'}) is not accepted.") from None


def _audio_with_picture(source: Path, out: Path, info: MediaInfo) -> Path:
    """The sound under a picture of its own waveform (the whole file, left to right), so the
    player shows what it plays and where the speech is, and can overlay subtitles."""
    seconds = max(info.duration, 0.1)
    wave = out.with_name("waveform.png")
    try:
        _ffmpeg([*media.input_args(source), "-filter_complex",
                 f"[0:a:0]aformat=channel_layouts=mono,showwavespic=s={WAVE_SIZE}:colors={WAVE_COLOR},"
                 f"pad=iw:ih+{WAVE_PAD}:0:{WAVE_PAD // 2}:color={WAVE_BACKGROUND}",
                 "-frames:v", "1", str(wave)], wave)
        picture = ["-loop", "1", "-framerate", "2", "-t", f"{seconds:.3f}", "-i", str(wave)]
    except media.MediaError:          # no picture to be had: a plain background, the sound still plays
        picture = ["-f", "lavfi", "-i", f"color=c={WAVE_BACKGROUND}:s=640x360:r=2:d={seconds:.3f}"]
    try:
        return _ffmpeg([*picture, *media.input_args(source), "-map", "0:v", "-map", "1:a:0", "-c:v", "libx264",
                        "-preset", "veryfast", "-tune", "stillimage", "-pix_fmt", "yuv420p",
                        "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2",
                        *CLEAN_AUDIO, "-c:a", "aac", "-b:a", "128k", "-shortest", "-movflags", "+faststart",
                        str(out)], out)
    finally:
        wave.unlink(missing_ok=True)


def _ffmpeg(args: list[str], out: Path, timeout: float = 1800) -> Path:
    cmd = [media.ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
        failed = proc.returncode != 0
        lines = [re.sub(r"^(\[[^\]]*\]\s*)+", "", ln).strip()
                 for ln in proc.stderr.decode("utf-8", "replace").splitlines()]
        reason = [ln for ln in lines if ln][-1:] or ["ffmpeg failed"]
    except subprocess.TimeoutExpired:
        failed, reason = True, [f"took longer than {timeout:g} s"]
    if failed or not out.is_file() or out.stat().st_size == 0:
        out.unlink(missing_ok=True)
        raise media.MediaError(f"Could not prepare the file for playback ({reason[0][:120]}).")
    return out
