"""The retention chart's geometry: one bar per real run, oldest first, scaled to the largest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.console.chart import HEIGHT, purge_chart
from app.domain import AuditAction, AuditOutcome, Channel
from app.schemas import AuditEvent

START = datetime(2026, 1, 1, tzinfo=UTC)


def run(n: int, tasks: int, events: int = 0, *, dry: bool = False, detail: Any = None) -> AuditEvent:
    figures = {"dry_run": dry, "deleted": {"agent_task": tasks, "audit_event": events, "audit_seal": 0}}
    return AuditEvent(
        id=n,
        occurred_at=START + timedelta(hours=n),
        actor_id=None,
        actor_role=None,
        channel=Channel.SYSTEM,
        action=AuditAction.PURGE,
        task_id=None,
        outcome=AuditOutcome.OK,
        request_id=None,
        detail=figures if detail is None else detail,
    )


def test_bars_run_oldest_first_and_scale_to_the_largest_run() -> None:
    newest_first = [run(3, 10, 30), run(2, 0, 0, dry=True), run(1, 20)]
    chart = purge_chart(newest_first)
    assert [b.when for b in chart.bars] == [START + timedelta(hours=1), START + timedelta(hours=3)]
    assert chart.peak == 40
    first, second = chart.bars
    assert first.x < second.x
    assert second.task_height + second.audit_height == chart.baseline - chart.top  # the tallest fills the room
    assert first.task_height == (chart.baseline - chart.top) / 2
    assert first.audit_height == 0
    assert second.audit_y + second.audit_height == second.task_y  # audit events stacked on the tasks
    assert all(0 <= b.audit_y <= b.task_y <= chart.baseline <= HEIGHT for b in chart.bars)


def test_no_runs_or_odd_figures_draw_nothing_amiss() -> None:
    assert purge_chart([]).bars == []
    odd = purge_chart([run(1, 0, detail={"deleted": "many"}), run(2, 0, detail={"deleted": {"agent_task": -5}})])
    assert odd.peak == 0
    assert [(b.task_height, b.audit_height) for b in odd.bars] == [(0.0, 0.0), (0.0, 0.0)]
