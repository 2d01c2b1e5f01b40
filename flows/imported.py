"""Test vectors for an imported model (``apical import``), which has no data set of its own.

The later steps (sim, energy) read ``test_vectors.npz``. For an imported QONNX
model the user may give integer inputs (an ``.npz`` with one array per IR input
name); otherwise seeded random in-range inputs with half of their values zero
stand in, and the summary says so. Labels are the golden model's classes: an
imported model comes with no ground truth, so no accuracy is claimed.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from apical.sw.atomic import atomic_write
from apical.sw.errors import ApicalError
from apical.sw.golden import run_golden
from apical.sw.ir import IR
from apical.sw.ir_random import random_inputs

__all__ = ["import_vectors", "write_import_vectors"]

RANDOM_SAMPLES = 64


def _read_inputs(ir: IR, path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise ApicalError(f"{path}: unreadable inputs archive ({type(e).__name__}: {e})") from None
    out = {}
    for t in ir.inputs:
        if t.name not in arrays:
            raise ApicalError(f"{path}: no array {t.name!r} for IR input {t.name} (has {sorted(arrays)})")
        a = arrays[t.name]
        if a.ndim != 2 or a.shape[1] != t.size or a.shape[0] < 1:
            raise ApicalError(f"{path}: array {t.name!r}: shape {a.shape}, expected [N, {t.size}]")
        if not np.issubdtype(a.dtype, np.integer):
            raise ApicalError(f"{path}: array {t.name!r}: must be integer, got {a.dtype}")
        out[t.name] = a.astype(np.int64)
    return out


def import_vectors(
    ir: IR, inputs: Path | None = None, *, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The test vectors (+ ``labels``) for an imported IR, and a summary of where they came from."""
    if inputs is not None:
        vectors = _read_inputs(ir, inputs)
        origin = str(inputs)
    else:
        vectors = random_inputs(np.random.default_rng(seed), ir, RANDOM_SAMPLES, zero_fraction=0.5)
        origin = f"random (seed {seed}, half zeros)"
    golden = run_golden(ir, vectors)  # also range-checks user inputs, naming the input
    arrays = {**vectors, "labels": golden.classes.astype(np.int64)}
    n = next(iter(vectors.values())).shape[0]
    return arrays, {"test_vectors": origin, "samples": int(n), "labels": "golden classes (no ground truth)"}


def write_import_vectors(run_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``run_dir/test_vectors.npz`` atomically."""

    def write(f: Any) -> None:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        f.write(buf.getvalue())

    return atomic_write(run_dir / "test_vectors.npz", write)
