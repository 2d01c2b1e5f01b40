"""The ``faults`` command: accuracy under faults, the same draws checked in RTL, the parity mitigation costed.

`faults_run(cfg, run_dir, ...)` measures test accuracy (the whole test split
of ``test_vectors.npz``) of the run's IR, of its point baseline
(``baseline/``) when present and of any ``compare`` run directories, under
each fault kind at each rate, over ``draws`` draws (mean, standard deviation,
minimum, maximum):

* ``damage``: a fraction of the units of the chosen layers silenced;
  ``damage_r`` / ``damage_c``: two-point units that lose their R / C site;
* ``stuck``: stuck-at bits of the stored activations (per-bit rate);
* ``seu``: bit flips in the stored weight words (per-bit rate);
  ``seu_parity``: the same with the even-parity mitigation (detect-and-skip).

Draw ``d`` of (kind, rate) comes from ``fault_rng(seed, net, kind, rate, d)``:
reproducible, independent of which kinds and rates run. Then
``rtl_draws`` combined draws (every kind at once, parity on every other draw)
are built into the RTL (`apical.hw.faults`) and simulated on the first
``rtl_samples`` test vectors against the golden model with the same faults
(and the first ``verilator_draws`` of them again on Verilator):
``rtl_matches_golden`` is true when every value and counter agrees. With
``synth``, the parity design is synthesised beside the plain one (LUT/FF/BRAM);
without, results already synthesised for the same designs are reported.
Writes ``faults.json`` (atomically) and ``faults.png``; a disagreement raises
`CheckFailed` after the summary is written.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from apical.sw.atomic import atomic_write, atomic_write_json
from apical.sw.config import Config, load_config
from apical.sw.errors import ApicalError, CheckFailed
from apical.sw.faults import (
    ACTIVATION_KINDS,
    FaultSet,
    draw_activation_faults,
    fault_rng,
    merge,
    run_faulty,
)
from apical.sw.ir import IR, load_inputs, load_ir

__all__ = ["DEFAULT_RATES", "KINDS", "faults_run"]

KINDS = (*ACTIVATION_KINDS, "seu", "seu_parity")
DEFAULT_RATES: dict[str, tuple[float, ...]] = {
    "damage": (0.0, 0.1, 0.2, 0.3, 0.5),
    "damage_r": (0.0, 0.1, 0.2, 0.3, 0.5),
    "damage_c": (0.0, 0.1, 0.2, 0.3, 0.5),
    "stuck": (0.0, 0.001, 0.01, 0.05),
    "seu": (0.0, 1e-4, 1e-3, 1e-2),
    "seu_parity": (0.0, 1e-4, 1e-3, 1e-2),
}
# The combined draw built into the RTL: every mechanism at once.
RTL_MIX = {"damage": 0.2, "damage_r": 0.1, "damage_c": 0.1, "stuck": 0.02, "seu": 2e-3}
RTL_KEY = 1000  # net index of the RTL draws in fault_rng's key (apart from the campaign's)


class _Net:
    """One network under test: IR, test vectors and labels, the schedule's weight words."""

    def __init__(self, label: str, run_dir: Path, pes: int):
        from apical.hw.faults import WeightWords, fault_schedule

        self.label, self.run_dir = label, run_dir
        self.ir: IR = load_ir(run_dir / "ir")
        self.inputs = load_inputs(self.ir, run_dir / "test_vectors.npz")
        with np.load(run_dir / "test_vectors.npz", allow_pickle=False) as z:
            if "labels" not in z.files:
                raise ApicalError(f"{run_dir / 'test_vectors.npz'}: no labels (re-run `apical export`)")
            self.labels = z["labels"].astype(np.int64)
        self.schedule = fault_schedule(self.ir, pes)
        self._words: dict[bool, Any] = {}
        self._ww = WeightWords

    def words(self, parity: bool):
        if parity not in self._words:
            self._words[parity] = self._ww.of(self.ir, self.schedule, parity=parity)
        return self._words[parity]

    def kind(self) -> str:
        p = self.run_dir / "config.yaml"
        if p.is_file():
            return load_config(p).model.kind.value
        return "point" if self.run_dir.name == "baseline" else "?"


def _draw(net: _Net, kind: str, rate: float, rng: np.random.Generator,
          layers: Sequence[str] | None) -> tuple[FaultSet, dict[str, Any]]:
    from apical.hw.faults import draw_seu, seu_effects

    if kind in ACTIVATION_KINDS:
        return FaultSet(draw_activation_faults(net.ir, kind, rate, rng, layers)), {}
    ww = net.words(kind == "seu_parity")
    flips = draw_seu(ww, rate, rng)
    eff, tally = seu_effects(net.ir, ww, flips)
    return FaultSet(eff), tally


def _stats(v: list[float]) -> dict[str, float]:
    a = np.asarray(v, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def _campaign(net: _Net, net_i: int, kinds: Sequence[str], rates: dict[str, Sequence[float]], draws: int,
              seed: int, layers: Sequence[str] | None) -> dict[str, Any]:
    base = run_faulty(net.ir, net.inputs, None)
    acc0 = float((base.classes == net.labels).mean())
    out: dict[str, Any] = {"label": net.label, "run_dir": str(net.run_dir), "model": net.kind(),
                           "test_samples": len(net.labels), "accuracy": acc0, "kinds": {}}
    for kind in kinds:
        if kind in ("damage_r", "damage_c") and not any(la.kind == "two_point" for la in net.ir.layers):
            out["kinds"][kind] = {"skipped": "no two-point layer"}
            continue
        rows = []
        for rate in rates[kind]:
            accs, same, tallies = [], [], []
            for d in range(draws):
                key = (net_i, KINDS.index(kind), round(float(rate) * 1e9), d)
                fs, tally = _draw(net, kind, rate, fault_rng(seed, *key), layers)
                res = run_faulty(net.ir, net.inputs, fs)
                accs.append(float((res.classes == net.labels).mean()))
                last = net.ir.layers[-1].name
                same.append(bool((res.outputs[last] == base.outputs[last]).all()))
                if tally:
                    tallies.append(tally)
            row = {"rate": float(rate), "accuracy": _stats(accs), "draws": accs,
                   "drop": acc0 - float(np.mean(accs)),  # accuracy lost to the faults (mean)
                   "outputs_unchanged": all(same)}
            if tallies:
                row["words"] = {k: float(np.mean([t[k] for t in tallies])) for k in tallies[0]}
            rows.append(row)
        out["kinds"][kind] = {"rates": rows}
    if "seu" in kinds:
        out["weight_bits_stored"] = {"plain": net.words(False).bits, "parity": net.words(True).bits}
    return out


def _rtl_check(net: _Net, cfg: Config, run_dir: Path, *, draws: int, samples: int, simulator: str,
               seed: int, layers: Sequence[str] | None) -> dict[str, Any]:
    """``draws`` combined fault draws built into the RTL and simulated against the faulty golden model."""
    from apical.hw.faults import draw_seu, fault_verilog, hardware_faults, seu_effects
    from apical.sim.runner import simulate, summarize

    if net.ir.gated:
        raise ApicalError(f"faults: {net.label}: fault injection in the RTL does not support context-gated layers "
                          "(hardware.context_gating); use --rtl-draws 0")
    inputs = {k: v[:samples] for k, v in net.inputs.items()}
    rows = []
    for d in range(draws):
        parity = d % 2 == 1
        rng = fault_rng(seed, RTL_KEY, d)
        act = merge(*(draw_activation_faults(net.ir, k, RTL_MIX[k], rng, layers) for k in ACTIVATION_KINDS))
        ww = net.words(parity)
        flips = draw_seu(ww, RTL_MIX["seu"], rng)
        seu, tally = seu_effects(net.ir, ww, flips)
        fs = FaultSet(merge(seu, act))
        golden = run_faulty(net.ir, inputs, fs)
        rtl_dir = run_dir / "faults" / f"rtl-{d}"
        rtl_dir.mkdir(parents=True, exist_ok=True)
        text = fault_verilog(net.ir, net.schedule, hardware_faults(net.ir, ww, flips, act))
        atomic_write(rtl_dir / "apical_top.v", lambda f, t=text: f.write(t.encode()))
        res = simulate(net.ir, inputs, rtl_dir=rtl_dir, pes=net.schedule.pes, simulator=simulator,
                       build_dir=run_dir / "faults" / "build", backpressure=cfg.hardware.backpressure,
                       golden=golden, stop_on_mismatch=False, seed=seed + d)
        summ = summarize(net.ir, golden, res)
        full = run_faulty(net.ir, net.inputs, None)
        last = net.ir.layers[-1].name
        rows.append({
            "draw": d, "simulator": simulator, "parity": parity, "samples": summ["samples"],
            "bit_exact": summ["bit_exact"], "counters_match": summ["counters_match"],
            "mismatches": summ["mismatches"], "failure": summ["failure"],
            "faults": {"units_damaged": int(sum(int((lf.and_mask == 0).sum()) for lf in act.values()
                                                if lf.and_mask is not None)),
                       "sites_lost": int(sum(int(v.sum()) for lf in act.values() for v in lf.kill.values())),
                       **tally},
            "outputs_changed_by_faults": int((golden.outputs[last] != full.outputs[last][:samples]).sum()),
            "sim_wall_s": round(res.wall_s, 2),
        })
    return {"draws": rows, "mix": RTL_MIX,
            "all_match": all(r["bit_exact"] and r["counters_match"] and not r["failure"] for r in rows)}


def _synth_cost(net: _Net, cfg: Config, run_dir: Path, *, run: bool = True) -> dict[str, Any] | None:
    """LUT/FF/BRAM of the plain design and of the one with parity, same schedule, yosys synth_xilinx.

    ``run=False``: only results already synthesised for these very designs (None when missing).
    """
    from apical.flows.synth import synthesize
    from apical.hw.faults import WeightWords, fault_verilog, parity_faults

    ww = WeightWords.of(net.ir, net.schedule, parity=True)
    out = {}
    for name, hwf in (("plain", None), ("parity", parity_faults(ww))):
        d = run_dir / "faults" / f"synth-{name}"
        d.mkdir(parents=True, exist_ok=True)
        if hwf is None:
            from apical.hw.generate import verilog_text

            text = verilog_text(net.ir, net.schedule.pes, schedule=net.schedule)
        else:
            text = fault_verilog(net.ir, net.schedule, hwf)
        # Synthesis takes minutes: an unchanged design (same Verilog, same part) reuses its result.
        key = hashlib.sha256(f"{cfg.hardware.part}\n{text}".encode()).hexdigest()
        cached = d / "resources.json"
        if cached.is_file():
            prev = json.loads(cached.read_text())
            if prev.get("key") == key:
                out[name] = prev["resources"]
                continue
        if not run:
            return None
        atomic_write(d / "apical_top.v", lambda f, t=text: f.write(t.encode()))
        out[name] = synthesize(d / "apical_top.v", top="apical_top", part=cfg.hardware.part,
                               build_dir=d / "build")["resources"]
        atomic_write_json(cached, {"key": key, "resources": out[name]})
    keys = sorted(set(out["plain"]) | set(out["parity"]))
    out["delta"] = {k: out["parity"].get(k, 0) - out["plain"].get(k, 0) for k in keys}
    return out


def _plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("damage", ("damage", "damage_r", "damage_c")), ("stuck", ("stuck",)), ("seu", ("seu", "seu_parity"))]
    groups = [(t, [k for k in ks if k in summary["kinds"]]) for t, ks in groups]
    groups = [(t, ks) for t, ks in groups if ks]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), squeeze=False)
    styles = {"damage": "-", "damage_r": "--", "damage_c": ":", "stuck": "-", "seu": "-", "seu_parity": "--"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, ks) in zip(axes[0], groups, strict=True):
        for ni, net in enumerate(summary["nets"]):
            for k in ks:
                rows = net["kinds"].get(k, {}).get("rates")
                if not rows:
                    continue
                x = np.array([r["rate"] for r in rows])
                xs = x
                mean = np.array([r["accuracy"]["mean"] for r in rows])
                lo = np.array([r["accuracy"]["min"] for r in rows])
                hi = np.array([r["accuracy"]["max"] for r in rows])
                c = colors[ni % len(colors)]
                ax.plot(xs, mean, styles[k], color=c, marker="o", ms=3, label=f"{net['label']}: {k}")
                ax.fill_between(xs, lo, hi, color=c, alpha=0.12)
        rates = [r["rate"] for net in summary["nets"] for k in ks for r in net["kinds"].get(k, {}).get("rates", [])]
        pos = [r for r in rates if r > 0]
        if title != "damage" and pos:
            ax.set_xscale("symlog", linthresh=min(pos))  # rate 0 stays on the axis
        ax.set_xlabel({"damage": "fraction of units (or sites) lost", "stuck": "stuck-at rate per activation bit",
                       "seu": "bit-flip rate per weight-memory bit"}[title])
        ax.set_ylabel("test accuracy")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"Accuracy under faults: mean and min-max over {summary['draws']} draws", y=1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def faults_run(
    cfg: Config,
    run_dir: Path,
    *,
    kinds: Sequence[str] | None = None,
    rates: Sequence[float] | None = None,
    draws: int = 5,
    seed: int | None = None,
    layers: Sequence[str] | None = None,
    compare: Sequence[Path] = (),
    rtl_draws: int = 2,
    rtl_samples: int = 8,
    simulator: str | None = None,
    verilator_draws: int = 0,
    synth: bool = False,
) -> dict[str, Any]:
    """The ``faults`` command (see the module docstring); writes ``faults.json`` and ``faults.png``."""
    run_dir = Path(run_dir)
    kinds = list(kinds) if kinds else list(KINDS)
    for k in kinds:
        if k not in KINDS:
            raise ApicalError(f"faults: kind must be one of {', '.join(KINDS)}, got {k!r}")
    if rates is not None:
        bad = [r for r in rates if not (isinstance(r, int | float) and math.isfinite(r) and 0 <= r <= 1)]
        if bad or not rates:
            raise ApicalError(f"faults: rates must be numbers in [0, 1], got {list(rates)}")
    rate_of = {k: tuple(rates) if rates is not None else DEFAULT_RATES[k] for k in kinds}
    if draws < 1 or rtl_draws < 0 or rtl_samples < 1:
        raise ApicalError("faults: --draws and --rtl-samples must be >= 1, --rtl-draws >= 0")
    seed = cfg.seed if seed is None else int(seed)
    pes = cfg.hardware.pes
    if not (run_dir / "ir" / "model.yaml").is_file():
        raise ApicalError(f"{run_dir / 'ir'}: missing (run `apical export` first)")
    nets = [_Net("this net", run_dir, pes)]
    if (run_dir / "baseline" / "ir" / "model.yaml").is_file():
        nets.append(_Net("point baseline", run_dir / "baseline", pes))
    for c in compare:
        c = Path(c)
        if not (c / "ir" / "model.yaml").is_file():
            raise ApicalError(f"{c / 'ir'}: missing (--compare takes exported run directories)")
        nets.append(_Net(c.name, c, pes))
    summary: dict[str, Any] = {
        "seed": seed, "draws": draws, "pes": pes, "kinds": {k: list(v) for k, v in rate_of.items()},
        "layers": list(layers) if layers else "all but the output layer",
        "schedule": "compiled without replicated fan-outs (replicate_budget=0)",
        "nets": [_campaign(n, i, kinds, rate_of, draws, seed, layers) for i, n in enumerate(nets)],
    }
    if rtl_draws:
        sim = simulator or cfg.hardware.simulator
        summary["rtl"] = _rtl_check(nets[0], cfg, run_dir, draws=rtl_draws, samples=rtl_samples,
                                    simulator=sim, seed=seed, layers=layers)
        summary["rtl_matches_golden"] = summary["rtl"]["all_match"]
        if verilator_draws and sim != "verilator":
            # The first draws again, on the other simulator.
            summary["rtl_verilator"] = _rtl_check(nets[0], cfg, run_dir, draws=verilator_draws,
                                                  samples=rtl_samples, simulator="verilator", seed=seed,
                                                  layers=layers)
            summary["rtl_matches_golden"] &= summary["rtl_verilator"]["all_match"]
    else:
        summary["rtl_matches_golden"] = None
    cost = _synth_cost(nets[0], cfg, run_dir, run=synth)
    if cost is not None:
        summary["mitigation_cost"] = cost
    _plot(summary, run_dir / "faults.png")
    summary["plot"] = "faults.png"
    atomic_write_json(run_dir / "faults.json", summary)
    if summary["rtl_matches_golden"] is False:
        rows = summary["rtl"]["draws"] + summary.get("rtl_verilator", {}).get("draws", [])
        bad = next(r for r in rows if not (r["bit_exact"] and r["counters_match"] and not r["failure"]))
        first = (bad["mismatches"]["first"] or [{}])[0]
        raise CheckFailed(f"faults: RTL with faults disagrees with golden with faults (draw {bad['draw']}, "
                          f"{bad['simulator']}): {first or bad['failure']} (see {run_dir / 'faults.json'})")
    return summary
