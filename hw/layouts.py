"""Named layouts of the PE array's memory entries and events, and the activation write port's signature
(widths from the schedule)."""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out
from amaranth.utils import bits_for

__all__ = ["act_write_signature", "bias_layout", "event_layout", "index_layout", "requant_layout", "weight_layout"]


def event_layout(index_depth: int, value_bits: int) -> data.StructLayout:
    """An event: the index-memory address of a non-zero activation and its value."""
    return data.StructLayout({"addr": unsigned(bits_for(index_depth - 1)), "value": signed(value_bits)})


def weight_layout(acc_depth: int, weight_bits: int) -> data.StructLayout:
    """One stored synapse: PE-local accumulator address, bank (0: main/r, 1: c), weight."""
    return data.StructLayout(
        {"acc": unsigned(bits_for(acc_depth - 1)), "bank": unsigned(1), "weight": signed(weight_bits)}
    )


def index_layout(weight_depth: int, max_fanout: int) -> data.StructLayout:
    """An input's fan-out range in one PE: first weight address and synapse count."""
    return data.StructLayout({"start": unsigned(bits_for(weight_depth)), "count": unsigned(bits_for(max_fanout))})


def bias_layout(acc_bits: int) -> data.StructLayout:
    """Biases of one finalisation slot for both accumulator banks."""
    return data.StructLayout({"b0": signed(acc_bits), "b1": signed(acc_bits)})


def requant_layout(mult_bits: int, offset_bits: int) -> data.StructLayout:
    """Per-neuron requantisation of one finalisation slot for both banks: multiplier and offset."""
    return data.StructLayout({"m0": unsigned(mult_bits), "o0": signed(offset_bits),
                              "m1": unsigned(mult_bits), "o1": signed(offset_bits)})


def act_write_signature(words: int, lanes: int, act_bits: int) -> wiring.Signature:
    """A write into activation memory: word ``addr``, ``data`` (``lanes`` activations), lane enables ``en``."""
    return wiring.Signature({"addr": Out(range(words)), "data": Out(unsigned(lanes * act_bits)),
                             "en": Out(lanes)})
