"""Training step: artefacts, reproducibility, early stopping, and checkpoint loading faults."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from apical.sw.checkpoint import load_model
from apical.sw.config import config_hash, config_to_dict, load_config, parse_config
from apical.sw.data import empty_context, load_dataset
from apical.sw.errors import ApicalError
from apical.sw.train import accuracy, train


def _cfg(kind: str = "two_point", epochs: int = 2, patience: int = 5, stop_below_lr: float = 0.1, **model):
    d = config_to_dict(load_config())
    d["data"]["max_samples"] = 300
    d["model"].update({"kind": kind, "hidden": [12], "granules": 16, "modules": 2, **model})
    d["train"].update({"epochs": epochs, "batch_size": 32, "patience": patience, "stop_below_lr": stop_below_lr})
    return parse_config(d)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    cfg = _cfg()
    return cfg, d, train(cfg, d, progress=False)


def _metrics(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_time_s"}


def test_train_writes_every_artefact(run) -> None:
    cfg, d, summary = run
    assert json.loads((d / "train.json").read_text()) == json.loads(json.dumps(summary))
    assert (d / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert config_hash(parse_config(yaml.safe_load((d / "config.yaml").read_text()))) == config_hash(cfg)
    for key in ("test_acc", "val_acc", "test_acc_no_context"):
        assert 0.0 <= summary[key] <= 1.0
    assert set(summary["activation_sparsity"]) == {"tp1", "out"}
    assert all(0.0 <= v <= 1.0 for v in summary["activation_sparsity"].values())
    assert summary["params"] > summary["synapses"] > 0
    assert 1 <= summary["epochs_run"] <= cfg.train.epochs
    assert len(summary["curves"]["val_acc"]) == summary["epochs_run"]
    # the best-validation state is the one kept
    assert summary["val_acc"] == max(summary["curves"]["val_acc"]) or summary["model_kind"] == "sparse_modular"


def test_checkpoint_reloads_the_same_model(run) -> None:
    cfg, d, summary = run
    cfg2, model = load_model(d)
    assert config_hash(cfg2) == config_hash(cfg)
    ds = load_dataset(cfg2)
    assert accuracy(model, ds.test) == summary["test_acc"]
    empty = empty_context(cfg2, ds.test.ctx.shape)
    assert not empty.any()  # the sparse context code: an empty context is all zeros
    assert accuracy(model, ds.test, context=empty) == summary["test_acc_no_context"]


def test_same_config_and_seed_give_identical_metrics(run, tmp_path) -> None:
    cfg, _, first = run
    again = train(cfg, tmp_path, progress=False)
    assert _metrics(again) == _metrics(first)
    other = train(cfg.replace(seed=3), tmp_path / "s3", progress=False)
    assert _metrics(other) != _metrics(first)


def test_early_stopping_respects_patience(tmp_path) -> None:
    cfg = _cfg("sparse_modular", epochs=40, patience=1, stop_below_lr=1.0, local_loss=True)
    s = train(cfg, tmp_path, progress=False)
    assert s["epochs_run"] <= s["best_epoch"] + 1
    assert s["epochs_run"] < 40
    assert s["val_acc"] >= 0.0 and "test_acc_no_context" not in s


def test_no_early_stop_while_the_rate_is_high(tmp_path) -> None:
    epochs = 30
    cfg = _cfg("point", epochs=epochs, patience=1, stop_below_lr=0.1)
    s = train(cfg, tmp_path, progress=False)
    # cosine: lr(e) = lr0 (1 + cos(pi e / T)) / 2 <= 0.1 lr0 from e = T acos(-0.8) / pi on
    first_low = math.ceil(epochs * math.acos(-0.8) / math.pi)
    assert s["epochs_run"] >= first_low
    # the kept state is the best on validation (accuracy first)
    assert s["val_acc"] == max(s["curves"]["val_acc"])
    assert np.argmax(s["curves"]["val_acc"]) <= s["best_epoch"] - 1


def _corrupt(d, blob_change) -> None:
    blob = torch.load(d / "checkpoint.pt", weights_only=True)
    blob_change(blob)
    torch.save(blob, d / "checkpoint.pt")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda b: b.update(format="other"), "format"),
        (lambda b: b.update(version=7), "version"),
        (lambda b: b.pop("state_dict"), "'state_dict' missing"),
        (lambda b: b["state_dict"].pop("out.weight"), "missing"),
        (lambda b: b["state_dict"].update({"out.weight": torch.zeros(3, 3)}), "shape"),
        (lambda b: b["state_dict"].update({"bogus": torch.zeros(1)}), "unexpected"),
        (lambda b: b.update(config_hash="0" * 16), "config_hash"),
        (lambda b: b.update(model_kind="point"), "model_kind"),
        (lambda b: b["config"]["model"].update(hidden=[13]), "config_hash"),
        (lambda b: b.update(dims={"x_dim": 64}), "dims"),
    ],
)
def test_mismatched_checkpoint_is_one_clear_error(run, tmp_path, change, fragment) -> None:
    _, d, _ = run
    (tmp_path / "checkpoint.pt").write_bytes((d / "checkpoint.pt").read_bytes())
    _corrupt(tmp_path, change)
    with pytest.raises(ApicalError) as e:
        load_model(tmp_path)
    assert "checkpoint.pt" in str(e.value) and fragment in str(e.value)


def test_truncated_or_missing_checkpoint(run, tmp_path) -> None:
    _, d, _ = run
    with pytest.raises(ApicalError, match="missing"):
        load_model(tmp_path)
    data = (d / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ApicalError, match="unreadable"):
        load_model(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ApicalError, match="unreadable"):
        load_model(tmp_path)
