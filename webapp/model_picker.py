"""The "Model" accordion: pick the checkpoint used for the next analyses, read its card, re-scan
the models folder. Layout (build) and its handlers; the listing is checkpoints.py, the loading
ModelHolder.switch. The model is the server's: a switch applies to every user's next analysis,
and sessions analysed before keep their predictions (each says which model made it).

When the server refuses switching (`wb.model_switch`, from --allow-model-switch; by default on a
public server without --auth) the accordion is read-only: the checkpoints are listed and picking
one shows its card with one line saying why it is not switched. An allowed switch counts against
the per-user rate limit, like an analysis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from . import checkpoints, views
from .ratelimit import RateLimited, client_key
from .service import ModelError, Workbench


@dataclass
class Picker:
    """The accordion's components."""

    choice: Any
    refresh: Any
    card: Any
    status: Any


def build(wb: Workbench) -> Picker:
    """The accordion (call inside `with gr.Blocks()`, where it should appear)."""
    entries = wb.checkpoints()
    current = wb.current_model(entries)
    with gr.Accordion("Model", open=False, elem_id="model-box"):
        with gr.Row(equal_height=True):
            choice = gr.Dropdown(choices=choices(entries), value=current, interactive=True, scale=4,
                                 label=choice_label(wb), elem_id="model-pick")
            refresh = gr.Button("↻ Re-scan models folder", scale=0, min_width=180, elem_id="model-refresh")
        status = gr.Markdown(status_text(wb, entries, current), elem_id="model-status")
        card = gr.Markdown(checkpoints.card_markdown(checkpoints.find(entries, current), current=True),
                           elem_id="model-card")
        gr.Markdown("To add a model, copy its checkpoint folder (`card.json` + `model.safetensors`, as "
                    "written by `train/`) into the data folder's `models/` on the server and re-scan. Sessions analysed before "
                    "keep their predictions.")
    return Picker(choice, refresh, card, status)


def choices(entries: list[checkpoints.Entry]) -> list[tuple[str, str]]:
    return [(e.label, e.key) for e in entries]


def choice_label(wb: Workbench) -> str:
    """The dropdown's label: what picking does on this server."""
    if wb.model_switch.allowed:
        return "Checkpoint used for the next analyses (of every user of this server)"
    return "Checkpoints (read-only: switching models is off on this server; pick one to read its card)"


def status_text(wb: Workbench, entries: list[checkpoints.Entry], current: str | None, note: str = "") -> str:
    name = wb.holder.summary().get("name", "?")
    where = f" (`{current}`)" if current else " (not in this list)"
    counted = wb.rate.enabled and wb.model_switch.allowed
    rate = wb.rate.describe() + (" (a switch counts as one)" if counted else "")
    text = f"**In use:** {name}{where} · {len(entries)} checkpoint(s) listed · {rate}"
    if not wb.model_switch.allowed and not note:
        text += f"  \n{wb.model_switch.refusal}."
    return f"{note}  \n{text}" if note else text


class PickerHandlers:
    """`banner` is the page's model banner, redrawn by `banner_text(session_id)` after a switch."""

    def __init__(self, wb: Workbench, picker: Picker, banner: Any = None, sid: Any = None,
                 banner_text: Callable[[str | None], str] | None = None):
        self.wb, self.p, self.banner, self.sid = wb, picker, banner, sid
        self.banner_text = banner_text or (lambda session_id: views.model_banner(wb.holder.summary()))

    def outputs(self, banner: bool = True) -> list:
        return [self.p.choice, self.p.card, self.p.status] + ([self.banner] if banner else [])

    def refresh(self, session_id: str | None = None) -> dict:
        """Re-scan the models folder; show the checkpoint in use."""
        entries = self.wb.checkpoints()
        current = self.wb.current_model(entries)
        out = self._render(entries, current, current)
        out[self.banner] = self.banner_text(session_id)
        return out

    def on_load(self) -> dict:
        """The page opened: the list and the model in use now (the banner is the session's)."""
        entries = self.wb.checkpoints()
        current = self.wb.current_model(entries)
        return self._render(entries, current, current)

    def select(self, key: str | None, session_id: str | None = None, progress=gr.Progress(),
               request: gr.Request = None) -> dict:
        """Show the chosen checkpoint's card and use it for the next analyses (switching off on this
        server, a broken checkpoint, over the rate limit: say why in one line, keep the model in use)."""
        entries = self.wb.checkpoints()
        current = self.wb.current_model(entries)
        if not key or key == current:
            return self._render(entries, current, current)
        if not self.wb.model_switch.allowed:
            return self._render(entries, current, key, note=f"🔒 {self.wb.model_switch.refusal}.")
        entry = checkpoints.find(entries, key)
        name = entry.card.name if entry and entry.card else key
        progress(0.1, desc=f"loading {name}")
        try:
            self.wb.use_model(key, user=client_key(request))
        except (ModelError, RateLimited) as err:
            gr.Warning(str(err))
            return self._render(entries, current, key, note=f"⚠ {err}")
        gr.Info(f"The next analyses use {name}.")
        out = self._render(entries, key, key, note=f"✓ Switched to **{name}**.")
        out[self.banner] = self.banner_text(session_id)
        return out

    def _render(self, entries: list[checkpoints.Entry], current: str | None, shown: str | None,
                note: str = "") -> dict:
        entry = checkpoints.find(entries, shown)
        return {self.p.choice: gr.update(choices=choices(entries), value=current,
                                         label=choice_label(self.wb)),
                self.p.card: checkpoints.card_markdown(entry, current=shown == current),
                self.p.status: status_text(self.wb, entries, current, note)}


def wire(h: PickerHandlers, demo: gr.Blocks) -> None:
    """The accordion's events (private: the API has /models and /use_model)."""
    private = dict(api_visibility="private")
    h.p.choice.select(h.select, [h.p.choice, h.sid], h.outputs(), concurrency_id="model", concurrency_limit=1,
                     show_progress_on=[h.p.card], **private)
    h.p.refresh.click(h.refresh, [h.sid], h.outputs(), show_progress="hidden", **private)
    demo.load(h.on_load, None, h.outputs(banner=False), show_progress="hidden", **private)
