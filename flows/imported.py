"""Test vectors for an imported model (``apical import``), which has no data set of its own.

The later steps (sim, energy) read ``test_vectors.npz``. For an imported QONNX
model the user may give integer inputs (an ``.npz`` with one array per IR input
name); otherwise seeded random in-range inputs with half of their values zero
stand in, and the summary says so. Labels are the golden model's classes: an
imported model comes with no ground truth, so no accuracy is claimed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from apical.sw.atomic import atomic_write
from apical.sw.golden import run_golden
from apical.sw.ir import IR, load_inputs
from apical.sw.ir_random import random_inputs

__all__ = ["import_vectors", "write_import_vectors"]

RANDOM_SAMPLES = 64


def import_vectors(
    ir: IR, inputs: Path | None = None, *, seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The test vectors (+ ``labels``) for an imported IR, and a summary of where they came from."""
    if inputs is not None:
        vectors = load_inputs(ir, inputs, what="inputs", hint="")
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
    return atomic_write(run_dir / "test_vectors.npz", lambda f: np.savez(f, **arrays))
