"""Media I/O through imageio-ffmpeg's bundled ffmpeg: probe, decode audio, read frames, cut clips.

Every function shells out to one ffmpeg binary (there is no ffprobe) through `core.ffmpeg`, which
opens a user's file safely and words its failures, and raises `MediaError` with a one-line,
human-readable message when a file cannot be used. Nothing is ever written
next to the input: temporary files go to the system temp folder and are removed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from .ffmpeg import (TIMEOUT, MediaError, check_file, ffmpeg_exe, input_args, reason,
                     refused_format, run, unreadable)
from .ffmpeg import ALLOWED_FORMATS, LimitError, ensure_ffmpeg_on_path  # noqa: F401 (callers import them from here)
from .types import MediaInfo

SAMPLE_RATE = 16000      # Hz, what Whisper and the audio encoder expect
FRAME_GRID = 100.0       # frames are picked on a 1/100 s grid (finer than any common frame rate)
SEEK_MARGIN = 1.0        # seconds decoded before the first requested time
MAX_SIDE = 640           # default longest side of frames handed back
MAX_FPS = 240.0          # frame rates above this are taken for timebases, not rates
READ_CHUNK = 1 << 20     # bytes of decoded audio read from ffmpeg at a time


# --------------------------------------------------------------------------- probing

_DURATION = re.compile(r"Duration:\s*(N/A|(\d+):(\d+):(\d+(?:\.\d+)?))")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?: (Video|Audio|Subtitle|Data|Attachment): (.*)$")
_SIZE = re.compile(r"[,\s]([1-9]\d{0,8})x([1-9]\d{0,8})[\s,\[]")
_INPUT = re.compile(r"Input #0, (.+?), from '")
_RATE = re.compile(r"([\d.]+)(k?) (fps|tbr)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")
_STREAM_START = re.compile(r", start (-?\d+(?:\.\d+)?)")          # printed where a stream starts off 0
_FORMAT_START = re.compile(r"Duration: [^,]*, start: (-?\d+(?:\.\d+)?)")


def probe(path: str | os.PathLike) -> MediaInfo:
    """Duration, streams, size, frame rate and codecs of a media file (cached per file version)."""
    p = check_file(path)
    st = p.stat()
    return replace(_probe_cached(str(p.resolve()), st.st_size, st.st_mtime_ns), path=str(path))


@lru_cache(maxsize=64)
def _probe_cached(path: str, size: int, mtime_ns: int) -> MediaInfo:
    err = run(input_args(path)).stderr      # exits non-zero without an output: that is normal
    if "Input #0" not in err:
        raise (refused_format(path) if "Invalid argument" in err else None) or unreadable(err, path)
    found = _INPUT.search(err)
    info = MediaInfo(path=path, duration=0.0, has_video=False, has_audio=False,
                     container=found.group(1) if found else "")
    video_seen, rotated = 0, False           # a display rotation applies to the first video stream
    audio_start = 0.0
    for line in err.splitlines():
        m = _STREAM.match(line)
        if not m:
            r = _ROTATION.search(line)
            if r and video_seen == 1 and not rotated and abs(float(r.group(1))) % 180 == 90:
                info.width, info.height, rotated = info.height, info.width, True
            continue
        video_seen += m.group(1) == "Video"
        kind, desc = m.groups()
        codec = desc.split(",")[0].split(" ")[0]
        if kind == "Video" and not info.has_video and "(attached pic)" not in desc:
            info.has_video, info.video_codec = True, codec
            if s := _SIZE.search(desc):
                info.width, info.height = int(s.group(1)), int(s.group(2))
            rates = {unit: float(v) * (1000 if k else 1) for v, k, unit in _RATE.findall(desc)}
            sane = [r for r in (rates.get("fps"), rates.get("tbr")) if r and 0 < r <= MAX_FPS]
            info.fps = sane[0] if sane else 0.0   # VFR WebM may say "1k fps": that is a timebase
        elif kind == "Audio":
            info.audio_tracks += 1
            if not info.has_audio:
                info.has_audio, info.audio_codec = True, codec
                s = _STREAM_START.search(desc)
                audio_start = float(s.group(1)) if s else 0.0
    if not (info.has_video or info.has_audio):
        raise MediaError("This file holds no video or audio stream.")
    m = _DURATION.search(err)
    if m and m.group(1) != "N/A" and "Estimating duration from bitrate" not in err:
        h, mi, s = m.group(2), m.group(3), m.group(4)
        info.duration = int(h) * 3600 + int(mi) * 60 + float(s)
    if info.duration <= 0:                   # e.g. browser webcam WebM: no duration in the header
        info.duration = _scan_duration(path)
    if info.has_audio:                       # decoding counts time from the file's start, not 0
        s = _FORMAT_START.search(err)
        lead = audio_start - (float(s.group(1)) if s else 0.0)
        info.audio_start = lead if 1e-3 <= lead <= max(info.duration, 0.0) else 0.0
    return info


def _scan_duration(path: str, streams: tuple[str, ...] = ("0:v?", "0:a?"),
                   stop: float | None = None) -> float:
    """The real duration, read by passing every packet through (stream copy, no decoding);
    with `stop`, the scan ends a second past it."""
    maps = [a for s in streams for a in ("-map", s)]
    until = ["-t", f"{stop + 1.0:.3f}"] if stop else []
    for codec in (["-c", "copy"], []):      # copy is fast; decoding is the fallback
        proc = run([*input_args(path), *maps, *codec, *until, "-f", "null",
                     "-progress", "pipe:1", "-nostats", "-"])
        times = re.findall(rb"out_time_us=(\d+)", proc.stdout)
        if proc.returncode == 0 and times and int(times[-1]) > 0:
            return int(times[-1]) / 1e6
    return 0.0


def video_seconds(path: str | os.PathLike, max_seconds: float | None = None) -> float:
    """How long the first video stream's packets run (not what the header says); with
    `max_seconds`, the scan stops a second past it."""
    return _scan_duration(str(check_file(path)), ("0:v:0",), max_seconds)


# --------------------------------------------------------------------------- audio

def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode the first audio track to mono float32 in [-1, 1] at `sr` Hz, in one ffmpeg call.

    Sample i is heard at i / sr seconds on the file's timeline, as a player shows it: a track that
    starts after the picture (MediaInfo.audio_start) comes after as much silence, so utterance
    times, face frames and clips line up. (Holes inside a track are not filled: ffmpeg's
    aresample fills one with a single frame as long as the hole, gigabytes for a crafted file.)

    With `max_seconds`, decoding stops as soon as the decoded audio passes it (whatever the
    header says) and `LimitError` is raised.
    """
    chunks: list[bytes] = []
    _decode_audio(path, sr, max_seconds, chunks.append)
    audio = np.frombuffer(b"".join(chunks), np.int16).astype(np.float32) / 32768.0
    return np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)


def audio_seconds(path: str | os.PathLike, max_seconds: float | None = None) -> float:
    """Seconds of audio the first track really decodes to (not what the header says); with
    `max_seconds`, decoding stops once past it and `LimitError` is raised."""
    return _decode_audio(path, SAMPLE_RATE, max_seconds, None) / SAMPLE_RATE


def _decode_audio(path, sr: int, max_seconds: float | None, sink) -> int:
    """Stream the decoded 16-bit mono samples to `sink` (None: count only); the sample count."""
    p = check_file(path)
    limit = None if not max_seconds or max_seconds <= 0 else int(max_seconds * sr) * 2
    lead = 2 * int(round(probe(p).audio_start * sr))    # bytes of silence before the track starts
    if limit is not None and lead > limit:
        raise LimitError(f"The audio starts after {_hms(lead / 2 / sr)}; the limit is {_hms(max_seconds)}.")
    args = [ffmpeg_exe(), "-hide_banner", "-nostdin", *input_args(p), "-map", "0:a:0", "-vn", "-sn",
            "-dn", "-ac", "1", "-ar", str(sr), "-f", "s16le", "-acodec", "pcm_s16le", "-"]
    got, over = lead, False
    if sink is not None:
        for at in range(0, lead, READ_CHUNK):
            sink(bytes(min(READ_CHUNK, lead - at)))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err)
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        try:
            while chunk := proc.stdout.read(READ_CHUNK):
                if limit is not None and got + len(chunk) > limit:
                    over = True             # stop reading at the limit: the rest is never decoded
                    proc.kill()
                    break
                got += len(chunk)
                if sink is not None:
                    sink(chunk)
        finally:
            proc.stdout.close()
            proc.wait()
            timer.cancel()
        err.seek(0)
        stderr = err.read().decode("utf-8", errors="replace")
    if over:
        raise LimitError(f"The audio lasts longer than {_hms(max_seconds)} once decoded; "
                         f"the limit is {_hms(max_seconds)}.")
    if proc.returncode != 0:
        if "matches no streams" in stderr:
            probe(p)                                   # a clearer error for a non-media file
            raise MediaError("The file has no audio track.")
        if "Invalid argument" in stderr and (refused := refused_format(str(p))):
            raise refused
        raise unreadable(stderr, p)
    return got // 2


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def audio_segment(audio: np.ndarray, start: float, end: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The samples between `start` and `end` seconds, clamped to the array."""
    a = min(max(int(round(start * sr)), 0), len(audio))
    b = min(max(int(round(end * sr)), a), len(audio))
    return audio[a:b]


# --------------------------------------------------------------------------- frames

def frame_size(info: MediaInfo, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """(width, height) of the frames `read_frames` returns: longer side <= max_side, both even."""
    if info.width <= 0 or info.height <= 0:
        raise MediaError("The video's frame size could not be read.")
    k = min(1.0, max_side / max(info.width, info.height))
    return max(2, 2 * int(info.width * k / 2)), max(2, 2 * int(info.height * k / 2))


def _select_expr(wanted: np.ndarray) -> str:
    """Is frame `n` one of the sorted `wanted` indices? A binary search, so each frame costs
    log2(len(wanted)) steps (ffmpeg's `if` is lazy; a flat sum would cost len(wanted))."""
    def tree(lo: int, hi: int) -> str:
        if hi - lo == 1:
            return f"eq(n,{wanted[lo]})"
        mid = (lo + hi) // 2
        return f"if(lt(n,{wanted[mid]}),{tree(lo, mid)},{tree(mid, hi)})"
    return tree(0, len(wanted))


def _read_raw(args: list[str], targets: list[np.ndarray]) -> tuple[int, str]:
    """Run ffmpeg, reading its stdout straight into each target in turn: (targets filled, stderr)."""
    done = 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([ffmpeg_exe(), "-hide_banner", "-nostdin", *args],
                                stdout=subprocess.PIPE, stderr=err)
        timer = threading.Timer(TIMEOUT, proc.kill)
        timer.start()
        try:
            for target in targets:
                view, got = memoryview(target).cast("B"), 0
                while got < len(view) and (n := proc.stdout.readinto(view[got:])):
                    got += n
                if got < len(view):
                    break
                done += 1
        finally:
            proc.stdout.close()
            proc.wait()
            timer.cancel()
        err.seek(0)
        return done, err.read().decode("utf-8", errors="replace")


def read_frames(path: str | os.PathLike, times: Sequence[float],
                max_side: int = MAX_SIDE, skip_b_frames: bool = False) -> np.ndarray:
    """RGB frames shown at each of `times` (seconds) as uint8 [N, H, W, 3], in one ffmpeg call.

    Each frame is the one on screen at that time (on a 1/100 s grid). The longer side is scaled
    down to at most `max_side`, sizes even. Times are clamped to the file; past the end of the
    video stream the last frame is returned. `skip_b_frames`: the decoder skips B-frames (a third
    to a half less decoding for H.264), so a frame may be the last other frame before it, a few
    frames (about 0.1 s) early.
    """
    info = probe(path)
    if not info.has_video:
        raise MediaError("The file has no video track.")
    w, h = frame_size(info, max_side)
    if len(times) == 0:
        return np.zeros((0, h, w, 3), np.uint8)
    t = np.nan_to_num(np.asarray(times, np.float64), nan=0.0)
    t = np.clip(t, 0.0, max(info.duration, 0.0))
    rate = max(FRAME_GRID, info.fps)
    seek = max(0.0, float(t.min()) - SEEK_MARGIN)
    seek = np.floor(seek * rate) / rate
    index = np.floor((t - seek) * rate + 1e-6).astype(np.int64)
    # the distinct frames, where each is first asked for, and which one each time shows
    wanted, first, which = np.unique(index, return_index=True, return_inverse=True)
    pad = float(t.max()) - seek + 1.0            # clone the last frame for times past the video's end
    vf = (f"fps={rate:g}:start_time=0,tpad=stop_mode=clone:stop_duration={pad:.3f},"
          f"select='{_select_expr(wanted)}',"
          f"scale={w}:{h}:flags=area,setsar=1,format=rgb24")
    args = ["-loglevel", "error"] + (["-ss", f"{seek:.6f}"] if seek > 0 else [])
    args += (["-skip_frame", "bidir"] if skip_b_frames else []) + input_args(path)
    args += ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", vf,
             "-fps_mode", "passthrough", "-frames:v", str(len(wanted)),
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    frames = np.empty((len(t), h, w, 3), np.uint8)
    done, err = _read_raw(args, [frames[i] for i in first])
    if done == 0:
        raise unreadable(err, path) if err.strip() else MediaError("No video frames could be decoded.")
    for k in range(done, len(wanted)):           # should not happen: tpad clones the last frame
        frames[first[k]] = frames[first[done - 1]]
    for i, k in enumerate(which):                # repeated times: copy, frame by frame
        if first[k] != i:
            frames[i] = frames[first[k]]
    return frames


# --------------------------------------------------------------------------- clips

def cut_clip(path: str | os.PathLike, start: float, end: float,
             out_path: str | os.PathLike) -> Path:
    """Re-encode [start, end] seconds to an MP4 (H.264 + AAC, faststart) at `out_path`.

    Audio-only input gives an MP4 holding just the AAC track. `end` is clamped to the duration.
    """
    info = probe(path)
    out = Path(out_path)
    if out.resolve() == Path(path).resolve():
        raise MediaError("The clip cannot overwrite its own source file.")
    start = max(0.0, float(start))
    end = min(float(end), info.duration) if info.duration > 0 else float(end)
    if not end > start:
        raise MediaError(f"Empty clip: start {start:.2f} s is not before end {end:.2f} s.")
    args = ["-y", "-ss", f"{start:.6f}", *input_args(path), "-t", f"{end - start:.6f}"]
    args += ["-map", "0:v:0", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt",
             "yuv420p", "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2"] if info.has_video else ["-vn"]
    if info.has_audio:
        args += ["-map", "0:a:0", "-c:a", "aac", "-b:a", "128k"]
    args += ["-sn", "-dn", "-map_metadata", "-1", "-movflags", "+faststart", "-f", "mp4", str(out)]
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = run(args)
    if proc.returncode != 0:
        out.unlink(missing_ok=True)
        raise MediaError(f"Could not cut the clip ({reason(proc.stderr)}).")
    return out


def remux_to_temp(path: str | os.PathLike, suffix: str = ".mkv") -> Path:
    """Copy the streams into a new container in a fresh temp folder (no re-encoding).

    Useful for browser WebM recordings, whose missing duration and index make players unable
    to seek. The caller owns the result; `discard_temp` removes it with its folder.
    """
    p = check_file(path)
    probe(p)                                  # refuse playlists and non-media files first
    folder = Path(tempfile.mkdtemp(prefix="media-"))
    out = folder / (p.stem + suffix)
    proc = run(["-y", *input_args(p), "-map", "0:v?", "-map", "0:a?", "-c", "copy", str(out)])
    if proc.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise unreadable(proc.stderr)
    return out


def discard_temp(path: str | os.PathLike) -> None:
    """Remove a file made by `remux_to_temp`, with its temp folder."""
    p = Path(path)
    if p.parent.name.startswith("media-") and Path(tempfile.gettempdir()) in p.parents:
        shutil.rmtree(p.parent, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)
