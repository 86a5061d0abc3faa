"""Start the Emotion Workbench: `python app.py [--checkpoint DIR] [--host H] [--port P] [--data DIR]`.

Sessions, uploads and exports live in the data folder (`--data`, else $WORKBENCH_DATA, else ./data).
On a Hugging Face Space this file is the app_file; the GPU is used when there is one.
Limits: `--max-upload-mb`, `--max-seconds` (else $WORKBENCH_MAX_UPLOAD_MB, $WORKBENCH_MAX_SECONDS);
login: `--auth user:pass[,user2:pass2]` or `--auth @FILE` (else $WORKBENCH_AUTH); analyses per hour
per user: `--rate-per-hour N` (else $WORKBENCH_RATE_PER_HOUR, else 30; 0 = no limit; model switches
count too). Every session belongs to the login (else the browser) that made it; `--admin USER` lets a
login see every session. Checkpoints copied into the data folder's `models/` can be picked in the app ("Model", or
the API's /use_model); a pick changes the model of every user, so `--allow-model-switch {auto,yes,no}`
(else $WORKBENCH_MODEL_SWITCH, else auto) says who may: auto allows it when the server is reachable
from this machine only (--host 127.0.0.1, localhost or ::1, no share link) or requires a login
(--auth), and refuses it otherwise (e.g. --host 0.0.0.0 without --auth, as on a public Space: the
checkpoints and their cards are still shown). See README, "Security and limits".
"""

from __future__ import annotations

import argparse
import os

from core.media import ensure_ffmpeg_on_path
from webapp.switch_policy import MODES, decide, mode_from_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=os.environ.get("WORKBENCH_CHECKPOINT"),
                        help="checkpoint folder (default: assets/model, else an untrained model)")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--data", default=None, help="data folder (default: $WORKBENCH_DATA or ./data)")
    parser.add_argument("--max-upload-mb", type=float, default=None,
                        help="largest upload in MB, 0 = no limit (default: $WORKBENCH_MAX_UPLOAD_MB or 500)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="longest media analysed, 0 = no limit (default: $WORKBENCH_MAX_SECONDS or 3600)")
    parser.add_argument("--auth", default=os.environ.get("WORKBENCH_AUTH") or None,
                        help="require a login: user:pass[,user2:pass2] or @FILE with one user:pass a line "
                             "(default: $WORKBENCH_AUTH; none)")
    parser.add_argument("--admin", default=os.environ.get("WORKBENCH_ADMIN") or None,
                        help="logins (comma-separated, from --auth) that see and change every user's "
                             "sessions (default: $WORKBENCH_ADMIN; none)")
    parser.add_argument("--rate-per-hour", type=int, default=None,
                        help="analyses (and model switches) per hour per user (login, else IP address), "
                             "0 = no limit (default: $WORKBENCH_RATE_PER_HOUR or 30)")
    parser.add_argument("--io-per-hour", type=int, default=None,
                        help="CSV imports and exports per hour per user, 0 = no limit "
                             "(default: $WORKBENCH_IO_PER_HOUR or 240)")
    parser.add_argument("--allow-model-switch", choices=MODES, default=None,
                        help="may visitors switch the server's model (for every user)? auto: only when "
                             "the server is local (127.0.0.1, localhost, ::1) or --auth is set; yes; no "
                             "(default: $WORKBENCH_MODEL_SWITCH or auto)")
    parser.add_argument("--no-preload", action="store_true",
                        default=os.environ.get("WORKBENCH_PRELOAD", "1").strip() in ("0", "false", "no"),
                        help="load the models on the first analysis, not at start ($WORKBENCH_PRELOAD=0)")
    args = parser.parse_args()

    from core.limits import Limits
    from webapp.ratelimit import DEFAULT_IO_PER_HOUR, IO_ENV, RateLimiter
    try:
        limits = Limits.from_env(max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds)
        rate = RateLimiter.from_env(args.rate_per_hour)
        io_rate = RateLimiter.from_env(args.io_per_hour, DEFAULT_IO_PER_HOUR, IO_ENV, "imports and exports")
        shared = os.environ.get("GRADIO_SHARE", "").strip().lower() == "true"   # as launch() reads it
        model_switch = decide(mode_from_env(args.allow_model_switch), args.host, bool(args.auth), shared)
    except ValueError as err:
        parser.error(str(err))
    if args.checkpoint:
        from core.checkpoint import CheckpointError, load_checkpoint
        try:
            load_checkpoint(args.checkpoint)          # small: the fusion model and its card, no encoder
        except (CheckpointError, OSError) as err:
            parser.error(f"--checkpoint: {err}")

    admins = frozenset(a.strip() for a in (args.admin or "").split(",") if a.strip())
    if admins and not args.auth:
        parser.error("--admin needs --auth: an admin is a login")
    ensure_ffmpeg_on_path()
    from webapp.service import ModelHolder, Workbench
    from webapp.ui import build_app, launch_kwargs
    workbench = Workbench(ModelHolder(args.checkpoint), args.data, limits, rate, model_switch, admins, io_rate)
    try:
        kwargs = launch_kwargs(workbench, args.auth)
    except ValueError as err:         # a malformed --auth, or an upload limit in the environment
        parser.error(str(err))
    print(f"Model switching: {'allowed' if model_switch.allowed else 'off'} ({model_switch.why})")
    if not args.no_preload:
        workbench.holder.warm_up()
    demo = build_app(workbench)
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, **kwargs)


if __name__ == "__main__":
    main()
