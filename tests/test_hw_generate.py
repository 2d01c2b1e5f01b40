"""Verilog generation and fit checks: deterministic output, the contract's ports, clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from apical.hw.fit import check_fit
from apical.hw.generate import generate_rtl
from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError
from apical.sw.ir import replace_site
from apical.sw.ir_random import random_ir


def test_generate_is_deterministic_and_has_contract_ports(tmp_path: Path) -> None:
    ir = random_ir(np.random.default_rng(8), kind="mixed", layers=3)
    s1 = generate_rtl(ir, 4, tmp_path / "a")
    s2 = generate_rtl(random_ir(np.random.default_rng(8), kind="mixed", layers=3), 4, tmp_path / "b")
    v1 = (tmp_path / "a" / "apical_top.v").read_bytes()
    v2 = (tmp_path / "b" / "apical_top.v").read_bytes()
    assert v1 == v2
    assert s1 == s2
    text = v1.decode()
    assert re.search(r"^module apical_top\(", text, re.M)
    ports = set(re.findall(r"^\s*(?:input|output)\s+(?:wire\s+|reg\s+)?(?:\[[^\]]+\]\s*)?(\w+);", text, re.M))
    want = {"clk", "rst", "s_axis_tdata", "s_axis_tvalid", "s_axis_tready", "s_axis_tlast",
            "m_axis_tdata", "m_axis_tvalid", "m_axis_tready", "m_axis_tlast", "cnt_cycles"}
    want |= {f"cnt_{c}" for c in COUNTERS}
    assert want <= ports, f"missing ports {sorted(want - ports)}"
    assert s1["pes"] == 4
    assert sum(s1["synapses_per_pe"]) == ir.synapses
    assert [lay["name"] for lay in s1["layers"]] == [layer.name for layer in ir.layers]
    # Different P gives a different design.
    generate_rtl(ir, 2, tmp_path / "c")
    assert (tmp_path / "c" / "apical_top.v").read_bytes() != v1


def test_fit_rejects_weight_memory_beyond_depth() -> None:
    ir = random_ir(np.random.default_rng(9), kind="dense", layers=2, input_size=(10, 10), hidden_size=(8, 8),
                   density=1.0, empty_fanout=0.0)
    check_fit(ir, 2)
    per_pe = -(-ir.layers[0].sites["main"].nnz // 2)
    with pytest.raises(ApicalError, match=rf"IR layer {ir.layers[0].name}: synapses: .*max_weight_depth"):
        check_fit(ir, 2, max_weight_depth=per_pe - 1)
    with pytest.raises(ApicalError, match="pes"):
        check_fit(ir, 0)


def test_fit_rejects_wide_weights_and_tables() -> None:
    ir = random_ir(np.random.default_rng(10), kind="two_point", layers=2)
    check_fit(ir, 4)
    layer = ir.layers[0]
    wide = replace_site(layer, "r", weight_bits=19)
    bad = type(ir)(ir.inputs, (wide, *ir.layers[1:]), ir.meta)
    with pytest.raises(ApicalError, match=rf"IR layer {layer.name}: sites.r.weight_bits"):
        check_fit(bad, 4)
    big = replace_site(layer, "r", bits=10)
    big = replace_site(big, "c", bits=10)
    bad = type(ir)(ir.inputs, (big, *ir.layers[1:]), ir.meta)
    with pytest.raises(ApicalError, match=rf"IR layer {layer.name}: sites.r.bits \+ sites.c.bits"):
        check_fit(bad, 4)


def test_reported_memory_widths_match_the_layouts() -> None:
    from apical.hw.layouts import bias_layout, event_layout, index_layout, weight_layout
    from apical.hw.schedule import compile_schedule

    ir = random_ir(np.random.default_rng(12), kind="mixed", layers=3)
    for pes in (1, 4):
        s = compile_schedule(ir, pes)
        mem = s.stats()["memories"]
        assert mem["weight"]["width"] == weight_layout(s.acc_depth, s.weight_bits).size
        assert mem["index"]["width"] == index_layout(s.weight_depth, s.max_fanout).size
        assert mem["bias"]["width"] == bias_layout(s.acc_bits).size
        assert mem["weight"]["depth"] == max(s.synapses_per_pe)
        assert mem["weight"]["bits"] == mem["weight"]["width"] * sum(max(1, n) for n in s.synapses_per_pe)
        assert event_layout(s.index_depth, s.value_bits).size >= s.value_bits
