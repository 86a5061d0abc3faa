"""The results player: gr.Video without Gradio's playability probe.

Gradio's Video output asks `ffprobe` whether a file plays in a browser before sending it, and fails
with FFExecutableNotFoundError where only imageio-ffmpeg's `ffmpeg` is installed (it ships no
`ffprobe`): the first click of a fresh setup ended in a bare "Error". The player only ever gets
files that webapp/media_prep.py made browser-playable (H.264/AAC MP4, or a re-muxed WebM), so the
probe has nothing to decide here and is skipped; everything else gr.Video does is kept.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
from gradio import processing_utils
from gradio.data_classes import FileData


class Player(gr.Video):
    def get_block_name(self) -> str:
        return "video"            # the browser side is gr.Video's own

    def _format_video(self, video: str | Path | None) -> FileData | None:
        if video is None:
            return None
        video = str(video)
        processing_utils._check_allowed(video, check_in_upload_folder=False)
        return FileData(path=video, orig_name=Path(video).name)
