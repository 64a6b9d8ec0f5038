"""bench/blas_floor.py: the GEMM-call passes do the one-pass step's arithmetic, in place."""

import numpy as np

from helpers import load_bench, rel_err

blas_floor = load_bench("investigations/blas_floor")


def test_gemm_passes_compute_the_chains_and_updates_of_the_one_pass_step():
    from scipy.linalg.blas import get_blas_funcs
    rng = np.random.default_rng()
    dims = [7, 9, 6, 11, 5]  # d_0..d_L; the swept layers are 2..4
    n, dy = 6, 5
    V = [rng.standard_normal((dims[i + 1], dims[i])) for i in range(len(dims) - 1)]
    A_in, G_in = rng.standard_normal((dims[1], n)), rng.standard_normal((dy, dims[1]))
    C = [rng.standard_normal((dy, dims[k + 1])) for k in range(1, 4)]
    rates = list(rng.uniform(0.1, 1.0, 3))
    Vts = [v.copy().T for v in V[1:]]
    gemm = get_blas_funcs("gemm", dtype=np.float64)
    At, Gt = blas_floor.up_pass(gemm, Vts, np.asfortranarray(A_in), np.asfortranarray(G_in.T),
                                [np.asfortranarray(c) for c in C], rates)
    a, g = A_in, G_in
    for j, k in enumerate(range(1, 4)):
        new = V[k] - rates[j] * C[j].T @ g
        g, a = g @ V[k].T, new @ a
        assert rel_err(Vts[j].T, new) < 1e-12  # updated in place
    assert rel_err(At, a) < 1e-12
    assert rel_err(Gt, g.T) < 1e-12

    old = [vt.T.copy() for vt in Vts]
    B_old, B_new = rng.standard_normal((dy, dims[4])), rng.standard_normal((dy, dims[4]))
    M = [rng.standard_normal((dy, dims[k])) for k in range(1, 4)]
    Bo, Bn = blas_floor.down_pass(gemm, Vts, np.asfortranarray(B_old.T), np.asfortranarray(B_new.T),
                                  [np.asfortranarray(m.T) for m in M], rates)
    bo, bn = B_old, B_new
    for j in reversed(range(3)):
        new = old[j] - rates[j] * bo.T @ M[j]
        bo, bn = bo @ old[j], bn @ new
        assert rel_err(Vts[j].T, new) < 1e-12
    assert rel_err(Bo, bo.T) < 1e-12
    assert rel_err(Bn, bn.T) < 1e-12


def test_inputs_are_the_benchmark_problems_and_the_timing_covers_both_passes():
    problem = blas_floor.peers.make_problem(4, 12, np.float64)
    Vts, up, down = blas_floor.blas_inputs(problem)
    assert [vt.shape for vt in Vts] == [v.T.shape for v in problem[0][1:]]
    assert all(vt.flags.f_contiguous for vt in Vts)
    assert up[0].shape == (12, 16) and up[1].shape == (12, 10) and len(up[2]) == len(Vts)
    times = blas_floor.time_blas(problem, rounds=2)
    assert times.shape == (2, 2) and np.all(times > 0)
