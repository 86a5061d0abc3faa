"""Limits on what one request may ask of the server, checked before any heavy work starts.

    max_upload_mb   largest file accepted (upload, CSV, media)        $WORKBENCH_MAX_UPLOAD_MB  (500)
                    flag --max-upload-mb (app.py and `python -m core`, which also takes --max-mb)
    max_seconds     longest video or audio analysed or attached       $WORKBENCH_MAX_SECONDS    (3600)
                    flag --max-seconds (app.py and `python -m core`)
    max_pixels      largest frame (width x height) of a video         $WORKBENCH_MAX_PIXELS     (8K: 35.4 M)
    max_csv_rows    most rows in one imported MELD CSV                $WORKBENCH_MAX_CSV_ROWS   (20000)

A value of 0 switches that limit off. The checks read the file size and ffmpeg's header probe
(`core.media.probe`), and then do not trust the header: the audio is decoded until it ends or
passes max_seconds (decoding stops there), and the video's packets are scanned the same way, so
a file whose header lies about its duration is refused before it is copied or transcribed. A
video whose frame size the probe cannot read is refused. Playlists and other formats that open
further files are refused by the probe itself (core.media.ALLOWED_FORMATS). Every refusal is a
`LimitError` (a `MediaError`), with a one-line message that says the limit and how to raise it. The app (webapp/service.py) and the command line (core/__main__.py,
core/batch.py) apply the same checks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from . import media
from .media import LimitError, MediaError, probe
from .types import MediaInfo

ENV = {"max_upload_mb": "WORKBENCH_MAX_UPLOAD_MB", "max_seconds": "WORKBENCH_MAX_SECONDS",
       "max_pixels": "WORKBENCH_MAX_PIXELS", "max_csv_rows": "WORKBENCH_MAX_CSV_ROWS"}
FLAGS = {"max_upload_mb": "--max-upload-mb", "max_seconds": "--max-seconds"}
# decoded audio may run a little past the header's duration (encoder priming, rounding): an
# honest file right at the limit is not refused for that
DECODE_SLACK = 1.0      # seconds


def how_to_raise(name: str) -> str:
    """Where a limit is set, for the end of a refusal: '(--max-seconds or WORKBENCH_MAX_SECONDS)'."""
    return f"({FLAGS[name]} or {ENV[name]})" if name in FLAGS else f"({ENV[name]})"


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass(frozen=True)
class Limits:
    max_upload_mb: float = 500.0
    max_seconds: float = 3600.0
    max_pixels: int = 7680 * 4608
    max_csv_rows: int = 20000

    @classmethod
    def from_env(cls, **overrides) -> "Limits":
        """Defaults, then the environment variables, then `overrides` that are not None."""
        values = {}
        for name, var in ENV.items():
            raw = os.environ.get(var, "").strip()
            if raw:
                try:
                    values[name] = type(getattr(cls, name))(float(raw))
                except ValueError:
                    raise ValueError(f"{var}={raw!r} is not a number") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        limits = cls(**values)
        for name in ENV:
            if getattr(limits, name) < 0:
                raise ValueError(f"{name} must not be negative")
        return limits

    @property
    def max_bytes(self) -> int | None:
        return int(self.max_upload_mb * 1024 * 1024) if self.max_upload_mb > 0 else None

    def gradio_max_file_size(self) -> int | None:
        """For `launch(max_file_size=...)`: Gradio refuses bigger uploads before they are stored."""
        return self.max_bytes

    def check_size(self, path: str | os.PathLike, what: str = "file") -> int:
        """The file's size in bytes; LimitError if over max_upload_mb, MediaError if missing."""
        p = Path(path)
        if not p.is_file():
            raise MediaError(f"File not found: {p.name}.")
        size = p.stat().st_size
        if self.max_bytes is not None and size > self.max_bytes:
            raise LimitError(f"The {what} is {size / 2**20:.1f} MB; the limit is "
                             f"{self.max_upload_mb:g} MB {how_to_raise('max_upload_mb')}.")
        return size

    def check_media(self, path: str | os.PathLike) -> MediaInfo:
        """Size, the probe's duration and frame size, then the duration the audio really decodes
        to and the video's packets really run (both read only up to the limit): the MediaInfo
        if the file is within limits."""
        self.check_size(path)
        info = probe(path)
        self._check_seconds(info.duration)
        if self.max_pixels > 0 and info.has_video:
            if info.width <= 0 or info.height <= 0:
                raise LimitError("The video's frame size could not be read, so the frame-size limit "
                                 f"cannot be checked; the file is refused {how_to_raise('max_pixels')}.")
            if info.width * info.height > self.max_pixels:
                raise LimitError(f"The video's frames are {info.width}x{info.height}; the limit is "
                                 f"{self.max_pixels / 1e6:.1f} megapixels a frame "
                                 f"{how_to_raise('max_pixels')}.")
        if self.max_seconds > 0:
            most = self.max_seconds + DECODE_SLACK
            try:
                if info.has_audio:
                    media.audio_seconds(path, most)
                if info.has_video and media.video_seconds(path, most) > most:
                    raise LimitError("the video runs past the limit")
            except LimitError:
                raise LimitError(f"The file lasts longer than {_hms(self.max_seconds)} once decoded "
                                 f"(its header says {_hms(info.duration)}); the limit is "
                                 f"{_hms(self.max_seconds)} {how_to_raise('max_seconds')}.") from None
        return info

    def _check_seconds(self, seconds: float) -> None:
        if self.max_seconds > 0 and seconds > self.max_seconds:
            raise LimitError(f"The file lasts {_hms(seconds)}; the limit is "
                             f"{_hms(self.max_seconds)} {how_to_raise('max_seconds')}.")

    def check_rows(self, n_rows: int) -> None:
        if self.max_csv_rows > 0 and n_rows > self.max_csv_rows:
            raise LimitError(f"The CSV holds {n_rows} rows; the limit is "
                             f"{self.max_csv_rows} {how_to_raise('max_csv_rows')}.")
