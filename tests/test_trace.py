"""Traces: per-node totals, wall time apart from summed call time."""

from __future__ import annotations

import pytest

from itc.runtime.trace import CallEvent, Trace


def test_node_wall_time_spans_overlapping_calls_and_latency_sums_them() -> None:
    trace = Trace(problem_id="p")
    for started in (0.0, 0.5, 1.0):
        trace.record(CallEvent(node="vote/inner", status="ok", started=started, latency=2.0))
    trace.record(CallEvent(node="vote/scorer", status="ok", started=3.5, latency=0.5))
    trace.record(CallEvent(node="vote/inner", status="refused"))
    nodes = trace.by_node()
    assert nodes["vote/inner"].latency == pytest.approx(6.0)
    assert nodes["vote/inner"].wall_time == pytest.approx(3.0)  # 0.0 .. 3.0
    assert nodes["vote"].wall_time == pytest.approx(4.0)  # 0.0 .. 4.0, children included
    assert nodes["vote/inner"].refused == 1 and nodes["vote/inner"].calls == 3
