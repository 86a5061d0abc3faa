"""How long one correction takes as sessions grow: 20, 2,000 and 20,000 utterances.

    python tools/bench_edits.py

Launches the workbench in this process (loopback, the app's own launch settings, the shipped
model is not needed: sessions are imported from generated MELD CSVs), then times with
gradio_client: an `/edit` (median of 7), the page's redraw after an edit (table page and chart,
called directly), and another client's `/sessions` while an edit loop runs on the biggest session.
Prints one table; the README's security section quotes it.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = (20, 2_000, 20_000)
HEADER = "Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,StartTime,EndTime\n"


def stamp(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def write_csv(folder: Path, n: int, dialogue: int) -> Path:
    path = folder / f"rows{n}.csv"
    lines = [f'line {i} of the script,Ann,neutral,neutral,{dialogue},{i},"{stamp(2 * i)}","{stamp(2 * i + 1.5)}"'
             for i in range(n)]
    path.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def main() -> None:
    from gradio_client import Client, handle_file

    from webapp import charts, owners, views
    from webapp.service import ModelHolder, Workbench
    from webapp.ui import build_app, launch_kwargs

    folder = Path(tempfile.mkdtemp(prefix="bench-edits-"))
    wb = Workbench(ModelHolder(checkpoint=None), folder / "data")
    demo = build_app(wb)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(wb))
    me = Client(demo.local_url, verbose=False, headers={owners.TOKEN_HEADER: "bench-token-0123456789abcdef"})
    other = Client(demo.local_url, verbose=False, headers={owners.TOKEN_HEADER: "other-token-0123456789abcdef"})
    print(f"{'utterances':>10} | {'/edit (median of 7)':>20} | {'page redraw (table + chart)':>28}")
    sessions = {}
    for d, n in enumerate(SIZES):
        (sid,), _ = me.predict(handle_file(str(write_csv(folder, n, 900 + d))), None, api_name="/import_meld")
        sessions[n] = sid
        times = []
        for k in range(7):
            start = time.perf_counter()
            me.predict(sid, n - 1 - k, "speaker", f"Bea {k}", api_name="/edit")
            times.append(time.perf_counter() - start)
        session = wb.session(sid, None)
        start = time.perf_counter()
        views.table_page(session, views.TableView(), n // 2)
        charts.timeline(session, n // 2)
        redraw = time.perf_counter() - start
        print(f"{n:>10} | {statistics.median(times) * 1000:>17.0f} ms | {redraw * 1000:>25.0f} ms")
    stop = threading.Event()

    def hammer() -> None:
        k = 0
        while not stop.is_set():
            me.predict(sessions[SIZES[-1]], k % 100, "speaker", f"Cy {k}", api_name="/edit")
            k += 1

    worker = threading.Thread(target=hammer, daemon=True)
    worker.start()
    waits = []
    for _ in range(7):
        start = time.perf_counter()
        other.predict(api_name="/sessions")
        waits.append(time.perf_counter() - start)
    stop.set()
    worker.join()
    print(f"another client's /sessions while edits run on the {SIZES[-1]:,}-row session: "
          f"median {statistics.median(waits) * 1000:.0f} ms, worst {max(waits) * 1000:.0f} ms")
    demo.close()


if __name__ == "__main__":
    main()
