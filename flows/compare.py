"""Like-for-like comparison over seeds: every variant of a config, N seeds each, one table and a plot.

`compare(cfg, seeds, out_dir, variants)` trains every variant on seeds
``cfg.seed .. cfg.seed + N - 1`` (the seed draws the data split, the noise and
the initial weights, so all variants of one seed see the same data), exports
each to the IR and runs the golden integer model on the validation and test
splits. Accuracy is the golden model's argmax (== Brevitas, bit-exact);
synaptic ops and energy are the golden counts costed with the config's energy
table. The variants are: the config itself, each extra two-point setting
(a YAML of overrides merged onto the config), and the config's like-for-like
point baselines (driving view; both views). It writes ``compare.json`` and
``compare.png`` (test accuracy vs energy per inference, one point per seed and
variant, Pareto front drawn) atomically. A two-point variant trained without
context gating also appears as ``<name>+gating``: the same models, counted
with gating (outputs identical by construction); each (variant, seed) result is kept
under ``runs/`` so an interrupted comparison resumes where it stopped.

The headline is chosen on validation figures only: the baseline is the point
variant with the highest mean validation accuracy; the two-point variant is,
among those whose mean validation accuracy is within ``ACC_TOLERANCE`` of it,
the one with the fewest mean validation synaptic ops (else the most accurate).
Its test figures are then reported against the baseline's.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from apical.flows.baselines import baselines
from apical.sw.atomic import atomic_write_bytes, atomic_write_json, read_json_object
from apical.sw.config import Config, ModelKind, config_hash, config_to_dict, parse_config
from apical.sw.errors import ApicalError

__all__ = ["ACC_TOLERANCE", "DEFAULT_SEEDS", "Variant", "compare", "golden_figures", "load_variant", "train_measured",
           "variants_of"]

DEFAULT_SEEDS = 5
ACC_TOLERANCE = 0.005  # "equal accuracy": a mean within half a point of the baseline's


@dataclass(frozen=True)
class Variant:
    """One setting of the comparison: its name, model kind and config (seed replaced per run)."""

    name: str
    kind: str
    cfg: Config


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_variant(cfg: Config, path: str | Path) -> Variant:
    """A variant from a YAML of overrides (any config fields) merged onto ``cfg``; named by ``name`` or the file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ApicalError(f"{p}: cannot read variant ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ApicalError(f"{p}: malformed YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise ApicalError(f"{p}: a variant must be a mapping of config overrides, got {type(raw).__name__}")
    name = raw.get("name", p.stem)
    if not isinstance(name, str) or not name:
        raise ApicalError(f"{p}: name: must be a non-empty string, got {name!r}")
    vcfg = parse_config(_merge(config_to_dict(cfg), {**raw, "name": name}), str(p))
    return Variant(name, vcfg.model.kind.value, vcfg)


def variants_of(cfg: Config, extra: Sequence[Variant] = ()) -> list[Variant]:
    """The config, the extra variants, then the config's point baselines (driving, both views)."""
    out = [Variant(cfg.name, cfg.model.kind.value, cfg), *extra]
    for b in baselines(cfg, force=True):
        # A compared point net trains alone (no baselines of its own).
        bcfg = b.cfg.replace(energy=dataclasses.replace(b.cfg.energy, baseline=False))
        out.append(Variant(f"point-{b.name}", "point", bcfg))
    names = [v.name for v in out]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise ApicalError(f"compare: two variants are named {dup!r} (give one a `name:`)")
    return out


# --------------------------------------------------------------------------- one run


def golden_figures(model: Any, cfg: Config, split: Any, ir: Any, table: Any) -> dict[str, Any]:
    from apical.flows.energy import energy_from_counts
    from apical.hw.schedule import compile_schedule
    from apical.sw.export import brevitas_trace
    from apical.sw.golden import run_golden

    inputs, _ = brevitas_trace(model, split)
    gold = run_golden(ir, inputs)
    sched = compile_schedule(ir, cfg.hardware.pes)
    e = energy_from_counts(ir, gold.counts, table, schedule=sched, clock_mhz=cfg.hardware.clock_mhz)
    return {
        "acc": float(np.mean(gold.classes == np.asarray(split.y))),
        "syn_ops": float(e.syn_ops.mean()),
        "energy_uJ": float(e.total_pJ.mean() * 1e-6),
        "syn_ops_per_layer": {name: float(c["syn_ops"].mean()) for name, c in gold.counts.items()},
    }


def train_measured(
    cfg: Config, *, check: Callable[[Any], None] | None = None, gated: bool = False
) -> tuple[Any, dict[str, Any], Any, dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """Train ``cfg``, export it and measure it with the golden model on validation and test.

    Returns ``(model, facts, ir, val, test, gated_figures)``. ``check(ir)`` runs
    on the exported IR before it is measured (e.g. a fit check that raises).
    With ``gated``, a two-point net exported without context gating is also
    measured with it: the same trained model, the same outputs (exact by
    construction), fewer counted synaptic ops (None when nothing is gated).
    """
    import torch

    from apical.flows.energy import load_energy_table
    from apical.sw.data import load_dataset
    from apical.sw.export import export_ir
    from apical.sw.train import _torch_settings, train_model

    table = load_energy_table(cfg.energy.table)
    with _torch_settings(cfg.train.threads), torch.no_grad():
        ds = load_dataset(cfg)
        with torch.enable_grad():
            model, facts, _ = train_model(cfg, ds, progress=False, train_curve=False)
        ir = export_ir(model, cfg)
        if check is not None:
            check(ir)
        val = golden_figures(model, cfg, ds.val, ir, table)
        test = golden_figures(model, cfg, ds.test, ir, table)
        figures = None
        if gated and cfg.model.kind is ModelKind.TWO_POINT and not cfg.hardware.context_gating:
            gcfg = cfg.replace(hardware=dataclasses.replace(cfg.hardware, context_gating=True))
            gir = export_ir(model, gcfg)
            if gir.gated:
                gv = golden_figures(model, gcfg, ds.val, gir, table)
                gt = golden_figures(model, gcfg, ds.test, gir, table)
                figures = {"val_syn_ops": gv["syn_ops"], "syn_ops": gt["syn_ops"], "energy_uJ": gt["energy_uJ"],
                           "syn_ops_per_layer": gt["syn_ops_per_layer"], "val_acc": gv["acc"],
                           "test_acc": gt["acc"],
                           "gates": {la.name: la.gate for la in gir.layers if la.kind == "two_point"}}
    return model, facts, ir, val, test, figures


def _run_one(cfg: Config) -> dict[str, Any]:
    """Train ``cfg`` and measure it with the golden model on validation and test, with and
    without context gating (`train_measured`)."""
    t0 = time.perf_counter()
    _, facts, ir, val, test, gated = train_measured(cfg, gated=True)
    return {
        "seed": cfg.seed,
        "config_hash": config_hash(cfg),
        "val_acc": val["acc"],
        "val_syn_ops": val["syn_ops"],
        "test_acc": test["acc"],
        "syn_ops": test["syn_ops"],
        "energy_uJ": test["energy_uJ"],
        "syn_ops_per_layer": test["syn_ops_per_layer"],
        "synapses": ir.synapses,
        **facts,
        "gated": gated,
        "wall_time_s": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------- statistics


def _interval(values: list[float]) -> list[float]:
    """95 % confidence interval of the mean (Student t); the point itself for one value."""
    a = np.asarray(values, dtype=np.float64)
    m = float(a.mean())
    if len(a) < 2:
        return [m, m]
    from scipy.stats import t

    half = float(t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))
    return [m - half, m + half]


def _summary(v: Variant, runs: list[dict[str, Any]]) -> dict[str, Any]:
    acc = [r["test_acc"] for r in runs]
    return {
        "name": v.name,
        "kind": v.kind,
        "seeds": [r["seed"] for r in runs],
        "test_acc_mean": float(np.mean(acc)),
        "test_acc_min": float(np.min(acc)),
        "test_acc_ci95": _interval(acc),
        "val_acc_mean": float(np.mean([r["val_acc"] for r in runs])),
        "syn_ops_mean": float(np.mean([r["syn_ops"] for r in runs])),
        "syn_ops_ci95": _interval([r["syn_ops"] for r in runs]),
        "val_syn_ops_mean": float(np.mean([r["val_syn_ops"] for r in runs])),
        "energy_uJ_mean": float(np.mean([r["energy_uJ"] for r in runs])),
        "energy_uJ_ci95": _interval([r["energy_uJ"] for r in runs]),
        "synapses_mean": float(np.mean([r["synapses"] for r in runs])),
        "hidden": list(v.cfg.model.hidden),
        "config_hash": config_hash(v.cfg),
        "runs": runs,
    }


def _headline(summaries: list[dict[str, Any]]) -> dict[str, Any] | None:
    points = [s for s in summaries if s["kind"] == "point"]
    twos = [s for s in summaries if s["kind"] == "two_point"]
    if not points or not twos:
        return None
    base = max(points, key=lambda s: s["val_acc_mean"])
    equal = [s for s in twos if s["val_acc_mean"] >= base["val_acc_mean"] - ACC_TOLERANCE]
    two = min(equal, key=lambda s: s["val_syn_ops_mean"]) if equal else max(twos, key=lambda s: s["val_acc_mean"])
    return {
        "two_point": two["name"],
        "baseline": base["name"],
        "syn_ops_ratio": two["syn_ops_mean"] / base["syn_ops_mean"] if base["syn_ops_mean"] else None,
        "energy_ratio": two["energy_uJ_mean"] / base["energy_uJ_mean"] if base["energy_uJ_mean"] else None,
        "acc_delta": two["test_acc_mean"] - base["test_acc_mean"],
        "selected_on": "validation",
        "equal_accuracy_on_validation": bool(equal),
    }


# --------------------------------------------------------------------------- the plot


def _pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(energy, accuracy) points no other point beats on both (lower energy, higher accuracy)."""
    front, best = [], -1.0
    for e, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append((e, a))
            best = a
    return front


def _plot(summaries: list[dict[str, Any]], title: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    markers = {"two_point": "o", "point": "s", "sparse_modular": "^"}
    allp = []
    for i, s in enumerate(summaries):
        e = [r["energy_uJ"] for r in s["runs"]]
        a = [r["test_acc"] for r in s["runs"]]
        allp += list(zip(e, a, strict=True))
        color = f"C{i % 10}"
        ax.scatter(e, a, marker=markers.get(s["kind"], "o"), color=color, alpha=0.6, label=f"{s['name']} ({s['kind']})")
        ax.scatter([s["energy_uJ_mean"]], [s["test_acc_mean"]], marker=markers.get(s["kind"], "o"), color=color,
                   s=120, edgecolors="black")
    front = _pareto(allp)
    if front:
        fe, fa = zip(*front, strict=True)
        ax.step(fe, fa, where="post", color="black", linewidth=1, linestyle="--", label="Pareto front")
    ax.set_xlabel("energy per inference (uJ, golden counts)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


# --------------------------------------------------------------------------- the command


def compare(
    cfg: Config,
    seeds: int,
    out_dir: Path,
    extra: Sequence[Variant] = (),
    progress: Callable[[str], None] | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Train and measure every variant on ``seeds`` seeds; write ``compare.json`` and ``compare.png``.

    ``threads`` replaces every variant's ``train.threads`` (None keeps them): a
    comparison is many small runs, which one thread each trains fastest.
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ApicalError(f"compare: --seeds: must be an integer >= 1, got {seeds!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ApicalError(f"compare: --threads: must be an integer >= 1, got {threads!r}")
    out_dir = Path(out_dir)
    variants = variants_of(cfg, extra)
    if threads is not None:
        variants = [dataclasses.replace(v, cfg=v.cfg.replace(train=dataclasses.replace(v.cfg.train, threads=threads)))
                    for v in variants]
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    # Seed-major: an interrupted comparison leaves every variant with the same seeds done.
    for k in range(seeds):
        for v in variants:
            rcfg = v.cfg.replace(seed=cfg.seed + k)
            path = out_dir / "runs" / v.name / f"seed{rcfg.seed}.json"
            if path.is_file():
                cached = read_json_object(path)
                if cached.get("config_hash") == config_hash(rcfg):
                    runs[v.name].append(cached)
                    continue
            if progress:
                progress(f"{v.name} seed {rcfg.seed}")
            r = _run_one(rcfg)
            atomic_write_json(path, r)
            runs[v.name].append(r)
    summaries = []
    for v in variants:
        summaries.append(_summary(v, runs[v.name]))
        if all(r.get("gated") for r in runs[v.name]):
            # The same models evaluated with context gating: a variant of its own, no retraining.
            gruns = [{**r, **r["gated"], "gated": None} for r in runs[v.name]]
            gv = Variant(f"{v.name}+gating", v.kind, v.cfg.replace(
                hardware=dataclasses.replace(v.cfg.hardware, context_gating=True)))
            summaries.append({**_summary(gv, gruns), "gated_from": v.name})
    result = {
        "config": cfg.name,
        "config_hash": config_hash(cfg),
        "seeds": seeds,
        "first_seed": cfg.seed,
        "threads": threads,
        "table": cfg.energy.table,
        "acc_tolerance": ACC_TOLERANCE,
        "variants": summaries,
        "headline": _headline(summaries),
    }
    atomic_write_bytes(out_dir / "compare.png", _plot(summaries, f"{cfg.name}: {seeds} seeds per variant"))
    atomic_write_json(out_dir / "compare.json", result)
    return result
