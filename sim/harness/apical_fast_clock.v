// Icarus top of the fast-path harness: a free-running clock. The Verilator
// build has none: apical_fast_main.cpp toggles the clock, faster than timed events.
module apical_fast_clock;
  parameter IN_W = 8;
  parameter OUT_W = 8;
  reg clk = 1'b0;
  always #5 clk = ~clk;
  apical_fast_tb #(.IN_W(IN_W), .OUT_W(OUT_W)) tb (.clk(clk));
endmodule
