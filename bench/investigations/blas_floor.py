"""The CPU kernel's floor work done by BLAS calls instead: what GEMM makes of the step's skinny products.

    python bench/investigations/blas_floor.py [--sizes 64x256,16x1024] [--rounds 9] [--dtype float64|float32]

``report.step_floor`` prices a step at the machine's square-dgemm rate, but
the products of the one-pass step are skinny: a layer times d_y = 10 or
n = 16 vectors, and a rank-10 update. This script times exactly that
arithmetic (``report.pass_flops``) as library calls, one GEMM per product of
the one-pass scheme (docs/design.md, "The one-pass fused step"), layer by layer
over the swept layers 2..L of the benchmark problem (peers.py):

* upward, per layer: the old chain on d_y rows, G_{k+1} = G_k V_k^T
  (G = E A^T), the update V_k += -eta_k B_k^T G_k in place (GEMM with
  beta = 1), the new chain on n columns, A'_{k+1} = V_k A'_k;
* downward: the old suffix chain B_{k-1} = B_k V_k, the update (factor
  M = E A^T of the cached prefix chain), the new one B'_{k-1} = B'_k V_k.

The weights keep fastlin's layout (C-contiguous V, which BLAS reads as the
Fortran-ordered V^T without a copy); the chains are Fortran-ordered. The
calls are scipy.linalg.blas's (the OpenBLAS SciPy ships), run in a child
process per BLAS thread count (one, and as many as fastlin's "all"), since
OPENBLAS_NUM_THREADS and the like are read when BLAS loads; fastlin-cpu's
passes are then timed in this process (``passes.time_passes``). Each pass
is one whole sweep of the net, min over rounds. What it tells: how the
fused tile kernels compare with a GEMM library on the same work, and so
what rate the step's floor can be priced at on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parent), str(pathlib.Path(__file__).resolve().parents[1])]

import ab  # noqa: E402
import passes  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402

THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def fortran(a):
    return np.asfortranarray(a)


def blas_inputs(problem):
    """The swept layers as BLAS sees them, and what enters the two passes.

    Returns (Vts, up, down): Vts[j] = V^T of swept layer j (layers 2..L), a
    Fortran-contiguous view of a fresh copy; ``up`` = (A', G^T, C, rates),
    the arguments of ``up_pass`` after Vts; ``down`` = (B^T, B'^T, M^T,
    rates), those of ``down_pass``. Chains and factors come from the
    problem's own weights (fastlin's reference), so their magnitudes are
    those of a real step.
    """
    from fastlin.kernels.reference import prefix_chain, suffix_chain
    V, X, Y, eta = problem
    dy, n = Y.shape[0], X.shape[1]
    if dy > n:
        raise SystemExit("blas_floor.py: the old chain is carried as E A^T, which needs d_y <= n")
    L = len(V)
    A, B = prefix_chain(V, X), suffix_chain(V)
    E = A[-1] - Y
    swept = range(1, L)  # 0-based: V[k] = V_{k+1}, entered by A[k], its suffix factor B[k + 1]
    Vts = [v.copy().T for v in V[1:]]
    C = [fortran(B[k + 1]) for k in swept]  # (d_y, d_out)
    Mt = [fortran((E @ A[k].T).T) for k in swept]  # (d_in, d_y)
    rates = [float(eta[k]) for k in swept]
    up = (fortran(A[1]), fortran((E @ A[1].T).T), C, rates)
    down = (fortran(B[L].T), fortran(B[L].T), Mt, rates)
    return Vts, up, down


def up_pass(gemm, Vts, At, Gt, C, rates):
    """One upward pass in GEMM calls; returns the chains leaving the top, A' (d_L x n) and G^T (d_L x d_y).

    Vts[j] = V^T of swept layer j (updated in place); At, Gt: the new chain
    A' and G^T = (E A^T)^T entering the first; C[j] = B (d_y x d_out), the
    cached suffix chain of layer j; rates[j] = eta.
    """
    for Vt, Cj, eta in zip(Vts, C, rates):
        G_next = gemm(1.0, Vt, Gt, trans_a=1)  # (G V^T)^T = V G^T, through the old V
        gemm(-eta, Gt, Cj, beta=1.0, c=Vt, overwrite_c=1)  # V^T += -eta G^T B
        At = gemm(1.0, Vt, At, trans_a=1)  # V A', through the new V
        Gt = G_next
    return At, Gt


def down_pass(gemm, Vts, Bo, Bn, Mt, rates):
    """One downward pass in GEMM calls; returns the old and the new suffix chain leaving the bottom (transposed).

    Bo, Bn: B^T and B'^T (d_out x d_y) entering the top layer; Mt[j] =
    (E A^T)^T (d_in x d_y) of swept layer j, from the cached prefix chain.
    """
    for Vt, M, eta in zip(reversed(Vts), reversed(Mt), reversed(rates)):
        Bo_next = gemm(1.0, Vt, Bo)  # (B V)^T = V^T B^T, through the old V
        gemm(-eta, M, Bo, trans_b=1, beta=1.0, c=Vt, overwrite_c=1)  # V^T += -eta M^T B
        Bn = gemm(1.0, Vt, Bn)  # through the new V
        Bo = Bo_next
    return Bo, Bn


def time_blas(problem, rounds: int) -> np.ndarray:
    """Seconds per upward (row 0) and downward (row 1) pass in GEMM calls, (2, rounds), in alternation."""
    from scipy.linalg.blas import get_blas_funcs
    Vts, up, down = blas_inputs(problem)
    gemm = get_blas_funcs("gemm", dtype=Vts[0].dtype)
    times = np.zeros((2, rounds))
    for j in range(-1, rounds):  # round -1: warm-up
        for row, (run, args) in enumerate(((up_pass, up), (down_pass, down))):
            start = time.perf_counter()
            run(gemm, Vts, *args)
            if j >= 0:
                times[row, j] = time.perf_counter() - start
    return times


def blas_in_child(sizes, rounds: int, dtype: str, threads: int) -> dict:
    """``time_blas`` for every size in a child process with ``threads`` BLAS threads: {"LxM": (2, rounds) list}."""
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    spec = ",".join(f"{L}x{m}" for L, m in sizes)
    out = subprocess.run([sys.executable, __file__, "--sizes", spec, "--rounds", str(rounds), "--dtype", dtype,
                          "--blas-child"], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = ab.timing_parser(__doc__, "64x256,16x1024", "LxM,... (default: 64x256,16x1024)",
                              9, "timed passes per direction")
    parser.add_argument("--blas-child", action="store_true", help=argparse.SUPPRESS)
    args = ab.parse_timing(parser, argv, "blas_floor.py")
    sizes = ab.parse_sizes(args.sizes)
    if args.blas_child:
        print(json.dumps({f"{L}x{m}": time_blas(peers.make_problem(L, m, args.dtype), args.rounds).tolist()
                          for L, m in sizes}))
        return
    import numba
    counts = sorted({1, numba.config.NUMBA_NUM_THREADS})
    blas = {T: blas_in_child(sizes, args.rounds, args.dtype, T) for T in counts}
    print(f"The step's floor work per pass (report.pass_flops), {args.dtype}, {args.rounds} rounds: "
          f"ms per pass (min) and GFLOP/s; fastlin-cpu one thread / all, GEMM calls on 1 / {counts[-1]} BLAS threads; "
          "speed-up = the faster BLAS time / fastlin all")
    print(f"{'L':>4} {'m':>5} {'pass':>5} {'fastlin one':>17} {'fastlin all':>17} "
          + " ".join(f"{f'BLAS {T}':>17}" for T in counts) + f" {'fastlin all speed-up':>21}")
    for L, m in sizes:
        problem = peers.make_problem(L, m, args.dtype)
        V, X, Y, _ = problem
        flops = report.pass_flops([X.shape[0]] + [v.shape[0] for v in V], X.shape[1], Y.shape[0])
        fast = passes.time_passes(problem, args.rounds)
        for row, name in enumerate(("up", "down")):
            mins = [fast["one"][row].min(), fast["all"][row].min()]
            mins += [min(blas[T][f"{L}x{m}"][row]) for T in counts]
            cells = " ".join(f"{t * 1e3:8.3g} ({flops[row] / t / 1e9:5.1f})" for t in mins)
            print(f"{L:4d} {m:5d} {name:>5} {cells} {min(mins[2:]) / mins[1]:20.2f}x", flush=True)


if __name__ == "__main__":
    main()
