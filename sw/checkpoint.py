"""Checkpoints: the trained model's state with the config it was built from.

Format (docs/contracts.md): ``{"format": "apical-checkpoint", "version": 1,
"config": <plain dict>, "config_hash": str, "model_kind": str, "dims": {...},
"state_dict": {...}}``, written atomically, read with ``weights_only=True``.
A missing, truncated, corrupt or mismatched checkpoint raises `ApicalError`
naming the file.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from apical.sw.atomic import atomic_write_bytes
from apical.sw.config import MAX_WIDTH, Config, config_hash, config_to_dict, parse_config
from apical.sw.errors import ApicalError
from apical.sw.models import ApicalNet, ModelDims, build_model
from apical.sw.schema import show

__all__ = ["CHECKPOINT", "FORMAT", "VERSION", "load_model", "save_checkpoint"]

FORMAT = "apical-checkpoint"
VERSION = 1
CHECKPOINT = "checkpoint.pt"
MAX_CHECKPOINT_BYTES = 1 << 30  # the largest model a config allows is far smaller


def save_checkpoint(path: str | Path, cfg: Config, model: ApicalNet) -> Path:
    """Write ``model``'s state and ``cfg`` atomically to ``path``."""
    d = model.dims
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "config": config_to_dict(cfg),
        "config_hash": config_hash(cfg),
        "model_kind": model.kind,
        "dims": {"x_dim": d.x_dim, "ctx_dim": d.ctx_dim, "num_classes": d.num_classes},
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _field(blob: dict[str, Any], key: str, tp: type, path: Path) -> Any:
    if key not in blob:
        raise ApicalError(f"{path}: checkpoint field {key!r} missing")
    v = blob[key]
    if not isinstance(v, tp) or (tp is int and isinstance(v, bool)):
        raise ApicalError(f"{path}: checkpoint field {key!r} has the wrong type ({type(v).__name__})")
    return v


def _dims(raw: dict[str, Any], path: Path) -> ModelDims:
    try:
        ctx = raw["ctx_dim"]
        dims = ModelDims(x_dim=int(raw["x_dim"]), ctx_dim=None if ctx is None else int(ctx),
                         num_classes=int(raw["num_classes"]))
    except (KeyError, TypeError, ValueError):
        raise ApicalError(f"{path}: checkpoint field 'dims' is malformed") from None
    if dims.x_dim < 1 or dims.num_classes < 2 or (dims.ctx_dim is not None and dims.ctx_dim < 1):
        raise ApicalError(f"{path}: checkpoint field 'dims' holds impossible sizes {show(raw)}")
    # Checked before the model is built (its weights are allocated from these sizes).
    if dims.x_dim > MAX_WIDTH or (dims.ctx_dim or 0) > MAX_WIDTH or dims.num_classes > MAX_WIDTH:
        raise ApicalError(f"{path}: checkpoint field 'dims' holds sizes beyond {MAX_WIDTH}: {show(raw)}")
    return dims


def load_model(run_dir: str | Path) -> tuple[Config, ApicalNet]:
    """Rebuild the trained model of a run directory (eval mode) and its config."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise ApicalError(f"{path}: checkpoint missing (run `apical train` first)")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise ApicalError(f"{path}: checkpoint is larger than {MAX_CHECKPOINT_BYTES} bytes")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncation/corruption surfaces as many exception types
        raise ApicalError(f"{path}: unreadable checkpoint ({type(e).__name__})") from None
    if not isinstance(blob, dict):
        raise ApicalError(f"{path}: not an apical checkpoint (top level is {type(blob).__name__})")
    if blob.get("format") != FORMAT:
        raise ApicalError(f"{path}: format: expected {FORMAT!r}, got {blob.get('format')!r}")
    if blob.get("version") != VERSION:
        raise ApicalError(f"{path}: version: unsupported {blob.get('version')!r} (this apical reads {VERSION})")
    raw_cfg = _field(blob, "config", dict, path)
    cfg = parse_config(raw_cfg, f"{path}:config")
    if _field(blob, "config_hash", str, path) != config_hash(cfg):
        raise ApicalError(f"{path}: config_hash does not match the stored config")
    kind = _field(blob, "model_kind", str, path)
    if kind != cfg.model.kind.value:
        raise ApicalError(f"{path}: model_kind {kind!r} != config model.kind {cfg.model.kind.value!r}")
    dims = _dims(_field(blob, "dims", dict, path), path)
    state = _field(blob, "state_dict", dict, path)
    model = build_model(cfg, dims)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise ApicalError(f"{path}: state_dict does not fit a {kind} model: {what}")
    for k, v in expected.items():
        got = state[k]
        if not isinstance(got, torch.Tensor) or got.shape != v.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ApicalError(f"{path}: state_dict[{k!r}]: shape {shape} != expected {tuple(v.shape)}")
    model.load_state_dict(state, strict=True)
    model.eval()
    return cfg, model
