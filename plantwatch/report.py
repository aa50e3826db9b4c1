"""A backtest as one self-contained HTML page: what an engineer opens to see why it fired.

The page carries everything inline (styles, and each asset's backtest figure as a PNG data
URI), so it can be mailed, attached to a ticket or opened from a CI artifact with nothing
else around it. Top to bottom: what was replayed (file, model, rows, metrics when the file
had labels), the alerts (one row per alert: asset, kind, when it opened and resolved, how
bad it got, the signals that drove it and why it opened and ended), and one figure per
asset (signals, score against threshold, predicted and labelled anomalies).

>>> from alerts.events import AlertEvent, ModelRef, TopSignal
>>> def event(kind, at, reason):
...     return AlertEvent(alert_id="a1", event=kind, asset="pump-1", severity="warning",
...         started_at="2026-01-01T00:00:10.000Z", ended_at=None, detected_at=at,
...         score=5.0, threshold=3.0, top_signals=[TopSignal("temp", 0.8)],
...         model=ModelRef("pca", "abc"), peak_score=6.0, ratio=None, reason=reason,
...         window_at=at)
>>> [ep.resolved_at for ep in episodes([event("opened", "2026-01-01T00:00:12.000Z", "3 of 5"),
...      event("resolved", "2026-01-01T00:01:00.000Z", "10 in a row under")])]
['2026-01-01T00:01:00.000Z']
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from alerts.events import AlertEvent

#: At most this many alerts are listed (the first ones, in time order); the count says so.
MAX_ALERT_ROWS: Final = 500

_STYLE: Final = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left;
         vertical-align: top; }
th { background: #f4f4f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.critical { color: #b00020; font-weight: 600; } .warning { color: #b34700; }
.note { color: #666; } img { max-width: 100%; border: 1px solid #eee; }
"""


@dataclass(frozen=True)
class Episode:
    """One alert from its events: opened, its worst moment, and how it ended."""

    alert_id: str
    asset: str
    kind: str
    started_at: str
    detected_at: str
    resolved_at: str | None
    severity: str
    peak_score: float
    threshold: float
    top_signals: tuple[str, ...]
    opened_because: str
    resolved_because: str | None


def episodes(events: Sequence[AlertEvent]) -> list[Episode]:
    """Each alert once, from its ``opened`` event and its later ones, in opening order."""
    seen: dict[str, Episode] = {}
    for e in events:
        known = seen.get(e.alert_id)
        if known is None:
            seen[e.alert_id] = Episode(
                alert_id=e.alert_id,
                asset=e.asset,
                kind=e.kind,
                started_at=e.started_at,
                detected_at=e.detected_at,
                resolved_at=e.window_at if e.event == "resolved" else None,
                severity=e.severity,
                peak_score=e.peak_score,
                threshold=e.threshold,
                top_signals=tuple(s.signal for s in e.top_signals),
                opened_because=e.reason,
                resolved_because=e.reason if e.event == "resolved" else None,
            )
            continue
        worse = e.severity == "critical" and known.severity != "critical"
        seen[e.alert_id] = Episode(
            alert_id=known.alert_id,
            asset=known.asset,
            kind=known.kind,
            started_at=known.started_at,
            detected_at=known.detected_at,
            resolved_at=e.window_at if e.event == "resolved" else known.resolved_at,
            severity="critical" if worse else known.severity,
            peak_score=max(known.peak_score, e.peak_score),
            threshold=known.threshold,
            top_signals=known.top_signals or tuple(s.signal for s in e.top_signals),
            opened_because=known.opened_because,
            resolved_because=e.reason if e.event == "resolved" else known.resolved_because,
        )
    return sorted(seen.values(), key=lambda ep: (ep.detected_at, ep.asset, ep.alert_id))


def _cell(value: Any, *, num: bool = False, cls: str = "") -> str:
    if isinstance(value, float):
        text = "–" if not math.isfinite(value) else f"{value:.4g}"
    else:
        text = "–" if value is None else str(value)
    classes = " ".join(c for c in ("num" if num else "", cls) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{html.escape(text)}</td>"


def _summary_rows(summary: Mapping[str, Any]) -> list[str]:
    rows: list[str] = []
    model = summary.get("model") or {}
    items: list[tuple[str, Any]] = [
        ("input", summary.get("input")),
        ("model", f"{model.get('name')} {model.get('version')}" if model else None),
        ("rows replayed", summary.get("rows")),
        ("training rows", summary.get("train_rows")),
        ("alert events", summary.get("alert_events")),
    ]
    alerts = summary.get("alerts")
    if isinstance(alerts, Mapping):
        for key, name in (
            ("f1", "F1 (rows under an alert)"),
            ("far_pct", "FAR %"),
            ("mar_pct", "MAR %"),
            ("event_f1", "event F1"),
            ("events_detected", "labelled events detected"),
            ("events_labelled", "labelled events"),
            ("events_false", "alerts matching no labelled event"),
        ):
            items.append((name, alerts.get(key)))
        items.append(("ROC AUC of the score", summary.get("auc_roc")))
    for name, value in items:
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        rows.append(f"<tr><th>{html.escape(name)}</th>{_cell(value, num=numeric)}</tr>")
    return rows


def render_html(
    *,
    title: str,
    summary: Mapping[str, Any],
    events: Sequence[AlertEvent],
    figures: Sequence[tuple[str, bytes]],
    note: str = "",
) -> str:
    """The page as text; ``figures`` are ``(caption, PNG bytes)``."""
    eps = episodes(events)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<table>",
        *_summary_rows(summary),
        "</table>",
    ]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append(f"<h2>Alerts ({len(eps)})</h2>")
    if not eps:
        parts.append('<p class="note">No alert opened.</p>')
    else:
        parts.append(
            "<table><tr><th>asset</th><th>kind</th><th>started</th><th>detected</th>"
            "<th>resolved</th><th>severity</th><th>peak score</th><th>threshold</th>"
            "<th>top signals</th><th>why it opened</th><th>why it ended</th></tr>"
        )
        for ep in eps[:MAX_ALERT_ROWS]:
            parts.append(
                "<tr>"
                + _cell(ep.asset)
                + _cell(ep.kind)
                + _cell(ep.started_at)
                + _cell(ep.detected_at)
                + _cell(ep.resolved_at or "still open")
                + _cell(ep.severity, cls=ep.severity)
                + _cell(ep.peak_score, num=True)
                + _cell(ep.threshold, num=True)
                + _cell(", ".join(ep.top_signals))
                + _cell(ep.opened_because)
                + _cell(ep.resolved_because)
                + "</tr>"
            )
        parts.append("</table>")
        if len(eps) > MAX_ALERT_ROWS:
            parts.append(
                f'<p class="note">The first {MAX_ALERT_ROWS} of {len(eps)} alerts; the CSV '
                "written beside this page has every row.</p>"
            )
    for caption, png in figures:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(caption)}</h2>")
        parts.append(f'<img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(path: str | Path, **page: Any) -> Path:
    """Write :func:`render_html`'s page at ``path`` (folders created); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(**page), encoding="utf-8")
    return out
