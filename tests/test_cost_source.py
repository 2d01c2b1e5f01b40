"""One source of truth for cost: the energy model and the footprint cost the memories the RTL builds.

Over random IRs and P, the word widths and memory sizes the energy model uses
(`apical.flows.energy.hardware_words`) and the footprint (`apical.flows.metrics`)
are compared with the memories of the elaborated Amaranth design
(`apical.hw.top.ApicalTop`), found by walking its fragments.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.lib.memory import Memory

from apical.flows.energy import hardware_words
from apical.flows.metrics import footprint
from apical.hw.schedule import compile_schedule
from apical.hw.top import ApicalTop
from apical.sw.ir_random import random_ir


def rtl_memories(top: ApicalTop) -> dict[str, list[tuple[int, int]]]:
    """(depth, width) of every `lib.memory.Memory` of the design, by submodule name (FIFO storage left out)."""
    found: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def walk(frag: Fragment, path: tuple[str, ...]) -> None:
        for sub, name, *_ in frag.subfragments:
            here = (*path, str(name))
            mems = [o for o in (getattr(sub, "origins", None) or ()) if isinstance(o, Memory)]
            if mems and "queue" not in here:
                m = mems[0]
                found[here[-1]].append((m.depth, Shape_width(m.shape)))
            walk(sub, here)

    walk(Fragment.get(top, None), ())
    return found


def Shape_width(shape: object) -> int:
    from amaranth.hdl import Shape

    return Shape.cast(shape).width


@pytest.mark.parametrize("seed", range(7))
def test_energy_and_footprint_cost_the_generated_memories(seed: int) -> None:
    rng = np.random.default_rng(300 + seed)
    kind = ("dense", "sparse", "two_point", "mixed")[seed % 4]
    # seed 6: context-gated (the PEs' target memories are costed too)
    gated = seed == 6
    ir = random_ir(rng, kind=kind, layers=3 if gated else 1 + seed % 3, gate="c" if gated else None)
    assert ir.gated == gated
    pes = int(rng.choice([1, 2, 3, 4, 8]))
    sched = compile_schedule(ir, pes)
    rtl = rtl_memories(ApicalTop(ir, pes, schedule=sched))
    hw = hardware_words(sched)

    weights = rtl["weight_mem"]
    assert len(weights) == pes
    assert {w for _, w in weights} == {hw.bits["weight_reads"]}
    assert max(d * w for d, w in weights) / 8 == hw.memory_bytes["weight_reads"]
    (act_depth, act_width), = rtl["act_mem"]
    assert act_depth * act_width / 8 == hw.memory_bytes["act_reads"] == hw.memory_bytes["act_writes"]
    assert act_width == pes * hw.bits["act_reads"]
    assert {w for _, w in rtl["acc0"] + rtl["acc1"]} == {hw.bits["acc_updates"]}
    if "table_mem" in rtl:
        assert {w for _, w in rtl["table_mem"]} == {hw.bits["table_lookups"]}
        assert max(d * w for d, w in rtl["table_mem"]) / 8 == hw.memory_bytes["table_lookups"]
    else:
        assert hw.bits["table_lookups"] == 0 and hw.memory_bytes["table_lookups"] == 0

    # Every memory kind's total bits as the schedule states them, as the RTL builds them.
    names = {"weight": "weight_mem", "index": "index_mem", "bias": "bias_mem", "activation": "act_mem",
             "event_mask": "mask_mem", "table": "table_mem", "target": "target_mem"}
    for kind_name, spec in sched.memories().items():
        if kind_name == "accumulator":
            got = sum(d * w for d, w in rtl["acc0"] + rtl["acc1"])
        else:
            got = sum(d * w for d, w in rtl[names[kind_name]])
        assert spec.bits == got, kind_name

    fp = footprint(sched)
    assert fp["weights_bytes"] == -(-sum(d * w for d, w in weights) // 8)
    assert fp["synapse_word_bits"] == hw.bits["weight_reads"]
    # Replicated fan-outs are held (and costed) once per replica.
    assert sum(d for d, _ in weights) >= ir.synapses
