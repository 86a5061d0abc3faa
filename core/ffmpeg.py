"""The one ffmpeg binary (imageio-ffmpeg's) and the rules every call to it follows.

A user's file is opened only as a plain local file by an allowed demuxer (`input_args`), every
run has a time limit (`run`), and every failure becomes one line fit to show a user
(`MediaError`, `unreadable`, `refused_format`). `core.media` builds its probing, decoding and
cutting on these.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .types import UserError

TIMEOUT = 1800.0         # seconds before a single ffmpeg run is killed
# The only demuxers a user's file may be read with: plain media containers. Playlists and lists
# (hls, concat, dash), image sequences and anything else that can open other files or the network
# are refused; every input is also opened with `-protocol_whitelist file`. The *_pipe image
# demuxers read the one file they are given (a still picture, analysed as a silent video).
ALLOWED_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "mp3",
                   "wav", "w64", "flac", "ogg", "aac", "mpegts", "mpeg", "asf", "flv", "aiff",
                   "caf", "amr", "ac3", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "gif")


class MediaError(UserError):
    """A media file cannot be read; the message is one line, fit to show a user."""


class LimitError(MediaError):
    """A request is over one of the server's limits; one line, fit to show a user."""


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as err:  # missing package or binary
        raise MediaError(f"ffmpeg is not available ({one_line(str(err), 100)}).") from None


def ensure_ffmpeg_on_path() -> str:
    """Make `ffmpeg` on PATH the bundled binary, for libraries that call it by name (Gradio)."""
    if found := shutil.which("ffmpeg"):
        return found
    folder = Path(tempfile.gettempdir()) / f"media-ffmpeg-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder.mkdir(exist_ok=True)
    link, exe = folder / "ffmpeg", Path(ffmpeg_exe())
    if not (link.exists() and link.resolve() == exe.resolve()):
        tmp = folder / f"ffmpeg.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(exe)
        os.replace(tmp, link)                  # atomic, so concurrent starts do not collide
    os.environ["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(link)


def run(args: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run ffmpeg with `args`; stdout as bytes, stderr as text."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MediaError(f"ffmpeg took longer than {timeout:g} s on this file; gave up.") from None
    proc.stderr = proc.stderr.decode("utf-8", errors="replace")
    return proc


def input_args(path: str | os.PathLike) -> list[str]:
    """`-i` for a user's file, opened as a plain local file by an allowed demuxer only.

    `file:` keeps a name like `concat:a|b` or `http:x` a file name; `-protocol_whitelist file`
    stops a demuxer from opening URLs; `-format_whitelist` refuses playlists and the like.
    """
    return ["-protocol_whitelist", "file", "-format_whitelist", ",".join(ALLOWED_FORMATS),
            "-i", "file:" + str(Path(path).resolve())]


def one_line(text: str, limit: int = 160) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_REASONS = [
    ("moov atom not found", "the file is incomplete or truncated: moov atom not found"),
    ("Invalid data found when processing input", "invalid data"),
    ("could not find codec parameters", "unknown codec"),
    ("Permission denied", "permission denied"),
    ("End of file", "unexpected end of file"),
]


def reason(stderr: str) -> str:
    """A short reason drawn from ffmpeg's stderr."""
    for needle, reason in _REASONS:
        if needle.lower() in stderr.lower():
            return reason
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith(("Exiting", "Error opening"))]
    return one_line(lines[-1], 100) if lines else "ffmpeg could not read it"


_MP4_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"}


def unreadable(stderr: str, path: str | os.PathLike | None = None) -> MediaError:
    """The one-line error for a file ffmpeg could not read, with the reason it gave."""
    why = reason(stderr)
    if path is not None and "moov atom" in why:   # ffmpeg went by the name: is it MP4 at all?
        with open(path, "rb") as f:       # (the caller has just stat-ed the file)
            if f.read(8)[4:8] not in _MP4_BOXES:
                why = "its content is not audio or video"
    return MediaError(f"This file is not a readable video or audio file ({why}).")


_PROBED = re.compile(r"Format (\S+) probed")
_PLAYLISTS = {"hls", "concat", "dash", "ffmetadata", "webm_dash_manifest", "image2", "tee"}


def refused_format(path: str) -> MediaError | None:
    """The error for a file whose demuxer is not allowed (None if that is not why it failed)."""
    err = run(["-loglevel", "debug", *input_args(path)]).stderr
    if "Format not on whitelist" not in err:
        return None
    found = _PROBED.findall(err)
    name = found[-1] if found else "unknown"
    kind = "a playlist or file list" if name in _PLAYLISTS or "playlist" in name else "a format"
    return MediaError(f"This file is {kind} ({name}) that is not accepted: only plain video or "
                      "audio files (MP4, MOV, MKV, WebM, AVI, MP3, WAV, FLAC, OGG, ...) are read.")


def check_file(path: str | os.PathLike) -> Path:
    """`path` as a Path if it is a non-empty file; a one-line MediaError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"File not found: {p.name}." if not p.exists() else f"Not a file: {p.name}.")
    if p.stat().st_size == 0:
        raise MediaError("The file is empty.")
    return p
