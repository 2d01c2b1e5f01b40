"""Action counters shared by the golden model, the RTL counters and the energy model.

Per layer and per sample (the golden model) or summed over layers per inference
(the hardware counters), with exactly these meanings:

- ``events``: non-zero activations among a layer's site inputs, summed over
  sites (a tensor feeding two sites counts in each);
- ``syn_ops``: synapses walked, the sum over events of their fan-out length
  (one multiply-accumulate each);
- ``weight_reads``: weight-memory reads, equal to ``syn_ops``;
- ``acc_updates``: accumulator updates, equal to ``syn_ops``;
- ``act_reads``: activations read to find the events, the sum over sites of
  the site's input size;
- ``act_writes``: layer outputs written, the layer size;
- ``requants``: requantizations, layer size times number of sites;
- ``table_lookups``: modulation-table reads, the layer size for two-point
  layers, else 0.

The hardware also counts ``cycles`` (compute cycles of one inference), which
has no golden counterpart.
"""

COUNTER_BITS = 32
"""Width of every hardware counter (the top level's ``cnt_*`` ports, docs/contracts.md)."""

COUNTERS: tuple[str, ...] = (
    "events",
    "syn_ops",
    "weight_reads",
    "acc_updates",
    "act_reads",
    "act_writes",
    "requants",
    "table_lookups",
)
