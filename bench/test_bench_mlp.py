"""Steady-state time of one SGD step of a tanh net on digits: fastlin's nonlinear kernels vs peers.

Sizes (L, m, batch): (16, 256, 128), (64, 128, 128) and (32, 256, the whole
training split of ``fastlin.digits``: 1437, full-batch GD); d_0 = 64,
d_L = 10, orthogonal init with Huang et al.'s sigma_w^2 = 1.05,
sigma_b^2 = 2.01e-5, cross-entropy, lr = 0.01, float64 and float32.
Backends: ``fastlin-cpu`` (fastlin.kernels.mlp.cpu), and the peers of
bench/mlp_peers.py (torch, torch-compile, jax) where installed, all on the
same batches from fastlin's generator.

As in bench/test_bench_cpu.py, every backend's first losses are first
checked against fastlin's NumPy reference (rtol 1e-10 in float64, 1e-4 in
float32), and that first call also gives the first-call (compile) time;
a timed round is one call of ``steps_per_round`` steps from the initial
parameters (re-set, untimed, before each round). At the end the module
prints its table: ms per step, GFLOP/s (the textbook 6 B (params) - 2 B d_0
d_1 flops per step over the time; layer 1 needs no backward product), and at
full batch the fraction of this machine's gemm rate (bench/machine.py).
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest

import machine
import mlp_peers

SIZES = [(16, 256, 128), (64, 128, 128), (32, 256, None)]
STEPS_PER_ROUND = {(16, 256, 128): 16, (64, 128, 128): 16, (32, 256, None): 2}
DTYPES = ["float64", "float32"]
RTOL = {"float64": 1e-10, "float32": 1e-4}
BACKENDS = ["fastlin-cpu"] + list(mlp_peers.PEERS)
LR = 0.01
SEED = 0
CHECK_STEPS = 3
MIN_ROUNDS, MAX_ROUNDS = 3, 200
RESULTS: list[dict] = []


def _ids(size):
    L, m, B = size
    return f"L{L}-m{m}-B{'full' if B is None else B}"


_problems: dict = {}


def problem(L, m, B, dtype):
    """(weights, biases, X, Y, labels, batches for 1 + CHECK_STEPS + rounds): built once per size and dtype."""
    key = (L, m, B, dtype)
    if key not in _problems:
        import fastlin

        X, Y, _, _ = fastlin.digits(dtype=dtype)
        dims = [X.shape[0]] + [m] * (L - 1) + [Y.shape[0]]
        W, b = fastlin.init_mlp(dims, "orthogonal", rng=SEED, dtype=dtype)
        k = STEPS_PER_ROUND[(L, m, B)]
        batches = None if B is None else mlp_peers.batch_indices(SEED, X.shape[1], B, 2 * k + 1)
        _problems[key] = (W, b, X, Y, np.argmax(Y, axis=0), batches)
    return _problems[key]


def step_flops(dims, batch: int) -> float:
    """Textbook flops of one step: forward, backward product (not for layer 1) and update, 2 B each per weight."""
    params = sum(dims[i] * dims[i + 1] for i in range(len(dims) - 1))
    return 6.0 * batch * params - 2.0 * batch * dims[0] * dims[1]


class FastlinRunner:
    """fastlin.kernels.mlp.cpu through its kernel interface; ``run(k)`` returns l(t+1)..l(t+k)."""

    losses_after_step = True

    def __init__(self, W, b, X, Y, batch):
        from fastlin.kernels.mlp import ACTIVATIONS, LOSSES, Setup, cpu

        self.kernel = cpu
        self.args = (W, b, X, Y, Setup(ACTIVATIONS["tanh"], LOSSES["cross_entropy"], LR, batch or 0, SEED, True))
        self.state = None

    def reset(self):
        self.state = self.kernel.init_state(*self.args)

    def run(self, k):
        loss = np.empty(k)
        done, status = self.kernel.run_steps(self.state, loss)
        assert done == k, f"run_steps stopped after {done} of {k} steps (status {status})"
        return loss


def reference_history(L, m, B, dtype, k):
    """l(0), ..., l(k) from fastlin's NumPy reference."""
    from fastlin.kernels.mlp import ACTIVATIONS, LOSSES, Setup, reference

    W, b, X, Y, _, _ = problem(L, m, B, dtype)
    state = reference.init_state(W, b, X, Y, Setup(ACTIVATIONS["tanh"], LOSSES["cross_entropy"], LR, B or 0,
                                                   SEED, True))
    out = np.empty(k + 1)
    out[0] = state.loss0
    reference.run_steps(state, out[1:])
    return out


def available(backend):
    if backend == "fastlin-cpu":
        return importlib.util.find_spec("numba") is not None
    return mlp_peers.available(backend)


class _TablePlugin:
    """Prints the module's table in pytest's terminal summary (after pytest-benchmark's own tables)."""

    def pytest_benchmark_update_machine_info(self, config, machine_info):
        if RESULTS:  # a --benchmark-json file then carries the limits the table is read against
            machine_info["fastlin_limits"] = machine.limits()

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        if RESULTS:
            terminalreporter.write_sep("=", "fastlin nonlinear (tanh, cross-entropy) per-step report")
            terminalreporter.write_line(format_table(RESULTS, machine.limits()))


@pytest.fixture(scope="module", autouse=True)
def print_table(request):
    """Registers _TablePlugin: a fixture's own output would be captured with the last test's."""
    if not request.config.pluginmanager.has_plugin("fastlin-mlp-table"):
        request.config.pluginmanager.register(_TablePlugin(), "fastlin-mlp-table")


def format_table(rows, limits) -> str:
    lines = [f"machine: {limits['cores']} cores, dgemm {limits['dgemm_GFLOPs']:.1f} GFLOP/s, "
             f"sgemm {limits['sgemm_GFLOPs']:.1f} GFLOP/s (other processes meanwhile: {limits.get('other_cores')})",
             f"{'L':>4}{'m':>5}{'batch':>7} {'dtype':<8}{'backend':<15}{'ms/step':>9}{'(median)':>10}"
             f"{'GFLOP/s':>9}{'of gemm':>9}{'first s':>9}{'others':>8}  speedup vs best peer"]
    groups: dict = {}
    for row in rows:
        groups.setdefault((row["L"], row["m"], row["batch"], row["dtype"]), []).append(row)
    for (L, m, B, dtype), group in groups.items():
        peers = [r for r in group if not r["backend"].startswith("fastlin")]
        best = min(peers, key=lambda r: r["ms"]) if peers else None
        gemm = limits["sgemm_GFLOPs"] if dtype == "float32" else limits["dgemm_GFLOPs"]
        for row in group:
            rate = row["flops"] / row["ms"] / 1e6
            speedup = f"{best['ms'] / row['ms']:.2f}x ({best['backend']})" if best and row is not best \
                and row["backend"].startswith("fastlin") else ""
            others = "?" if row["other_cores"] is None else f"{row['other_cores']:.2f}"
            lines.append(f"{L:>4}{m:>5}{B:>7} {dtype:<8}{row['backend']:<15}{row['ms']:>9.3f}"
                         f"{row['median_ms']:>10.3f}{rate:>9.1f}{rate / gemm:>9.2f}{row['first_call_s']:>9.2f}"
                         f"{others:>8}  {speedup}")
    return "\n".join(lines)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", SIZES, ids=[_ids(s) for s in SIZES])
def test_sgd_step(benchmark, request, size, backend, dtype):
    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    L, m, B = size
    k = STEPS_PER_ROUND[size]
    W, b, X, Y, labels, batches = problem(L, m, B, dtype)
    if backend == "fastlin-cpu":
        runner = FastlinRunner(W, b, X, Y, B)
    else:
        runner = mlp_peers.PEERS[backend](W, b, X, labels, batches, LR)
        runner.losses_after_step = False

    runner.reset()
    start = time.perf_counter()
    try:
        losses = runner.run(k)
    except Exception as exc:  # torch.compile may not work on every platform: a skip, said plainly
        if backend == "torch-compile":
            pytest.skip(f"torch.compile failed here: {type(exc).__name__}: {exc}")
        raise
    first_call_s = time.perf_counter() - start
    checked = min(k, CHECK_STEPS)
    expected = reference_history(L, m, B, dtype, checked)
    expected = expected[1:] if runner.losses_after_step else expected[:-1]
    np.testing.assert_allclose(losses[:checked], expected, rtol=RTOL[dtype],
                               err_msg=f"{backend} disagrees with fastlin's NumPy reference")

    rounds = machine.rounds_for(runner, k, request.config.getoption("--fastlin-seconds"), MIN_ROUNDS, MAX_ROUNDS)
    benchmark.group = f"L{L} m{m} batch {B or 'full'} {dtype}, time per round of {k} steps"
    batch = B or X.shape[1]
    info = {"L": L, "m": m, "batch": batch, "dtype": dtype, "backend": backend, "steps_per_round": k,
            "first_call_s": first_call_s, "flops": step_flops([X.shape[0]] + [m] * (L - 1) + [Y.shape[0]], batch)}
    benchmark.extra_info.update(info)

    def setup():
        runner.reset()
        machine.settle_cores()

    with machine.OtherLoad() as others:
        benchmark.pedantic(runner.run, args=(k,), setup=setup, rounds=rounds, warmup_rounds=0)
    benchmark.extra_info["other_cores"] = others.cores
    if benchmark.stats:
        RESULTS.append({**info, "other_cores": others.cores, "ms": benchmark.stats.stats.min / k * 1e3,
                        "median_ms": benchmark.stats.stats.median / k * 1e3})
