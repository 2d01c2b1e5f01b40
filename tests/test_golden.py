"""Golden integer model vs an independent per-neuron reference in plain Python integers.

The reference walks the fan-out lists event by event (as the hardware does),
rounds with exact rational arithmetic (`fractions.Fraction` + `round`, which
rounds half to even), and counts every action itself; every value and every
counter of every layer and sample must agree.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError
from apical.sw.golden import modulate, requantize, rhe_shift, run_golden, saturate
from apical.sw.ir import IR, Requant, Site, int_range
from apical.sw.ir_random import KINDS, ir_strategy, random_inputs, random_ir


def ref_rhe(v: int, shift: int) -> int:
    if shift <= 0:
        return v * 2 ** (-shift)
    return round(Fraction(v, 2**shift))  # Python's round() on a Fraction: half to even


def ref_requant(acc: int, site: Site) -> int:
    v = ref_rhe(acc * site.requant.multiplier, site.requant.shift)
    if site.activation == "relu":
        v = max(v, 0)
    lo, hi = int_range(site.bits, site.signed)
    return min(max(v, lo), hi)


def reference(ir: IR, sample: dict[str, list[int]]) -> tuple[dict, dict, dict]:
    """One sample: (outputs by layer, site values by (layer, site), counts by layer)."""
    tensors = {k: list(v) for k, v in sample.items()}
    outputs, sites, counts = {}, {}, {}
    for layer in ir.layers:
        c = dict.fromkeys(COUNTERS, 0)
        vals = {}
        for key in layer.site_order:
            s = layer.sites[key]
            x = [v for src in s.sources for v in tensors[src]]
            acc = [int(b) for b in s.bias]
            c["act_reads"] += len(x)
            for i, xi in enumerate(x):
                if xi == 0:
                    continue
                c["events"] += 1
                for p in range(int(s.indptr[i]), int(s.indptr[i + 1])):
                    acc[int(s.indices[p])] += int(s.data[p]) * xi
                    c["syn_ops"] += 1
                    c["weight_reads"] += 1
                    c["acc_updates"] += 1
            vals[key] = [ref_requant(a, s) for a in acc]
            c["requants"] += layer.size
            sites[(layer.name, key)] = vals[key]
        if layer.kind == "dense":
            out = vals["main"]
        else:
            rlo = int_range(layer.sites["r"].bits, layer.sites["r"].signed)[0]
            clo = int_range(layer.sites["c"].bits, layer.sites["c"].signed)[0]
            out = [int(layer.table[r - rlo, cc - clo]) for r, cc in zip(vals["r"], vals["c"], strict=True)]
            c["table_lookups"] += layer.size
        c["act_writes"] += layer.size
        outputs[layer.name] = out
        counts[layer.name] = c
        tensors[layer.name] = out
    return outputs, sites, counts


def check_against_reference(ir: IR, inputs: dict[str, np.ndarray]) -> None:
    res = run_golden(ir, inputs)
    n = next(iter(inputs.values())).shape[0]
    for k in range(n):
        sample = {name: [int(v) for v in a[k]] for name, a in inputs.items()}
        outs, sites, counts = reference(ir, sample)
        for layer in ir.layers:
            got = res.outputs[layer.name][k].tolist()
            assert got == outs[layer.name], f"sample {k} layer {layer.name}: {got} != {outs[layer.name]}"
            for key in layer.site_order:
                assert res.sites[(layer.name, key)][k].tolist() == sites[(layer.name, key)], (k, layer.name, key)
            for cn in COUNTERS:
                assert int(res.counts[layer.name][cn][k]) == counts[layer.name][cn], (k, layer.name, cn)
        last = outs[ir.layers[-1].name]
        assert int(res.classes[k]) == last.index(max(last)), k
    for layer in ir.layers:
        assert res.outputs[layer.name].dtype == np.int64
        assert res.outputs[layer.name].shape == (n, layer.size)
    totals = res.total_counts()
    for cn in COUNTERS:
        assert totals[cn].tolist() == [sum(int(res.counts[la.name][cn][k]) for la in ir.layers) for k in range(n)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ir=ir_strategy(layers=3), seed=st.integers(0, 2**32 - 1), zf=st.sampled_from([0.0, 0.5, 0.95]))
def test_golden_matches_reference_random_irs(ir: IR, seed: int, zf: float) -> None:
    inputs = random_inputs(np.random.default_rng(seed), ir, 6, zero_fraction=zf)
    check_against_reference(ir, inputs)


@pytest.mark.parametrize("kind", KINDS)
def test_golden_matches_reference_each_kind(kind: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        ir = random_ir(rng, kind=kind, layers=3, hidden_size=(4, 12))
        check_against_reference(ir, random_inputs(rng, ir, 8, zero_fraction=0.4))


def test_golden_all_zero_inputs_count_no_events() -> None:
    ir = random_ir(np.random.default_rng(1), kind="dense", layers=1)
    inputs = {t.name: np.zeros((3, t.size), dtype=np.int64) for t in ir.inputs}
    res = run_golden(ir, inputs)
    assert res.counts["out"]["events"].tolist() == [0, 0, 0]
    assert res.counts["out"]["syn_ops"].tolist() == [0, 0, 0]
    assert (res.accs[("out", "main")] == ir.layers[0].sites["main"].bias[None, :]).all()


# --------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("shift", [1, 2, 3, 5])
def test_rhe_ties_round_to_even_both_signs(shift: int) -> None:
    half = 2 ** (shift - 1)
    vs = []
    for q in range(-6, 7):
        vs += [q * 2**shift + half, q * 2**shift - half, q * 2**shift + half - 1, q * 2**shift + half + 1]
    got = rhe_shift(np.array(vs, dtype=np.int64), shift).tolist()
    assert got == [ref_rhe(v, shift) for v in vs]
    # explicit ties: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2, -2.5 -> -2
    ties = np.array([1, 3, 5, -1, -3, -5], dtype=np.int64) * half
    assert rhe_shift(ties, shift).tolist() == [0, 2, 2, 0, -2, -2]


def test_rhe_matches_numpy_round_and_negative_shift() -> None:
    v = np.arange(-1000, 1001, dtype=np.int64)
    for s in range(1, 8):
        assert (rhe_shift(v, s) == np.round(v / 2**s).astype(np.int64)).all()
    for s in range(-5, 1):
        assert (rhe_shift(v, s) == v * 2 ** (-s)).all()


def test_rhe_large_values_exact() -> None:
    vs = [2**62 + 2**40 + 2**39, -(2**61) - 3, 2**70 + 1]
    for s in (1, 39, 40, 63, 70):
        got = rhe_shift(np.array(vs, dtype=object), s)
        assert [int(g) for g in got] == [ref_rhe(v, s) for v in vs]
    # int64 input whose left shift would overflow int64 stays exact
    got = rhe_shift(np.array([2**40, -(2**40)], dtype=np.int64), -30)
    assert [int(g) for g in got] == [2**70, -(2**70)]


def test_saturate_ranges() -> None:
    v = np.array([-1000, -129, -128, -1, 0, 1, 127, 128, 1000])
    assert saturate(v, 8, True).tolist() == [-128, -128, -128, -1, 0, 1, 127, 127, 127]
    assert saturate(v, 8, False).tolist() == [0, 0, 0, 0, 0, 1, 127, 128, 255]
    assert saturate(v, 2, True).tolist() == [-2, -2, -2, -1, 0, 1, 1, 1, 1]
    assert saturate(v, 1, False).tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_requantize_multiplier_relu_saturation() -> None:
    base = random_ir(np.random.default_rng(0), kind="dense", layers=1).layers[0].sites["main"]
    acc = np.arange(-5000, 5000, 37, dtype=np.int64)
    for mult, shift, act, bits, signed in [
        (1, 4, "identity", 6, True),
        (77, 10, "relu", 5, False),
        (3, -2, "identity", 8, True),
        (255, 12, "relu", 4, True),
    ]:
        site = Site(**{**base.__dict__, "requant": Requant(shift, mult), "activation": act, "bits": bits, "signed": signed})
        got = requantize(acc, site).tolist()
        assert got == [ref_requant(int(a), site) for a in acc]


def test_requantize_huge_multiplier_product_exact() -> None:
    base = random_ir(np.random.default_rng(0), kind="dense", layers=1).layers[0].sites["main"]
    site = Site(**{**base.__dict__, "requant": Requant(60, (1 << 24) - 1), "bits": 16, "signed": True})
    acc = np.array([2**46 - 1, -(2**46), 2**45 + 12345], dtype=np.int64)
    assert requantize(acc, site).tolist() == [ref_requant(int(a), site) for a in acc]


def test_modulate_indexes_from_range_minimum() -> None:
    ir = random_ir(np.random.default_rng(3), kind="two_point", layers=2)
    layer = ir.layers[0]
    r_site, c_site = layer.sites["r"], layer.sites["c"]
    rlo, rhi = r_site.range
    clo, chi = c_site.range
    r = np.array([rlo, rhi, rlo, rhi])
    c = np.array([clo, chi, chi, clo])
    got = modulate(layer.table, r, c, r_site, c_site).tolist()
    t = layer.table
    assert got == [t[0, 0], t[-1, -1], t[0, -1], t[-1, 0]]
    with pytest.raises(ApicalError, match="r value"):
        modulate(layer.table, np.array([rhi + 1]), np.array([clo]), r_site, c_site)


# --------------------------------------------------------------------------- input validation


def test_inputs_validated_naming_the_input() -> None:
    ir = random_ir(np.random.default_rng(5), kind="two_point", layers=2)
    good = random_inputs(np.random.default_rng(0), ir, 4)
    x = ir.inputs[0]
    with pytest.raises(ApicalError, match=r"golden input ctx: missing"):
        run_golden(ir, {"x": good["x"]})
    with pytest.raises(ApicalError, match=r"golden input bogus: not an input"):
        run_golden(ir, {**good, "bogus": good["x"]})
    with pytest.raises(ApicalError, match=r"golden input x: shape"):
        run_golden(ir, {**good, "x": good["x"][:, :-1]})
    with pytest.raises(ApicalError, match=r"golden input x: must be an integer array"):
        run_golden(ir, {**good, "x": good["x"].astype(np.float32)})
    bad = good["x"].copy()
    bad[0, 0] = x.range[1] + 1
    with pytest.raises(ApicalError, match=r"golden input x: values .* outside"):
        run_golden(ir, {**good, "x": bad})
    bad[0, 0] = x.range[0] - 1
    with pytest.raises(ApicalError, match=r"golden input x: values .* outside"):
        run_golden(ir, {**good, "x": bad})
    with pytest.raises(ApicalError, match=r"golden input ctx: 3 samples"):
        run_golden(ir, {**good, "ctx": good["ctx"][:3]})
