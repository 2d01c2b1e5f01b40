"""The steps of the apical flow, as plain functions (FINN's builder is the model).

Each ``step_<name>(cfg, run_dir)`` reads its inputs from the run directory,
writes its artefacts and a ``<name>.json`` summary there (atomically), and
returns that summary. `STEPS` is the one ordered list that is the flow; the
CLI and `apical.flows.flow.run_flow` are thin layers over it. A step reaches
into no other step's internals: it calls the library function of its part.

Each step also declares the run-directory files it reads and writes; the
config fields it reads are recorded while it runs (`apical.flows.flow`), so
the flow can skip a step whose inputs did not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apical.flows.baselines import baselines
from apical.flows.extras import require_extra
from apical.flows.report import SUMMARIES
from apical.sw.config import Config
from apical.sw.errors import ApicalError

__all__ = ["STEPS", "Step", "baseline_config", "step_by_name"]


def baseline_config(cfg: Config) -> Config:
    """The driving-view point baseline of a config: same data, task, bits and training."""
    return baselines(cfg, force=True)[0].cfg


def _with_baseline(
    fn: Callable[[Config, Path], dict[str, Any]], cfg: Config, run_dir: Path, needs: str | None = None
) -> dict[str, Any]:
    """Run ``fn`` on the run and on each of its point baselines (`apical.flows.baselines`)
    whose ``needs`` file exists, nesting each summary under the baseline's sub-directory name."""
    summary = fn(cfg, run_dir)
    for b in baselines(cfg):
        base_dir = run_dir / b.subdir
        if needs is not None and not (base_dir / needs).exists():
            continue
        summary = {**summary, b.subdir: fn(b.cfg, base_dir)}
    return summary


def _require(run_dir: Path, *names: str, hint: str) -> None:
    for n in names:
        if not (run_dir / n).exists():
            raise ApicalError(f"{run_dir / n}: missing (run `apical {hint}` first)")


# --------------------------------------------------------------------------- steps


def step_train(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from apical.sw.train import train

    return _with_baseline(train, cfg, run_dir)


def step_export(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from apical.sw.export import export_run

    _require(run_dir, "checkpoint.pt", hint="train")
    return _with_baseline(export_run, cfg, run_dir, needs="checkpoint.pt")


def step_verify(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from apical.sw.verify import verify_run

    _require(run_dir, "checkpoint.pt", "ir/model.yaml", hint="export")
    return _with_baseline(verify_run, cfg, run_dir, needs="ir/model.yaml")


def step_rtl(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from apical.hw.generate import generate_rtl
    from apical.sw.atomic import atomic_write_json
    from apical.sw.ir import load_ir

    _require(run_dir, "ir/model.yaml", hint="export")
    ir = load_ir(run_dir / "ir")
    summary = generate_rtl(
        ir, cfg.hardware.pes, run_dir / "rtl", max_weight_depth=cfg.hardware.max_weight_depth,
        memory_init=cfg.hardware.memory_init,
    )
    atomic_write_json(run_dir / "rtl.json", summary)
    return summary


def step_sim(cfg: Config, run_dir: Path) -> dict[str, Any]:
    require_extra("sim", "apical sim")
    from apical.sim.runner import sim_run

    _require(run_dir, "ir/model.yaml", "test_vectors.npz", hint="export")
    return sim_run(
        cfg,
        run_dir,
        simulator=cfg.hardware.simulator,
        samples=cfg.hardware.sim_samples,
        waves=cfg.hardware.waves,
        path=cfg.hardware.sim_path,
    )


def step_energy(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from apical.flows.energy import energy_run

    _require(run_dir, "ir/model.yaml", "test_vectors.npz", hint="export")
    return energy_run(cfg, run_dir, table=cfg.energy.table)


def step_synth(cfg: Config, run_dir: Path) -> dict[str, Any]:
    require_extra("synth", "apical synth")
    from apical.flows.synth import synth_run

    _require(run_dir, "ir/model.yaml", hint="export")
    return synth_run(cfg, run_dir, part=cfg.hardware.part)


def step_bitstream(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from apical.flows.bitstream import BOARDS, bitstream_run
    from apical.flows.extras import BITSTREAM_MODULES

    spec = BOARDS.get(cfg.hardware.board)
    if spec is not None:  # an unknown board is reported by bitstream_run
        require_extra("synth", f"apical bitstream for {spec.name}", BITSTREAM_MODULES[spec.flow])

    _require(run_dir, "ir/model.yaml", hint="export")
    return bitstream_run(cfg, run_dir, board=cfg.hardware.board)


def step_report(cfg: Config, run_dir: Path) -> dict[str, Any]:
    from apical.flows.report import write_report

    return write_report(run_dir)


# --------------------------------------------------------------------------- the flow


@dataclass(frozen=True)
class Step:
    """A step of the flow with the files it reads and writes (for skipping and resuming).

    The config fields a step depends on are not listed: the flow records the
    ones it reads (`apical.sw.config.record_reads`).
    """

    name: str
    fn: Callable[[Config, Path], dict[str, Any]]
    reads: tuple[str, ...]  # run-dir files (or folders) it reads
    writes: tuple[str, ...]  # run-dir files it writes; the first is its summary
    doc: str


_BASE = ("ir", "test_vectors.npz")

STEPS: tuple[Step, ...] = (
    Step(
        "train",
        step_train,
        (),
        ("train.json", "checkpoint.pt", "config.yaml", "curves.png"),
        "train the Brevitas model (and its point baselines) with quantization-aware training",
    ),
    Step(
        "export",
        step_export,
        ("checkpoint.pt", "baseline/checkpoint.pt", "baseline_both/checkpoint.pt"),
        ("export.json", "ir/model.yaml", "ir/weights.npz", "test_vectors.npz"),
        "export the integer model (IR) and the integer test vectors",
    ),
    Step(
        "verify",
        step_verify,
        ("checkpoint.pt", "ir", "baseline/ir", "baseline_both/ir"),
        ("verify.json",),
        "check Brevitas == golden integer model on the whole test set",
    ),
    Step(
        "rtl",
        step_rtl,
        ("ir",),
        ("rtl.json", "rtl/apical_top.v"),
        "generate the Verilog of the processing-element array",
    ),
    Step(
        "sim",
        step_sim,
        (*_BASE, "rtl"),
        ("sim.json",),
        "simulate the RTL on the test split (fast harness or cocotb) and compare with the golden model",
    ),
    Step(
        "energy",
        step_energy,
        (*_BASE, "sim.json", "bitstream.json", "baseline/ir", "baseline/test_vectors.npz", "baseline_both/ir",
         "baseline_both/test_vectors.npz"),
        ("energy.json",),
        "estimate energy from counted events",
    ),
    Step(
        "synth",
        step_synth,
        ("rtl",),
        ("synth.json",),
        "synthesis estimate with yosys synth_xilinx",
    ),
    Step(
        "bitstream",
        step_bitstream,
        ("ir",),
        ("bitstream.json",),
        "Vivado build tree or open-tool bitstream",
    ),
    Step(
        "report",
        step_report,
        tuple(f for f in SUMMARIES if f != "flow.json"),
        ("report.json", "report.html", "report.md"),
        "write report.html and report.md",
    ),
)


def step_by_name(name: str) -> Step:
    for s in STEPS:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in STEPS)
    raise ApicalError(f"unknown step {name!r} (steps: {known})")
