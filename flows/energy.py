"""Accelergy-style energy model: action counts x energy per action, plus static power x time.

Contract: an energy table (YAML, pJ per action for every counter of
`apical.sw.counts.COUNTERS`, plus static power in mW) is loaded and validated by
`load_energy_table`. `energy_from_counts` turns per-layer (golden) or
summed-over-layers (RTL) counts into an `EnergyBreakdown` with one formula:
each action's integer count, summed over layers first, times one per-action
energy fixed by the table and the IR's hardware word widths. Equal counts
therefore give bit-identical energies, which is what the golden-vs-RTL check in
`energy_run` relies on. `energy_run` is the body of the flow's ``energy`` step;
it writes ``energy.json``. The schema and derivation rules are in docs/energy.md.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, make_dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from apical.flows.baselines import HEADLINE_ORDER, SUBDIRS
from apical.flows.clocking import clock_basis
from apical.flows.metrics import neurobench_metrics
from apical.hw.schedule import Schedule, compile_schedule
from apical.sw.atomic import atomic_write_json, read_json_object
from apical.sw.config import Config
from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError
from apical.sw.golden import GoldenResult, run_golden
from apical.sw.ir import IR, load_inputs, load_ir
from apical.sw.safeio import load_yaml, parse_yaml_text
from apical.sw.schema import Rule, Schema, SchemaError, build, show, spec

__all__ = [
    "ALL_LAYERS",
    "COMPONENTS",
    "TABLE_FORMAT",
    "ActionCost",
    "CostForm",
    "EnergyBreakdown",
    "EnergyTable",
    "HardwareWords",
    "energy_from_counts",
    "energy_run",
    "hardware_words",
    "load_energy_table",
    "load_test_inputs",
    "parse_energy_table",
    "shipped_tables",
    "unit_energies",
]

TABLE_FORMAT = "apical-energy-table"
TABLE_VERSION = 1
# Key of a counts mapping that holds totals over all layers (what the RTL counters report).
ALL_LAYERS = "*"
# Energy components: one per counted action, then static power x time.
COMPONENTS: tuple[str, ...] = (*COUNTERS, "static")


class CostForm(str, Enum):
    """How a table gives an action's energy (the YAML key of the action's one entry)."""

    FLAT = "pJ"
    BY_BITS = "by_bits"
    SCALING = "scaling"
    SRAM_PER_BIT = "sram_per_bit"


_COST_FORMS = tuple(f.value for f in CostForm)


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class ActionCost:
    """Energy of one action, in exactly one of four forms (see docs/energy.md).

    ``pJ``: a flat energy; ``by_bits``: pJ per word width; ``scaling``:
    ``ref_pJ * (bits / ref_bits) ** exponent``; ``sram_per_bit``: pJ per bit
    read from the smallest listed SRAM (kbytes, ascending) holding the memory
    the action reads, times the word width.
    """

    action: str
    form: CostForm
    pJ: float = 0.0
    by_bits: tuple[tuple[int, float], ...] = ()
    ref_bits: int = 0
    ref_pJ: float = 0.0
    exponent: float = 0.0
    sram_per_bit: tuple[tuple[float, float], ...] = ()  # (kbytes, pJ per bit)

    def energy_pJ(self, bits: int, memory_bytes: float, where: str = "energy table") -> float:
        """Energy of one action on a ``bits``-wide word held in ``memory_bytes`` of memory."""
        if self.form is CostForm.FLAT:
            return self.pJ
        if bits <= 0:  # the IR has no such hardware (e.g. no modulation table): never counted
            return 0.0
        if self.form is CostForm.BY_BITS:
            for b, e in self.by_bits:
                if b == bits:
                    return e
            known = ", ".join(str(b) for b, _ in self.by_bits)
            raise ApicalError(f"{where}: actions.{self.action}.by_bits: no entry for {bits} bits (has {known})")
        if self.form is CostForm.SCALING:
            return self.ref_pJ * (bits / self.ref_bits) ** self.exponent
        # sram_per_bit: step rule, the smallest SRAM that holds the memory; beyond the
        # largest listed size, the largest (the table then understates, said in the docs).
        per_bit = self.sram_per_bit[-1][1]
        for kbytes, e in self.sram_per_bit:
            if memory_bytes <= kbytes * 1024:
                per_bit = e
                break
        return per_bit * bits


@dataclass(frozen=True, eq=False)
class EnergyTable:
    """A validated energy table: pJ per action for every counter, static power in mW."""

    name: str
    source: str  # "shipped" or the YAML path it was read from
    description: str
    reference: str
    static_mW: float
    actions: dict[str, ActionCost]


def shipped_tables() -> tuple[str, ...]:
    """Names of the tables shipped inside the package."""
    d = resources.files("apical.flows") / "data" / "energy"
    return tuple(sorted(p.name[: -len(".yaml")] for p in d.iterdir() if p.name.endswith(".yaml")))


# --------------------------------------------------------------------------- the table's file form
#
# Validated by the one schema mechanism (`apical.sw.schema`), as configs and IR
# manifests are: each field states its type and range; errors name the dotted field.

_PJ = {"ge": 0, "le": 1e9, "why": "pJ per action: a finite, non-negative energy"}


@dataclass(frozen=True)
class _ScalingSpec(Schema):
    ref_bits: int = spec(ge=1, le=64)
    ref_pJ: float = spec(**_PJ)
    exponent: float = spec(ge=0, le=8)


@dataclass(frozen=True)
class _SramStep(Schema):
    kbytes: float = spec(gt=0, le=1e9)
    pJ: float = spec(**_PJ)


@dataclass(frozen=True)
class _ActionSpec(Schema):
    """One action's energy: exactly one of the four `CostForm` keys."""

    pJ: float | None = spec(None, **_PJ)
    by_bits: dict[int, float] | None = spec(None, min_len=1, max_len=64, keys=Rule(ge=1, le=64), each=Rule(**_PJ))
    scaling: _ScalingSpec | None = None
    sram_per_bit: tuple[_SramStep, ...] | None = spec(None, min_len=1, max_len=64)

    def check(self) -> None:
        given = [f for f in _COST_FORMS if getattr(self, f) is not None]
        if len(given) != 1:
            raise SchemaError("", f"needs exactly one of {', '.join(_COST_FORMS)}, got {given or 'none'}")
        steps = self.sram_per_bit or ()
        if any(b.kbytes <= a.kbytes for a, b in itertools.pairwise(steps)):
            raise SchemaError("sram_per_bit", "kbytes must be strictly ascending")

    def cost(self, action: str) -> ActionCost:
        if self.pJ is not None:
            return ActionCost(action, CostForm.FLAT, pJ=self.pJ)
        if self.by_bits is not None:
            return ActionCost(action, CostForm.BY_BITS, by_bits=tuple(sorted(self.by_bits.items())))
        if self.scaling is not None:
            sc = self.scaling
            return ActionCost(action, CostForm.SCALING, ref_bits=sc.ref_bits, ref_pJ=sc.ref_pJ, exponent=sc.exponent)
        steps = tuple((st.kbytes, st.pJ) for st in self.sram_per_bit or ())
        return ActionCost(action, CostForm.SRAM_PER_BIT, sram_per_bit=steps)


# One required field per counter of `apical.sw.counts.COUNTERS`.
_ActionsSpec = make_dataclass(
    "_ActionsSpec", [(c, _ActionSpec) for c in COUNTERS], bases=(Schema,), frozen=True
)


@dataclass(frozen=True)
class _TableSpec(Schema):
    format: str = spec(choices=(TABLE_FORMAT,))
    version: int = spec(choices=(TABLE_VERSION,), why="the table format this apical reads")
    name: str = spec(min_len=1, max_len=64)
    static_mW: float = spec(ge=0, le=1e6)
    actions: _ActionsSpec = spec()  # type: ignore[valid-type]
    description: str = spec("", max_len=1000)
    reference: str = spec("", max_len=1000)


def parse_energy_table(raw: Any, source: str) -> EnergyTable:
    """Validate a parsed YAML table; every fault names ``source`` and the field."""
    try:
        t = build(_TableSpec, raw)
    except SchemaError as e:
        raise ApicalError(f"{source}: {e.path or 'table'}: {e.msg}") from None
    return EnergyTable(
        name=t.name,
        source=source,
        description=t.description,
        reference=t.reference,
        static_mW=t.static_mW,
        actions={c: getattr(t.actions, c).cost(c) for c in COUNTERS},
    )


def load_energy_table(name_or_path: str) -> EnergyTable:
    """Load a shipped table by name (``mcc-ultrascale``, ``horowitz-45nm``) or any YAML path."""
    shipped = shipped_tables()
    if name_or_path in shipped:
        res = resources.files("apical.flows") / "data" / "energy" / f"{name_or_path}.yaml"
        source, where = "shipped", f"energy table {name_or_path}"
        raw = parse_yaml_text(res.read_text(), where)
    else:
        p = Path(name_or_path)
        if not p.is_file():
            raise ApicalError(
                f"{show(name_or_path, 200)}: energy table not found (shipped: {', '.join(shipped)}; or a YAML file path)"
            )
        source = where = str(p)
        raw = load_yaml(p, "energy table")  # bounded; never echoes the file's contents
    table = parse_energy_table(raw, where)
    return EnergyTable(table.name, source, table.description, table.reference, table.static_mW, table.actions)


# --------------------------------------------------------------------------- hardware words


@dataclass(frozen=True)
class HardwareWords:
    """Word width (bits) and memory size (bytes) each action touches on the PE array.

    Derived from the compiled schedule (`apical.hw.schedule.Schedule.memories`),
    the object the RTL is generated from, so the widths and sizes costed here
    are those of the generated memories: a weight read is one entry of
    accumulator address + bank + weight, held in its PE's weight memory
    (replicated fan-outs included). The array is shared by all layers
    (folded), so per-layer and summed-over-layers energies use one formula.
    """

    bits: dict[str, int]
    memory_bytes: dict[str, float]


def hardware_words(schedule: Schedule) -> HardwareWords:
    """Word widths and memory sizes the energy table's bit/memory rules are applied to."""
    mem = schedule.memories()
    table = mem.get("table")
    bits = {
        "events": schedule.event_bits,
        "syn_ops": schedule.weight_bits,
        "weight_reads": mem["weight"].width,
        "acc_updates": mem["accumulator"].width,
        "act_reads": schedule.act_bits,  # one activation lane of the activation memory word
        "act_writes": schedule.act_bits,
        "requants": mem["accumulator"].width,
        "table_lookups": table.width if table else 0,
    }
    memory = dict.fromkeys(COUNTERS, 0.0)
    memory["weight_reads"] = mem["weight"].instance_bytes
    memory["act_reads"] = memory["act_writes"] = mem["activation"].instance_bytes
    memory["table_lookups"] = table.instance_bytes if table else 0.0
    return HardwareWords(bits=bits, memory_bytes=memory)


def unit_energies(schedule: Schedule, table: EnergyTable) -> dict[str, float]:
    """pJ per action for a compiled schedule (the one set of factors every energy uses)."""
    hw = hardware_words(schedule)
    where = f"energy table {table.name}"
    return {c: table.actions[c].energy_pJ(hw.bits[c], hw.memory_bytes[c], where) for c in COUNTERS}


# --------------------------------------------------------------------------- energy


@dataclass(frozen=True, eq=False)
class EnergyBreakdown:
    """Energy of ``N`` inferences, in pJ.

    ``counts``: int64 ``[N, L, A]`` action counts per layer (``L == 1`` and
    ``layers == ("*",)`` when the counts were totals over layers);
    ``per_layer_pJ``: ``[N, L, A]`` dynamic energy per layer and action;
    ``dynamic_pJ``: ``[N, A]`` per action, computed from the layer-summed
    integer counts (the exact formula shared by golden and RTL counts);
    ``static_pJ``: ``[N]`` static power x ``cycles`` at the clock.
    """

    table: str
    layers: tuple[str, ...]
    unit_pJ: dict[str, float]
    counts: np.ndarray
    per_layer_pJ: np.ndarray
    dynamic_pJ: np.ndarray
    static_pJ: np.ndarray
    cycles: np.ndarray
    cycles_source: str  # "lower_bound" (Schedule.cycle_lower_bound), "given", or how energy_run got them
    pes: int
    clock_mhz: float
    static_mW: float

    @property
    def samples(self) -> int:
        return int(self.counts.shape[0])

    @property
    def total_pJ(self) -> np.ndarray:
        """``[N]`` total energy per inference."""
        return self.dynamic_pJ.sum(axis=1) + self.static_pJ

    @property
    def syn_ops(self) -> np.ndarray:
        """``[N]`` synaptic operations per inference."""
        return self.counts[:, :, COUNTERS.index("syn_ops")].sum(axis=1)

    @property
    def per_synapse_pJ(self) -> float:
        """Total energy over all inferences / total synaptic operations (NaN when none)."""
        ops = int(self.syn_ops.sum())
        return float(self.total_pJ.sum() / ops) if ops else float("nan")

    def component_pJ(self) -> np.ndarray:
        """``[N, len(COMPONENTS)]``: every action, then static."""
        return np.concatenate([self.dynamic_pJ, self.static_pJ[:, None]], axis=1)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (means over the inferences unless named otherwise)."""
        total = self.total_pJ
        comp = self.component_pJ().mean(axis=0)
        dyn = float(self.dynamic_pJ.sum(axis=1).mean())
        stat = float(self.static_pJ.mean())
        per_layer = {}
        if self.layers != (ALL_LAYERS,):
            for li, name in enumerate(self.layers):
                e = self.per_layer_pJ[:, li, :].mean(axis=0)
                per_layer[name] = {"total": float(e.sum()), **{c: float(e[i]) for i, c in enumerate(COUNTERS)}}
        ps = self.per_synapse_pJ
        return {
            "samples": self.samples,
            "per_synapse_pJ": _finite(ps),
            "per_synapse_uJ": _finite(ps * 1e-6),
            "per_inference_pJ": {
                "mean": float(total.mean()),
                "min": float(total.min()),
                "max": float(total.max()),
            },
            "per_inference_uJ": float(total.mean() * 1e-6),
            "dynamic_pJ": dyn,
            "static_pJ": stat,
            "static_fraction": _finite(stat / (dyn + stat)) if dyn + stat > 0 else 0.0,
            "per_component_pJ": {c: float(comp[i]) for i, c in enumerate(COMPONENTS)},
            "per_layer_pJ": per_layer,
            "syn_ops_per_inference": {
                "mean": float(self.syn_ops.mean()),
                "min": int(self.syn_ops.min()),
                "max": int(self.syn_ops.max()),
            },
            "cycles_per_inference": float(self.cycles.mean()),
            "cycles_source": self.cycles_source,
            # At `clock_mhz` (energy.json's `clock` says whether it was measured or assumed).
            "latency_us": float(self.cycles.mean() / self.clock_mhz),
            "throughput_per_s": _finite(self.clock_mhz * 1e6 / float(self.cycles.mean()))
            if self.cycles.mean() > 0 else None,
        }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def energy_from_counts(
    ir: IR,
    counts: dict[str, dict[str, np.ndarray]],
    table: EnergyTable,
    *,
    schedule: Schedule,
    clock_mhz: float,
    cycles: np.ndarray | None = None,
    cycles_source: str = "given",
) -> EnergyBreakdown:
    """Energy of ``N`` inferences from their action counts.

    ``counts[layer][counter]`` is an int ``[N]`` array for every IR layer (the
    golden model's counts), or ``counts["*"][counter]`` for totals over layers
    (the RTL counters). ``cycles`` (``[N]``) gives the inference time for static
    power; without it the schedule's cycle lower bound, the sum over layers of
    ``ceil(syn_ops / P)``, is used (which needs per-layer counts).
    """
    pes = schedule.pes
    if clock_mhz <= 0:
        raise ApicalError(f"energy: clock_mhz: must be > 0, got {clock_mhz}")
    if set(counts) == {ALL_LAYERS}:
        layers: tuple[str, ...] = (ALL_LAYERS,)
    else:
        layers = tuple(layer.name for layer in ir.layers)
        missing = [n for n in layers if n not in counts]
        extra = [n for n in counts if n not in layers]
        if missing or extra:
            bad = missing[0] if missing else extra[0]
            what = "no counts for IR layer" if missing else "counts for a layer not in the IR"
            raise ApicalError(f"energy: counts: {what} {bad!r}")
    arr = []
    n = None
    for name in layers:
        per = counts[name]
        row = []
        for c in COUNTERS:
            if c not in per:
                raise ApicalError(f"energy: counts[{name!r}]: missing counter {c!r}")
            a = np.asarray(per[c])
            if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
                raise ApicalError(f"energy: counts[{name!r}][{c!r}]: must be a 1-d integer array, got {a.dtype} {a.shape}")
            if n is None:
                n = a.shape[0]
            if a.shape[0] != n:
                raise ApicalError(f"energy: counts[{name!r}][{c!r}]: {a.shape[0]} samples, expected {n}")
            if a.size and a.min() < 0:
                raise ApicalError(f"energy: counts[{name!r}][{c!r}]: negative count")
            row.append(a.astype(np.int64))
        arr.append(np.stack(row, axis=1))
    cnt = np.stack(arr, axis=1)  # [N, L, A]
    if cnt.shape[0] == 0:
        raise ApicalError("energy: counts: no samples")
    unit = unit_energies(schedule, table)
    u = np.array([unit[c] for c in COUNTERS], dtype=np.float64)
    per_layer = cnt.astype(np.float64) * u
    # Sum the integer counts over layers first, then multiply once: identical counts
    # (golden per layer or RTL totals) give identical float64 energies.
    dynamic = cnt.sum(axis=1).astype(np.float64) * u
    if cycles is None:
        if layers == (ALL_LAYERS,):
            raise ApicalError("energy: cycles: required when counts are totals over layers")
        syn = cnt[:, :, COUNTERS.index("syn_ops")]
        cyc = schedule.cycle_lower_bound({name: syn[:, li] for li, name in enumerate(layers)})
        source = "lower_bound"
    else:
        cyc = np.asarray(cycles)
        if cyc.shape != (cnt.shape[0],) or not np.issubdtype(cyc.dtype, np.integer):
            raise ApicalError(f"energy: cycles: must be an integer array of shape ({cnt.shape[0]},), got {cyc.dtype} {cyc.shape}")
        cyc = cyc.astype(np.int64)
        source = cycles_source
    # static mW x (cycles / clock MHz) us = nJ; x 1e3 -> pJ
    static = table.static_mW * cyc.astype(np.float64) / clock_mhz * 1e3
    return EnergyBreakdown(
        table=table.name,
        layers=layers,
        unit_pJ=unit,
        counts=cnt,
        per_layer_pJ=per_layer,
        dynamic_pJ=dynamic,
        static_pJ=static,
        cycles=cyc,
        cycles_source=source,
        pes=pes,
        clock_mhz=float(clock_mhz),
        static_mW=table.static_mW,
    )


# --------------------------------------------------------------------------- the energy step


def load_test_inputs(ir: IR, path: Path) -> dict[str, np.ndarray]:
    """The integer test inputs of ``test_vectors.npz``: one ``[N, size]`` array per IR input."""
    return load_inputs(ir, path)


def _rtl_check(
    ir: IR, golden: GoldenResult, table: EnergyTable, sim_path: Path, pes: int, clock_mhz: float
) -> dict[str, Any]:
    sim = read_json_object(sim_path)
    per = sim.get("per_sample")
    idx = sim.get("sample_indices")
    if not isinstance(per, list) or not isinstance(idx, list) or len(per) != len(idx):
        raise ApicalError(f"{sim_path}: sample_indices and per_sample must be lists of equal length")
    if not per:
        return {"available": False, "reason": "sim.json lists no simulated samples"}
    n_total = int(next(iter(golden.counts.values()))["syn_ops"].shape[0])
    for i in idx:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_total:
            raise ApicalError(f"{sim_path}: sample_indices: {i!r} is not a test-set index in [0, {n_total})")
    sim_pes = sim.get("pes", pes)
    if isinstance(sim_pes, bool) or not isinstance(sim_pes, int) or sim_pes < 1:
        raise ApicalError(f"{sim_path}: pes: must be a positive integer, got {sim_pes!r}")
    rtl: dict[str, list[int]] = {c: [] for c in COUNTERS}
    cycles = []
    for k, entry in enumerate(per):
        if not isinstance(entry, dict) or not isinstance(entry.get("counters"), dict):
            raise ApicalError(f"{sim_path}: per_sample[{k}].counters: missing")
        for c in COUNTERS:
            v = entry["counters"].get(c)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ApicalError(f"{sim_path}: per_sample[{k}].counters.{c}: must be an integer, got {v!r}")
            rtl[c].append(v)
        cyc = entry.get("cycles", entry["counters"].get("cycles"))
        if isinstance(cyc, bool) or not isinstance(cyc, int):
            raise ApicalError(f"{sim_path}: per_sample[{k}].cycles: must be an integer, got {cyc!r}")
        cycles.append(cyc)
    sel = np.asarray(idx, dtype=np.int64)
    cyc_arr = np.asarray(cycles, dtype=np.int64)
    rtl_counts = {ALL_LAYERS: {c: np.asarray(v, dtype=np.int64) for c, v in rtl.items()}}
    gold_counts = {
        ALL_LAYERS: {c: sum(golden.counts[layer.name][c][sel] for layer in ir.layers) for c in COUNTERS}
    }
    # Cycles have no golden counterpart: both use the simulated cycles, so the check is on actions.
    sched = compile_schedule(ir, sim_pes)
    e_rtl = energy_from_counts(ir, rtl_counts, table, schedule=sched, clock_mhz=clock_mhz, cycles=cyc_arr)
    e_gold = energy_from_counts(ir, gold_counts, table, schedule=sched, clock_mhz=clock_mhz, cycles=cyc_arr)
    mismatched = [c for c in COUNTERS if not np.array_equal(rtl_counts[ALL_LAYERS][c], gold_counts[ALL_LAYERS][c])]
    energy_match = bool(np.array_equal(e_rtl.component_pJ(), e_gold.component_pJ()))
    return {
        "available": True,
        "samples": len(idx),
        "sample_indices": [int(i) for i in idx],
        "pes": sim_pes,
        "rtl_pJ": float(e_rtl.total_pJ.sum()),
        "golden_pJ": float(e_gold.total_pJ.sum()),
        "rtl_per_inference_pJ": float(e_rtl.total_pJ.mean()),
        "golden_per_inference_pJ": float(e_gold.total_pJ.mean()),
        "rtl_per_component_pJ": {c: float(v) for c, v in zip(COMPONENTS, e_rtl.component_pJ().sum(0), strict=True)},
        "golden_per_component_pJ": {c: float(v) for c, v in zip(COMPONENTS, e_gold.component_pJ().sum(0), strict=True)},
        "counters_match": not mismatched,
        "mismatched_counters": mismatched,
        "energy_match": energy_match,
        "rtl_matches_golden": energy_match and not mismatched,
        "cycles_per_inference": float(cyc_arr.mean()),
    }


def _measured_cycles(schedule: Schedule, golden: GoldenResult, sim_path: Path) -> tuple[np.ndarray, str] | None:
    """Cycles of every test sample for static energy, from the simulation when there is one.

    Simulated samples keep their measured cycles; the others get the cycle
    lower bound scaled by the simulated samples' measured/bound ratio. None
    when ``sim.json`` is absent or was made for another P.
    """
    if not sim_path.is_file():
        return None
    sim = read_json_object(sim_path)
    per, idx = sim.get("per_sample"), sim.get("sample_indices")
    if sim.get("pes") != schedule.pes or not isinstance(per, list) or not isinstance(idx, list) or not per:
        return None
    bound = schedule.cycle_lower_bound({name: c["syn_ops"] for name, c in golden.counts.items()})
    try:
        sel = np.asarray(idx, dtype=np.int64)
        measured = np.asarray([int(e["cycles"]) for e in per], dtype=np.int64)
        ratio = measured.sum() / max(1, int(bound[sel].sum()))
    except (KeyError, TypeError, ValueError, IndexError):
        return None  # _rtl_check names what is malformed
    cycles = np.ceil(bound * ratio).astype(np.int64)
    cycles[sel] = measured
    source = "measured" if len(set(idx)) == len(bound) else "measured+scaled_lower_bound"
    return cycles, source


def _evaluate(
    ir_dir: Path, vectors: Path, table: EnergyTable, pes: int, clock_mhz: float, sim_path: Path | None = None
) -> tuple[IR, GoldenResult, EnergyBreakdown, dict[str, np.ndarray], Schedule]:
    """Load an IR and its test vectors, run the golden model, and cost its counts on its schedule."""
    ir = load_ir(ir_dir)
    inputs = load_test_inputs(ir, vectors)
    golden = run_golden(ir, inputs)
    sched = compile_schedule(ir, pes)
    got = _measured_cycles(sched, golden, sim_path) if sim_path is not None else None
    cycles, source = got if got is not None else (None, "given")
    e = energy_from_counts(
        ir, golden.counts, table, schedule=sched, clock_mhz=clock_mhz, cycles=cycles, cycles_source=source
    )
    return ir, golden, e, inputs, sched


def _baseline_entry(
    base_dir: Path, run_dir: Path, this: dict[str, Any], tab: EnergyTable, pes: int, clock: float
) -> dict[str, Any]:
    """Golden counts and energy of one baseline run, and this run's ratios against it."""
    vec = base_dir / "test_vectors.npz"
    if not vec.is_file():
        vec = run_dir / "test_vectors.npz"  # same task, same test set
    bir, bgold, be, binputs, bsched = _evaluate(base_dir / "ir", vec, tab, pes, clock)
    bsum = be.summary()
    bi, bs = bsum["per_inference_pJ"]["mean"], bsum["per_synapse_pJ"]
    bo = bsum["syn_ops_per_inference"]["mean"]
    ps = this["per_synapse_pJ"]
    return {
        "available": True,
        "dir": base_dir.name,
        "synapses": bir.synapses,
        **{k: bsum[k] for k in ("samples", "per_synapse_pJ", "per_inference_pJ", "per_inference_uJ",
                                 "dynamic_pJ", "static_pJ", "per_component_pJ", "per_layer_pJ",
                                 "syn_ops_per_inference")},
        "metrics": neurobench_metrics(bir, bgold, bsched, inputs=binputs),
        "ratios": {
            "per_inference": this["per_inference_pJ"]["mean"] / bi if bi else None,
            "per_synapse": ps / bs if ps is not None and bs else None,
            "syn_ops_per_inference": this["syn_ops_per_inference"]["mean"] / bo if bo else None,
        },
    }


def energy_run(cfg: Config, run_dir: Path, table: str | None = None) -> dict[str, Any]:
    """The ``energy`` step: golden counts of the whole test set -> ``energy.json``.

    Also checks the simulated samples (``sim.json``: RTL counters vs golden
    counts, same formula) and compares with the point-neuron baselines in
    ``baseline/`` (driving view) and ``baseline_both/`` (both views) when present:
    ``baselines`` holds each with this run's ratios against it; ``baseline`` and
    ``ratios`` are the headline one (both views when present). Returns what it wrote.
    """
    run_dir = Path(run_dir)
    tab = load_energy_table(table or cfg.energy.table)
    pes = cfg.hardware.pes
    # Static energy (power x time) at the clock a timed build achieved, else at the assumed one.
    basis = clock_basis(cfg.hardware.clock_mhz, run_dir, pes)
    clock = basis.used_mhz
    sim_path = run_dir / "sim.json"
    ir, golden, e, inputs, sched = _evaluate(
        run_dir / "ir", run_dir / "test_vectors.npz", tab, pes, clock, sim_path=sim_path
    )
    hw = hardware_words(sched)
    out: dict[str, Any] = {
        "table": tab.name,
        "table_source": tab.source,
        "table_description": tab.description,
        "pes": pes,
        "clock_mhz": clock,
        "clock": basis.as_dict(),
        "static_mW": tab.static_mW,
        "unit_pJ": e.unit_pJ,
        "word_bits": hw.bits,
        "memory_bytes": hw.memory_bytes,
        "synapses": ir.synapses,
        **e.summary(),
        "per_sample_pJ": [float(v) for v in e.total_pJ],
        "per_sample_syn_ops": [int(v) for v in e.syn_ops],
        "metrics": neurobench_metrics(ir, golden, sched, inputs=inputs),
    }
    if sim_path.is_file():
        rtl = _rtl_check(ir, golden, tab, sim_path, pes, clock)
    else:
        rtl = {"available": False, "reason": "sim.json not found (run `apical sim`)"}
    out["rtl"] = rtl
    out["rtl_matches_golden"] = rtl.get("rtl_matches_golden")
    # Like-for-like point baselines (driving view; both views): ratios against each, the
    # headline against the first of HEADLINE_ORDER present.
    found = {}
    for name in HEADLINE_ORDER[::-1]:
        base_dir = run_dir / SUBDIRS[name]
        if (base_dir / "ir").is_dir():
            found[name] = _baseline_entry(base_dir, run_dir, out, tab, pes, clock)
    out["baselines"] = {n: found[n] for n in HEADLINE_ORDER if n in found}
    headline = next((n for n in HEADLINE_ORDER if n in found), None)
    out["headline_baseline"] = headline
    if headline is not None:
        out["baseline"] = {"name": headline, **found[headline]}
        out["ratios"] = found[headline]["ratios"]
    else:
        out["baseline"] = {"available": False, "reason": "baseline/ir not found"}
        out["ratios"] = None
    atomic_write_json(run_dir / "energy.json", out)
    return out
