"""Plotly figures: emotion probabilities over time (a stacked band per emotion, one block per
utterance, its table id above it) above a sentiment track (positive minus negative). A session of
more than CHART_PAGE utterances is drawn a part at a time: the part holding the selected one (a
plotly bar chart of 20,000 utterances takes 18 s to build and says nothing at that scale). Corrected
utterances are drawn with the annotator's label and outlined; the selected one is shaded; where an
utterance starts before the one before it ends, the overlap is hatched red. Every bar carries its
utterance's table id as customdata[0], which the page's click hook (ui.py) reads."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.labels import EMOTIONS, SENTIMENTS

from . import checks
from .session import Session

HEIGHT = 420
EMOTION_COLORS = {"anger": "#dc2626", "disgust": "#65a30d", "fear": "#7c3aed", "joy": "#f59e0b",
                  "neutral": "#94a3b8", "sadness": "#2563eb", "surprise": "#ec4899"}
SENTIMENT_COLORS = {"negative": "#dc2626", "neutral": "#94a3b8", "positive": "#16a34a"}
CHART_PAGE = 300        # utterances drawn at once; the chart of a longer session follows the selection
MAX_ID_LABELS = 60      # more utterances than this: every k-th id is written above the bars


def _spans(session: Session) -> list[tuple[int, float, float]]:
    """(position, start, end) of each utterance that has times; untimed rows are placed one
    second apart after the last timed one so that imported rows still show."""
    out, t = [], 0.0
    for i, r in enumerate(session.rows):
        if r.start is not None and r.end is not None and r.end > r.start:
            out.append((i, r.start, r.end))
            t = r.end
        else:
            out.append((i, t + 0.1, t + 1.0))
            t += 1.0
    return out


def timeline(session: Session | None, selected: int | None = None) -> go.Figure:
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28],
                        vertical_spacing=0.06)
    fig.update_layout(height=HEIGHT, margin=dict(l=56, r=16, t=34, b=96), barmode="stack",
                      bargap=0, plot_bgcolor="white", paper_bgcolor="white", clickmode="event",
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0, xanchor="left", font=dict(size=12),
                                  traceorder="normal"),
                      hoverlabel=dict(font_size=12), font=dict(size=12))
    if session is None or not session.rows:
        fig.add_annotation(text="No utterances yet: analyse a file or import a MELD CSV.",
                           showarrow=False, xref="paper", yref="paper", x=0.5, y=0.6,
                           font=dict(size=14, color="#64748b"))
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return fig
    spans, first = _window(_spans(session), selected)
    if first or len(spans) < len(session.rows):
        fig.add_annotation(text=f"utterances {spans[0][0]}–{spans[-1][0]} of {len(session.rows)} "
                           "(the part with the selected one)", showarrow=False, xref="paper", yref="paper",
                           x=1, y=1.09, xanchor="right", font=dict(size=11, color="#475569"))
    mids = [(s + e) / 2 for _, s, e in spans]
    widths = [(e - s) * 0.97 for _, s, e in spans]
    rows = [session.rows[i] for i, _, _ in spans]
    probs = [r.shown_emotion_probs() for r in rows]
    hover = [f"#{i} {r.start if r.start is not None else '?'}–{r.end if r.end is not None else '?'} s"
             f"<br><b>{r.emotion or '—'}</b> · {r.sentiment or '—'}"
             f"{' (corrected)' if r.corrected else ''}<br>{_short(r.text)}"
             for (i, _, _), r in zip(spans, rows)]
    ids = [i for i, _, _ in spans]
    data = [[i, h] for i, h in zip(ids, hover)]
    edge = ["#0f172a" if r.corrected else "white" for r in rows]
    for k, emotion in enumerate(EMOTIONS):
        fig.add_trace(go.Bar(
            x=mids, y=[p[k] for p in probs], width=widths, name=emotion,
            marker=dict(color=EMOTION_COLORS[emotion], line=dict(color=edge, width=[2 if r.corrected else 0.5 for r in rows])),
            customdata=data, hovertemplate=f"{emotion} %{{y:.2f}}<br>%{{customdata[1]}}<extra></extra>"),
            row=1, col=1)
    polarity = []
    for r in rows:
        p = r.shown_sentiment_probs()
        polarity.append(p[SENTIMENTS.index("positive")] - p[SENTIMENTS.index("negative")] if any(p) else 0.0)
    fig.add_trace(go.Bar(
        x=mids, y=polarity, width=widths, name="sentiment", showlegend=False,
        marker=dict(color=[SENTIMENT_COLORS.get(r.sentiment, "#e2e8f0") for r in rows],
                    line=dict(color=edge, width=[2 if r.corrected else 0 for r in rows])),
        customdata=data, hovertemplate="positive − negative %{y:.2f}<br>%{customdata[1]}<extra></extra>"),
        row=2, col=1)
    every = max(1, -(-len(spans) // MAX_ID_LABELS))
    fig.add_trace(go.Scatter(x=mids[::every], y=[1.06] * len(mids[::every]), mode="text",
                             text=[f"{i}" for i in ids[::every]], textfont=dict(size=11, color="#334155"),
                             customdata=data[::every], hoverinfo="skip", showlegend=False), row=1, col=1)
    _mark_overlaps(fig, session, {i for i, _, _ in spans})
    for (i, s, e), r in zip(spans, rows):
        if r.corrected:
            fig.add_annotation(x=(s + e) / 2, y=0.94, text="✎", showarrow=False,
                               font=dict(size=13, color="#0f172a"), row=1, col=1)
        if selected is not None and i == selected:
            for row in (1, 2):
                fig.add_vrect(x0=s, x1=e, fillcolor="#fde68a", opacity=0.35, line_width=0,
                              layer="below", row=row, col=1)
    fig.update_yaxes(range=[0, 1.12], title_text="emotion", tickvals=[0, 0.5, 1], row=1, col=1,
                     gridcolor="#e2e8f0")
    fig.update_yaxes(range=[-1.05, 1.05], title_text="sentiment", tickvals=[-1, 0, 1],
                     ticktext=["neg", "0", "pos"], zeroline=True, zerolinecolor="#94a3b8",
                     gridcolor="#f1f5f9", row=2, col=1)
    end = max(e for _, _, e in spans)
    if len(spans) < len(session.rows):
        low = min(s for _, s, _ in spans)
        x_range = [low - 0.01 * (end - low), end + 0.01 * (end - low)]
    else:
        x_range = [0, max(end, session.duration) * 1.01]
    fig.update_xaxes(range=x_range, gridcolor="#f1f5f9", row=1, col=1)
    fig.update_xaxes(title_text="time (s)", gridcolor="#f1f5f9", row=2, col=1)
    return fig


def _window(spans: list[tuple[int, float, float]], selected: int | None,
            size: int = CHART_PAGE) -> tuple[list[tuple[int, float, float]], int]:
    """The CHART_PAGE spans holding `selected` (fixed parts, like the table's pages) and where they start."""
    if len(spans) <= size:
        return spans, 0
    first = (selected or 0) // size * size if selected is not None and 0 <= selected < len(spans) else 0
    return spans[first:first + size], first


def _mark_overlaps(fig: go.Figure, session: Session, drawn: set[int]) -> None:
    """Hatch in red the stretch where an utterance (of those drawn) starts before an earlier one has ended."""
    ends = {}
    latest = None
    for i, r in enumerate(session.rows):
        if r.start is not None and r.end is not None:
            ends[i] = latest
            latest = r.end if latest is None else max(latest, r.end)
    for issue in checks.overlaps(session):
        if issue.position not in drawn:
            continue
        r = session.rows[issue.position]
        x0, x1 = r.start, min(ends[issue.position], r.end)
        for row in (1, 2):
            fig.add_vrect(x0=x0, x1=x1, fillcolor="#ef4444", opacity=0.28, line=dict(color="#b91c1c", width=1),
                          layer="above", row=row, col=1)
        fig.add_annotation(x=(x0 + x1) / 2, y=0.5, text=f"⚠ overlap {issue.position}", showarrow=False,
                           font=dict(size=11, color="#7f1d1d"), bgcolor="rgba(254,226,226,0.9)", row=1, col=1)


def _short(text: str, limit: int = 70) -> str:
    text = text.replace("<", "&lt;")
    return text if len(text) <= limit else text[:limit - 1] + "…"
