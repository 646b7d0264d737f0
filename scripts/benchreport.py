"""The figures scripts/bench.py prints and writes: medians, ratios and the targets they are held to."""

from __future__ import annotations

from typing import Any

from benchlib import Stats, print_table


def ratio(x: float, y: float, digits: int = 3) -> float | None:
    return round(x / y, digits) if y else None


def median_stats(runs: list[Stats]) -> Stats:
    """The run with the median throughput (its latencies belong to it)."""
    ordered = sorted(runs, key=lambda s: s.rps)
    return ordered[len(ordered) // 2]


def _print_ratios(ratios: dict[str, float | None], targets: dict[str, str]) -> None:
    print()
    for name, value in ratios.items():
        print(f"{name:18} {value!s:>8}   {('target ' + targets[name]) if name in targets else ''}")


# Issue 17's targets, each against the independent reference (r) or our own read (c) of one run.
CASE_TARGETS = {"c/r": ">= 0.7", "e/c": ">= 0.5", "f/c": ">= 0.8", "p99 c/r": "<= 2"}


def _meets(value: float | None, target: str) -> bool | None:
    if value is None:
        return None
    op, bound = target.split()
    return value >= float(bound) if op == ">=" else value <= float(bound)


def report_cases(results: dict[str, Stats], repeat: int) -> dict[str, Any]:
    print_table(list(results.values()))
    a, b, c, e, f, r = (results[k] for k in "abcefr")
    ratios = {
        "c/r": ratio(c.rps, r.rps),
        "p99 c/r": ratio(c.p99_ms, r.p99_ms, 2),
        "e/c": ratio(e.rps, c.rps),
        "f/c": ratio(f.rps, c.rps),
        "c/b": ratio(c.rps, b.rps),
        "p99 c/b": ratio(c.p99_ms, b.p99_ms, 2),
        "c/a": ratio(c.rps, a.rps),
        "e/a": ratio(e.rps, a.rps),
        "b/r": ratio(b.rps, r.rps),
    }
    if "d" in results:
        ratios["d/c"] = ratio(results["d"].rps, c.rps)
    _print_ratios(ratios, CASE_TARGETS)
    met = {name: _meets(ratios[name], target) for name, target in CASE_TARGETS.items()}
    print("targets: " + ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in met.items()))
    return {
        "results": {k: v.as_dict() for k, v in results.items()},
        "ratios": ratios,
        "targets": CASE_TARGETS,
        "targets_met": met,
        "medians_of": repeat,
        "p50_ms": {k: v.p50_ms for k, v in results.items()},
    }


def report_workers(results: dict[str, Stats]) -> dict[str, Any]:
    print_table(list(results.values()))
    c1, c2, e1, e2 = (results[k] for k in ("c_w1", "c_w2", "e_w1", "e_w2"))
    ratios = {
        "c rps w2/w1": ratio(c2.rps, c1.rps),
        "c p99 w2/w1": ratio(c2.p99_ms, c1.p99_ms),
        "e rps w2/w1": ratio(e2.rps, e1.rps),
        "e p99 w2/w1": ratio(e2.p99_ms, e1.p99_ms),
    }
    _print_ratios(ratios, {})
    return {"results": {k: v.as_dict() for k, v in results.items()}, "ratios": ratios}


def report_size(results: dict[str, Stats], growth: dict[str, Any]) -> dict[str, Any]:
    print_table(list(results.values()))
    small, large = results["c_small"], results["c_large"]
    ratios = {
        "p50 large/small": ratio(large.p50_ms, small.p50_ms),
        "p99 large/small": ratio(large.p99_ms, small.p99_ms),
        "rps large/small": ratio(large.rps, small.rps),
    }
    _print_ratios(ratios, {"p50 large/small": "<= 1.2", "p99 large/small": "<= 1.2"})
    return {"results": {k: v.as_dict() for k, v in results.items()}, "ratios": ratios, "growth": growth}


def report_baseline(results: dict[str, Stats], ref: str) -> dict[str, Any]:
    print_table(list(results.values()))
    now, old = results["c_now"], results["c_baseline"]
    ratios = {"c rps now/baseline": ratio(now.rps, old.rps), "c p99 now/baseline": ratio(now.p99_ms, old.p99_ms)}
    _print_ratios(ratios, {"c rps now/baseline": ">= 0.9"})
    return {"ref": ref, "results": {k: v.as_dict() for k, v in results.items()}, "ratios": ratios}
