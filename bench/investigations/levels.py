"""One core's layer sweeps against its multiply-add peak, as the weights outgrow each cache level.

    python bench/investigations/levels.py [--sizes 256,1024] [--rounds 9] [--dtype float64|float32]

For each width m, the CPU kernel's sweep of an m-column layer in each
direction, on one thread, as in a step: going up ``up_rows`` (old chain,
update, new chain, tile by tile), going down ``down_cols`` where the kernel
sweeps that width by columns, else ``down_rows``. Each is timed on three
working sets (``working_sets``): a block that fits L1 (16 KiB of whole
rows, at least a row tile, or of whole column strips for a sweep by
columns), one m x m layer (the L2 or L3), and m x m layers totalling
MEMORY_BYTES (memory), swept one after the other as a pass does. The chains
and factors have the benchmark problem's shapes (n = 16 columns, d_y = 10
rows, rank r = 10). Prints GFLOP/s (the floor flops of report.pass_flops:
72 per weight going up, 60 going down) and their fraction of one core's
peak, ``fma_peak``: multiply-adds on five independent register accumulators
(llvm.Vec), the most these kernels' inner loops could issue. The peak is
measured again just before each sweep, since on a shared VM a core's speed
can change within minutes.

Where the L1 column is near the peak and the memory one is not, a pass
loses its time to moving the weights, not to its arithmetic. Times are the
min over rounds of one call that sweeps the working set often enough to
take ~20 ms.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numba
import numpy as np

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent), str(pathlib.Path(__file__).resolve().parents[1])]

import ab  # noqa: E402
import report  # noqa: E402

from fastlin.kernels import tuning  # noqa: E402
from fastlin.kernels.cpu import layout, strips, tiles  # noqa: E402
from fastlin.kernels.options import FASTMATH  # noqa: E402
from fastlin.kernels.llvm import load, madd, splat, store  # noqa: E402

N, DY = 16, 10  # the benchmark problem's data: n columns, d_y rows
L1_BYTES = 16 << 10
MEMORY_BYTES = 64 << 20
CALL_SECONDS = 0.02
PEAK_TERMS = 1 << 22  # multiply-adds per accumulator in one fma_peak call
ALPHA = -1e-3  # small steps: repeated sweeps leave the weights near where they were

# A measuring tool of the bench, not a fastlin kernel: the kernels' fastmath
# flags, but no cache (nothing to keep between runs of the bench, and the
# tests load this file under another module name).
tool = numba.njit(nogil=True, cache=False, fastmath=set(FASTMATH))


@tool
def fma_loop(x, terms):
    """x[3W:4W] = x[0:W] + 5 terms (x[W:2W] * x[2W:3W]), on five independent accumulators (W: the lanes of a Vec).

    Each round is five Vec multiply-adds (ten on AVX2's 256-bit registers)
    with no dependence between them, enough to cover the multiply-add
    latency, in registers as the strip kernels hold their five chains (ten
    accumulators would not fit sixteen registers: they ran at half this rate).
    """
    W = x.size // 4
    v, w = load(x, W), load(x, 2 * W)
    a0 = a1 = a2 = a3 = a4 = splat(x.dtype.type(0))
    for _ in range(terms):
        a0, a1, a2, a3, a4 = madd(a0, v, w), madd(a1, v, w), madd(a2, v, w), madd(a3, v, w), madd(a4, v, w)
    one = splat(x.dtype.type(1))
    s = load(x, 0)
    for a in (a0, a1, a2, a3, a4):
        s = madd(s, one, a)
    store(x, 3 * W, s)


@tool
def sweep_up(Vs, A_in, A_out, C, M, reps):
    """``reps`` times: every layer of Vs (layers, rows, m) swept upward, all rows."""
    for _ in range(reps):
        for i in range(Vs.shape[0]):
            tiles.up_layer(Vs[i], A_in, A_out, C, M, M.shape[0], ALPHA, 0, Vs.shape[1])


@tool
def sweep_down(Vs, B_in, out, acc, C, M, by_columns, columns, reps):
    """``reps`` times: every layer of Vs (layers, rows, stride) swept downward: its first ``columns`` (by columns) or all."""
    for _ in range(reps):
        for i in range(Vs.shape[0]):
            if by_columns:
                strips.down_layer_cols(Vs[i], B_in, out, C, M, M.shape[0], ALPHA, 0, columns)
            else:
                strips.down_layer_rows(Vs[i], B_in, out, acc, C, M, M.shape[0], ALPHA, 0, Vs.shape[1], False)


def fma_peak(dtype, rounds: int = 5) -> float:
    """One core's multiply-add rate in GFLOP/s (2 flops each), best of ``rounds`` calls of ``fma_loop``."""
    lanes = 64 // np.dtype(dtype).itemsize
    x = np.full(4 * lanes, 0.5, dtype=dtype)
    fma_loop(x, 1)
    best = min(_timed(fma_loop, x, PEAK_TERMS) for _ in range(rounds))
    return 5 * lanes * 2 * PEAK_TERMS / best / 1e9


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def working_sets(m: int, itemsize: int, direction: str) -> list[tuple[str, int, int, int]]:
    """(name, layers, rows, columns) swept in each working set of width m: L1, one layer, memory.

    The L1 set is L1_BYTES of whole rows (at least a row tile), or, for a
    layer swept by columns going down (``layout.swept_by_columns``), of whole column
    strips over all m rows: the block each of those sweeps works on.
    """
    line = tuning.LINE_BYTES // itemsize
    if direction == "down" and layout.swept_by_columns(m, itemsize):
        l1 = (1, m, min(m, max(line, L1_BYTES // (m * itemsize) // line * line)))
    else:
        l1 = (1, min(m, max(tuning.ROW_TILE, L1_BYTES // (m * itemsize))), m)
    return [("L1", *l1), ("layer", 1, m, m), ("memory", max(1, MEMORY_BYTES // (m * m * itemsize)), m, m)]


def make_sweeps(m: int, layers: int, rows: int, dtype, seed: int = 0):
    """The arguments of ``sweep_up`` (but reps) and ``sweep_down`` (but columns and reps): ``layers`` layers of rows x m."""
    rng = np.random.default_rng(seed)
    r = min(N, DY)

    def normal(*shape, scale=1.0):  # starting on a cache line, as the kernel's buffers do
        out = layout.line_aligned(shape, dtype, zero=False)
        out[...] = scale * rng.standard_normal(shape)
        return out

    V_up = normal(layers, rows, m, scale=m ** -0.5)
    up = (V_up, normal(2 * N, m), layout.line_aligned((2 * N, rows), dtype), normal(r, rows), normal(r, m))
    stride = layout.row_stride(m, np.dtype(dtype).itemsize)
    V_down = normal(layers, rows, stride, scale=m ** -0.5)
    B_in = normal(2 * DY, rows)
    down = (V_down, B_in, layout.line_aligned((2 * DY, m), dtype), layout.line_aligned((2 * DY, m), dtype), B_in[:r],
            normal(r, m),
            bool(layout.swept_by_columns(m, np.dtype(dtype).itemsize)))
    return up, down


def time_sweep(fn, args, flops_per_call: float, rounds: int) -> float:
    """GFLOP/s of ``fn(*args, reps)``: reps chosen so one call takes ~CALL_SECONDS, min over rounds."""
    fn(*args, 1)
    reps = max(1, int(CALL_SECONDS / max(_timed(fn, *args, 1), 1e-7)))
    best = min(_timed(fn, *args, reps) for _ in range(rounds))
    return flops_per_call * reps / best / 1e9


def measure(m: int, dtype, rounds: int) -> dict[str, dict[str, tuple[float, float]]]:
    """{direction: {working set: (GFLOP/s, the multiply-add peak measured just before)}} for width m."""
    itemsize = np.dtype(dtype).itemsize
    rates = {}
    for direction, sweep in (("up", sweep_up), ("down", sweep_down)):
        rates[direction] = {}
        for name, layers, rows, columns in working_sets(m, itemsize, direction):
            up, down = make_sweeps(m, layers, rows, dtype)
            args = up if direction == "up" else (*down, columns)
            flops = layers * report.pass_flops([m, columns, rows], N, DY)[direction == "down"]
            peak = fma_peak(dtype)
            rates[direction][name] = (time_sweep(sweep, args, flops, rounds), peak)
    return rates


def main(argv=None):
    parser = ab.timing_parser(__doc__, "256,1024", "widths m, comma-separated (default: 256,1024)",
                              9, "timed calls per sweep")
    args = ab.parse_timing(parser, argv, "levels.py")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        raise SystemExit(f"levels.py: --sizes must be widths like 256,1024, got {args.sizes!r}")
    if any(m < 8 for m in sizes):
        raise SystemExit("levels.py: widths must be at least 8")
    dtype = np.dtype(args.dtype)
    print(f"one core, {args.dtype}: compiling (first run: about a minute) ...", flush=True)
    fma_peak(dtype, rounds=1)
    print(f"sweeps in GFLOP/s, min of {args.rounds} calls, and their fraction of the multiply-add peak"
          " (fma_peak) measured just before each")
    names = [name for name, *_ in working_sets(sizes[0], dtype.itemsize, "up")]
    print(f"{'m':>5} {'pass':<5}" + "".join(f"{name:>15}" for name in names) + f"{'peak GFLOP/s':>18}")
    for m in sizes:
        rates = measure(m, dtype, args.rounds)
        for direction in ("up", "down"):
            cells = "".join(f"{rate:>9.1f} {rate / peak:>5.0%}" for rate, peak in rates[direction].values())
            peaks = [peak for _, peak in rates[direction].values()]
            print(f"{m:5d} {direction:<5}{cells}{min(peaks):>11.1f}-{max(peaks):.1f}", flush=True)

if __name__ == "__main__":
    main()
