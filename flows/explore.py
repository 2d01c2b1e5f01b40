"""Hardware-aware design search: a config, a search space and a hardware budget -> a Pareto set of designs.

`explore(cfg, out_dir, space=..., budget=..., trials=N)` runs a multi-objective
Optuna study (TPE sampler: maximise validation accuracy; minimise counted
energy per inference, latency in cycles and LUTs) whose trials run in
parallel as Ray tasks (a local Ray started here, or a running cluster at
``address``). The study lives in a journal file in ``out_dir``
(``study.journal``), so a killed search resumes where it stopped: finished
trials are kept, ``trials`` is the total wanted.

Each trial derives a config from the base one (`Config.replace`, validated
like a file), trains it for the space's short budget, exports the integer
model, counts with the golden model on the validation and test splits
(`apical.flows.compare.train_measured` and `golden_figures`: accuracy, synaptic ops, energy from the
config's table), takes the latency from the schedule (the cycle lower bound,
`Schedule.cycle_lower_bound`, on the validation counts) and the resources from
`apical.flows.estimate` (no RTL, no simulation, no yosys). Hard constraints
(fits the budget part, LUT/DSP/BRAM caps, energy and latency ceilings) are
Optuna constraints (`Trial.set_constraint`): a design that breaks one is recorded as infeasible; a
design that cannot be built (the datapath does not fit) is a failed trial.
Objectives are chosen on validation; test figures are only reported.

The front (feasible, non-dominated on the four objectives) is ranked on
validation and its first ``verify_top`` designs go through the whole flow
(`apical.flows.flow.run_flow` up to ``synth``: train, export, verify, RTL,
simulation bit-exact on the fast Verilator path, energy, yosys), and the
estimate is set against yosys. Outputs, written atomically: ``explore.json``
(every trial; ``default``: the base config's own figures at its full training
budget and the same seed; ``front``), ``explore.html`` (Pareto plots) and
``front/<name>.yaml`` (a config `apical run` accepts) per front design.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from apical.sw.atomic import (
    atomic_write_json,
    atomic_write_text,
    read_json_object,
)
from apical.sw.config import (
    MAX_WIDTH,
    Config,
    ModelKind,
    Modulation,
    config_hash,
    config_to_dict,
)
from apical.sw.errors import ApicalError
from apical.sw.safeio import load_yaml
from apical.sw.schema import Rule, Schema, SchemaError, build, spec

__all__ = [
    "OBJECTIVES",
    "Budget",
    "Space",
    "default_space_path",
    "derive_config",
    "explore",
    "load_space",
    "measure_design",
    "pareto",
]

# (name, direction): the study's objectives, in order.
OBJECTIVES: tuple[tuple[str, str], ...] = (
    ("val_acc", "maximize"),
    ("val_energy_uJ", "minimize"),
    ("cycles", "minimize"),
    ("lut", "minimize"),
)
STUDY_NAME = "apical-explore"


# --------------------------------------------------------------------------- the space


_BITS = Rule(ge=2, le=8)


@dataclass(frozen=True)
class Space(Schema):
    """The search space: each field lists the choices of one knob (one choice: fixed)."""

    kind: tuple[ModelKind, ...] = spec((ModelKind.TWO_POINT,), min_len=1, max_len=3)
    modulation: tuple[Modulation, ...] = spec((Modulation.KAY,), min_len=1, max_len=4)
    # hidden widths, one list per choice (its length is the depth)
    hidden: tuple[tuple[int, ...], ...] = spec(
        ((64,),), min_len=1, max_len=32, each=Rule(min_len=1, max_len=4)
    )
    fan_in: tuple[int, ...] = spec(
        (4,), min_len=1, max_len=16, each=Rule(ge=1, le=MAX_WIDTH)
    )  # sparse-modular K
    modules: tuple[int, ...] = spec((4,), min_len=1, max_len=16, each=Rule(ge=1, le=64))
    granules: tuple[int, ...] = spec((32,), min_len=1, max_len=16, each=Rule(ge=1, le=1024))
    weight_bits: tuple[int, ...] = spec((4,), min_len=1, max_len=7, each=_BITS)
    act_bits: tuple[int, ...] = spec((4,), min_len=1, max_len=7, each=_BITS)
    site_bits: tuple[int, ...] = spec(
        (4,), min_len=1, max_len=4, each=Rule(ge=3, le=6)
    )  # two-point r/c
    # search weight and activation bits per layer (quant.layers) rather than once for the net
    per_layer_bits: bool = False
    # two-point context synapses per unit; 0: all (dense context)
    context_fan_in: tuple[int, ...] = spec(
        (0,), min_len=1, max_len=16, each=Rule(ge=0, le=MAX_WIDTH)
    )
    activity_penalty: tuple[float, ...] = spec(
        (0.0,), min_len=1, max_len=16, each=Rule(ge=0, le=1e3)
    )
    pes: tuple[int, ...] = spec((8,), min_len=1, max_len=16, each=Rule(ge=1, le=64))
    # the short training budget of a trial (the base config's other training settings stand)
    epochs: int = spec(10, ge=1, le=10_000)
    patience: int = spec(5, ge=1, le=10_000)

    def check(self) -> None:
        for i, h in enumerate(self.hidden):
            for j, w in enumerate(h):
                if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WIDTH:
                    raise SchemaError(
                        f"hidden[{i}][{j}]", f"must be an integer in [1, {MAX_WIDTH}], got {w!r}"
                    )


def default_space_path() -> Path:
    """The shipped default space: package data of `apical.flows`."""
    return Path(str(resources.files("apical.flows") / "data" / "explore_space.yaml"))


def load_space(path: str | Path | None = None) -> Space:
    """Load and validate a space YAML (`apical.sw.schema`); `None` loads the shipped default."""
    p = Path(path) if path is not None else default_space_path()
    raw = load_yaml(p, "space")
    try:
        return build(Space, raw)
    except SchemaError as e:
        raise ApicalError(f"{p}: {e}") from None


# --------------------------------------------------------------------------- the budget


@dataclass(frozen=True)
class Budget:
    """Hard constraints: a part the design must fit and optional caps (None: no cap)."""

    part: str | None = None
    max_lut: int | None = None
    max_dsp: int | None = None
    max_bram: float | None = None  # RAMB36E2 equivalents
    max_energy_uJ: float | None = None
    max_cycles: float | None = None

    def violations(self, m: dict[str, Any]) -> dict[str, float]:
        """Each constraint as ``used - allowed`` (> 0: broken), for the figures ``m`` of a design."""
        out: dict[str, float] = {}
        if self.part is not None:
            from apical.flows.parts import part_capacity

            cap = part_capacity(self.part)
            out["part_lut"] = m["lut"] - cap.lut  # logic and LUT-RAM share the LUT sites
            out["part_ff"] = m["ff"] - cap.ff
            out["part_dsp"] = m["dsp"] - cap.dsp48e2
            out["part_bram"] = m["bram"] - cap.ramb36e2
        caps = {
            "lut": self.max_lut,
            "dsp": self.max_dsp,
            "bram": self.max_bram,
            "val_energy_uJ": self.max_energy_uJ,
            "cycles": self.max_cycles,
        }
        for k, limit in caps.items():
            if limit is not None:
                out[f"max_{k}"] = m[k] - limit
        return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------------- one design


def _plain(v: Any) -> Any:
    return v.value if isinstance(v, Enum) else v


def _hidden_label(h: tuple[int, ...]) -> str:
    return "x".join(str(w) for w in h)


def _layer_names(kind: ModelKind, hidden: tuple[int, ...]) -> list[str]:
    """The IR's layer names of a model (`apical.sw.models`), for per-layer bits."""
    if kind is ModelKind.TWO_POINT:
        return [f"tp{i + 1}" for i in range(len(hidden))] + ["out"]
    if kind is ModelKind.POINT:
        return [f"fc{i + 1}" for i in range(len(hidden))] + ["out"]
    return ["granule", "out"]


def suggest(trial: Any, space: Space) -> dict[str, Any]:
    """Draw one point of ``space`` through an Optuna trial (define-by-run: knobs of the kind drawn)."""

    def pick(name: str, choices: tuple[Any, ...]) -> Any:
        plain = [_plain(c) for c in choices]
        return plain[0] if len(plain) == 1 else trial.suggest_categorical(name, plain)

    p: dict[str, Any] = {"kind": pick("kind", space.kind)}
    kind = ModelKind(p["kind"])
    if kind is ModelKind.SPARSE_MODULAR:
        p["fan_in"] = pick("fan_in", space.fan_in)
        p["modules"] = pick("modules", space.modules)
        p["granules"] = pick("granules", space.granules)
        hidden: tuple[int, ...] = ()
    else:
        labels = {_hidden_label(h): h for h in space.hidden}
        p["hidden"] = pick("hidden", tuple(labels))
        hidden = labels[p["hidden"]]
    if kind is ModelKind.TWO_POINT:
        p["modulation"] = pick("modulation", space.modulation)
        p["site_bits"] = pick("site_bits", space.site_bits)
        p["context_fan_in"] = pick("context_fan_in", space.context_fan_in)
    if space.per_layer_bits:
        for name in _layer_names(kind, hidden):
            p[f"weight_bits.{name}"] = pick(f"weight_bits.{name}", space.weight_bits)
            if name != "out":
                p[f"act_bits.{name}"] = pick(f"act_bits.{name}", space.act_bits)
    else:
        p["weight_bits"] = pick("weight_bits", space.weight_bits)
        p["act_bits"] = pick("act_bits", space.act_bits)
    p["activity_penalty"] = pick("activity_penalty", space.activity_penalty)
    p["pes"] = pick("pes", space.pes)
    return p


def derive_config(
    base: Config, params: dict[str, Any], space: Space, *, name: str, part: str | None
) -> Config:
    """The base config with a trial's ``params`` and the space's short budget (validated on build)."""
    from apical.sw.config import LayerBits

    kind = ModelKind(params["kind"])
    m = base.model
    model_changes: dict[str, Any] = {"kind": kind}
    if kind is ModelKind.SPARSE_MODULAR:
        model_changes.update(
            fan_in=params["fan_in"],
            modules=params["modules"],
            granules=params["granules"],
            context=False,
        )
    else:
        model_changes["hidden"] = tuple(int(w) for w in params["hidden"].split("x"))
    if kind is ModelKind.TWO_POINT:
        cf = params["context_fan_in"]
        model_changes.update(
            modulation=Modulation(params["modulation"]), context_fan_in=cf or None, context=True
        )
    elif kind is ModelKind.POINT:
        model_changes["context"] = m.context if m.kind is ModelKind.POINT else False
    q = base.quant
    quant_changes: dict[str, Any] = {}
    if "site_bits" in params:
        quant_changes.update(r_bits=params["site_bits"], c_bits=params["site_bits"])
    if "weight_bits" in params:
        quant_changes.update(
            weight_bits=params["weight_bits"], act_bits=params["act_bits"], layers={}
        )
    else:
        layers = {}
        for key, v in params.items():
            if key.startswith("weight_bits."):
                ln = key.split(".", 1)[1]
                layers[ln] = LayerBits(weight_bits=v, act_bits=params.get(f"act_bits.{ln}"))
        quant_changes["layers"] = layers
    hw = dataclasses.replace(base.hardware, pes=params["pes"], **({"part": part} if part else {}))
    train = dataclasses.replace(
        base.train,
        epochs=space.epochs,
        patience=min(space.patience, space.epochs),
        activity_penalty=params["activity_penalty"],
        threads=1,
    )
    return base.replace(
        name=name,
        model=dataclasses.replace(m, **model_changes),
        quant=dataclasses.replace(q, **quant_changes),
        train=train,
        hardware=hw,
        energy=dataclasses.replace(base.energy, baseline=False),
    )


def measure_design(cfg: Config) -> dict[str, Any]:
    """Train ``cfg``, export it, count with the golden model, estimate cycles and resources.

    Raises `ApicalError` for a design that cannot be built (e.g. its datapath does not fit).
    """
    import numpy as np

    from apical.flows.compare import train_measured
    from apical.flows.estimate import estimate_resources
    from apical.hw.fit import check_fit
    from apical.hw.schedule import compile_schedule

    t0 = time.perf_counter()
    _, facts, ir, val, test, _ = train_measured(
        cfg, check=lambda ir: check_fit(ir, cfg.hardware.pes, max_weight_depth=cfg.hardware.max_weight_depth)
    )
    sched = compile_schedule(ir, cfg.hardware.pes)
    # Latency: the schedule's bound (ceil(syn ops / P) per layer) on the mean validation counts.
    per_layer = {
        k: np.asarray([math.ceil(v)], dtype=np.int64) for k, v in val["syn_ops_per_layer"].items()
    }
    cycles = float(sched.cycle_lower_bound(per_layer)[0])
    res = estimate_resources(ir, sched)
    return {
        "val_acc": val["acc"],
        "val_energy_uJ": val["energy_uJ"],
        "val_syn_ops": val["syn_ops"],
        "test_acc": test["acc"],
        "energy_uJ": test["energy_uJ"],
        "syn_ops": test["syn_ops"],
        "cycles": cycles,
        "synapses": int(ir.synapses),
        **res,
        "epochs_run": facts.get("epochs_run"),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def _trial_task(cfg_dict: dict[str, Any], origin: str) -> dict[str, Any]:
    """A trial in a Ray worker: the figures, or the one-line reason it could not be built."""
    import warnings

    warnings.filterwarnings("ignore")
    from apical.sw.config import parse_config

    try:
        return {"ok": True, **measure_design(parse_config(cfg_dict, origin))}
    except (ApicalError, ValueError) as e:
        return {"ok": False, "error": (str(e).splitlines() or [type(e).__name__])[0][:300]}
    except Exception as e:  # a fault in one design is that trial's failure, not the search's
        return {"ok": False, "error": f"internal error: {type(e).__name__}: {str(e)[:240]}"}


# --------------------------------------------------------------------------- the front


def _dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    better = False
    for name, d in OBJECTIVES:
        x, y = (a[name], b[name]) if d == "minimize" else (b[name], a[name])
        if x > y:
            return False
        better |= x < y
    return better


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows no other row dominates on `OBJECTIVES` (validation figures)."""
    return [r for r in rows if not any(_dominates(o, r) for o in rows if o is not r)]


def _distinct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first trial of each design: the sampler may draw one point twice (same config, same figures)."""
    seen: set[str] = set()
    out = []
    for r in rows:
        key = json.dumps(
            {k: v for k, v in r.get("config", {}).items() if k != "name"}, sort_keys=True
        )
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _front_name(base: Config, number: int) -> str:
    return f"{base.name}-t{number}"


# --------------------------------------------------------------------------- plots and page


def _plot(
    rows: list[dict[str, Any]],
    front: list[dict[str, Any]],
    default: dict[str, Any] | None,
    x: str,
    xlabel: str,
) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    feas = [r for r in rows if r["feasible"]]
    infeas = [r for r in rows if not r["feasible"]]
    ax.scatter(
        [r[x] for r in feas], [r["test_acc"] for r in feas], s=18, alpha=0.6, label="feasible trial"
    )
    if infeas:
        ax.scatter(
            [r[x] for r in infeas],
            [r["test_acc"] for r in infeas],
            s=18,
            marker="x",
            color="grey",
            label="infeasible trial",
        )
    ax.scatter(
        [r[x] for r in front],
        [r["test_acc"] for r in front],
        s=60,
        facecolors="none",
        edgecolors="red",
        label="Pareto front (4 objectives)",
    )
    if default and x in default:
        ax.scatter(
            [default[x]],
            [default["test_acc"]],
            marker="*",
            s=160,
            color="black",
            label="default config",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (reported; chosen on validation)")
    if x in ("energy_uJ", "lut") and feas and min(r[x] for r in feas) > 0:
        ax.set_xscale("log")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _html(result: dict[str, Any], rows: list[dict[str, Any]], front: list[dict[str, Any]]) -> str:
    from html import escape

    default = result.get("default")
    imgs = []
    for x, label in (
        ("energy_uJ", "energy per inference (uJ, golden counts, test split)"),
        ("lut", "LUT (estimate)"),
    ):
        png = base64.b64encode(_plot(rows, front, default, x, label)).decode()
        imgs.append(f'<img alt="accuracy vs {escape(x)}" src="data:image/png;base64,{png}">')
    cols = (
        "name",
        "test_acc",
        "val_acc",
        "energy_uJ",
        "cycles",
        "lut",
        "dsp",
        "bram",
        "bit_exact",
        "yosys_lut",
        "lut_err_pct",
        "dsp_exact",
        "bram_exact",
        "dominates_default",
    )
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(d.get(c)))}</td>" for c in cols) + "</tr>"
        for d in result["front"]
    )
    dflt = (
        (
            f"<p>default config ({escape(str(default.get('name')))}): test accuracy {default['test_acc']:.4f}, "
            f"energy {default['energy_uJ']:.4g} uJ per inference</p>"
        )
        if default
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>apical explore</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        "</style></head><body>"
        f"<h1>apical explore: {escape(result['config'])}</h1>"
        f"<p>{result['trials_complete']} trials complete, {result['trials_failed']} failed, "
        f"{result['trials_infeasible']} infeasible; budget {escape(str(result['budget']))}</p>{dflt}"
        + "".join(imgs)
        + f"<h2>front</h2><table><tr>{head}</tr>{body}</table></body></html>"
    )


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


# --------------------------------------------------------------------------- Ray


def _start_ray(address: str | None, cpus: int | None) -> bool:
    """Connect to Ray (``address``) or start a local one; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
    }
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=cpus or max(1, os.cpu_count() or 1), object_store_memory=80 * 2**20, **kw)
    return True


# --------------------------------------------------------------------------- the command


def _default_figures(base: Config, out_dir: Path, part: str | None) -> dict[str, Any]:
    """The base config's own figures (its full training budget, same seed), cached by config hash."""
    cfg = base.replace(
        energy=dataclasses.replace(base.energy, baseline=False),
        train=dataclasses.replace(base.train, threads=1),
        hardware=dataclasses.replace(base.hardware, **({"part": part} if part else {})),
    )
    path = out_dir / "default.json"
    h = config_hash(cfg)
    if path.is_file():
        cached = read_json_object(path)
        if cached.get("config_hash") == h:
            return cached
    return {"name": base.name, "config_hash": h, "_cfg": cfg}


def _default_result(base: Config, config_hash: str, r: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """The base config's own figures from its Ray task, written to ``default.json``; its failure is fatal."""
    if not r.get("ok"):
        raise ApicalError(f"{base.origin}: the base config itself failed: {r['error']}")
    dflt = {"name": base.name, "config_hash": config_hash, **{k: v for k, v in r.items() if k != "ok"}}
    atomic_write_json(out_dir / "default.json", dflt)
    return dflt


def explore(
    base: Config,
    out_dir: Path,
    *,
    space: Space,
    budget: Budget,
    trials: int,
    address: str | None = None,
    cpus: int | None = None,
    verify_top: int = 2,
    progress: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the search in ``out_dir`` until ``trials`` trials are finished; verify the front."""
    from apical.flows.extras import require_extra

    require_extra("explore", "apical explore")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ApicalError(f"explore: --trials: must be an integer >= 1, got {trials!r}")
    if isinstance(verify_top, bool) or not isinstance(verify_top, int) or verify_top < 0:
        raise ApicalError(f"explore: --verify-top: must be an integer >= 0, got {verify_top!r}")
    if budget.part is not None:
        from apical.flows.parts import part_capacity

        part_capacity(budget.part)
    import optuna
    import ray
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    storage = JournalStorage(JournalFileBackend(str(out_dir / "study.journal")))

    # Constraints are set on each trial (`Trial.set_constraint`); the sampler reads them.
    sampler = optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=8)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        sampler=sampler,
        directions=[d for _, d in OBJECTIVES],
        load_if_exists=True,
    )
    # A trial left running by a killed search: closed as failed (and not counted), then redrawn.
    for ft in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        study.tell(ft.number, state=TrialState.FAIL)

    def finished() -> list[Any]:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        return [t for t in done if t.user_attrs.get("measured") or t.user_attrs.get("error")]

    started_ray = _start_ray(address, cpus)
    try:
        remote = ray.remote(num_cpus=1)(_trial_task)
        dflt = _default_figures(base, out_dir, budget.part)
        dflt_ref = None
        if "_cfg" in dflt:
            dflt_ref = remote.remote(config_to_dict(dflt["_cfg"]), f"{base.origin} (default)")
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        pending: dict[Any, Any] = {}
        resumed = len(finished())
        todo = max(0, trials - resumed)
        submitted = 0

        def report(event: str) -> None:
            if progress:
                done = finished()
                best = max(
                    (
                        t.user_attrs.get("val_acc", 0.0)
                        for t in done
                        if t.state is TrialState.COMPLETE
                    ),
                    default=None,
                )
                progress(
                    event,
                    {
                        "done": len(done),
                        "total": trials,
                        "best_val_acc": best,
                        "resumed": resumed,
                        "running": len(pending),
                    },
                )

        report("start")
        while submitted < todo or pending:
            while submitted < todo and len(pending) + (dflt_ref is not None) < slots + 1:
                trial = study.ask()
                params = suggest(trial, space)
                name = _front_name(base, trial.number)
                try:
                    cfg = derive_config(base, params, space, name=name, part=budget.part)
                except (ApicalError, ValueError) as e:
                    trial.set_user_attr("error", str(e).splitlines()[0][:300])
                    study.tell(trial, state=TrialState.FAIL)
                    submitted += 1
                    continue
                trial.set_user_attr("params", params)
                trial.set_user_attr("config", config_to_dict(cfg))
                pending[
                    remote.remote(config_to_dict(cfg), f"{base.origin} (trial {trial.number})")
                ] = trial
                submitted += 1
            refs = list(pending) + ([dflt_ref] if dflt_ref is not None else [])
            ready, _ = ray.wait(refs, num_returns=1)
            ref = ready[0]
            if ref is dflt_ref:
                dflt = _default_result(base, dflt["config_hash"], ray.get(ref), out_dir)
                dflt_ref = None
                report("default")
                continue
            trial = pending.pop(ref)
            r = ray.get(ref)
            if not r.pop("ok"):
                trial.set_user_attr("error", r["error"])
                study.tell(trial, state=TrialState.FAIL)
            else:
                viol = budget.violations(r)
                for k, v in r.items():
                    trial.set_user_attr(k, v)
                trial.set_user_attr("violations", viol)
                for k, v in viol.items():
                    trial.set_constraint(k, v)
                trial.set_user_attr("measured", True)
                study.tell(trial, [r[n] for n, _ in OBJECTIVES])
            report("trial")
        if dflt_ref is not None:
            dflt = _default_result(base, dflt["config_hash"], ray.get(dflt_ref), out_dir)
        search_s = time.perf_counter() - t_start

        rows = _rows(study)
        feasible = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]]
        front = pareto(_distinct(feasible))

        # Ranked on validation: designs that beat the default on both validation accuracy and energy first.
        def beats_default_val(r: dict[str, Any]) -> bool:
            return r["val_acc"] >= dflt["val_acc"] and r["val_energy_uJ"] < dflt["val_energy_uJ"]

        front.sort(key=lambda r: (not beats_default_val(r), -r["val_acc"], r["val_energy_uJ"]))
        fdir = out_dir / "front"
        entries = []
        verify = ray.remote(num_cpus=1)(_verify_task)
        verifying: dict[Any, dict[str, Any]] = {}
        for rank, r in enumerate(front):
            name = _front_name(base, r["number"])
            yaml_path = atomic_write_text(
                fdir / f"{name}.yaml", yaml.safe_dump(r["config"], sort_keys=False)
            )
            e = {
                "name": name,
                "trial": r["number"],
                "params": r["params"],
                "config": str(yaml_path.relative_to(out_dir)),
                **{
                    k: r[k]
                    for k in (
                        "val_acc",
                        "val_energy_uJ",
                        "test_acc",
                        "energy_uJ",
                        "cycles",
                        "lut",
                        "ff",
                        "dsp",
                        "bram",
                        "syn_ops",
                        "synapses",
                    )
                },
                "dominates_default": r["test_acc"] >= dflt["test_acc"]
                and r["energy_uJ"] < dflt["energy_uJ"],
                "dominates_default_on_validation": beats_default_val(r),
                "bit_exact": None,
                "verified": False,
            }
            if rank < verify_top:
                # The whole flow for each of the first front designs, in parallel on Ray.
                if progress:
                    progress(
                        "verify",
                        {"name": name, "rank": rank + 1, "of": min(verify_top, len(front))},
                    )
                verifying[verify.remote(str(yaml_path), str(out_dir / "verify" / name))] = e
            entries.append(e)
        for ref, e in verifying.items():
            e.update(ray.get(ref))
        # A resumed search's front replaces the last one: configs of designs no longer on it go.
        kept = {f"{e['name']}.yaml" for e in entries}
        for old in fdir.glob("*.yaml"):
            if old.name not in kept:
                old.unlink()
    finally:
        if started_ray:
            ray.shutdown()
    result = {
        "config": base.name,
        "config_hash": config_hash(base),
        "objectives": [{"name": n, "direction": d} for n, d in OBJECTIVES],
        "budget": {k: v for k, v in dataclasses.asdict(budget).items() if v is not None},
        "space": _space_dict(space),
        "sampler": "optuna TPESampler (multi-objective, constraints per trial)",
        "storage": "study.journal",
        "trials_wanted": trials,
        "trials_complete": sum(r["state"] == "COMPLETE" for r in rows),
        "trials_failed": sum(r["state"] == "FAIL" for r in rows),
        "trials_infeasible": sum(r["state"] == "COMPLETE" and not r["feasible"] for r in rows),
        "resumed_from": resumed,
        "search_wall_s": round(search_s, 1),
        "wall_s": round(time.perf_counter() - t_start, 1),
        "default": {k: v for k, v in dflt.items() if not k.startswith("_")},
        "front": entries,
        "trials": rows,
    }
    atomic_write_json(out_dir / "explore.json", result)
    atomic_write_text(
        out_dir / "explore.html",
        _html(result, [r for r in rows if r["state"] == "COMPLETE"], front),
    )
    return result


def load_front_config(path: Path) -> Config:
    from apical.sw.config import load_config

    return load_config(path)


def _space_dict(space: Space) -> dict[str, Any]:
    return {f.name: _jsonable(getattr(space, f.name)) for f in dataclasses.fields(space)}


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    return _plain(v)


def _rows(study: Any) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.FAIL):
            continue
        a = dict(t.user_attrs)
        if t.state is TrialState.FAIL and not a.get("error"):
            continue  # closed when a killed search resumed; redrawn since
        viol = a.get("violations", {})
        row = {
            "number": t.number,
            "state": t.state.name,
            "params": a.get("params", {}),
            "feasible": t.state is TrialState.COMPLETE and all(v <= 0 for v in viol.values()),
            "violations": {k: v for k, v in viol.items() if v > 0},
            **{k: v for k, v in a.items() if k not in ("params", "violations", "measured")},
        }
        rows.append(row)
    return rows


def _verify_task(config_path: str, run_dir: str) -> dict[str, Any]:
    """`_verify` in a Ray worker: a fault is that design's verification error, not the search's."""
    import warnings

    warnings.filterwarnings("ignore")
    try:
        return _verify(load_front_config(Path(config_path)), Path(run_dir))
    except Exception as e:
        return {"verified": False, "verify_error": f"{type(e).__name__}: {str(e)[:240]}"}


def _verify(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The whole flow up to yosys for one front design; its figures against the trial's estimate."""
    from apical.flows.estimate import estimate_resources
    from apical.flows.flow import run_flow
    from apical.flows.synth import fit_check
    from apical.hw.schedule import compile_schedule
    from apical.sw.ir import load_ir

    cfg = cfg.replace(
        hardware=dataclasses.replace(
            cfg.hardware, simulator="verilator", sim_path="fast", sim_samples=0
        )
    )
    try:
        run_flow(cfg, run_dir, stop="synth")
    except ApicalError as e:
        return {"verified": False, "verify_error": str(e).splitlines()[0][:300]}
    train = read_json_object(run_dir / "train.json")
    sim = read_json_object(run_dir / "sim.json")
    synth = read_json_object(run_dir / "synth.json")
    res = synth["resources"]
    _, _, over = fit_check(res, cfg.hardware.part)
    y_lut = res["lut"] + res["lutram_luts"]
    y_bram = res["ramb36e2"] + res["ramb18e2"] / 2
    # The estimate of the design as rebuilt here (the same IR as the trial's when training
    # reproduces, which `retrained_test_acc` shows), priced by the estimator as it stands now.
    ir = load_ir(run_dir / "ir")
    est = estimate_resources(ir, compile_schedule(ir, cfg.hardware.pes))
    e_lut = est["lut"]
    return {
        "estimate": est,
        "verified": True,
        "run_dir": str(run_dir.name),
        "bit_exact": bool(sim.get("bit_exact")) and bool(sim.get("counters_match")),
        "sim_samples": sim.get("samples"),
        "sim_cycles_mean": sim.get("cycles", {}).get("mean"),
        "retrained_test_acc": train.get("test_acc"),
        "yosys_lut": y_lut,
        "yosys_ff": res["ff"],
        "yosys_dsp": res["dsp48e2"],
        "yosys_bram": y_bram,
        "yosys_fits": not over,
        "lut_err_pct": round(100.0 * (e_lut - y_lut) / y_lut, 2) if y_lut else None,
        "ff_err_pct": round(100.0 * (est["ff"] - res["ff"]) / res["ff"], 2) if res["ff"] else None,
        "dsp_exact": est["dsp"] == res["dsp48e2"],
        "bram_exact": est["bram"] == y_bram,
    }
