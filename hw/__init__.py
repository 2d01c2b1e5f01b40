"""Hardware side of apical: Amaranth components of the processing-element array.

Reads the IR (`apical.sw.ir`, numpy only); never imports torch or brevitas.

- `schedule`: `compile_schedule(ir, pes)` folds the IR onto P PEs (memory images, layer program);
- `fit`: `check_fit(ir, pes, max_weight_depth=...)` rejects IRs the datapath cannot hold;
- `layouts`: named layouts of events and memory entries, the activation write signature;
- `requant`, `pe`, `scanner`, `finaliser`: the blocks; `controller` (`Controller`: the inference
  sequence), `finalise` (`FinalisePipeline`), `counters` (`CounterBank`), `output` (`OutputStage`):
  the top's parts; `top`: `ApicalTop`, which wires them behind the AXI4-Stream ports;
- `generate`: `generate_rtl(ir, pes, out_dir)` writes ``apical_top.v`` (and, for large nets, its
  memory init files; `memfiles` stages them) and returns the rtl.json summary.
"""
