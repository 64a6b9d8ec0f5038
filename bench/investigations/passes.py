"""The CPU kernel's upward and downward passes timed apart, on one thread and on all.

    python bench/investigations/passes.py [--sizes 64x256,16x1024] [--rounds 15] [--dtype float64|float32]

A step of the kernel is one pass, upward and downward in turn (docs/design.md,
"The one-pass fused step"); the two passes do different work (going up the
new prefix chain on n rows, going down two suffix chains on d_y rows) with
different loops, so their rates tell where a step's time goes. For each size
(L x m, the benchmark problem of peers.py) one state per thread mode (one
thread, all threads: forced, as ``--mode`` of ab.py) is built and warmed up;
then, round after round and the two states in alternation, one upward and
one downward step are timed, each as its own ``run_steps`` call. Prints min
and median ms per pass and the GFLOP/s of the min (the pass's floor flops:
report.pass_flops).

Each timing includes one Python call of ``run_steps`` (tens of
microseconds): use it on nets whose passes take milliseconds.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent), str(pathlib.Path(__file__).resolve().parents[1])]

import ab  # noqa: E402
import machine  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402

from fastlin.kernels import COMPLETED  # noqa: E402

MODES = ("one", "all")


def timed_pass(cpu, state) -> tuple[int, float]:
    """Run one step (one pass) of ``state``: (the phase it ran, 0 up or 1 down; its seconds)."""
    phase = state.phase
    start = time.perf_counter()
    _, status = cpu.run_steps(state, np.zeros(1), -np.inf)
    elapsed = time.perf_counter() - start
    if status != COMPLETED:
        raise SystemExit("passes.py: the net diverged while being timed; try fewer rounds")
    return phase, elapsed


def time_passes(problem, rounds: int) -> dict[str, np.ndarray]:
    """Seconds per upward and per downward pass of ``problem`` (V, X, Y, eta) for each thread mode.

    Returns {mode: array (2, rounds)}, row 0 the upward passes, row 1 the downward ones.
    """
    from fastlin.kernels import cpu
    V, X, Y, eta = problem
    states = {}
    for mode in MODES:
        state = cpu.init_state([v.copy() for v in V], X, Y, eta)
        state.mode = mode
        cpu.run_steps(state, np.zeros(4), -np.inf)  # compile, warm up; an even count: next pass goes up
        states[mode] = state
    times = {mode: np.zeros((2, rounds)) for mode in MODES}
    machine.settle_cores()
    for j in range(rounds):
        for mode in (MODES if j % 2 == 0 else MODES[::-1]):
            for _ in range(2):
                phase, seconds = timed_pass(cpu, states[mode])
                times[mode][phase, j] = seconds
    return times


def main(argv=None):
    parser = ab.timing_parser(__doc__, "64x256,16x1024", "LxM,... (default: 64x256,16x1024)",
                              15, "timed passes per direction and mode")
    args = ab.parse_timing(parser, argv, "passes.py")
    sizes = ab.parse_sizes(args.sizes)
    print(f"CPU kernel passes, {args.dtype}, {args.rounds} rounds; ms per pass (min, median), GFLOP/s at the min")
    print(f"{'L':>4} {'m':>5} {'threads':>7} {'up min':>9} {'up med':>9} {'GFLOP/s':>8}"
          f" {'down min':>9} {'down med':>9} {'GFLOP/s':>8}")
    for L, m in sizes:
        problem = peers.make_problem(L, m, args.dtype)
        V, X, Y, _ = problem
        flops = report.pass_flops([X.shape[0]] + [v.shape[0] for v in V], X.shape[1], Y.shape[0])
        times = time_passes(problem, args.rounds)
        for mode in MODES:
            cells = []
            for phase in (0, 1):
                t = times[mode][phase]
                cells.append(f"{t.min() * 1e3:9.4g} {np.median(t) * 1e3:9.4g} {flops[phase] / t.min() / 1e9:8.1f}")
            print(f"{L:4d} {m:5d} {mode:>7} {cells[0]} {cells[1]}", flush=True)


if __name__ == "__main__":
    main()
