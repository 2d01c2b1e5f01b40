"""Data sets: the multimodal digits task and loaders for user data (.npz, IDX).

`load_dataset(cfg)` returns a `Dataset` of three frozen splits (train, val,
test). Each split holds the driving view ``x`` (float32 [N, D_x], values in
[0, 1]), the context modality ``ctx`` (float32 [N, D_c] in [0, 1], or None)
and labels ``y`` (int64 [N]). Splits are stratified and seeded by
``cfg.seed``, so the same config always yields the same arrays. Every fault in
user data raises `ApicalError` naming the file and the array. Nothing is
downloaded: the digits come bundled with scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from apical.sw.config import Config, ContextCode, DataSource
from apical.sw.errors import ApicalError
from apical.sw.safeio import MAX_ARRAY_BYTES, load_npz, read_bytes

__all__ = ["Dataset", "Split", "context_transform", "empty_context", "load_dataset", "read_idx"]

MAX_CLASSES = 1024  # a label above this is a data fault, not a class


@dataclass(frozen=True, eq=False)
class Split:
    """One split: driving view, optional context view, labels."""

    x: np.ndarray  # float32 [N, D_x] in [0, 1]
    ctx: np.ndarray | None  # float32 [N, D_c] in [0, 1] or None
    y: np.ndarray  # int64 [N]

    def __post_init__(self) -> None:
        for a in (self.x, self.ctx, self.y):
            if a is not None:
                a.setflags(write=False)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)
class Dataset:
    train: Split
    val: Split
    test: Split
    num_classes: int

    @property
    def x_dim(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def ctx_dim(self) -> int | None:
        return None if self.train.ctx is None else int(self.train.ctx.shape[1])


# --------------------------------------------------------------------------- splitting


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent generator per (seed, purpose), so one draw never shifts another."""
    return np.random.default_rng([seed % (1 << 32), stream])


def _split_indices(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int,
                   source: str = "data") -> tuple[np.ndarray, ...]:
    """Stratified, seeded train/val/test indices (each class split in the same proportions)."""
    rng = _rng(seed, 1)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    out = tuple(np.sort(np.concatenate(p)) for p in parts)
    for name, p in zip(("train", "val", "test"), out, strict=True):
        if p.size == 0:
            raise ApicalError(
                f"{source}: {name} split is empty ({y.size} samples, val_fraction {val_fraction}, "
                f"test_fraction {test_fraction}): give more samples or larger fractions"
            )
    return out


def context_transform(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed random transform of the context modality: a permutation and a sign per feature.

    ``data.context_code: sparse`` (default): a feature ``v`` in [0, 1] becomes
    ``(0.75 + 0.25 * sign) * v[perm]``, a permutation and a per-feature gain of
    1 or 0.5: no pixel in its original place or scale, and a blank pixel stays
    0 (no event). ``offset``: ``0.5 + 0.5 * sign * v[perm]``, which carries the
    polarity too but maps a blank pixel to 0.5, so every context input fires.
    Either way the context view stays in [0, 1] and quantizes like the driving view.
    """
    rng = _rng(seed, 0xC0)
    perm = rng.permutation(dim)
    sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=dim)
    return perm, sign


def empty_context(cfg: Config, shape: tuple[int, int]) -> np.ndarray:
    """What the context view is when it carries nothing: zeros, or 0.5 under the offset code."""
    fill = 0.5 if (cfg.data.source is DataSource.DIGITS and cfg.data.context_code is ContextCode.OFFSET) else 0.0
    return np.full(shape, fill, dtype=np.float32)


def _partner(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each sample, the index of another sample of the same class (itself only if alone)."""
    out = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) == 1:
            out[idx] = idx
            continue
        # A random offset in [1, n) around the class's member list never lands on itself.
        offs = rng.integers(1, len(idx), size=len(idx))
        out[idx] = idx[(np.arange(len(idx)) + offs) % len(idx)]
    return out


def _digits_split(clean: np.ndarray, y: np.ndarray, cfg: Config, rng: np.random.Generator,
                  perm: np.ndarray, sign: np.ndarray) -> Split:
    d = cfg.data
    x = clean + rng.normal(0.0, d.noise, size=clean.shape) if d.noise > 0 else clean.copy()
    x = np.clip(x, 0.0, 1.0).astype(np.float32)
    ctx = None
    if d.context:
        other = clean[_partner(y, rng)][:, perm]
        if d.context_code is ContextCode.SPARSE:
            z = (0.75 + 0.25 * sign[None, :]) * other
            # The sensor is silent where there is nothing: noise perturbs only features with content.
            noise = rng.normal(0.0, d.context_noise, size=z.shape) if d.context_noise > 0 else 0.0
            z = np.where(other > 0, np.clip(z + noise, 1.0 / 16, 1.0), 0.0)
        else:
            z = 0.5 + 0.5 * sign[None, :] * other
            if d.context_noise > 0:
                z = z + rng.normal(0.0, d.context_noise, size=z.shape)
        ctx = np.clip(z, 0.0, 1.0).astype(np.float32)
    return Split(x=x, ctx=ctx, y=y.astype(np.int64))


def _load_digits(cfg: Config) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    clean = (np.asarray(bunch.data, dtype=np.float64) / 16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    clean, _, y = _subsample(clean, None, y, cfg)
    tr, va, te = _split_indices(y, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    perm, sign = context_transform(clean.shape[1], cfg.seed)
    # One generator per split, so a split's noise does not depend on the other splits' sizes.
    splits = [
        _digits_split(clean[i], y[i], cfg, _rng(cfg.seed, k), perm, sign)
        for k, i in enumerate((tr, va, te))
    ]
    return Dataset(*splits, num_classes=int(bunch.target.max()) + 1)


def _subsample(
    x: np.ndarray, ctx: np.ndarray | None, y: np.ndarray, cfg: Config
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    n = cfg.data.max_samples
    if n is None or n >= len(y):
        return x, ctx, y
    keep = np.sort(_rng(cfg.seed, 7).permutation(len(y))[:n])
    return x[keep], None if ctx is None else ctx[keep], y[keep]


# --------------------------------------------------------------------------- user data


def _as_features(a: np.ndarray, path: Path, name: str) -> np.ndarray:
    """Flatten [N, ...] to float32 [N, D] in [0, 1]; uint8 is scaled by 1/255."""
    if a.ndim < 2:
        raise ApicalError(f"{path}: array {name!r}: must be [N, ...] with at least 2 dims, got shape {a.shape}")
    if a.shape[0] == 0 or a[0].size == 0:
        raise ApicalError(f"{path}: array {name!r}: empty (shape {a.shape})")
    if a.dtype == np.uint8:
        f = a.reshape(a.shape[0], -1).astype(np.float32) / 255.0
    elif np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
        f = a.reshape(a.shape[0], -1).astype(np.float32)
    else:
        raise ApicalError(f"{path}: array {name!r}: dtype {a.dtype} is not numeric")
    if not np.all(np.isfinite(f)):
        raise ApicalError(f"{path}: array {name!r}: contains NaN or infinity")
    if f.min() < 0.0 or f.max() > 1.0:
        raise ApicalError(
            f"{path}: array {name!r}: values must lie in [0, 1] (or be uint8), got [{f.min():g}, {f.max():g}]"
        )
    return f


def _as_labels(a: np.ndarray, path: Path, name: str) -> np.ndarray:
    if a.ndim != 1:
        raise ApicalError(f"{path}: array {name!r}: labels must be 1-D [N], got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ApicalError(f"{path}: array {name!r}: labels must be integers, got dtype {a.dtype}")
    if a.size == 0:
        raise ApicalError(f"{path}: array {name!r}: no labels")
    if a.min() < 0 or a.max() >= MAX_CLASSES:
        raise ApicalError(
            f"{path}: array {name!r}: label out of range [0, {MAX_CLASSES}): got {int(a.min())}..{int(a.max())}"
        )
    return a.astype(np.int64)


def _from_arrays(x: np.ndarray, ctx: np.ndarray | None, y: np.ndarray, cfg: Config, path: Path) -> Dataset:
    if x.shape[0] != y.shape[0]:
        raise ApicalError(f"{path}: array 'x': {x.shape[0]} samples but 'y' has {y.shape[0]}")
    if ctx is not None and ctx.shape[0] != y.shape[0]:
        raise ApicalError(f"{path}: array 'ctx': {ctx.shape[0]} samples but 'y' has {y.shape[0]}")
    num_classes = int(y.max()) + 1
    if num_classes < 2:
        raise ApicalError(f"{path}: array 'y': needs at least 2 classes, got {num_classes}")
    x, ctx, y = _subsample(x, ctx, y, cfg)
    if not cfg.data.context:
        ctx = None
    idx = _split_indices(y, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed, str(path))
    splits = [Split(x=x[i], ctx=None if ctx is None else ctx[i], y=y[i]) for i in idx]
    return Dataset(*splits, num_classes=num_classes)


def _load_npz(cfg: Config) -> Dataset:
    path = Path(cfg.data.path or "")
    # headers checked before any member is decompressed; pickles refused (apical.sw.safeio)
    arch = load_npz(path, "data file (data.path)")
    for key in ("x", "y"):
        if key not in arch:
            raise ApicalError(f"{path}: array {key!r} missing (found {sorted(arch)[:8]})")
    x_raw, y_raw, ctx_raw = arch["x"], arch["y"], arch.get("ctx")
    x = _as_features(x_raw, path, "x")
    y = _as_labels(y_raw, path, "y")
    ctx = None if ctx_raw is None else _as_features(ctx_raw, path, "ctx")
    return _from_arrays(x, ctx, y, cfg, path)


MAX_IDX_BYTES = MAX_ARRAY_BYTES  # an IDX file is read whole; the same budget as an .npz

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (MNIST format): magic ``0x0000 <dtype> <ndim>``, big-endian dims, data."""
    p = Path(path)
    raw = read_bytes(p, "IDX file", MAX_IDX_BYTES)
    if len(raw) < 4:
        raise ApicalError(f"{p}: truncated IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ApicalError(f"{p}: bad IDX magic number {raw[:4].hex()} (must start with 0000)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ApicalError(f"{p}: unknown IDX data type code 0x{code:02x}")
    if ndim < 1:
        raise ApicalError(f"{p}: IDX file declares {ndim} dimensions")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ApicalError(f"{p}: truncated IDX header (needs {head} bytes, file has {len(raw)})")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dt = _IDX_DTYPES[code]
    count = math.prod(dims)  # Python ints: a product of four u32 dims cannot overflow
    if len(raw) - head != count * dt.itemsize:
        raise ApicalError(
            f"{p}: IDX data size {len(raw) - head} bytes != dims {dims} x {dt.itemsize} bytes"
        )
    return np.frombuffer(raw, dtype=dt, count=count, offset=head).reshape(dims).astype(dt.newbyteorder("="))


def _load_idx(cfg: Config) -> Dataset:
    ipath = Path(cfg.data.path or "")
    if cfg.data.labels_path is None:
        raise ApicalError(f"{cfg.origin}: data.labels_path: required when source is idx")
    lpath = Path(cfg.data.labels_path)
    images = read_idx(ipath)
    labels = read_idx(lpath)
    x = _as_features(images, ipath, "images")
    y = _as_labels(labels, lpath, "labels")
    if x.shape[0] != y.shape[0]:
        raise ApicalError(f"{lpath}: array 'labels': {y.shape[0]} labels but {ipath} holds {x.shape[0]} images")
    return _from_arrays(x, None, y, cfg, ipath)


def load_dataset(cfg: Config) -> Dataset:
    """Load the data set the config names, split train/val/test (stratified, seeded)."""
    src = cfg.data.source
    if src is DataSource.DIGITS:
        return _load_digits(cfg)
    if src is DataSource.NPZ:
        return _load_npz(cfg)
    if src is DataSource.IDX:
        return _load_idx(cfg)
    raise ApicalError(f"{cfg.origin}: data.source: unsupported {src!r}")
