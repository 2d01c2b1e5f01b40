"""Test vectors for an imported model (``apical import``), which has no data set of its own.

The later steps (sim, energy) read ``test_vectors.npz``. For an imported QONNX
model the user may give inputs: an ``.npz`` with one array per IR input name,
or a single array as ``.npy`` (one input). Integer arrays are taken as the
input quantizer's codes; float arrays are quantised with the model's own input
quantizer (`apical.sw.qonnx_io.quantize_input`: the scalar Mul/Add before the
first Quant, then the Quant). Either may have any trailing shape whose size is
the input size (``[N, 1, 28, 28]`` for a 784 input). Otherwise seeded random
in-range codes with half of their values zero stand in, and the summary says so. Labels are the golden model's classes: an
imported model comes with no ground truth, so no accuracy is claimed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from apical.sw.atomic import atomic_write
from apical.sw.errors import ApicalError
from apical.sw.golden import run_golden
from apical.sw.ir import IR
from apical.sw.ir_random import random_inputs
from apical.sw.safeio import MAX_ARRAY_BYTES, load_npz, user_path_error

__all__ = ["import_vectors", "write_import_vectors"]

RANDOM_SAMPLES = 64


def import_vectors(
    ir: IR, inputs: Path | None = None, *, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The test vectors (+ ``labels``) for an imported IR, and a summary of where they came from."""
    if inputs is not None:
        vectors, kind = user_inputs(ir, inputs)
        origin = f"{inputs} ({kind})"
    else:
        vectors = random_inputs(np.random.default_rng(seed), ir, RANDOM_SAMPLES, zero_fraction=0.5)
        origin = f"random (seed {seed}, half zeros)"
    golden = run_golden(ir, vectors)  # also range-checks user inputs, naming the input
    arrays = {**vectors, "labels": golden.classes.astype(np.int64)}
    n = next(iter(vectors.values())).shape[0]
    return arrays, {"test_vectors": origin, "samples": int(n), "labels": "golden classes (no ground truth)"}


def _load_npy(p: Path) -> np.ndarray:
    """One ``.npy`` array, its header checked (numeric dtype, bounded size) before the data is read."""
    try:
        with open(p, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, _, dtype = reader(f)
            except ValueError:
                raise ApicalError(f"{p}: inputs unreadable (not an .npy array)") from None
            if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
                raise ApicalError(f"{p}: inputs: dtype {dtype} is not numeric")
            if int(np.prod(shape)) * dtype.itemsize > MAX_ARRAY_BYTES:
                raise ApicalError(f"{p}: inputs: array larger than {MAX_ARRAY_BYTES} bytes")
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
    except OSError as e:
        raise user_path_error(p, "inputs", e) from None


def user_inputs(ir: IR, path: Path) -> tuple[dict[str, np.ndarray], str]:
    """The user's ``--inputs`` as integer codes per IR input, and whether they were codes or floats."""
    from apical.sw.qonnx_io import quantize_input

    p = Path(path)
    if not p.is_file():
        raise ApicalError(f"{p}: inputs not found" if not p.exists() else f"{p}: inputs is not a regular file")
    with open(p, "rb") as f:
        npy = f.read(6) == b"\x93NUMPY"
    if npy:
        if len(ir.inputs) != 1:
            raise ApicalError(f"{p}: one .npy array for {len(ir.inputs)} IR inputs; give an .npz")
        arrays = {ir.inputs[0].name: _load_npy(p)}
    else:
        arrays = load_npz(p, "inputs")
    out, kinds = {}, set()
    for t in ir.inputs:
        if t.name not in arrays:
            raise ApicalError(f"{p}: no array for IR input {t.name!r} (has {sorted(arrays)})")
        a = arrays[t.name]
        if a.ndim < 2 or int(np.prod(a.shape[1:])) != t.size or a.shape[0] == 0:
            raise ApicalError(f"{p}: {t.name}: must be [N, {t.size}] (or [N, ...] of {t.size} values), "
                              f"got {a.dtype} {a.shape}")
        a = a.reshape(a.shape[0], t.size)
        if np.issubdtype(a.dtype, np.floating):
            if not np.all(np.isfinite(a)):
                raise ApicalError(f"{p}: {t.name}: float inputs must be finite")
            out[t.name] = quantize_input(ir, a)
            kinds.add("float, quantised by the model's input quantizer")
        else:
            out[t.name] = a.astype(np.int64)
            kinds.add("integer codes")
    return out, ", ".join(sorted(kinds))


def write_import_vectors(run_dir: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``run_dir/test_vectors.npz`` atomically."""
    return atomic_write(run_dir / "test_vectors.npz", lambda f: np.savez(f, **arrays))
