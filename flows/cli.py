"""The `apical` command: a thin layer over the flow steps.

Every subcommand reads a config (a YAML file for ``train``/``run``, else the
run directory's ``config.yaml``), applies its command-line overrides, and runs
steps through `apical.flows.flow.run_flow`. Errors are one line on stderr and a
non-zero exit: 1 for a user-facing `ApicalError`, 2 for bad arguments, 3 for an
internal fault (``--debug`` shows its traceback), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from apical.sw.config import Config, config_hash, load_config
from apical.sw.errors import ApicalError

__all__ = ["main"]

DEFAULT_RUNS = Path("runs")


def _console():  # rich is imported lazily: `apical --help` stays instant
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _reporter(console: Any, total: int):
    state = {"i": 0}

    def report(event: str, step: Any, info: dict[str, Any]) -> None:
        if event == "start":
            state["i"] += 1
            console.print(f"[bold cyan][{state['i']}/{total}] {step.name}[/]: {step.doc} ...")
        elif event == "skip":
            state["i"] += 1
            console.print(f"[dim][{state['i']}/{total}] {step.name}: unchanged inputs, skipped[/]")
        elif event == "done":
            console.print(f"[green]    {step.name} done in {info['seconds']:.1f} s[/]  {_headline(step.name, info.get('summary') or {})}")

    return report


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _headline(step: str, s: dict[str, Any]) -> str:
    """One line of the step's most telling figures."""
    keys = {
        "train": ("test_acc", "test_acc_no_context", "val_acc", "epochs_run"),
        "export": ("layers", "synapses"),
        "verify": ("bit_exact", "argmax_agreement"),
        "rtl": ("pes",),
        "sim": ("bit_exact", "counters_match", "utilization"),
        "energy": ("per_synapse_pJ", "per_inference_uJ", "rtl_matches_golden"),
        "synth": ("fits", "part"),
        "bitstream": ("status", "fmax_mhz", "target_mhz", "timing_met"),
        "report": ("html",),
    }.get(step, ())
    parts = [f"{k}={_fmt(s[k])}" for k in keys if k in s and not isinstance(s[k], dict | list)]
    timing = s.get("timing") if step == "synth" else None
    if isinstance(timing, dict):
        parts.append(f"fmax_mhz={_fmt(timing.get('fmax_mhz'))} ({timing.get('device')})")
    return " ".join(parts)


def _run_dir_config(run_dir: Path) -> Config:
    p = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise ApicalError(f"{run_dir}: no such run directory")
    if not p.exists():
        raise ApicalError(f"{p}: missing (is {run_dir} an apical run directory? `apical train` makes one)")
    return load_config(p)


def _override(cfg: Config, section: str, **values: Any) -> Config:
    values = {k: v for k, v in values.items() if v is not None}
    if not values:
        return cfg
    try:
        sec = dataclasses.replace(getattr(cfg, section), **values)
    except ValueError as e:  # the section's own validation
        raise ApicalError(f"{section}.{e}") from None
    return dataclasses.replace(cfg, **{section: sec})


def _hw_overrides(cfg: Config, args: argparse.Namespace) -> Config:
    return _override(
        cfg,
        "hardware",
        pes=getattr(args, "pes", None),
        simulator=getattr(args, "simulator", None),
        sim_samples=getattr(args, "samples", None),
        # A waveform comes from the cocotb path only: --waves picks it unless --path says otherwise.
        sim_path=getattr(args, "path", None) or ("cocotb" if getattr(args, "waves", False) else None),
        waves=True if getattr(args, "waves", False) else None,
        part=getattr(args, "part", None),
        timing=getattr(args, "timing", None),
        board=getattr(args, "board", None),
        allow_timing_failure=True if getattr(args, "allow_timing_failure", False) else None,
    )


def _guard_run_dir(cfg: Config, run_dir: Path, overwrite: bool) -> None:
    """Refuse to overwrite a run made from a different model config unless ``--overwrite``."""
    p = run_dir / "config.yaml"
    if overwrite or not p.exists():
        return
    try:
        old = load_config(p)
    except ApicalError:
        return
    keys = ("seed", "data", "model", "quant", "train")
    if any(getattr(old, k) != getattr(cfg, k) for k in keys):
        raise ApicalError(
            f"{run_dir}: holds a run of a different config ({config_hash(old)} != {config_hash(cfg)}); "
            "choose another --out or pass --overwrite to replace it"
        )


def _run_steps(cfg: Config, run_dir: Path, start: str, stop: str, *, force: bool) -> dict[str, Any]:
    from apical.flows.flow import run_flow
    from apical.flows.steps import STEPS

    names = [s.name for s in STEPS]
    total = names.index(stop) - names.index(start) + 1
    console = _console()
    record = run_flow(
        cfg, run_dir, start=start, stop=stop, force=force, reporter=_reporter(console, total)
    )
    return record


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    cfg = _override(load_config(args.config), "train", workers=args.workers)
    run_dir = Path(args.out)
    from apical.sw.distributed import launched_by_torchrun

    if launched_by_torchrun(os.environ):  # one of N torchrun processes: rank 0 writes the run
        return _train_under_torchrun(cfg, run_dir, args.overwrite)
    _guard_run_dir(cfg, run_dir, args.overwrite)
    _run_steps(cfg, run_dir, "train", "train", force=True)
    _console().print(f"run directory: {run_dir}")
    return 0


def _train_under_torchrun(cfg: Config, run_dir: Path, force: bool) -> int:
    import torch.distributed as dist

    from apical.sw.distributed import init_from_env, rank
    from apical.sw.train_modular import run_worker

    init_from_env()
    try:
        if rank() != 0:
            run_worker(cfg)
            return 0
        _guard_run_dir(cfg, run_dir, force)
        _run_steps(cfg, run_dir, "train", "train", force=True)
        _console().print(f"run directory: {run_dir}")
        return 0
    finally:
        dist.destroy_process_group()


def _single(step: str):
    def cmd(args: argparse.Namespace) -> int:
        run_dir = Path(args.run_dir)
        cfg = _run_dir_config(run_dir)
        cfg = _hw_overrides(cfg, args)
        if getattr(args, "table", None):
            cfg = _override(cfg, "energy", table=args.table)
        # A new P for `sim` means new hardware: regenerate the RTL first.
        first = "rtl" if step == "sim" and getattr(args, "pes", None) else step
        _run_steps(cfg, run_dir, first, step, force=True)
        if step == "export" and getattr(args, "qonnx", False):
            from apical.sw.qonnx_io import export_qonnx_run

            path = export_qonnx_run(cfg, run_dir)
            _console().print(f"QONNX model: {path}")
        return 0

    return cmd


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)  # None -> the shipped default
    cfg = _hw_overrides(cfg, args)
    run_dir = Path(args.out) if args.out else DEFAULT_RUNS / cfg.name
    _guard_run_dir(cfg, run_dir, args.overwrite)
    from apical.flows.steps import STEPS

    start = args.start or STEPS[0].name
    stop = args.stop or STEPS[-1].name
    record = _run_steps(cfg, run_dir, start, stop, force=args.redo)
    total = sum(v.get("seconds") or 0 for v in record["steps"].values() if not v.get("skipped"))
    console = _console()
    console.print(f"[bold]flow finished[/] in {total:.1f} s of step time; run directory: {run_dir}")
    if (run_dir / "report.html").exists():
        console.print(f"report: {run_dir / 'report.html'}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from apical.flows.extras import require_extra

    require_extra("qonnx", "apical import")

    src = Path(args.model)
    run_dir = Path(args.out)
    from apical.flows.flow import run_lock

    with run_lock(run_dir):
        return _import_locked(args, src, run_dir)


def _import_locked(args: argparse.Namespace, src: Path, run_dir: Path) -> int:
    from apical.flows.flow import write_run_config
    from apical.sw.config import ModelKind
    from apical.sw.qonnx_io import import_run

    if (run_dir / "ir").exists() and not args.overwrite:
        raise ApicalError(f"{run_dir / 'ir'}: exists; choose another --out or pass --overwrite to replace it")
    from apical.flows.imported import import_vectors, write_import_vectors
    from apical.sw.qonnx_io import import_qonnx

    # Everything is checked before anything is written into the run directory.
    arrays, vec = import_vectors(import_qonnx(src), Path(args.inputs) if args.inputs else None)
    summary = import_run(src, run_dir)
    write_import_vectors(run_dir, arrays)
    base = load_config(None)
    cfg = dataclasses.replace(
        base,
        name=src.stem,
        model=dataclasses.replace(base.model, kind=ModelKind.POINT),
        energy=dataclasses.replace(base.energy, baseline=False),
    )
    write_run_config(cfg, run_dir)
    _console().print(
        f"imported {src} -> {run_dir / 'ir'} ({len(summary.get('layers', []))} layers); "
        f"test vectors: {vec['test_vectors']}, {vec['samples']} samples"
    )
    kinds = ", ".join(f"{la['name']}: {la['requant']}" for la in summary.get("layers", []))
    _console().print(f"requantisation ({'exact' if summary.get('exact') else 'measured'}): {kinds}")
    for note in summary.get("notes", []):
        _console().print(f"note: {note}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from apical.flows.compare import compare, load_variant

    cfg = load_config(args.config)
    extra = [load_variant(cfg, v) for v in args.variant or ()]
    console = _console()
    res = compare(cfg, args.seeds, Path(args.out), extra, progress=lambda m: console.print(f"[cyan]train[/] {m}"),
                  threads=args.threads)
    for v in res["variants"]:
        console.print(
            f"{v['name']:28s} {v['kind']:10s} acc {v['test_acc_mean']:.4f} (min {v['test_acc_min']:.4f})  "
            f"syn ops {v['syn_ops_mean']:8.1f}  energy {v['energy_uJ_mean']:.4g} uJ"
        )
    h = res["headline"]
    if h:
        console.print(f"headline: {h['two_point']} vs {h['baseline']}: syn ops x{h['syn_ops_ratio']:.3f}, "
                      f"accuracy {h['acc_delta']:+.4f}")
    console.print(f"wrote {Path(args.out) / 'compare.json'} and compare.png")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from apical.flows.explore import Budget, explore, load_space

    cfg = load_config(args.config)
    space = load_space(args.space)
    budget = Budget(part=args.budget, max_lut=args.max_lut, max_dsp=args.max_dsp, max_bram=args.max_bram,
                    max_energy_uJ=args.max_energy_uj, max_cycles=args.max_cycles)
    console = _console()
    with Progress(TextColumn("[cyan]explore[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task("", total=args.trials)

        def progress(event: str, info: dict[str, Any]) -> None:
            if event == "verify":
                bar.console.print(f"[cyan]verify[/] {info['name']} ({info['rank']}/{info['of']}): full flow to yosys")
                return
            best = info.get("best_val_acc")
            desc = f"running {info['running']}" + (f", best val acc {best:.4f}" if best is not None else "")
            if info.get("resumed"):
                desc += f", {info['resumed']} resumed"
            bar.update(task, completed=info["done"], description=desc)
            if event == "default":
                bar.console.print("[cyan]default[/] config measured")

        res = explore(cfg, Path(args.out), space=space, budget=budget, trials=args.trials, address=args.address,
                      cpus=args.cpus, verify_top=args.verify_top, progress=progress)
    d = res["default"]
    console.print(f"default {d['name']}: test acc {d['test_acc']:.4f}, energy {d['energy_uJ']:.4g} uJ")
    for e in res["front"]:
        ver = (f"bit_exact={e['bit_exact']} yosys LUT {e['yosys_lut']} ({e['lut_err_pct']:+.1f} %) "
               f"DSP exact={e['dsp_exact']} BRAM exact={e['bram_exact']}") if e.get("verified") else (
            e.get("verify_error", "not verified"))
        console.print(f"{e['name']:28s} test acc {e['test_acc']:.4f}  energy {e['energy_uJ']:.4g} uJ  "
                      f"cycles {e['cycles']:.0f}  LUT {e['lut']}  DSP {e['dsp']}  "
                      f"{'dominates default  ' if e['dominates_default'] else ''}{ver}")
    console.print(f"{res['trials_complete']} trials complete ({res['trials_infeasible']} infeasible), "
                  f"{res['trials_failed']} failed; wrote {Path(args.out) / 'explore.json'} and explore.html")
    return 0


def cmd_faults(args: argparse.Namespace) -> int:
    from apical.flows.faults import faults_run
    from apical.flows.flow import run_lock

    run_dir = Path(args.run_dir)
    cfg = _run_dir_config(run_dir)
    with run_lock(run_dir):
        s = faults_run(
            cfg, run_dir, kinds=_csv(args.kinds, str), rates=_csv(args.rates, float), draws=args.draws,
            seed=args.seed, layers=_csv(args.layers, str), compare=[Path(c) for c in args.compare or ()],
            rtl_draws=args.rtl_draws, rtl_samples=args.rtl_samples, simulator=args.simulator,
            verilator_draws=args.verilator_draws, synth=args.synth,
        )
    _console().print(f"faults: {run_dir / 'faults.json'}, {run_dir / s['plot']}; "
                     f"rtl_matches_golden={s['rtl_matches_golden']}")
    return 0


def cmd_neurobench(args: argparse.Namespace) -> int:
    from apical.flows.flow import run_lock
    from apical.flows.neurobench_check import neurobench_run

    run_dir = Path(args.run_dir)
    _run_dir_config(run_dir)
    with run_lock(run_dir):
        s = neurobench_run(run_dir, samples=args.samples)
    nb, ap = s["neurobench"], s["apical"]
    _console().print(
        f"neurobench {s['neurobench_version']} on {s['samples']} samples: syn ops/inference "
        f"{nb['effective_syn_ops_per_inference']:.2f} (apical {ap['effective_syn_ops_per_inference']:.2f}), "
        f"connection sparsity {nb['connection_sparsity']:.4f}, activation sparsity "
        f"{nb['activation_sparsity']:.4f}: all agree; {run_dir / 'neurobench.json'}"
    )
    return 0


def _csv(text: str | None, conv: Any) -> list[Any] | None:
    if not text:
        return None
    try:
        return [conv(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ApicalError(f"not a comma-separated list of numbers: {text!r}") from None


def cmd_steps(args: argparse.Namespace) -> int:
    from apical.flows.steps import STEPS

    for s in STEPS:
        print(f"{s.name:10s} {s.doc}")
    return 0


# --------------------------------------------------------------------------- parser


def _old_force(sp: argparse.ArgumentParser) -> None:
    """``--force`` meant two things; it is kept only to say which flag replaced it."""
    sp.add_argument("--force", dest="old_force", action="store_true", help=argparse.SUPPRESS)



def build_parser() -> argparse.ArgumentParser:
    from apical.flows.steps import STEPS

    names = [s.name for s in STEPS]
    p = argparse.ArgumentParser(
        prog="apical",
        description="FPGA co-design flow for two-point and sparse-modular quantized networks.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sp = sub.add_parser("train", help="train a model from a config into a run directory")
    sp.add_argument("config", help="YAML config")
    sp.add_argument("--out", required=True, help="run directory")
    sp.add_argument("--overwrite", action="store_true", help="replace a run of a different config")
    _old_force(sp)
    sp.add_argument("--workers", type=int, help="processes the sparse-modular modules are spread over "
                    "(train.workers; decoupled training)")
    sp.set_defaults(fn=cmd_train)

    def run_dir_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("run_dir", help="run directory")
        sp.set_defaults(fn=_single(name))
        return sp

    sp = run_dir_cmd("export", "export the integer model (IR) of a trained run")
    sp.add_argument("--qonnx", action="store_true", help="also write model.onnx (QONNX)")
    run_dir_cmd("verify", "Brevitas vs golden integer model, whole test set")
    sp = run_dir_cmd("rtl", "generate Verilog for the PE array")
    sp.add_argument("--pes", type=int, help="processing elements P")
    sp = run_dir_cmd("sim", "simulate the RTL on the test split and compare with the golden model")
    sp.add_argument("--simulator", choices=["icarus", "verilator"])
    sp.add_argument("--samples", type=int, help="test samples to simulate (0: all; default: all)")
    sp.add_argument("--path", choices=["fast", "cocotb"],
                    help="fast: HDL harness, no Python per cycle (default); cocotb: Python testbench")
    sp.add_argument("--waves", action="store_true", help="write a waveform under RUN_DIR/sim/ (cocotb path)")
    sp.add_argument("--pes", type=int, help="processing elements P (regenerates the RTL)")
    sp = run_dir_cmd("energy", "energy estimate from counted events")
    sp.add_argument("--table", help="energy table: shipped name or YAML file")
    sp = run_dir_cmd("synth", "yosys synth_xilinx resource estimate")
    sp.add_argument("--part", help="UltraScale+ part, e.g. xczu7ev-ffvc1156-2-e")
    sp.add_argument("--timing", choices=["none", "lfe5u-85f-6"],
                    help="also place and route for this device (nextpnr-ecp5) and record Fmax in synth.json")
    sp = run_dir_cmd("bitstream", "Vivado build tree (zcu104) or open bitstream (icebreaker, ulx3s)")
    sp.add_argument("--board", choices=["zcu104", "icebreaker", "ulx3s"], help="target board")
    sp.add_argument("--allow-timing-failure", action="store_true",
                    help="keep a bitstream that misses the board clock (recorded as failed timing, exit 0)")
    run_dir_cmd("report", "write report.html and report.md")

    sp = sub.add_parser("run", help="every step in order (default: the shipped config)")
    sp.add_argument("config", nargs="?", default=None, help="YAML config (default: shipped default)")
    sp.add_argument("--out", help="run directory (default: runs/<config name>)")
    sp.add_argument("--from", dest="start", choices=names, help="first step to run")
    sp.add_argument("--to", dest="stop", choices=names, help="last step to run")
    sp.add_argument("--redo", action="store_true", help="redo steps whose inputs did not change")
    sp.add_argument("--overwrite", action="store_true", help="replace a run of a different config")
    _old_force(sp)
    sp.add_argument("--pes", type=int, help="processing elements P")
    sp.add_argument("--simulator", choices=["icarus", "verilator"])
    sp.add_argument("--samples", type=int, help="test samples to simulate (0: all)")
    sp.add_argument("--path", choices=["fast", "cocotb"], help="simulation path (default: fast)")
    sp.add_argument("--allow-timing-failure", action="store_true",
                    help="bitstream step: keep a build that misses the board clock (recorded as failed timing)")
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("import", help="import a QONNX model (Brevitas export_qonnx) as an IR")
    sp.add_argument("model", help="QONNX .onnx file")
    sp.add_argument("--out", required=True, help="run directory")
    sp.add_argument("--overwrite", action="store_true", help="replace an existing IR")
    _old_force(sp)
    sp.add_argument("--inputs", help=".npz (one array [N, size] per IR input name) or .npy: integer codes, "
                    "or float data quantised with the model's input quantizer (docs/qonnx.md)")
    sp.set_defaults(fn=cmd_import)

    sp = sub.add_parser("compare", help="train every variant and its point baselines on N seeds; compare.json")
    sp.add_argument("config", help="YAML config")
    sp.add_argument("--seeds", type=int, default=5, help="seeds per variant (default 5)")
    sp.add_argument("--out", required=True, help="output directory")
    sp.add_argument("--variant", action="append", metavar="YAML",
                    help="extra setting: a YAML of config overrides (repeatable)")
    sp.add_argument("--threads", type=int, default=1, help="torch threads per training run (default 1)")
    sp.set_defaults(fn=cmd_compare)

    sp = sub.add_parser("explore", help="hardware-aware design search (Optuna on Ray); Pareto front verified")
    sp.add_argument("config", help="YAML config: the base of every design")
    sp.add_argument("--out", required=True, help="output directory (holds the study: re-run to resume)")
    sp.add_argument("--space", help="search space YAML (default: the shipped space)")
    sp.add_argument("--budget", metavar="PART", help="the designs must fit this part (e.g. xczu3eg)")
    sp.add_argument("--trials", type=int, default=40, help="trials in all, resumed ones included (default 40)")
    sp.add_argument("--address", help="Ray cluster address (default: a local Ray started for the search)")
    sp.add_argument("--cpus", type=int, help="CPUs of the local Ray (default: all); one trial per CPU")
    sp.add_argument("--verify-top", type=int, default=2,
                    help="front designs taken through RTL simulation and yosys (default 2)")
    sp.add_argument("--max-lut", type=int, help="LUT budget")
    sp.add_argument("--max-dsp", type=int, help="DSP48E2 budget")
    sp.add_argument("--max-bram", type=float, help="block RAM budget (RAMB36E2)")
    sp.add_argument("--max-energy-uj", type=float, help="energy per inference ceiling (uJ, validation)")
    sp.add_argument("--max-cycles", type=float, help="latency ceiling (cycles per inference)")
    sp.set_defaults(fn=cmd_explore)

    sp = sub.add_parser("faults", help="accuracy under faults (golden), the same faults checked in RTL")
    sp.add_argument("run_dir", help="run directory (exported)")
    sp.add_argument("--kinds", help="comma-separated: damage,damage_r,damage_c,stuck,seu,seu_parity (default all)")
    sp.add_argument("--rates", help="comma-separated rates for every kind (default: per kind)")
    sp.add_argument("--draws", type=int, default=5, help="fault draws per kind and rate (default 5)")
    sp.add_argument("--seed", type=int, help="seed of the fault draws (default: the config's seed)")
    sp.add_argument("--layers", help="comma-separated layers for damage/stuck (default: all but the output)")
    sp.add_argument("--compare", action="append", help="another exported run directory (repeatable)")
    sp.add_argument("--rtl-draws", type=int, default=2, help="combined draws simulated in RTL (default 2)")
    sp.add_argument("--rtl-samples", type=int, default=8, help="test samples per RTL draw (default 8)")
    sp.add_argument("--simulator", choices=["icarus", "verilator"])
    sp.add_argument("--verilator-draws", type=int, default=0, help="the first N RTL draws again on Verilator")
    sp.add_argument("--synth", action="store_true", help="also synthesise the parity design (LUT/FF/BRAM cost)")
    sp.set_defaults(fn=cmd_faults)

    sp = sub.add_parser("neurobench", help="the neurobench package's metrics on the exported net, checked against apical's")
    sp.add_argument("run_dir", help="run directory (exported)")
    sp.add_argument("--samples", type=int, default=0, help="first N test samples (default 0: all)")
    sp.set_defaults(fn=cmd_neurobench)

    sp = sub.add_parser("steps", help="list the steps of the flow")
    sp.set_defaults(fn=cmd_steps)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Library warnings (brevitas, torch) are noise on a user's terminal.
    if not args.debug:
        warnings.filterwarnings("ignore")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
    try:
        if getattr(args, "old_force", False):
            raise ApicalError(
                "--force is gone: use --overwrite to replace a run of a different config (or an existing IR), "
                "--redo (apical run) to redo steps whose inputs did not change"
            )
        return int(args.fn(args) or 0)
    except ApicalError as e:
        print(f"apical: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        # The environment, not apical: a read-only or full run directory, a path that is a
        # folder. One line naming the path, like any user error.
        where = f"{e.filename}: " if e.filename else ""
        print(f"apical: error: {where}{e.strerror or type(e).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("apical: interrupted (finished steps are kept; re-run to resume)", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"apical: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
