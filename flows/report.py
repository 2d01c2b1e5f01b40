"""The run report: every step's JSON summary in one self-contained HTML page and one Markdown file.

Contract: `write_report(run_dir)` reads whichever summaries are present
(train, export, verify, rtl, sim, energy, synth, bitstream, baseline/train and
baseline_both/train (the point baselines on the driving view and on both views), flow) and writes ``report.html`` (plots embedded as base64 PNG, no external
assets or links) and ``report.md`` atomically. A missing artefact is shown as
"not run"; a malformed one raises `ApicalError` naming the file. Only figures
found in the summaries are shown: the report computes nothing that a step
should have measured, apart from throughput (clock / cycles) and utilisation
(synaptic ops / (P x cycles)).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from apical.sw.atomic import atomic_write_text, read_json_object
from apical.sw.errors import ApicalError

__all__ = ["SUMMARIES", "write_report"]

# Run-directory summaries the report reads, in the order of the flow.
SUMMARIES: tuple[str, ...] = (
    "flow.json",
    "train.json",
    "baseline/train.json",
    "baseline_both/train.json",
    "export.json",
    "verify.json",
    "rtl.json",
    "sim.json",
    "energy.json",
    "synth.json",
    "bitstream.json",
    "faults.json",
)
NOT_RUN = "not run"


# --------------------------------------------------------------------------- reading


def _load(run_dir: Path, name: str) -> dict[str, Any] | None:
    p = run_dir / name
    return read_json_object(p) if p.is_file() else None


def _config(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "config.yaml"
    if not p.is_file():
        return {}
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ApicalError(f"{p}: malformed YAML ({getattr(e, 'problem', e)})") from None
    return raw if isinstance(raw, dict) else {}


def _first(d: dict[str, Any] | None, *keys: str) -> Any:
    """The first present key's value (dotted keys walk nested objects)."""
    if not d:
        return None
    for k in keys:
        cur: Any = d
        for part in k.split("."):
            if not isinstance(cur, dict) or part not in cur:
                cur = None
                break
            cur = cur[part]
        if cur is not None:
            return cur
    return None


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, list | dict):
        text = json.dumps(v)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(v)


def _pct(v: Any) -> str:
    x = _num(v)
    if x is None:
        return _fmt(v)
    return f"{100 * x:.2f} %" if x <= 1.0 else f"{x:.2f} %"


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _scalars(d: dict[str, Any], prefix: str = "", depth: int = 2) -> list[tuple[str, Any]]:
    """Top-level (and one level nested) scalar fields, for the details tables."""
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth > 1:
            rows += _scalars(v, f"{key}.", depth - 1)
        elif _is_scalar(v) or (isinstance(v, list) and len(v) <= 8 and all(map(_is_scalar, v))):
            rows.append((key, v))
    return rows[:60]


# --------------------------------------------------------------------------- plots


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float = 6.0, h: float = 3.2, ncols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")  # no display; safe because the report never shows windows
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(w, h))


def _plot_components(energy: dict[str, Any]) -> str | None:
    comp = energy.get("per_component_pJ")
    if not isinstance(comp, dict) or not comp:
        return None
    names = [k for k, v in comp.items() if _num(v) is not None]
    vals = [float(comp[k]) for k in names]
    fig, ax = _figure()
    ax.bar(names, vals, color="tab:blue")
    ax.set_ylabel("pJ per inference")
    ax.set_title(f"Energy by component ({energy.get('table', '?')})")
    ax.tick_params(axis="x", rotation=45)
    return _png(fig)


def _plot_layers(energy: dict[str, Any]) -> str | None:
    per = energy.get("per_layer_pJ")
    if not isinstance(per, dict) or not per:
        return None
    layers = list(per)
    actions = [k for k in next(iter(per.values())) if k != "total"]
    fig, ax = _figure()
    bottom = np.zeros(len(layers))
    for a in actions:
        v = np.array([_num(per[layer].get(a)) or 0.0 for layer in layers])
        if v.any():
            ax.bar(layers, v, bottom=bottom, label=a)
            bottom += v
    ax.set_ylabel("pJ per inference")
    ax.set_title("Energy by layer")
    ax.legend(fontsize=7)
    return _png(fig)


def _plot_activity(energy: dict[str, Any]) -> str | None:
    syn = energy.get("per_sample_syn_ops")
    spars = _first(energy, "metrics.activation_sparsity_per_tensor")
    has_syn = isinstance(syn, list) and len(syn) > 0
    has_sp = isinstance(spars, dict) and len(spars) > 0
    if not has_syn and not has_sp:
        return None
    fig, axes = _figure(9.0, 3.2, ncols=2)
    if has_syn:
        axes[0].hist(np.asarray(syn, dtype=np.float64), bins=min(30, max(5, len(syn) // 4)), color="tab:green")
        dense = _first(energy, "metrics.dense_syn_ops_per_inference")
        if _num(dense):
            axes[0].axvline(float(dense), color="tab:red", linestyle="--", label="dense")
            axes[0].legend(fontsize=7)
        axes[0].set_xlabel("synaptic ops per inference")
        axes[0].set_ylabel("samples")
        axes[0].set_title("Activity over the test set")
    if has_sp:
        names = list(spars)
        axes[1].bar(names, [_num(spars[n]) or 0.0 for n in names], color="tab:purple")
        axes[1].set_ylim(0, 1)
        axes[1].set_ylabel("fraction of zeros")
        axes[1].set_title("Activation sparsity per tensor")
    return _png(fig)


def _baselines(energy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The baselines of an energy summary by name (older summaries: the one ``baseline``)."""
    many = energy.get("baselines")
    if isinstance(many, dict) and many:
        return {str(k): v for k, v in many.items() if isinstance(v, dict) and v.get("available")}
    base = energy.get("baseline")
    return {"driving": base} if isinstance(base, dict) and base.get("available") else {}


def _plot_baseline(energy: dict[str, Any]) -> str | None:
    bases = _baselines(energy)
    if not bases:
        return None
    keys = (("pJ / inference", "per_inference_pJ.mean"), ("pJ / synapse", "per_synapse_pJ"),
            ("syn ops / inference", "syn_ops_per_inference.mean"))
    rows = []
    for label, key in keys:
        vals = [_num(_first(energy, key))] + [_num(_first(b, key)) for b in bases.values()]
        if all(v is not None for v in vals):
            rows.append((label, vals))
    if not rows:
        return None
    names = ["this net", *(f"point, {n} view{'s' if n == 'both' else ''}" for n in bases)]
    colors = ["tab:blue", *("tab:gray", "tab:olive")[: len(bases)]]
    fig, axes = _figure(3.5 * len(rows), 3.2, ncols=len(rows))
    axes = np.atleast_1d(axes)
    for ax, (label, vals) in zip(axes, rows, strict=True):
        ax.bar(names, vals, color=colors)
        ax.set_title(label)
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle("This network vs the point-neuron baselines", y=1.04)
    return _png(fig)


# --------------------------------------------------------------------------- sections


class _Section:
    """One report section: headline rows, optional details, plots, or 'not run'."""

    def __init__(self, title: str, present: bool) -> None:
        self.title = title
        self.present = present
        self.rows: list[tuple[str, str]] = []
        self.details: list[tuple[str, Any]] = []
        self.plots: list[tuple[str, str]] = []  # (caption, base64 png)
        self.notes: list[str] = []

    def row(self, label: str, value: Any, fmt: Any = _fmt) -> None:
        if value is not None:
            self.rows.append((label, fmt(value)))


def _accuracy(cfg: dict[str, Any], train: dict[str, Any] | None, base: dict[str, Any] | None,
              base_both: dict[str, Any] | None = None) -> _Section:
    s = _Section("Accuracy", train is not None)
    if train is None:
        return s
    s.row("test accuracy", _first(train, "test_acc", "test_accuracy", "accuracy.test", "acc"), _pct)
    s.row("test accuracy without context", _first(train, "test_acc_no_context", "no_context_acc"), _pct)
    s.row("validation accuracy", _first(train, "val_acc", "best_val_acc", "val_accuracy"), _pct)
    s.row("parameters", _first(train, "params", "parameters", "n_params"))
    s.row("epochs", _first(train, "epochs_run", "epochs"))
    s.row("model", _first(train, "model_kind", "model") or _first(cfg, "model.kind"))
    if base is not None:
        s.row("baseline (point neuron, driving view) test accuracy",
              _first(base, "test_acc", "test_accuracy", "acc"), _pct)
    if base_both is not None:
        s.row("baseline (point neuron, both views) test accuracy",
              _first(base_both, "test_acc", "test_accuracy", "acc"), _pct)
    if base is None and base_both is None:
        s.notes.append("baseline: not run")
    s.details = _scalars(train)
    return s


def _export(exp: dict[str, Any] | None) -> _Section:
    s = _Section("Integer model", exp is not None)
    if exp is None:
        return s
    s.row("model", _first(exp, "model_kind"))
    s.row("scaling", _first(exp, "scaling"))
    s.row("stored synapses", _first(exp, "synapses"))
    s.row("test samples", _first(exp, "test_samples"))
    layers = exp.get("layers")
    if isinstance(layers, list):
        names = [str(entry.get("name", "?")) for entry in layers if isinstance(entry, dict)]
        s.row("layers", ", ".join(names) if names else None)
    s.details = _scalars(exp)
    return s


def _exactness(verify: dict[str, Any] | None, sim: dict[str, Any] | None, energy: dict[str, Any] | None) -> _Section:
    s = _Section("Bit-exactness", verify is not None or sim is not None)
    if verify is None:
        s.notes.append("verify (Brevitas vs golden): not run")
    else:
        s.row("Brevitas == golden", _first(verify, "bit_exact", "exact", "match", "passed", "ok"))
        s.row("Brevitas vs golden mismatches", _first(verify, "mismatches.count", "mismatches_total", "total_mismatches", "mismatches"))
        s.row("argmax agreement", _first(verify, "argmax_agreement", "argmax_match"), _pct)
        s.row("max deviation (LSB)", _first(verify, "max_abs_dev_lsb", "max_lsb", "max_deviation_lsb", "max_abs_diff"))
        s.row("golden model accuracy", _first(verify, "golden_accuracy"), _pct)
        s.details += [(f"verify.{k}", v) for k, v in _scalars(verify)]
    if sim is None:
        s.notes.append("sim (RTL vs golden): not run")
    else:
        s.row("RTL == golden", _first(sim, "bit_exact", "exact", "match", "passed", "ok"))
        s.row("RTL vs golden mismatches", _first(sim, "mismatches.count", "mismatches_total", "total_mismatches", "mismatches"))
        s.row("simulator", _first(sim, "simulator"))
        s.row("simulation path", _first(sim, "path"))
        s.row("simulated samples", len(sim["sample_indices"]) if isinstance(sim.get("sample_indices"), list) else None)
        s.details += [(f"sim.{k}", v) for k, v in _scalars(sim)]
    if energy is not None and energy.get("rtl_matches_golden") is not None:
        s.row("RTL energy == golden energy", energy["rtl_matches_golden"])
        bad = _first(energy, "rtl.mismatched_counters")
        if bad:
            s.row("RTL counters differing from golden", ", ".join(map(str, bad)))
    return s


def _clocks(cfg: dict[str, Any], bit: dict[str, Any] | None, pes: float | None) -> list[tuple[str, float]]:
    """Every clock a time-based figure is given at, labelled: the assumed one, and a timed build's Fmax."""
    out: list[tuple[str, float]] = []
    assumed = _num(_first(cfg, "hardware.clock_mhz"))
    if assumed:
        out.append((f"assumed {_fmt(assumed)} MHz", assumed))
    fmax = _num(_first(bit, "fmax_mhz"))
    if fmax and (pes is None or _num(_first(bit, "pes")) == pes):
        out.append((f"measured Fmax {_fmt(fmax)} MHz, {_first(bit, 'board')}", fmax))
    return out


def _hardware(cfg: dict[str, Any], rtl: dict[str, Any] | None, sim: dict[str, Any] | None,
              energy: dict[str, Any] | None, bit: dict[str, Any] | None = None) -> _Section:
    s = _Section("Cycles, throughput and utilisation", rtl is not None or sim is not None or energy is not None)
    pes = _num(_first(sim, "pes")) or _num(_first(energy, "pes")) or _num(_first(cfg, "hardware.pes"))
    s.row("processing elements (P)", int(pes) if pes else None)
    # Each time-based figure names its clock: the config's is an assumption until a
    # place-and-route measures what the design reaches (bitstream.json).
    clocks = _clocks(cfg, bit, pes)
    s.row("clock assumed (hardware.clock_mhz, MHz)", _num(_first(cfg, "hardware.clock_mhz")))
    fmax = _num(_first(bit, "fmax_mhz"))
    if fmax:
        s.row(f"Fmax measured ({_first(bit, 'board')}, place and route, MHz)", fmax)
        s.row("board clock met", _first(bit, "timing_met"))
    else:
        s.notes.append("no timed build (apical bitstream --board ulx3s|icebreaker): time-based figures are at the "
                       "assumed clock")
    source = _first(energy, "clock.source")
    if source:
        s.row("static energy computed at", f"{source} {_fmt(_num(_first(energy, 'clock_mhz')))} MHz")
    cycles = syn = None
    per = sim.get("per_sample") if sim else None
    if isinstance(per, list) and per:
        cyc = [_num(p.get("cycles")) for p in per if isinstance(p, dict)]
        ops = [_num(_first(p, "counters.syn_ops")) for p in per if isinstance(p, dict)]
        if cyc and all(c is not None for c in cyc):
            cycles = float(np.mean(cyc))
            if ops and all(o is not None for o in ops):
                syn = float(np.mean(ops))
    if cycles is None:
        cycles = _num(_first(sim, "cycles.mean", "cycles_mean", "mean_cycles", "cycles"))
    if cycles is not None:
        s.row("cycles per inference (RTL, mean)", cycles)
        for label, mhz in clocks:
            s.row(f"latency (us, RTL cycles, {label})", cycles / mhz if cycles else None)
            s.row(f"throughput (inferences/s, RTL cycles, {label})", mhz * 1e6 / cycles if cycles else None)
        util = _num(_first(sim, "utilization", "utilisation"))
        if util is None and syn is not None and pes and cycles:
            util = syn / (pes * cycles)
        s.row("PE utilisation (syn ops / (P x cycles))", util, _pct)
    else:
        s.notes.append("sim: not run (no measured cycles)")
    lb = _num(_first(energy, "cycles_per_inference")) if _first(energy, "cycles_source") == "lower_bound" else None
    if lb is not None:
        s.row("cycle lower bound per inference (sum ceil(syn ops / P))", lb)
        for label, mhz in clocks:
            if lb:
                s.row(f"throughput bound (inferences/s, {label})", mhz * 1e6 / lb)
    if rtl is None:
        s.notes.append("rtl: not run")
    else:
        s.details = [(f"rtl.{k}", v) for k, v in _scalars(rtl)]
    return s


def _resources(synth: dict[str, Any] | None, bit: dict[str, Any] | None) -> _Section:
    s = _Section("Resources", synth is not None or bit is not None)
    if synth is None:
        s.notes.append("synth: not run")
    else:
        s.row("part", _first(synth, "part"))
        s.row("fits", _first(synth, "fits"))
        res = synth.get("resources") if isinstance(synth.get("resources"), dict) else {}
        util = synth.get("utilization_pct") if isinstance(synth.get("utilization_pct"), dict) else {}
        for k in ("lut", "ff", "dsp48e2", "ramb36e2", "ramb18e2", "uram288", "carry8"):
            if k in res:
                s.row(k.upper(), res[k])
        for k, v in util.items():
            s.row(f"utilisation {k}", v, lambda x: f"{_fmt(x)} %")
    if bit is None:
        s.notes.append("bitstream: not run")
    else:
        s.row("bitstream", _first(bit, "bitstream", "status", "kind", "path"))
        s.row("Fmax (MHz, place and route)", _first(bit, "fmax_mhz", "fmax"))
        s.row("target clock (MHz)", _first(bit, "target_mhz"))
        s.row("timing met", _first(bit, "timing_met"))
        s.row("worst path", _first(bit, "critical_path.summary"))
        s.details = [(f"bitstream.{k}", v) for k, v in _scalars(bit)]
    return s


def _energy(energy: dict[str, Any] | None) -> _Section:
    s = _Section("Energy", energy is not None)
    if energy is None:
        return s
    s.row("table", energy.get("table"))
    s.row("energy per synapse (pJ)", energy.get("per_synapse_pJ"))
    s.row("energy per inference, mean (pJ)", _first(energy, "per_inference_pJ.mean"))
    s.row("energy per inference, min (pJ)", _first(energy, "per_inference_pJ.min"))
    s.row("energy per inference, max (pJ)", _first(energy, "per_inference_pJ.max"))
    s.row("static / dynamic (pJ)", f"{_fmt(energy.get('static_pJ'))} / {_fmt(energy.get('dynamic_pJ'))}")
    s.row("synaptic ops per inference, mean", _first(energy, "syn_ops_per_inference.mean"))
    m = energy.get("metrics") if isinstance(energy.get("metrics"), dict) else {}
    s.row("footprint (bytes)", m.get("footprint_bytes"))
    s.row("connection sparsity", m.get("connection_sparsity"), _pct)
    s.row("activation sparsity", m.get("activation_sparsity"), _pct)
    s.row("dense synaptic ops per inference", m.get("dense_syn_ops_per_inference"))
    s.row("effective synaptic ops per inference", m.get("effective_syn_ops_per_inference"))
    bases = _baselines(energy)
    headline = energy.get("headline_baseline")
    for name, b in bases.items():
        r = b.get("ratios") if isinstance(b.get("ratios"), dict) else energy.get("ratios")
        if not isinstance(r, dict):
            continue
        tag = f"point, {name} view{'s' if name == 'both' else ''}" + (" (headline)" if name == headline else "")
        s.row(f"ratio to baseline ({tag}), syn ops per inference", r.get("syn_ops_per_inference"))
        s.row(f"ratio to baseline ({tag}), per inference", r.get("per_inference"))
        s.row(f"ratio to baseline ({tag}), per synapse", r.get("per_synapse"))
    if not bases:
        s.notes.append("baseline comparison: not run")
    for caption, fn in (
        ("Energy by component", _plot_components),
        ("Energy by layer", _plot_layers),
        ("Activity", _plot_activity),
        ("Against the point-neuron baseline", _plot_baseline),
    ):
        img = fn(energy)
        if img is not None:
            s.plots.append((caption, img))
    return s


def _faults(run_dir: Path, faults: dict[str, Any] | None) -> _Section:
    """`apical faults`: accuracy (mean and min over draws) per net, kind and rate; RTL check; parity cost."""
    s = _Section("Resilience (apical faults)", faults is not None)
    if faults is None:
        return s
    s.row("RTL with faults == golden with faults", faults.get("rtl_matches_golden"))
    s.row("fault draws per point", faults.get("draws"))
    for net in faults.get("nets") or []:
        for kind, entry in (net.get("kinds") or {}).items():
            rows = entry.get("rates") if isinstance(entry, dict) else None
            if rows:
                s.row(f"{net.get('label')}: {kind} (rate: mean / min)", ", ".join(
                    f"{r['rate']:g}: {100 * r['accuracy']['mean']:.1f} / {100 * r['accuracy']['min']:.1f} %"
                    for r in rows))
    cost = faults.get("mitigation_cost")
    if isinstance(cost, dict) and isinstance(cost.get("delta"), dict):
        s.row("parity cost (resources added)", cost["delta"])
    img = run_dir / str(faults.get("plot") or "faults.png")
    if img.is_file():
        s.plots.append(("Accuracy under faults", base64.b64encode(img.read_bytes()).decode("ascii")))
    return s


def _timings(flow: dict[str, Any] | None) -> _Section:
    s = _Section("Flow", flow is not None)
    if flow is None:
        return s
    steps = flow.get("steps")
    if isinstance(steps, dict):
        for name, entry in steps.items():
            wall = _first(entry, "wall_s", "seconds", "time_s") if isinstance(entry, dict) else entry
            s.row(f"step {name} (s)", wall)
    elif isinstance(steps, list):
        for entry in steps:
            if isinstance(entry, dict):
                s.row(f"step {entry.get('name', '?')} (s)", _first(entry, "wall_s", "seconds", "time_s"))
    s.details = _scalars({k: v for k, v in flow.items() if k != "steps"})
    return s


# --------------------------------------------------------------------------- rendering


def _render_md(title: str, sections: list[_Section]) -> str:
    out = [f"# apical report: {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        if not s.present:
            out += [f"_{NOT_RUN}_", ""]
            continue
        if s.rows:
            out += ["| figure | value |", "|---|---|"]
            out += [f"| {k} | {v} |" for k, v in s.rows]
            out.append("")
        out += [f"- {n}" for n in s.notes]
        if s.notes:
            out.append("")
        if s.plots:
            out += [f"Plots ({', '.join(c for c, _ in s.plots)}): see report.html.", ""]
    return "\n".join(out) + "\n"


_CSS = (
    "body{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
    ".notrun{color:#999;font-style:italic}details{margin:0.5em 0}img{max-width:100%}"
)


def _render_html(title: str, sections: list[_Section]) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>apical report: {e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>apical report: {e(title)}</h1>",
    ]
    for s in sections:
        out.append(f"<h2>{e(s.title)}</h2>")
        if not s.present:
            out.append(f'<p class="notrun">{NOT_RUN}</p>')
            continue
        if s.rows:
            out.append("<table>")
            out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in s.rows]
            out.append("</table>")
        for n in s.notes:
            out.append(f'<p class="notrun">{e(n)}</p>')
        for caption, img in s.plots:
            out.append(f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{img}">'
                       f"<figcaption>{e(caption)}</figcaption></figure>")
        if s.details:
            out.append("<details><summary>all fields</summary><table>")
            out += [f"<tr><th>{e(k)}</th><td>{e(_fmt(v))}</td></tr>" for k, v in s.details]
            out.append("</table></details>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(run_dir: Path) -> dict[str, Any]:
    """Write ``report.html`` and ``report.md`` for ``run_dir``; return paths and sections present."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ApicalError(f"{run_dir}: run directory not found")
    data = {name: _load(run_dir, name) for name in SUMMARIES}
    cfg = _config(run_dir)
    energy = data["energy.json"]
    sections = [
        _accuracy(cfg, data["train.json"], data["baseline/train.json"], data["baseline_both/train.json"]),
        _export(data["export.json"]),
        _exactness(data["verify.json"], data["sim.json"], energy),
        _hardware(cfg, data["rtl.json"], data["sim.json"], energy, data["bitstream.json"]),
        _resources(data["synth.json"], data["bitstream.json"]),
        _energy(energy),
        _faults(run_dir, data["faults.json"]),
        _timings(data["flow.json"]),
    ]
    title = str(cfg.get("name") or run_dir.name)
    # Curves drawn by the train step are embedded too, so the page stays self-contained.
    curves = run_dir / "curves.png"
    if sections[0].present and curves.is_file():
        sections[0].plots.append(("Learning curves", base64.b64encode(curves.read_bytes()).decode("ascii")))
    html_path = atomic_write_text(run_dir / "report.html", _render_html(title, sections))
    md_path = atomic_write_text(run_dir / "report.md", _render_md(title, sections))
    return {
        "html": str(html_path),
        "md": str(md_path),
        "sections": {s.title: s.present for s in sections},
        "summaries_found": [n for n, d in data.items() if d is not None],
        "plots": [c for s in sections for c, _ in s.plots],
    }
