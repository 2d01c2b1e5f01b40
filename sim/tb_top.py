"""cocotb testbench of the generated ``apical_top``: AXI-Stream in, AXI-Stream out, counters.

This is the cocotb test module the runner (`apical.sim.runner`) launches inside
the simulator. Its one input is the job file named by the ``APICAL_SIM_JOB``
environment variable (the boundary between the runner's process and the
simulator's; nothing else here reads the environment). The job names the
vectors archive (input arrays per IR input, expected outputs, classes and
golden counter totals), the output results file and the options (back-pressure,
stop on the first mismatch, seed).

Tests:

* ``test_inferences``: every sample back to back through the AXI streams, with
  random back-pressure on both sides when asked; each result (every output
  value, the class, every counter) is compared with the golden model.
* ``test_reset_midstream``: a reset half-way through an input stream, then clean
  inferences, all compared.

Per-sample results (outputs, class, counters, cycles) go to the results JSON
file the runner reads back, also when a test fails.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import Immediate
from cocotb.queue import Queue
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from apical.sim.counters import COUNTER_BITS, HW_COUNTERS, Mismatch, compare_results, port_name
from apical.sw.atomic import atomic_write_json
from apical.sw.counts import COUNTERS

JOB_ENV = "APICAL_SIM_JOB"
CLOCK_NS = 10


# --------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class Port:
    name: str
    size: int
    bits: int
    signed: bool


@dataclass(frozen=True)
class Job:
    """What the runner asks of this simulation (see `apical.sim.runner.write_job`)."""

    inputs: tuple[Port, ...]
    output: Port
    vectors: dict[str, np.ndarray]  # per input name [N, size]; exp_* arrays when checking
    sample_ids: np.ndarray
    results: Path
    backpressure: bool
    stop_on_mismatch: bool
    check: bool
    seed: int
    reset_samples: int
    timeout_cycles: int

    @property
    def n(self) -> int:
        return int(self.sample_ids.shape[0])


def load_job() -> Job:
    path = os.environ.get(JOB_ENV)
    if not path:
        raise RuntimeError(f"{JOB_ENV} is not set: run this testbench through apical.sim.runner")
    raw = json.loads(Path(path).read_text())
    with np.load(raw["vectors"], allow_pickle=False) as z:
        vectors = {k: z[k] for k in z.files}
    return Job(
        inputs=tuple(Port(**p) for p in raw["inputs"]),
        output=Port(**raw["output"]),
        vectors=vectors,
        sample_ids=vectors["sample_ids"],
        results=Path(raw["results"]),
        backpressure=bool(raw["backpressure"]),
        stop_on_mismatch=bool(raw["stop_on_mismatch"]),
        check=bool(raw["check"]),
        seed=int(raw["seed"]),
        reset_samples=int(raw["reset_samples"]),
        timeout_cycles=int(raw["timeout_cycles"]),
    )


# --------------------------------------------------------------------------- the TB class


def random_pause(rng: random.Random, p: float = 0.3) -> Iterator[bool]:
    """Pause (True) with probability ``p`` each cycle: random back-pressure / idle cycles."""
    while True:
        yield rng.random() < p


def _high(sig: Any) -> bool:
    """A 1-bit signal is 1 (X/Z read as 0: before reset they mean "no handshake")."""
    return str(sig.value) == "1"


class TB:
    """Clock, reset, the two AXI-Stream endpoints and the counter capture of ``apical_top``."""

    def __init__(self, dut: Any, job: Job) -> None:
        self.dut = dut
        self.job = job
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        # Known values on every input before the first edge: an X on a valid
        # or on the reset would otherwise spread through the design's next-state logic.
        for sig in (dut.rst, dut.s_axis_tvalid, dut.s_axis_tlast, dut.s_axis_tdata, dut.m_axis_tready):
            sig.value = Immediate(0)
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        # One activation per beat whatever the data width: a single "byte lane"
        # as wide as tdata.
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst, byte_lanes=1)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst, byte_lanes=1)
        for log in (self.source.log, self.sink.log):
            log.setLevel(logging.WARNING)  # the per-frame INFO lines swamp the log
        self.out_width = len(dut.m_axis_tdata)
        self.cycles = 0
        self.in_beats = 0
        self.captured: Queue[dict[str, int]] = Queue()
        self._watch_task = cocotb.start_soon(self._watch())

    async def _watch(self) -> None:
        """Count clock cycles and input beats; latch the counters at every class beat.

        Sampled right after the rising edge, as cocotbext-axi's monitors sample
        the bus, so the values are those of the handshake cycle; the contract
        keeps the counters stable from the class beat on.
        """
        d = self.dut
        ports = [(c, getattr(d, port_name(c))) for c in HW_COUNTERS]
        edge = RisingEdge(d.clk)
        while True:
            await edge
            self.cycles += 1
            if _high(d.s_axis_tvalid) and _high(d.s_axis_tready):
                self.in_beats += 1
            if _high(d.m_axis_tvalid) and _high(d.m_axis_tready) and _high(d.m_axis_tlast):
                self.captured.put_nowait({c: int(p.value) for c, p in ports})

    async def reset(self, cycles: int = 4) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)
        self.sink.clear()
        while not self.captured.empty():
            self.captured.get_nowait()

    def set_backpressure_generator(self, generator: Any = None) -> None:
        """Random ready on the output stream (None: always ready)."""
        self.sink.set_pause_generator(generator)

    def set_idle_generator(self, generator: Any = None) -> None:
        """Random gaps in the input stream (None: back to back)."""
        self.source.set_pause_generator(generator)

    def beats(self, k: int) -> list[int]:
        """Sample row ``k``: every IR input in order, one activation per beat, low bits."""
        out: list[int] = []
        for p in self.job.inputs:
            mask = (1 << p.bits) - 1
            out.extend(int(v) & mask for v in self.job.vectors[p.name][k])
        return out

    async def send_sample(self, k: int) -> None:
        await self.source.send(AxiStreamFrame(self.beats(k)))

    def _value(self, raw: int) -> int:
        v = raw & ((1 << self.out_width) - 1)
        if self.job.output.signed and v >> (self.out_width - 1):
            v -= 1 << self.out_width
        return v

    async def read_result(self) -> dict[str, Any]:
        """One result frame: the output values, then the class beat (tlast), plus the counters."""
        timeout = self.job.timeout_cycles * CLOCK_NS
        frame = await with_timeout(self.sink.recv(), timeout, "ns")
        counters = await with_timeout(self.captured.get(), timeout, "ns")
        data = [int(v) for v in frame.tdata]
        return {
            "beats": len(data),
            "outputs": [self._value(v) for v in data[:-1]],
            "class": data[-1] if data else -1,
            "counters": {c: counters[c] & ((1 << COUNTER_BITS) - 1) for c in HW_COUNTERS},
            "cycles": counters["cycles"],
        }


# --------------------------------------------------------------------------- results and checks


def _record(job: Job, test: str, entry: dict[str, Any]) -> None:
    """Merge one test's results into the results file (read back by the runner)."""
    data: dict[str, Any] = {}
    if job.results.is_file():
        data = json.loads(job.results.read_text())
    data[test] = entry
    atomic_write_json(job.results, data)


def _check(job: Job, k: int, res: dict[str, Any]) -> list[Mismatch]:
    """Compare one result with the golden row ``k``; a wrong beat count is itself a mismatch."""
    v = job.vectors
    sid = int(job.sample_ids[k])
    size = job.output.size
    if res["beats"] != size + 1:
        return [Mismatch(sid, "beats", job.output.name, "frame length", size + 1, res["beats"])]
    return compare_results(
        layer=job.output.name,
        sample_ids=[sid],
        expected_outputs=v["exp_outputs"][k : k + 1],
        expected_classes=v["exp_classes"][k : k + 1],
        expected_counts={c: v[f"exp_{c}"][k : k + 1] for c in COUNTERS},
        outputs=np.asarray([res["outputs"]]),
        classes=np.asarray([res["class"]]),
        counters={c: np.asarray([res["counters"][c]]) for c in COUNTERS},
    )


async def _run_samples(tb: TB, job: Job, rows: list[int], test: str, extra: dict[str, Any]) -> None:
    """Queue every row back to back, read every result, compare, record; fail on the first mismatch."""
    entry: dict[str, Any] = {"samples": [], "failure": None, **extra}
    start_cycles, t0 = tb.cycles, time.perf_counter()
    for k in rows:
        await tb.send_sample(k)  # only queues: the source streams the frames back to back
    failure = None
    try:
        for k in rows:
            res = await tb.read_result()
            res["sample"] = int(job.sample_ids[k])
            entry["samples"].append(res)
            if job.check:
                bad = _check(job, k, res)
                if bad and job.stop_on_mismatch:
                    failure = bad[0].describe()
                    break
    except cocotb.triggers.SimTimeoutError:
        failure = f"timeout: no result within {job.timeout_cycles} cycles after {len(entry['samples'])} results"
    entry["sim_cycles"] = tb.cycles - start_cycles
    entry["wall_s"] = time.perf_counter() - t0
    entry["failure"] = failure
    _record(job, test, entry)
    assert failure is None, failure


@cocotb.test()
async def test_inferences(dut: Any) -> None:
    """All samples back to back, random back-pressure on both streams, compared with golden."""
    job = load_job()
    tb = TB(dut, job)
    await tb.reset()
    if job.backpressure:
        tb.set_idle_generator(random_pause(random.Random(job.seed)))
        tb.set_backpressure_generator(random_pause(random.Random(job.seed + 1)))
    await _run_samples(tb, job, list(range(job.n)), "inferences", {})


@cocotb.test()
async def test_reset_midstream(dut: Any) -> None:
    """A reset half-way through sample 0's input stream, then clean inferences."""
    job = load_job()
    tb = TB(dut, job)
    await tb.reset()
    if job.backpressure:
        tb.set_idle_generator(random_pause(random.Random(job.seed + 2)))
        tb.set_backpressure_generator(random_pause(random.Random(job.seed + 3)))
    n_in = sum(p.size for p in job.inputs)
    cut = max(1, n_in // 2)
    await tb.send_sample(0)
    start = tb.in_beats
    for _ in range(job.timeout_cycles):
        if tb.in_beats - start >= cut:
            break
        await RisingEdge(dut.clk)
    # The source flushes its half-sent frame when it sees the reset.
    await tb.reset()
    rows = list(range(min(job.n, job.reset_samples)))
    await _run_samples(tb, job, rows, "reset", {"cut_after_beats": cut})
