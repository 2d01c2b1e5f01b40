"""The like-for-like point-neuron baselines of a config: what they see and how they are sized.

A two-point net sees two views; an honest baseline sees what it sees. For a
config with a point baseline (``energy.baseline``), `baselines(cfg)` gives the
point nets it is compared with, each with its run sub-directory:

- ``baseline`` (``driving``): the driving view alone;
- ``baseline_both`` (``both``): both views concatenated (early fusion), only
  when the net has a context modality. This is the headline baseline.

Both share the config's data, noise, seed, bits and training. Hidden widths are
the config's (``energy.baseline_match: hidden``) or scaled so that the number of
synaptic parameters (weights and biases of every layer) matches the compared
net's (``params``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from apical.sw.config import BaselineMatch, Config, ModelKind, Views
from apical.sw.errors import ApicalError

__all__ = ["HEADLINE_ORDER", "Baseline", "baselines", "linear_params", "point_params"]


@dataclass(frozen=True)
class Baseline:
    """One point baseline: its name (``driving``/``both``), run sub-directory and config."""

    name: str
    subdir: str
    cfg: Config


# The headline baseline is the first of these that a run has.
HEADLINE_ORDER: tuple[str, ...] = ("both", "driving")
SUBDIRS = {"driving": "baseline", "both": "baseline_both"}


def point_params(in_dim: int, hidden: tuple[int, ...], classes: int) -> int:
    """Weights and biases of a point MLP ``in_dim -> hidden... -> classes``."""
    total, width = 0, in_dim
    for h in (*hidden, classes):
        total += (width + 1) * h
        width = h
    return total


def linear_params(cfg: Config) -> int:
    """Weights and biases of every linear layer of the model ``cfg`` builds on its data."""
    from brevitas.nn import QuantLinear

    from apical.sw.models import build_model

    model = build_model(cfg)
    return int(sum(p.numel() for m in model.modules() if isinstance(m, QuantLinear)
                   for p in (m.weight, m.bias) if p is not None))


def _matched_hidden(target: int, in_dim: int, hidden: tuple[int, ...], classes: int) -> tuple[int, ...]:
    """``hidden`` scaled by one factor so a point MLP's parameter count is closest to ``target``."""
    def widths(s: float) -> tuple[int, ...]:
        return tuple(max(1, min(4096, round(h * s))) for h in hidden)

    lo, hi = 1e-3, 4096.0 / min(hidden)
    for _ in range(60):  # bisection on the (monotone) parameter count
        mid = (lo + hi) / 2
        if point_params(in_dim, widths(mid), classes) < target:
            lo = mid
        else:
            hi = mid
    cands = {widths(lo), widths(hi)}
    return min(cands, key=lambda w: (abs(point_params(in_dim, w, classes) - target), w))


def _has_context(cfg: Config) -> bool:
    return cfg.model.kind is ModelKind.TWO_POINT and cfg.model.context and cfg.data.context


def baselines(cfg: Config, *, force: bool = False) -> tuple[Baseline, ...]:
    """The point baselines ``cfg`` is compared with: none for a point net, nor without
    ``energy.baseline`` unless ``force``. Only the model section changes (a point model
    has no baseline of its own), so the flow still records which fields a baseline reads."""
    if (not cfg.energy.baseline and not force) or cfg.model.kind is ModelKind.POINT:
        return ()
    views = [Views.DRIVING] + ([Views.BOTH] if _has_context(cfg) else [])
    dims = None
    if cfg.energy.baseline_match is BaselineMatch.PARAMS:
        from apical.sw.models import dims_of

        dims = dims_of(cfg)
        target = linear_params(cfg)
    out = []
    for v in views:
        hidden = cfg.model.hidden
        if dims is not None:
            in_dim = dims.x_dim + ((dims.ctx_dim or 0) if v is Views.BOTH else 0)
            hidden = _matched_hidden(target, in_dim, hidden, dims.num_classes)
        model = dataclasses.replace(cfg.model, kind=ModelKind.POINT, views=v, hidden=hidden)
        try:
            bcfg = dataclasses.replace(cfg, name=f"{cfg.name}-baseline-{v.value}", model=model)
        except ValueError as e:  # a frozen section's own validation
            raise ApicalError(f"{cfg.origin}: baseline {v.value}: {e}") from None
        out.append(Baseline(v.value, SUBDIRS[v.value], bcfg))
    return tuple(out)
