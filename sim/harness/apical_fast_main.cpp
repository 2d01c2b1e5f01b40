// Verilator main of the fast-path harness: toggles the clock until the
// harness calls $finish. Plusargs reach the harness through commandArgs.
#include <memory>

#include "Vapical_fast_tb.h"
#include "verilated.h"

int main(int argc, char** argv) {
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vapical_fast_tb>(ctx.get());
    top->clk = 0;
    top->eval();
    while (!ctx->gotFinish()) {
        ctx->timeInc(5);
        top->clk = 1;
        top->eval();
        ctx->timeInc(5);
        top->clk = 0;
        top->eval();
    }
    top->final();
    return 0;
}
