"""The retention page's chart, drawn on the server: rows deleted per purge run, as SVG markup.

No script and no inline style (the console's CSP allows neither): the template writes these
rectangles' geometry as SVG attributes and colours them with classes from console.css. Each
bar carries a `<title>` (read by screen readers and shown on hover), and the page's table
beside it gives the same figures as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.schemas import AuditEvent

WIDTH, HEIGHT = 640, 200
LEFT, BOTTOM, TOP = 48, 24, 12  # room for the axis labels
MAX_BAR = 40


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    task_y: float
    task_height: float
    audit_y: float
    audit_height: float
    tasks: int
    events: int
    when: datetime


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    baseline: int
    top: int
    peak: int  # the y axis' top value: the most rows one run deleted
    bars: list[Bar]


def _deleted(detail: dict[str, Any] | None, table: str) -> int:
    figures = (detail or {}).get("deleted") or {}
    value = figures.get(table, 0) if isinstance(figures, dict) else 0
    return value if isinstance(value, int) and value >= 0 else 0


def purge_chart(events: Sequence[AuditEvent]) -> Chart:
    """Bars for the real (not dry) runs among `events`, oldest on the left: expired tasks
    stacked under old audit events, scaled to the largest run."""
    runs = [e for e in reversed(events) if not (e.detail or {}).get("dry_run")]
    figures = [(e, _deleted(e.detail, "agent_task"), _deleted(e.detail, "audit_event")) for e in runs]
    peak = max((tasks + audit for _, tasks, audit in figures), default=0)
    baseline = HEIGHT - BOTTOM
    room = baseline - TOP
    slot = (WIDTH - LEFT) / max(len(figures), 1)
    width = min(slot * 0.7, MAX_BAR)
    bars = []
    for n, (event, tasks, audit) in enumerate(figures):
        task_h = room * tasks / peak if peak else 0.0
        audit_h = room * audit / peak if peak else 0.0
        bars.append(
            Bar(
                x=round(LEFT + n * slot + (slot - width) / 2, 1),
                width=round(width, 1),
                task_y=round(baseline - task_h, 1),
                task_height=round(task_h, 1),
                audit_y=round(baseline - task_h - audit_h, 1),
                audit_height=round(audit_h, 1),
                tasks=tasks,
                events=audit,
                when=event.occurred_at,
            )
        )
    return Chart(WIDTH, HEIGHT, LEFT, baseline, TOP, peak, bars)
