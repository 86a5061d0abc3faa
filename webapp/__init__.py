"""The annotation workbench: a Gradio 6 app over core.pipeline.

ui.py (layout, wiring; page.js, page.css, play.js: the browser side) · handlers.py + corrections.py (page events) · api.py (named endpoints) ·
session.py (the session model and its edits, pure) · store.py (SQLite autosave) · charts.py ·
views.py · export.py (MELD CSV, zip of clips) · importer.py (MELD CSV in) · media_prep.py
(uploads made playable) · service.py (the operations shared by page and API) · paths.py ·
checkpoints.py + model_picker.py (the "Model" picker: list, card, switch) · switch_policy.py (who
may switch the server's model) · ratelimit.py (analyses and model switches per hour per user).
"""
