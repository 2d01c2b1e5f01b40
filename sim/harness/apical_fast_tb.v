// Fast-path harness of apical_top: streams every test vector through the
// AXI4-Stream ports and writes every result, with no foreign code in the
// cycle loop. Verilog-2005. Icarus clocks it from apical_fast_clock.v; the
// build for Verilator is clocked by apical_fast_main.cpp. (No comment line may
// begin with the simulator's name: it would read it as a pragma.)
//
// Plusargs:
//   +stim=FILE     input beats, one per line: "<tlast> <tdata>" in hex, every
//                  sample's beats in stream order
//   +out=FILE      results, one line per class beat:
//                  "R <beats> <value>... <class> <cnt_cycles> <cnt_events> ..."
//                  (values unsigned decimal, raw tdata bits), then "D <cycles>"
//                  when every result came back or "T <results> <cycles>" on a timeout
//   +samples=N     results to wait for
//   +seed=S        seed of the back-pressure pattern
//   +bp=0|1        pseudo-random gaps on s_axis and ready drops on m_axis (30 %)
//   +timeout=C     cycles without a result before giving up
//
// Both streams obey AXI4-Stream: tvalid, once high, stays high with stable
// data until the handshake. Signals are driven with non-blocking assignments
// at the rising edge and the design's outputs are sampled at the same edge,
// so every handshake is seen with the values of its own cycle.
module apical_fast_tb #(parameter IN_W = 8, parameter OUT_W = 8) (input clk);
  reg rst = 1'b1;
  reg [IN_W-1:0] s_data = 0;
  reg s_valid = 1'b0, s_last = 1'b0, m_ready = 1'b0;
  wire s_ready, m_valid, m_last;
  wire [OUT_W-1:0] m_data;
  wire [31:0] cnt_cycles, cnt_events, cnt_syn_ops, cnt_weight_reads, cnt_acc_updates,
              cnt_act_reads, cnt_act_writes, cnt_requants, cnt_table_lookups;

  apical_top dut (
    .clk(clk), .rst(rst),
    .s_axis_tdata(s_data), .s_axis_tvalid(s_valid), .s_axis_tready(s_ready), .s_axis_tlast(s_last),
    .m_axis_tdata(m_data), .m_axis_tvalid(m_valid), .m_axis_tready(m_ready), .m_axis_tlast(m_last),
    .cnt_cycles(cnt_cycles), .cnt_events(cnt_events), .cnt_syn_ops(cnt_syn_ops),
    .cnt_weight_reads(cnt_weight_reads), .cnt_acc_updates(cnt_acc_updates),
    .cnt_act_reads(cnt_act_reads), .cnt_act_writes(cnt_act_writes),
    .cnt_requants(cnt_requants), .cnt_table_lookups(cnt_table_lookups)
  );

  integer stim_fd, out_fd, samples, seed, bp, timeout, rc;
  reg [8*512-1:0] stim_name, out_name;  // up to 512 characters
  // xorshift32 generators, one per stream, never zero.
  reg [31:0] lfsr_in, lfsr_out;
  integer cycles, idle, results, beats, rst_left;
  reg have, eof;
  reg [31:0] next_last, next_data;

  function [31:0] xorshift(input [31:0] x);
    reg [31:0] y;
    begin
      y = x ^ (x << 13);
      y = y ^ (y >> 17);
      xorshift = y ^ (y << 5);
    end
  endfunction

  // A pause with probability 308/1024 (the cocotb path's 0.3).
  function pause(input [31:0] x);
    pause = (x[9:0] < 10'd308);
  endfunction

  initial begin
    if (!$value$plusargs("stim=%s", stim_name)) begin $display("apical_fast_tb: +stim= missing"); $finish; end
    if (!$value$plusargs("out=%s", out_name)) begin $display("apical_fast_tb: +out= missing"); $finish; end
    if (!$value$plusargs("samples=%d", samples)) samples = 0;
    if (!$value$plusargs("seed=%d", seed)) seed = 0;
    if (!$value$plusargs("bp=%d", bp)) bp = 1;
    if (!$value$plusargs("timeout=%d", timeout)) timeout = 1000000;
    stim_fd = $fopen(stim_name, "r");
    out_fd = $fopen(out_name, "w");
    if (stim_fd == 0 || out_fd == 0) begin $display("apical_fast_tb: cannot open the stimulus or result file"); $finish; end
    lfsr_in = xorshift((seed * 32'd2654435761) ^ 32'h9e3779b9) | 32'd1;
    lfsr_out = xorshift(((seed + 1) * 32'd2654435761) ^ 32'h7f4a7c15) | 32'd1;
    cycles = 0; idle = 0; results = 0; beats = 0; rst_left = 4;
    have = 1'b0; eof = 1'b0;
  end

  always @(posedge clk) begin
    if (rst_left > 0) begin
      rst_left = rst_left - 1;
      if (rst_left == 0) rst <= 1'b0;
    end else begin
      cycles = cycles + 1;
      idle = idle + 1;
      lfsr_in = xorshift(lfsr_in);
      lfsr_out = xorshift(lfsr_out);
      // Input side: a beat leaves on a handshake; tvalid may only change when
      // low or on that handshake.
      if (s_valid && s_ready) have = 1'b0;
      if (!s_valid || s_ready) begin
        if (!have && !eof) begin
          rc = $fscanf(stim_fd, "%h %h\n", next_last, next_data);
          if (rc == 2) have = 1'b1; else eof = 1'b1;
          if (have) begin s_data <= next_data[IN_W-1:0]; s_last <= next_last[0]; end
        end
        s_valid <= have && !(bp != 0 && pause(lfsr_in));
      end
      // Output side: every beat written; the class beat (tlast) ends the line
      // with the counters of the same cycle.
      if (m_valid && m_ready) begin
        if (beats == 0) $fwrite(out_fd, "R");
        beats = beats + 1;
        $fwrite(out_fd, " %0d", m_data);
        if (m_last) begin
          $fwrite(out_fd, " %0d %0d %0d %0d %0d %0d %0d %0d %0d ; %0d\n", cnt_cycles, cnt_events, cnt_syn_ops,
                  cnt_weight_reads, cnt_acc_updates, cnt_act_reads, cnt_act_writes, cnt_requants,
                  cnt_table_lookups, beats);
          beats = 0;
          results = results + 1;
          idle = 0;
        end
      end
      m_ready <= !(bp != 0 && pause(lfsr_out));
      if (results >= samples) begin
        $fwrite(out_fd, "D %0d\n", cycles);
        $fclose(out_fd);
        $finish;
      end else if (idle > timeout) begin
        $fwrite(out_fd, "T %0d %0d\n", results, cycles);
        $fclose(out_fd);
        $finish;
      end
    end
  end
endmodule
