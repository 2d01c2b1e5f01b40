"""Cross-check of apical's NeuroBench-style metrics with the ``neurobench`` package itself.

`neurobench_crosscheck(ir, inputs)` builds `IRMirror`, a torch model of the
integer network (one ``nn.Linear`` per site holding the integer weights, the
golden requantisation and two-point table between them), runs the
``neurobench`` Benchmark on it (static: Footprint, ConnectionSparsity;
workload: ActivationSparsity, SynapticOperations) over the given integer
inputs, and sets each figure beside apical's own (`neurobench_metrics`, from
the golden counts). The mirror's accumulators are checked against the golden
model's on every value first, so both tools measure the same network.

Definitions (docs/energy.md):

* synaptic operations: neurobench counts, per ``nn.Linear``, non-zero input x
  non-zero weight pairs (its ``Effective_MACs``, or ``Effective_ACs`` when the
  layer's inputs are all in {-1, 0, 1}); apical counts each event's stored
  fan-out, zero weights dropped at export. Equal for an ungated network.
  Context gating (``gate`` in the IR) skips synapses neurobench still counts:
  the cross-check uses the ungated network and reports the gated count beside;
* connection sparsity: zeros / all weights of the dense matrices (neurobench
  rounds to 4 decimals);
* activation sparsity: zeros / all values of the tensors probed: every network
  input and every layer output (an identity probe module registered with
  ``add_activation_module``), as apical's ``activation_sparsity``;
* footprint differs by definition: neurobench counts the bytes of the torch
  parameters (a dense float64 matrix per site); apical counts the bits of the
  memories the PE array initialises (sparse, packed words).

``neurobench`` 2.3.0 declares torchaudio, snntorch and numba as dependencies;
its metrics import only torch and snntorch, so apical installs it with
``--no-deps`` beside ``snntorch`` (``requirements-nodeps.txt``), keeping the
pinned torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from apical.flows.metrics import neurobench_metrics
from apical.hw.schedule import compile_schedule
from apical.sw.atomic import atomic_write_json
from apical.sw.errors import ApicalError, CheckFailed
from apical.sw.golden import GoldenResult, modulate, requantize, run_golden
from apical.sw.ir import IR

__all__ = ["IRMirror", "Probe", "neurobench_crosscheck", "neurobench_run", "require_neurobench"]

_INSTALL = "pip install --no-deps -r requirements-nodeps.txt (neurobench==2.3.0 snntorch==1.0.0 tqdm==4.70.1)"


def require_neurobench(command: str) -> None:
    """Raise `ApicalError` with the install line when neurobench or snntorch is missing."""
    for module in ("neurobench", "snntorch", "tqdm"):
        if importlib.util.find_spec(module) is None:
            raise ApicalError(f"{command} needs {module}, which is not installed: {_INSTALL}")


class Probe(nn.Module):
    """Identity; registered as an activation module so neurobench records the tensor through it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class IRMirror(nn.Module):
    """The integer network of an IR as a torch model: exact, float64, for measuring only.

    Input: float64 ``[N, sum of input sizes]``, the IR inputs concatenated in
    ``ir.inputs`` order. Output: the last layer's integer outputs as float64.
    Each site is an ``nn.Linear`` (no bias: the bias is added in int64 after it,
    so neurobench counts only synapses); values between layers pass through
    `Probe` modules. ``accs`` keeps every forward's accumulators, in call order, for checking.
    """

    def __init__(self, ir: IR) -> None:
        super().__init__()
        self.ir = ir
        self.sites = nn.ModuleDict()
        self.probes = nn.ModuleDict({t.name: Probe() for t in ir.inputs})
        for layer in ir.layers:
            for key, site in layer.sites.items():
                lin = nn.Linear(site.in_size, layer.size, bias=False, dtype=torch.float64)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(site.dense_weights(layer.size).astype(np.float64)))
                self.sites[f"{layer.name}__{key}"] = lin
            self.probes[layer.name] = Probe()
        self.accs: dict[tuple[str, str], list[np.ndarray]] = {}

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        tensors: dict[str, torch.Tensor] = {}
        start = 0
        for t in self.ir.inputs:
            tensors[t.name] = self.probes[t.name](batch[:, start : start + t.size])
            start += t.size
        for layer in self.ir.layers:
            vals = {}
            for key, site in layer.sites.items():
                x = torch.cat([tensors[s] for s in site.sources], dim=1)
                with torch.no_grad():
                    acc = self.sites[f"{layer.name}__{key}"](x).numpy().astype(np.int64)
                acc = acc + site.bias.astype(np.int64)[None, :]
                self.accs.setdefault((layer.name, key), []).append(acc)
                vals[key] = requantize(acc, site)
            if layer.kind == "dense":
                out = vals["main"]
            else:
                assert layer.table is not None
                out = modulate(layer.table, vals["r"], vals["c"], layer.sites["r"], layer.sites["c"])
            tensors[layer.name] = self.probes[layer.name](torch.from_numpy(out.astype(np.float64)))
        return tensors[self.ir.layers[-1].name]


def _exact_width(ir: IR) -> None:
    for layer in ir.layers:
        for key, site in layer.sites.items():
            if site.acc_bits > 52:
                raise ApicalError(f"neurobench: layer {layer.name} site {key}: acc_bits {site.acc_bits} > 52")


def _run_benchmark(mirror: IRMirror, batch: torch.Tensor, labels: torch.Tensor, batch_size: int) -> dict[str, Any]:
    from neurobench.benchmarks import Benchmark
    from neurobench.metrics.static import ConnectionSparsity, Footprint
    from neurobench.metrics.workload import ActivationSparsity, SynapticOperations
    from neurobench.models import TorchModel

    model = TorchModel(mirror)
    model.add_activation_module(Probe)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(batch, labels), batch_size=batch_size)
    bench = Benchmark(model, loader, [], [], [[Footprint, ConnectionSparsity], [ActivationSparsity, SynapticOperations]])
    return bench.run(quiet=True)


def _check_accs(mirror: IRMirror, golden: GoldenResult) -> None:
    for key, acc in golden.accs.items():
        parts = mirror.accs.get(key)
        got = np.concatenate(parts) if parts else None
        if got is None or got.shape != acc.shape or not np.array_equal(got, acc):
            raise CheckFailed(f"neurobench: the torch mirror's accumulators differ from golden at {key}")


def neurobench_crosscheck(ir: IR, inputs: dict[str, np.ndarray], *, batch_size: int = 256) -> dict[str, Any]:
    """neurobench's figures for ``ir`` on ``inputs`` beside apical's, and whether they agree.

    Returns ``{"neurobench": {...}, "apical": {...}, "agree": {metric: bool},
    "samples": N}``; ``apical`` also carries ``gated_syn_ops_per_inference``
    when the IR is gated. Raises `CheckFailed` when the mirror's accumulators
    differ from golden (the two tools would not measure the same network).
    """
    require_neurobench("neurobench cross-check")
    _exact_width(ir)
    plain = ir.ungated()
    golden = run_golden(plain, inputs)
    mine = neurobench_metrics(plain, golden, compile_schedule(plain, 1), inputs=inputs)
    n = int(golden.classes.shape[0])
    batch = torch.from_numpy(np.concatenate([inputs[t.name] for t in ir.inputs], axis=1).astype(np.float64))
    mirror = IRMirror(plain)
    results = _run_benchmark(mirror, batch, torch.from_numpy(golden.classes), batch_size)
    _check_accs(mirror, golden)
    syn = results["SynapticOperations"]
    theirs = {
        "footprint_bytes": int(results["Footprint"]),
        "connection_sparsity": float(results["ConnectionSparsity"]),
        "activation_sparsity": float(results["ActivationSparsity"]),
        "effective_syn_ops_per_inference": float(syn["Effective_MACs"]) + float(syn["Effective_ACs"]),
        "dense_syn_ops_per_inference": float(syn["Dense"]),
    }
    ours = {k: mine[k] for k in theirs}
    if ir.gated:
        ours["gated_syn_ops_per_inference"] = float(
            np.mean(sum(run_golden(ir, inputs).counts[layer.name]["syn_ops"] for layer in ir.layers))
        )
    eff = round(theirs["effective_syn_ops_per_inference"] * n)
    agree = {
        "effective_syn_ops_per_inference": eff == round(mine["effective_syn_ops_per_inference"] * n),
        "dense_syn_ops_per_inference": theirs["dense_syn_ops_per_inference"] == mine["dense_syn_ops_per_inference"],
        "connection_sparsity": abs(theirs["connection_sparsity"] - mine["connection_sparsity"]) <= 5e-5,
        "activation_sparsity": abs(theirs["activation_sparsity"] - mine["activation_sparsity"]) < 1e-12,
    }
    return {"neurobench": theirs, "apical": ours, "agree": agree, "samples": n}


def neurobench_run(run_dir: Path, *, samples: int = 0) -> dict[str, Any]:
    """`neurobench_crosscheck` on an exported run's IR and test vectors; writes ``neurobench.json``.

    ``samples``: the first N test samples (0: all). Writes the summary, then
    raises `CheckFailed` when a figure disagrees.
    """
    from apical.flows.energy import load_test_inputs
    from apical.sw.ir import load_ir

    if samples < 0:
        raise ApicalError(f"neurobench: --samples must be >= 0, got {samples}")
    ir_dir, vectors = run_dir / "ir", run_dir / "test_vectors.npz"
    for p in (ir_dir, vectors):
        if not p.exists():
            raise ApicalError(f"{p}: missing (run `apical export {run_dir}` first)")
    ir = load_ir(ir_dir)
    inputs = load_test_inputs(ir, vectors)
    if samples:
        inputs = {k: v[:samples] for k, v in inputs.items()}
    summary = {"neurobench_version": _version(), **neurobench_crosscheck(ir, inputs)}
    atomic_write_json(run_dir / "neurobench.json", summary)
    bad = sorted(k for k, ok in summary["agree"].items() if not ok)
    if bad:
        raise CheckFailed(f"neurobench: {', '.join(bad)} disagree with apical's (see {run_dir / 'neurobench.json'})")
    return summary


def _version() -> str:
    from importlib.metadata import version

    return version("neurobench")
