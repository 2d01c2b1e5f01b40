"""Decoupled sparse-modular training: gather compute, per-module seeds, worker-count independence, artefacts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from apical.sw.checkpoint import load_model
from apical.sw.config import config_to_dict, load_config, parse_config
from apical.sw.data import load_dataset
from apical.sw.distributed import launched_by_torchrun, spread
from apical.sw.errors import ApicalError
from apical.sw.export import export_run
from apical.sw.models import ModelDims, SparseModularNet, build_model
from apical.sw.train import accuracy, train
from apical.sw.verify import verify_run

ROOT = Path(__file__).resolve().parent.parent
DIMS = ModelDims(x_dim=20, ctx_dim=None, num_classes=5)


def _cfg(workers: int = 1, combine: str = "sum", **train):
    d = config_to_dict(load_config(ROOT / "configs" / "sparse_modular.yaml"))
    d["data"]["max_samples"] = 150
    d["model"].update({"modules": 4, "granules": 8, "combine": combine})
    d["train"].update({"epochs": 2, "combine_epochs": 2, "batch_size": 32, "workers": workers, **train})
    d["energy"]["baseline"] = False
    return parse_config(d, "test")


def _weights(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "ir" / "weights.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_shipped_config_trains_decoupled() -> None:
    cfg = load_config(ROOT / "configs" / "sparse_modular.yaml")
    assert cfg.train.mode.value == "decoupled"


def test_granule_gather_equals_the_masked_dense_product_and_trains_only_live_weights() -> None:
    d = config_to_dict(load_config(ROOT / "configs" / "sparse_modular.yaml"))
    d["model"].update({"modules": 3, "granules": 16, "fan_in": 3})
    net = build_model(parse_config(d), DIMS)
    x = net.in_quant(torch.rand(40, DIMS.x_dim, generator=torch.Generator().manual_seed(2)))
    qw = net.granule.quant_weight()
    qb = net.granule.bias_quant(net.granule.bias, x, qw)
    got = net.granule(x)
    assert torch.equal(got, F.linear(x.value, qw.value, qb.value))  # po2: exact, not close
    assert net.granule.index.shape == (48, 3)
    got.sum().backward()
    live = net.granule.weight.grad != 0
    assert not (live & (net.granule_mask == 0)).any()
    # live parameters: every trainable parameter less the masked-out granule weights
    total = sum(p.numel() for p in net.parameters())
    assert net.live_parameters() == total - int((net.granule_mask == 0).sum())
    assert net.live_parameters() == total - 48 * (DIMS.x_dim - 3)


def test_the_gather_follows_a_loaded_mask() -> None:
    cfg = _cfg()
    a, b = build_model(cfg, DIMS), build_model(cfg.replace(seed=9), DIMS)
    assert not torch.equal(a.granule.index, b.granule.index)
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.granule.index, a.granule.index)
    x = torch.rand(8, DIMS.x_dim, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.eval()(x), b.eval()(x))


def test_a_module_built_alone_starts_as_the_same_module_of_the_whole_net() -> None:
    cfg = _cfg()
    whole = build_model(cfg, DIMS)
    for k in (0, 3):
        alone = SparseModularNet(cfg, DIMS, module_ids=(k,))
        rows = slice(k * 8, (k + 1) * 8)
        assert torch.equal(alone.granule_mask, whole.granule_mask[rows])
        assert torch.equal(alone.granule.weight, whole.granule.weight[rows])
        assert torch.equal(alone.granule.bias, whole.granule.bias[rows])
    assert not torch.equal(whole.granule_mask[:8], whole.granule_mask[8:16])
    with pytest.raises(ApicalError, match="module ids"):
        SparseModularNet(cfg, DIMS, module_ids=(4,))


def test_same_seed_gives_identical_ir_for_1_2_and_4_workers(tmp_path) -> None:
    runs = {}
    for w in (1, 2, 4):
        cfg = _cfg(workers=w)
        s = train(cfg, tmp_path / f"w{w}", progress=False)
        export_run(cfg, tmp_path / f"w{w}")
        runs[w] = (s, _weights(tmp_path / f"w{w}"))
    s1, a1 = runs[1]
    for w in (2, 4):
        s, a = runs[w]
        assert s["workers"] == w
        assert sorted({m["worker"] for m in s["modules"]}) == list(range(w))
        assert a.keys() == a1.keys()
        for k in a1:
            assert np.array_equal(a[k], a1[k]), f"workers {w}: ir/weights.npz[{k}] differs"
        strip = ("worker", "wall_time_s", "cpu_time_s")
        assert [{k: v for k, v in m.items() if k not in strip} for m in s["modules"]] == \
               [{k: v for k, v in m.items() if k not in strip} for m in s1["modules"]]
        assert s["test_acc"] == s1["test_acc"] and s["val_acc"] == s1["val_acc"]
    # a different seed is a different net
    train(_cfg().replace(seed=7), tmp_path / "s7", progress=False)
    export_run(_cfg().replace(seed=7), tmp_path / "s7")
    other = _weights(tmp_path / "s7")
    assert any(not np.array_equal(other[k], a1[k]) for k in a1)


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_decoupled_run_records_modules_and_combine_and_verifies_bit_exact(tmp_path, combine) -> None:
    cfg = _cfg(combine=combine, epochs=3)
    s = train(cfg, tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "train.json").read_text())
    assert on_disk["mode"] == "decoupled" and on_disk["workers"] == 1
    assert [m["index"] for m in on_disk["modules"]] == [0, 1, 2, 3]
    for m in on_disk["modules"]:
        assert 0.0 <= m["local_val_acc"] <= 1.0 and 0.0 <= m["local_test_acc"] <= 1.0
        assert m["local_val_acc"] == max(m["val_acc_curve"])  # best-validation state kept
        assert 1 <= m["best_epoch"] <= m["epochs_run"] <= 3
    comb = on_disk["combine"]
    assert comb["on"] == ("out" if combine == "concat" else "granule")
    assert comb["trains"] == (["combine", "combine_quant"] if combine == "concat" else ["out", "out_quant"])
    assert comb["val_acc"] == s["val_acc"] >= comb["start_val_acc"]
    assert len(on_disk["curves"]["val_acc"]) == cfg.train.combine_epochs
    # the checkpoint is the assembled model; export and verify work unchanged on it
    _, model = load_model(tmp_path)
    assert accuracy(model, load_dataset(cfg).test) == s["test_acc"]
    export_run(cfg, tmp_path)
    v = verify_run(cfg, tmp_path)
    assert v["bit_exact"] is True
    assert s["synapses"] >= 4 * 8 * cfg.model.fan_in
    assert s["params"] < sum(p.numel() for p in model.parameters())


def test_end_to_end_mode_is_kept_and_recorded(tmp_path) -> None:
    s = train(_cfg(mode="end_to_end"), tmp_path, progress=False)
    assert s["mode"] == "end_to_end" and s["workers"] == 1 and "modules" not in s


def _square(k: int, rank: int) -> tuple[int, int]:
    if k == 3 and rank == 1:
        raise ApicalError("item 3 failed")
    return k * k, rank


def _dies(k: int, rank: int) -> int:
    if rank == 1:
        os._exit(3)  # a worker killed mid-run: no result, no error message
    return k


def test_spread_gathers_in_item_order_and_names_the_failing_rank() -> None:
    out, world = spread(3, lambda k, rank: (k * k, rank), 2)
    assert world == 2 and out == [(0, 0), (1, 1), (4, 0)]
    out, world = spread(2, lambda k, rank: k, 8)  # more workers than items: one per item
    assert world == 2 and out == [0, 1]
    with pytest.raises(ApicalError, match="rank 1: item 3 failed"):
        spread(4, _square, 2)
    with pytest.raises(ApicalError, match="a worker died"):
        spread(4, _dies, 2)


def test_torchrun_environment_is_recognised() -> None:
    assert launched_by_torchrun({"TORCHELASTIC_RUN_ID": "x"})
    assert launched_by_torchrun({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "h"})
    assert not launched_by_torchrun({"RANK": "1"})


def test_workers_field_and_flag_are_validated(tmp_path) -> None:
    d = config_to_dict(_cfg())
    d["train"]["workers"] = 0
    with pytest.raises(ApicalError, match=r"train\.workers"):
        parse_config(d, "x.yaml")
    from apical.flows.cli import main

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(config_to_dict(_cfg())))
    assert main(["train", str(p), "--out", str(tmp_path / "r"), "--workers", "0"]) == 1


@pytest.mark.slow
def test_same_command_under_torchrun_gives_the_same_ir(tmp_path) -> None:
    cfg = _cfg()
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(config_to_dict(cfg)))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "-m", "apical.flows.cli", "train", str(p), "--out", str(tmp_path / "tr")]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
    export_run(cfg, tmp_path / "tr")
    train(cfg, tmp_path / "local", progress=False)
    export_run(cfg, tmp_path / "local")
    a, b = _weights(tmp_path / "tr"), _weights(tmp_path / "local")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "tr" / "train.json").read_text())["workers"] == 2


@pytest.mark.slow
def test_flow_runs_unchanged_on_a_decoupled_model(tmp_path, capsys) -> None:
    """export, verify, RTL, simulation (Icarus) and energy on a net trained decoupled over 2 workers."""
    from apical.flows.cli import main

    d = config_to_dict(_cfg(workers=2, epochs=3))
    d["hardware"].update({"pes": 2, "sim_samples": 3, "simulator": "icarus"})
    d["energy"].update({"table": "horowitz-45nm", "baseline": False})
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(d))
    run = tmp_path / "run"
    rc = main(["run", str(p), "--out", str(run), "--to", "energy"])
    assert rc == 0, capsys.readouterr().err
    read = lambda name: json.loads((run / name).read_text())  # noqa: E731
    assert read("train.json")["mode"] == "decoupled" and read("train.json")["workers"] == 2
    assert read("verify.json")["bit_exact"] is True
    sim = read("sim.json")
    assert sim["bit_exact"] is True and sim["counters_match"] is True
    assert read("energy.json")["rtl_matches_golden"] is True
