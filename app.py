"""Start the Emotion Workbench: `python app.py [--checkpoint DIR] [--host H] [--port P] [--data DIR]`.

Sessions, uploads and exports live in the data folder (`--data`, else $WORKBENCH_DATA, else ./data).
On a Hugging Face Space this file is the app_file; the GPU is used when there is one.
"""

from __future__ import annotations

import argparse
import os

from core.media import ensure_ffmpeg_on_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("WORKBENCH_CHECKPOINT"),
                        help="checkpoint folder (default: assets/model, else an untrained model)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--data", default=None, help="data folder (default: $WORKBENCH_DATA or ./data)")
    args = parser.parse_args()

    ensure_ffmpeg_on_path()
    from webapp.service import ModelHolder, Workbench
    from webapp.ui import build_app, launch_kwargs
    holder = ModelHolder(args.checkpoint)
    holder.warm_up()
    workbench = Workbench(holder, args.data)
    demo = build_app(workbench)
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port,
                                                   **launch_kwargs(workbench))


if __name__ == "__main__":
    main()
