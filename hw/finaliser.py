"""Finaliser of one PE lane: bias, requantisation of each site, modulation-table lookup.

Pipeline of four registers: F0 adds the slot's bias (bias memory, per layer
a region) to the accumulator sum it is given; F1 multiplies by the site's
requantisation multiplier (one registered multiplier per bank; the stage is
left out when every multiplier is 1), or, when the IR has per-neuron
requantisation, by the slot's multiplier and adds its offset (multiply-add,
the DSP48E2's C port), both read from the requant memory beside the biases;
F2 shifts, rounds, applies relu and saturates with the layer's constants
(`Requantizer`); F3, from the registered site values, addresses the
modulation table of two-point layers at ``(r - r_min) * 2**c_bits + (c -
c_min)``; F4 presents the raw output lane value (``act_bits`` two's
complement) and, for context-gated layers, ``out_fixed``: the gate site's
value alone fixes the output (the layer's ``fix_lut``, a constant bit per
value, looked up at F3). Requantising and addressing the table are separate
stages so neither is on a long path.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Const as C
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2

from apical.hw.layouts import bias_layout, requant_layout
from apical.hw.requant import Requantizer
from apical.hw.schedule import Schedule
from apical.sw.ir import int_range

__all__ = ["Finaliser", "finaliser_in_bits", "finaliser_latency"]

LATENCY = 4  # the most cycles from valid in to out_valid (see `finaliser_latency`)


def finaliser_latency(schedule: Schedule) -> int:
    """Cycles from ``valid`` to ``out_valid``: F1 is left out when every multiplier is 1."""
    mult_max = max(sp.multiplier for lp in schedule.layers for sp in lp.sites)
    return LATENCY if mult_max != 1 or schedule.rq_mult_bits else LATENCY - 1


def finaliser_in_bits(schedule: Schedule) -> int:
    """Width of the accumulator sums a finaliser takes (room for the adder tree over PEs)."""
    return schedule.acc_bits + max(1, ceil_log2(schedule.pes)) + 1


class Finaliser(wiring.Component):
    def __init__(self, schedule: Schedule, index: int, *, faults: Any = None):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"Finaliser: schedule must be a Schedule, got {type(schedule).__name__}")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < schedule.pes:
            raise ValueError(f"Finaliser: index must be in [0, {schedule.pes}), got {index!r}")
        self._s, self._index = schedule, index
        # apical.hw.faults.FinaliserFaults of a fault-injection build (lost sites, output masks), else None
        self._faults = faults if faults is not None and faults.entries else None
        in_bits = finaliser_in_bits(schedule)
        super().__init__({
            "valid": In(1),
            "layer": In(range(len(schedule.layers))),
            "k": In(range(max(lp.steps for lp in schedule.layers))),
            "acc0": In(signed(in_bits)),
            "acc1": In(signed(in_bits)),
            "out_valid": Out(1),
            "out_data": Out(unsigned(schedule.act_bits)),
            "out_fixed": Out(1),  # gated layers: the gate site fixes this neuron's output
        })

    def elaborate(self, platform):
        m = Module()
        s = self._s
        img = s.images[self._index]
        in_bits = finaliser_in_bits(s)
        blayout = bias_layout(s.acc_bits)
        m.submodules.bias_mem = bias_mem = Memory(
            shape=blayout, depth=max(1, s.bias_depth),
            init=[{"b0": b0, "b1": b1} for b0, b1 in img.bias])
        b_rd = bias_mem.read_port(domain="comb")
        base = Signal(range(max(2, s.bias_depth)))
        with m.Switch(self.layer):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    m.d.comb += base.eq(lp.bias_base)
        m.d.comb += b_rd.addr.eq(base + self.k)

        # F0 -> F1: biased sums.
        sum0, sum1 = Signal(signed(in_bits + 1)), Signal(signed(in_bits + 1))
        v1, l1 = Signal(), Signal(range(len(s.layers)))
        m.d.sync += [sum0.eq(self.acc0 + b_rd.data.b0), sum1.eq(self.acc1 + b_rd.data.b1),
                     v1.eq(self.valid), l1.eq(self.layer)]
        flt = self._faults
        if flt is not None:
            k1 = Signal(len(self.k), name="fk1")
            m.d.sync += k1.eq(self.k)
        if s.rq_mult_bits:
            prods, prod_bits, v2, l2, dom = self._per_neuron(m, b_rd.addr, (sum0, sum1), v1, l1, in_bits)
        else:
            prods, prod_bits, v2, l2, dom = self._shared_multiplier(m, (sum0, sum1), v1, l1, in_bits)
        kills = None
        if flt is not None:
            kills = self._fault_stage(m, dom, k1, l2)
        return self._finalise(m, prods, prod_bits, v2, l2, kills)

    def _shared_multiplier(self, m: Module, sums, v1, l1, in_bits: int):
        """F1 -> F2: multiply by the site's multiplier (one shared multiplier per bank,
        registered, so the requantiser after it is shift/round/clamp only)."""
        s = self._s
        mult_max = max(sp.multiplier for lp in s.layers for sp in lp.sites)
        mult_bits = bits_for(mult_max)
        prod_bits = in_bits + 1 + mult_bits + 1
        prods = [Signal(signed(prod_bits), name=f"prod{b}") for b in (0, 1)]
        mults = [Signal(unsigned(mult_bits), name=f"mult{b}") for b in (0, 1)]
        with m.Switch(l1):
            for li, lp in enumerate(s.layers):
                with m.Case(li):
                    for sp in lp.sites:
                        m.d.comb += mults[sp.bank].eq(sp.multiplier)
        v2, l2 = Signal(), Signal(range(len(s.layers)))
        # Power-of-two scales (every multiplier 1) need no multiply: no F1 register, so
        # the next layer can start reading this one's outputs a cycle earlier.
        dom = m.d.sync if mult_max != 1 else m.d.comb
        for b, sm in enumerate(sums):
            dom += prods[b].eq(sm * mults[b] if mult_max != 1 else sm)
        dom += [v2.eq(v1), l2.eq(l1)]
        return prods, prod_bits, v2, l2, dom

    def _fault_stage(self, m: Module, dom, k1, l2) -> tuple:
        """Fault builds: the slot index beside F2 (``dom``: that stage's domain) and F3, and
        which sites of the unit at F2 are lost (a lost site feeds 0 to the table)."""
        k2, k3 = Signal(len(self.k), name="fk2"), Signal(len(self.k), name="fk3")
        l3 = Signal(len(self.layer))
        kill_r, kill_c = Signal(), Signal()
        dom += k2.eq(k1)
        m.d.sync += [k3.eq(k2), l3.eq(l2)]
        with m.Switch(l2):
            for li in range(len(self._s.layers)):
                with m.Case(li), m.Switch(k2):
                    for (fl, fk), (kr, kc, _, _) in self._faults.entries.items():
                        if fl == li and (kr or kc):
                            with m.Case(fk):
                                m.d.comb += [kill_r.eq(kr), kill_c.eq(kc)]
        return kill_r, kill_c, l3, k3

    def _per_neuron(self, m: Module, addr, sums, v1, l1, in_bits: int):
        """F1 as a multiply-add with the slot's multiplier and offset (read with the bias)."""
        s = self._s
        img = self._s.images[self._index]
        layout = requant_layout(s.rq_mult_bits, s.rq_offset_bits)
        m.submodules.requant_mem = rq_mem = Memory(
            shape=layout, depth=max(1, s.bias_depth),
            init=[{"m0": m0, "o0": o0, "m1": m1, "o1": o1} for m0, o0, m1, o1 in img.requant])
        rq_rd = rq_mem.read_port(domain="comb")
        m.d.comb += rq_rd.addr.eq(addr)
        regs = Signal(layout)  # registered with the sums, so F1 sees the slot's own values
        m.d.sync += regs.eq(rq_rd.data)
        prod_bits = max(in_bits + 1 + s.rq_mult_bits + 1, s.rq_offset_bits) + 1
        prods = [Signal(signed(prod_bits), name=f"prod{b}") for b in (0, 1)]
        v2, l2 = Signal(), Signal(range(len(s.layers)))
        m.d.sync += [prods[0].eq(sums[0] * regs.m0 + regs.o0), prods[1].eq(sums[1] * regs.m1 + regs.o1),
                     v2.eq(v1), l2.eq(l1)]
        return prods, prod_bits, v2, l2, m.d.sync

    def _finalise(self, m: Module, prods, prod_bits: int, v2, l2, kills) -> Module:
        """F2 -> F3: requantise with layer constants (``kills``: fault builds); F3 -> F4: address
        the modulation table with the registered values, or pass a one-site layer's value."""
        s = self._s
        flt = self._faults
        if kills is not None:
            kill_r, kill_c, l3, k3 = kills
            l4, k4 = Signal(len(l3), name="fl4"), Signal(len(k3), name="fk4")
            m.d.sync += [l4.eq(l3), k4.eq(k3)]
        # F3: the layer's requantised sites (r or the only one, c), registered.
        q_bits = max(s.act_bits, max(sp.bits for lp in s.layers for sp in lp.sites)) + 1
        q0, q1 = Signal(signed(q_bits), name="q0"), Signal(signed(q_bits), name="q1")
        v3, l3q = Signal(), Signal(range(len(s.layers)))
        m.d.sync += [v3.eq(v2), l3q.eq(l2)]
        for li, lp in enumerate(s.layers):
            rqs = []
            for sp in lp.sites:
                rq = Requantizer(in_bits=prod_bits, shift=sp.shift, multiplier=1,
                                 relu=sp.relu, bits=sp.bits, signed_out=sp.signed, narrow=sp.narrow)
                m.submodules[f"rq_{lp.name}_{sp.name}"] = rq
                m.d.comb += rq.i.eq(prods[sp.bank])
                rqs.append(rq)
            with m.If(l2 == li):
                if lp.kind == "two_point":
                    # A lost site (fault builds) feeds 0 to the table.
                    m.d.sync += [q0.eq(Mux(kill_r, 0, rqs[0].o) if flt is not None else rqs[0].o),
                                 q1.eq(Mux(kill_c, 0, rqs[1].o) if flt is not None else rqs[1].o)]
                else:
                    m.d.sync += q0.eq(rqs[0].o)
        # F3 -> F4: the table address, or the value itself.
        v4, two_point, d4 = Signal(), Signal(), Signal(unsigned(s.act_bits))
        t_addr = Signal(range(max(2, len(s.table))))
        if s.gated:
            m.d.sync += self.out_fixed.eq(0)  # set below for gated layers only
        else:
            m.d.comb += self.out_fixed.eq(0)
        for li, lp in enumerate(s.layers):
            with m.If(l3q == li):
                if lp.kind == "two_point":
                    r_sp, c_sp = lp.sites
                    c_off = Signal(c_sp.bits, name=f"c_off_{li}")
                    r_off = Signal(r_sp.bits, name=f"r_off_{li}")
                    m.d.comb += [c_off.eq(q1 - int_range(c_sp.bits, c_sp.signed)[0]),
                                 r_off.eq(q0 - int_range(r_sp.bits, r_sp.signed)[0])]
                    m.d.comb += t_addr.eq(lp.table_base + Cat(c_off, r_off))
                    m.d.sync += two_point.eq(1)
                    if lp.gate is not None:
                        g_idx = r_off if lp.gate == "r" else c_off
                        m.d.sync += self.out_fixed.eq(C(lp.fix_lut, 1 << len(g_idx)).bit_select(g_idx, 1))
                else:
                    m.d.sync += [d4.eq(q0), two_point.eq(0)]
        m.d.sync += v4.eq(v3)
        if s.table:
            m.submodules.table_mem = table_mem = Memory(shape=unsigned(s.act_bits), depth=len(s.table),
                                                        init=list(s.table))
            t_rd = table_mem.read_port()
            m.d.comb += t_rd.addr.eq(t_addr)
            lane = Mux(two_point, t_rd.data, d4)
        else:
            lane = d4
        if flt is None:
            m.d.comb += self.out_data.eq(lane)
        else:
            m.d.comb += self.out_data.eq(self._masked(m, lane, l4, k4))
        m.d.comb += self.out_valid.eq(v4)
        return m

    def _masked(self, m: Module, lane, layer, k) -> Signal:
        """Fault builds: the output lane with its unit's and/or masks applied to the stored
        ``out_bits`` (damage: all cleared; stuck-at bits), re-extended to the lane width."""
        s = self._s
        out = Signal(unsigned(s.act_bits), name="masked")
        m.d.comb += out.eq(lane)
        with m.Switch(layer):
            for li, lp in enumerate(s.layers):
                with m.Case(li), m.Switch(k):
                    for (fl, fk), (_, _, am, om) in self._faults.entries.items():
                        if fl != li or (am == (1 << lp.out_bits) - 1 and om == 0):
                            continue
                        with m.Case(fk):
                            v = Signal(unsigned(lp.out_bits), name=f"fv_{li}_{fk}")
                            m.d.comb += v.eq((lane[:lp.out_bits] & am) | om)
                            m.d.comb += out.eq(v.as_signed() if lp.out_signed else v)
        return out
