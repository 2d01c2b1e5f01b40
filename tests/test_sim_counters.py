"""RTL-vs-golden comparison: every differing value is found, in stream order, and named."""

from __future__ import annotations

import numpy as np

from apical.sim.counters import HW_COUNTERS, Mismatch, compare_results, port_name
from apical.sw.counts import COUNTERS


def _case(rng: np.random.Generator, n: int = 4, size: int = 5):
    outs = rng.integers(-50, 50, size=(n, size))
    classes = outs.argmax(axis=1)
    counts = {c: rng.integers(0, 100, size=n) for c in COUNTERS}
    return outs, classes, counts


def test_identical_results_have_no_mismatch() -> None:
    outs, classes, counts = _case(np.random.default_rng(0))
    got = compare_results(
        layer="out", sample_ids=[7, 8, 9, 10], expected_outputs=outs, expected_classes=classes,
        expected_counts=counts, outputs=outs.copy(), classes=classes.copy(),
        counters={c: v.copy() for c, v in counts.items()},
    )
    assert got == []


def test_every_difference_is_found_in_order_and_named() -> None:
    rng = np.random.default_rng(1)
    outs, classes, counts = _case(rng)
    bad_outs, bad_classes = outs.copy(), classes.copy()
    bad_counts = {c: v.copy() for c, v in counts.items()}
    bad_outs[1, 3] += 1
    bad_outs[2, 0] -= 2
    bad_classes[2] = (classes[2] + 1) % 5
    bad_counts["syn_ops"][3] += 5
    got = compare_results(
        layer="out", sample_ids=[10, 11, 12, 13], expected_outputs=outs, expected_classes=classes,
        expected_counts=counts, outputs=bad_outs, classes=bad_classes, counters=bad_counts,
    )
    assert [(m.sample, m.kind, m.index) for m in got] == [
        (11, "output", 3), (12, "output", 0), (12, "class", "class"), (13, "counter", "syn_ops"),
    ]
    assert got[0] == Mismatch(11, "output", "out", 3, int(outs[1, 3]), int(outs[1, 3]) + 1)
    assert got[0].describe() == f"sample 11: layer out neuron 3: expected {outs[1, 3]}, got {outs[1, 3] + 1}"
    assert got[3].describe().startswith("sample 13: counter syn_ops (")
    limited = compare_results(
        layer="out", sample_ids=[10, 11, 12, 13], expected_outputs=outs, expected_classes=classes,
        expected_counts=counts, outputs=bad_outs, classes=bad_classes, counters=bad_counts, limit=2,
    )
    assert limited == got[:2]


def test_counter_ports_cover_every_golden_counter() -> None:
    assert set(COUNTERS) < set(HW_COUNTERS) and "cycles" in HW_COUNTERS
    assert [port_name(c) for c in HW_COUNTERS][:2] == ["cnt_cycles", "cnt_events"]
