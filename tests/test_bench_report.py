"""bench/report.py: the floor of a step and the merge of several benchmark runs."""

import numpy as np

import fastlin
from helpers import load_bench

report = load_bench("report")


def test_step_floor_counts_swept_layers_fully_and_the_first_through_z():
    rng = np.random.default_rng()
    L, m, dx, dy, n = int(rng.integers(2, 9)), int(rng.integers(2, 50)), int(rng.integers(2, 80)), \
        int(rng.integers(1, 12)), int(rng.integers(1, 20))
    dims = fastlin.network_dims(L, m, dx, dy)
    floor = report.step_floor(dims, n, dy, 8)
    swept = sum(dims[i] * dims[i - 1] for i in range(2, L + 1))
    r = min(n, dy)
    assert floor["params"] == swept + dims[1] * dx
    # flops: the one-pass count of layers 2..L (going up the new chain's n, the
    # old chain's r and the update's r multiply-adds per weight; going down two
    # chains of dy and the update's r), averaged over the passes, plus the Z step.
    up, down = 2 * (n + r + r), 2 * (dy + dy + r)
    assert report.pass_flops(dims, n, dy) == (swept * up, swept * down)
    assert floor["flops"] == swept * (up + down) / 2 + 2 * dims[1] * n * (dy + n)
    assert floor["bytes"] == 16 * swept + 32 * n * dims[1]


def _row(backend, ms, others, L=4, m=8, dtype="float64", k=2):
    return {"L": L, "m": m, "dtype": dtype, "backend": backend, "steps_per_round": k,
            "min_s": ms * k / 1e3, "median_s": ms * k / 1e3, "other_cores": others}


def test_best_of_runs_prefers_the_fastest_quiet_run():
    runs = [[_row("a", 3.0, 0.0), _row("b", 1.0, 0.9)],
            [_row("a", 2.0, 0.5), _row("b", 5.0, 0.1)],
            [_row("a", 2.5, 0.1), _row("b", 4.0, 0.6), _row("c", 7.0, 0.9)]]
    best = {row["backend"]: row["min_s"] / row["steps_per_round"] * 1e3 for row in report.best_of_runs(runs)}
    assert best == {"a": 2.5, "b": 5.0, "c": 7.0}  # c: no quiet run, its noisy one stands
    assert [row["backend"] for row in report.best_of_runs(runs)] == ["a", "b", "c"]


def test_the_machine_line_names_the_build_where_the_run_saved_it():
    machine = {"cores": 2, "copy_GBps": 20.0, "dgemm_GFLOPs": 70.0, "sgemm_GFLOPs": 140.0, "other_cores": 0.0}
    rows = [{**_row(backend, ms, 0.0), "flops": 1e6, "bytes": 1e6, "first_call_s": 0.1}
            for backend, ms in (("fastlin-cpu", 1.0), ("numpy", 3.0))]
    old = report.format_report(rows, machine).splitlines()[1]
    assert old.endswith("0.0 cores)")  # a run saved before the build was recorded
    for wide, words in ((True, "kernels with 512-bit vectors"), (False, "kernels with LLVM's default vector width")):
        line = report.format_report(rows, {**machine, "llvm_cpu": "znver3", "wide_vectors": wide}).splitlines()[1]
        assert line == old + f"; LLVM cpu znver3, {words}"


def test_the_build_recorded_is_this_process_s():
    from fastlin.kernels.options import wide_vectors_used

    machine = load_bench("machine")
    build = machine.build()
    assert build["wide_vectors"] == wide_vectors_used()
    assert build["llvm_cpu"]
