"""Make the example video shipped in assets/examples/, from sources whose licences are clean.

* speech: espeak-ng (GPL-3 program; the audio it outputs is not a derivative work of it),
  five short lines in different moods, two voices, with pauses;
* picture: skimage's `astronaut` image (public domain, NASA), looped as a still;
* encoding: imageio-ffmpeg's bundled ffmpeg (H.264 + AAC, faststart).

    .venv/bin/python scripts/make_example.py [--out assets/examples/example.mp4]

Needs `espeak-ng` on PATH (apt-get install espeak-ng). The output is deterministic for a given
espeak-ng and ffmpeg version and well under 1 MB.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import imageio_ffmpeg

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "examples" / "example.mp4"
LINES = [   # (voice, words per minute, text)
    ("en-us", 165, "Oh my god, we won! This is the best day ever!"),
    ("en-gb", 150, "Wait, what? You sold the car without asking me?"),
    ("en-us", 170, "I told you a hundred times. Stop touching my things!"),
    ("en-gb", 130, "I really miss him. Nothing feels the same anymore."),
    ("en-us", 150, "Okay. See you at the office tomorrow morning."),
]
PAUSE, LEAD = 1.2, 0.5   # seconds of silence between lines and before the first


def ffmpeg(*args: str) -> None:
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
                           "-nostdin", "-y", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"ffmpeg failed: {proc.stderr.strip()[-400:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng is needed: apt-get install espeak-ng")
    from PIL import Image
    from skimage import data

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        parts = []
        silence = work / "silence_{}.wav"
        ffmpeg("-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", f"{LEAD}", "-c:a", "pcm_s16le",
               str(silence).format("lead"))
        ffmpeg("-f", "lavfi", "-i", "anullsrc=r=22050:cl=mono", "-t", f"{PAUSE}", "-c:a", "pcm_s16le",
               str(silence).format("pause"))
        parts.append(Path(str(silence).format("lead")))
        for i, (voice, speed, text) in enumerate(LINES):
            wav = work / f"line{i}.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text], check=True)
            with wave.open(str(wav)) as w:
                assert w.getframerate() == 22050 and w.getnchannels() == 1, "unexpected espeak-ng output"
            parts += [wav, Path(str(silence).format("pause"))]
        listing = work / "list.txt"
        listing.write_text("".join(f"file '{p}'\n" for p in parts))
        speech = work / "speech.wav"
        ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c:a", "pcm_s16le", str(speech))
        face = work / "face.png"
        Image.fromarray(data.astronaut()).save(face)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        ffmpeg("-loop", "1", "-framerate", "25", "-i", str(face), "-i", str(speech),
               "-vf", "scale=640:360:force_original_aspect_ratio=decrease,pad=640:360:(ow-iw)/2:(oh-ih)/2",
               "-c:v", "libx264", "-preset", "veryslow", "-tune", "stillimage", "-crf", "26",
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-ac", "1",
               "-shortest", "-movflags", "+faststart", "-map_metadata", "-1", str(args.out))
    print(f"{args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
