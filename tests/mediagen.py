"""Make test media on the fly: espeak-ng speech, a still face looped into a video, and broken files.

Nothing here is committed as media; every test builds what it needs into a temporary folder.
Requires espeak-ng (apt) and imageio-ffmpeg's bundled ffmpeg.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg quietly; raise with its stderr on failure."""
    proc = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.strip()[-400:]}")


def speak(text: str, out: Path, speed: int = 150, voice: str = "en-us") -> Path:
    """Speak `text` with espeak-ng into a WAV file (22.05 kHz mono)."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True)
    return out


def silence(seconds: float, out: Path, rate: int = 22050) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"anullsrc=r={rate}:cl=mono", "-t", f"{seconds:.3f}",
           "-c:a", "pcm_s16le", str(out))
    return out


def wav_duration(path: Path) -> float:
    import wave
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def speech_with_pauses(sentences: list[str], out: Path, pause: float = 1.5,
                       lead: float = 0.5) -> tuple[Path, list[tuple[float, float]]]:
    """Speak sentences separated by silent pauses; return the WAV and each sentence's (start, end)."""
    work = out.parent / (out.stem + "_parts")
    work.mkdir(parents=True, exist_ok=True)
    parts, spans, t = [], [], 0.0
    if lead > 0:
        parts.append(silence(lead, work / "lead.wav")); t += lead
    for i, sentence in enumerate(sentences):
        wav = speak(sentence, work / f"s{i}.wav")
        d = wav_duration(wav)
        parts.append(wav); spans.append((t, t + d)); t += d
        parts.append(silence(pause, work / f"p{i}.wav")); t += pause
    listing = work / "list.txt"
    listing.write_text("".join(f"file '{p.resolve()}'\n" for p in parts))
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c:a", "pcm_s16le", str(out))
    return out, spans


def face_image(out: Path, size: tuple[int, int] | None = None) -> Path:
    """skimage's public-domain `astronaut` portrait (a smiling face) as PNG."""
    from skimage import data
    from PIL import Image
    img = Image.fromarray(data.astronaut())
    if size:
        img = img.resize(size)
    img.save(out)
    return out


def face_array() -> np.ndarray:
    """The astronaut portrait as an RGB uint8 array (512x512x3)."""
    from skimage import data
    return np.ascontiguousarray(data.astronaut())


def talking_video(audio: Path, out: Path, image: Path | None = None, fps: int = 25,
                  size: str = "640x360", vcodec: str = "libx264", acodec: str = "aac") -> Path:
    """A still face looped under `audio` for the audio's length."""
    image = image or face_image(out.parent / "face.png")
    vf = f"scale={size.replace('x', ':')}:force_original_aspect_ratio=decrease,pad={size.replace('x', ':')}:(ow-iw)/2:(oh-ih)/2"
    ffmpeg("-loop", "1", "-framerate", str(fps), "-i", str(image), "-i", str(audio), "-vf", vf,
           "-c:v", vcodec, "-pix_fmt", "yuv420p", "-c:a", acodec, "-shortest", str(out))
    return out


def testsrc_video(out: Path, seconds: float = 3.0, audio: Path | None = None, silent: bool = False,
                  fps: int = 25, size: str = "320x240") -> Path:
    """ffmpeg's test pattern (no face); optional speech track or a silent track."""
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}"]
    if audio is not None:
        args += ["-i", str(audio), "-c:a", "aac"]
    elif silent:
        args += ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-c:a", "aac"]
    # -t as an output option bounds every (otherwise endless) lavfi source
    ffmpeg(*args, "-t", f"{seconds:.3f}", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out))
    return out


def one_frame_video(out: Path) -> Path:
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25", "-frames:v", "1",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out))
    return out


def truncated_copy(src: Path, out: Path, keep: float = 0.4) -> Path:
    data = src.read_bytes()
    out.write_bytes(data[: int(len(data) * keep)])
    return out


def text_file_named(out: Path) -> Path:
    out.write_text("This is not a video at all.\n" * 20)
    return out


def empty_file(out: Path) -> Path:
    out.write_bytes(b"")
    return out


# ---------------------------------------------------------------- tiny labelled clips (retraining tests)

def tone_clip(out: Path, freq: float, seconds: float = 1.0, volume: float = 0.3,
              size: str = "96x64") -> Path:
    """A flat grey picture (no face) over a sine tone: a clip whose only cue is its audio."""
    ffmpeg("-f", "lavfi", "-i", f"color=c=0x505050:s={size}:r=10",
           "-f", "lavfi", "-i", f"sine=frequency={freq:.1f}:sample_rate=16000",
           "-af", f"volume={volume:.3f}", "-t", f"{seconds:.3f}", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-ac", "1", str(out))
    return out


def still_clip(image: Path, out: Path, seconds: float = 1.0, fps: int = 10) -> Path:
    """A still image looped over a silent track: a clip whose only cue is its picture."""
    ffmpeg("-loop", "1", "-framerate", str(fps), "-i", str(image),
           "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", f"{seconds:.3f}",
           "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           "-c:a", "aac", str(out))
    return out


def face_variant(out: Path, rng: np.random.Generator, cover_mouth: bool) -> Path:
    """The astronaut's face, shifted, scaled and lit a little differently each time; optionally
    with a grey patch over the mouth (the FER net's features then differ clearly)."""
    from PIL import Image
    dx, dy = (int(v) for v in rng.integers(-10, 11, 2))
    side = int(rng.integers(150, 190))
    img = Image.fromarray(face_array()).crop((96 + dx, dy + 10, 352 + dx, 266 + dy)).resize((side, side))
    a = np.clip(np.asarray(img, np.float32) * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)
    if cover_mouth:
        k = side / 160
        a[int(95 * k):int(125 * k), int(45 * k):int(115 * k)] = 90
    Image.fromarray(a).save(out)
    return out


def tinted_clip(out: Path, rgb: tuple[int, int, int], seconds: float = 1.0, size: str = "96x64") -> Path:
    """A moving test pattern tinted towards `rgb`, over a silent track, with no face: a clip
    whose only cue is the colour of its picture (for the R3D-18 video branch)."""
    r, g, b = (int(v) for v in rgb)
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={size}:r=10",
           "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", f"{seconds:.3f}",
           "-vf", f"hue=s=0,colorchannelmixer=rr={r / 255:.3f}:gg={g / 255:.3f}:bb={b / 255:.3f}",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out))
    return out
