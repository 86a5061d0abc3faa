"""Hostile inputs for the security tests (issue 13), built on the fly; nothing here is committed.

Each builder writes one file that attacks a reader: playlists that name other files, headers
that lie about the duration, frames too wide for the probe, a WAV named .html, zip bombs,
checkpoint cards with absurd shapes, CSV cells a spreadsheet would run.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from tests import mediagen

# cells a spreadsheet would run as formulas, and look-alikes that must come back unchanged
FORMULAS = ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "\n=1", " =1+1",
            "   @x", "\u00a0=1", "\u3000=1", "\uff1d1+1", "\uff0bA1", "\uff0dA1", "\uff20A1",
            "'=already quoted", "''+twice", "' =spaced", "=HYPERLINK(\"http://evil\")"]
HARMLESS = ["plain words", "it's fine", "'quoted but harmless", "a = b", "", "   "]
BAD_CARD_MODEL = {"text_dim": 8192, "hidden": 4096, "fusion": 8192}   # ~140 M parameters: ~560 MB


def tone(out: Path, seconds: float, codec: str = "pcm_s16le") -> Path:
    """A sine tone of `seconds` in the container `out`'s suffix says."""
    mediagen.ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", codec, str(out))
    return out


def playlist(out: Path, target: Path, repeat: int = 2) -> Path:
    """An HLS playlist (.m3u8, or any name) that plays `target`, another file on the server."""
    entries = "".join(f"#EXTINF:2,\n{target.resolve()}\n" for _ in range(repeat))
    out.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n{entries}#EXT-X-ENDLIST\n")
    return out


def ffconcat(out: Path, target: Path) -> Path:
    """An ffconcat list (ffmpeg's concat demuxer, found by content) naming `target`."""
    out.write_text(f"ffconcat version 1.0\nfile '{target.resolve()}'\n")
    return out


def mkv_claiming(out: Path, seconds: float, claimed: float, video: bool = False) -> Path:
    """An Opus .mkv (or, with `video`, a silent 64x48 H.264 one) of `seconds` whose Segment
    Duration says `claimed` seconds."""
    src = out.with_suffix(".src.mkv")
    if video:
        mediagen.ffmpeg("-f", "lavfi", "-i", f"testsrc=s=64x48:r=10:d={seconds}", "-c:v", "libx264",
                        "-preset", "ultrafast", str(src))
    else:
        tone(src, seconds, "libopus")
    data = bytearray(src.read_bytes())
    at = data.find(b"\x44\x89\x88")                   # Duration, an 8-byte float in ms
    assert at > 0, "no Duration element"
    data[at + 3:at + 11] = struct.pack(">d", claimed * 1000.0)
    out.write_bytes(bytes(data))
    return out


def mp3_claiming(out: Path, seconds: float, claimed: float) -> Path:
    """An MP3 of `seconds` whose Xing/Info frame count says `claimed` seconds (1152 samples a frame)."""
    tone(out.with_suffix(".src.mp3"), seconds, "libmp3lame")
    data = bytearray(out.with_suffix(".src.mp3").read_bytes())
    at = max(data.find(b"Info"), data.find(b"Xing"))
    assert at > 0 and struct.unpack(">I", data[at + 4:at + 8])[0] & 1, "no frame count in the Info frame"
    data[at + 8:at + 12] = struct.pack(">I", int(claimed * 44100 / 1152))
    out.write_bytes(bytes(data))
    return out


def wide_frame(out: Path, width: int = 200_000, height: int = 200) -> Path:
    """One PNG frame of width x height in Matroska (the probe used to read its size as 0x0)."""
    mediagen.ffmpeg("-f", "lavfi", "-i", f"color=c=red:s={width}x{height}:d=0.04:r=25", "-frames:v", "1",
                    "-c:v", "png", str(out))
    return out


def unknown_size(out: Path) -> Path:
    """An MJPEG AVI whose headers say 0x0 and whose frames are blank: no size can be read."""
    src = out.with_suffix(".src.avi")
    mediagen.ffmpeg("-f", "lavfi", "-i", "testsrc=s=320x240:d=1:r=5", "-c:v", "mjpeg", str(src))
    data = bytearray(src.read_bytes())
    avih = data.find(b"avih") + 8
    data[avih + 32:avih + 40] = bytes(8)              # dwWidth, dwHeight
    strf = data.find(b"strf") + 8
    data[strf + 4:strf + 12] = bytes(8)               # biWidth, biHeight
    at = data.find(b"movi") + 4
    while at + 8 <= len(data) and data[at:at + 2] == b"00":      # each 00dc chunk: blank it
        size = struct.unpack("<I", data[at + 4:at + 8])[0]
        data[at + 8:at + 8 + size] = bytes(size)
        at += 8 + size + (size & 1)
    out.write_bytes(bytes(data))
    return out


def wav_named_html(out: Path) -> Path:
    """A real WAV with a script appended, named .html (the stored-XSS upload)."""
    tone(out.with_suffix(".wav"), 1.0)
    out.write_bytes(out.with_suffix(".wav").read_bytes() + b"<script>alert(document.cookie)</script>")
    out.with_suffix(".wav").unlink()
    return out


def zip_bomb(out: Path, megabytes: int = 300) -> Path:
    """An export-shaped zip whose one clip unpacks from ~300 KB to `megabytes` MB of zeros."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("e/e.csv", "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
                              "1,hi,Ann,joy,positive,0,0\n")
        z.writestr("e/clips/dia0_utt0.mp4", bytes(megabytes * 2**20))
    return out


def bad_card(folder: Path, base: Path, model: dict | None = None) -> Path:
    """A copy of checkpoint `base` whose card asks for absurd shapes (weights left as they are)."""
    folder.mkdir(parents=True, exist_ok=True)
    card = json.loads((base / "card.json").read_text())
    card["model"] = {**card["model"], **(model or BAD_CARD_MODEL)}
    (folder / "card.json").write_text(json.dumps(card))
    (folder / "model.safetensors").write_bytes((base / "model.safetensors").read_bytes())
    return folder
