"""The in-process counters behind /metrics: sums per label set, whatever the order of the labels
or the thread that adds, and never down."""

from __future__ import annotations

import threading

import pytest

from app.telemetry import metrics
from app.telemetry.metrics import _Counter


@pytest.fixture(autouse=True)
def _unregistered():
    """The tests' counters never reach a meter provider (nor /metrics in a later test)."""
    before = list(metrics._counters)
    yield
    metrics._counters[:] = before


def _sums(counter: _Counter) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(o.attributes.items())): o.value for o in counter._observe(None)}  # type: ignore[arg-type]


def test_label_sets_are_summed_apart_whatever_the_order_of_their_labels():
    counter = _Counter("test_counter_order", description="a test")
    counter.add(1, {"channel": "rest", "outcome": "ok"})
    counter.add(2, {"outcome": "ok", "channel": "rest"})
    counter.add(0, {"channel": "mcp", "outcome": "ok"})  # a series at zero
    counter.add(1)

    assert _sums(counter) == {
        (("channel", "rest"), ("outcome", "ok")): 3,
        (("channel", "mcp"), ("outcome", "ok")): 0,
        (): 1,
    }


def test_adds_from_many_threads_lose_nothing():
    counter = _Counter("test_counter_threads", description="a test")

    def add() -> None:
        for _ in range(10_000):
            counter.add(1, {"result": "hit"})

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert _sums(counter) == {(("result", "hit"),): 80_000}


def test_a_counter_never_goes_down():
    with pytest.raises(ValueError, match="only goes up"):
        _Counter("test_counter_down", description="a test").add(-1)
