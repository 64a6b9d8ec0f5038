"""GPU benchmark of the CUDA backend, in one run (issue 5).

    python bench/bench_cuda.py            # full run, about 5-10 minutes on an H100
    python bench/bench_cuda.py --quick    # fewer sizes and repeats

1. correctness: backend="cuda" (both modes) against the NumPy reference;
2. device copy bandwidth (read + write), the measured HBM limit;
3. one GD step, fp64 and fp32, at (L, m) = (32, 1024), (256, 1024), (256, 256),
   (256, 64), (64, 32) with the paper data (X 1024 x 16, Y 10 x 16): fastlin
   against PyTorch eager (autograd), PyTorch with the step captured in a CUDA
   graph, and JAX jit + lax.scan (each peer when importable), printing ms/step,
   achieved TB/s against the one-pass floor (2 x itemsize bytes per swept
   parameter, layers 2..L, per step at the measured copy bandwidth) and the
   ratio to the best peer;
4. batched throughput: >= 100 configurations of L = 64, m = 32 in one launch,
   against PyTorch + CUDA graph training one configuration;
5. the GPU Haar sampler at paper scale (700 matrices of 1000 x 1000).

Prints a markdown table (for docs/performance.md). Exits cleanly (status 0) with a
message when there is no GPU. Timings are steady state: every implementation
is compiled / warmed up before it is timed, and compile time is reported
apart.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

SIZES = [(32, 1024), (256, 1024), (256, 256), (256, 64), (64, 32)]
DTYPES = [np.float64, np.float32]
MIN_SECONDS = 0.5  # each timing runs at least this long


def gpu_or_exit():
    from fastlin.kernels.cuda.compat import SIMULATOR, available, cuda

    if SIMULATOR or not available():
        print("bench_cuda: no CUDA GPU here (or the simulator is on); nothing measured.")
        sys.exit(0)
    return cuda


def make_problem(depth, width, dtype, seed=0):
    """Paper data and orthogonal init, normalized weights V_i and rates eta_i (as bench/peers.py)."""
    import fastlin
    from fastlin.model import layer_rates, to_normalized

    X, Y = fastlin.paper_data(rng=seed, dtype=dtype)
    dims = fastlin.network_dims(depth, width, X.shape[0], Y.shape[0])
    W = fastlin.init_weights(dims, "orthogonal", rng=seed + 1)
    lr = fastlin.theorem_lr(X.astype(np.float64), depth, Y.shape[0])
    return to_normalized(W, dims, dtype), X, Y, layer_rates(lr, dims)


def timed(run, steps0=4):
    """Seconds per step of ``run(k)`` (k steps, synchronized on return), k grown to MIN_SECONDS."""
    k = steps0
    while True:
        tick = time.perf_counter()
        run(k)
        spent = time.perf_counter() - tick
        if spent >= MIN_SECONDS or k >= 1 << 16:
            return spent / k
        k = max(2 * k, int(k * 1.2 * MIN_SECONDS / max(spent, 1e-6)))


# fastlin


class Fastlin:
    def __init__(self, V, X, Y, eta, mode=None):
        from fastlin.kernels import cuda as backend

        self.backend = backend
        self.state = backend.init_state([v.copy() for v in V], X, Y, eta)
        if mode:
            self.state.mode = mode

    def run(self, k):
        out = np.empty(k)
        self.backend.run_steps(self.state, out, -math.inf)
        return out


# peers


class TorchPeer:
    """PyTorch autograd on the GPU; ``graph=True`` captures one whole step in a CUDA graph."""

    def __init__(self, V, X, Y, eta, graph=False):
        import torch

        self.torch = torch
        dev = torch.device("cuda")
        self.V = [torch.tensor(v, device=dev, requires_grad=True) for v in V]
        self.X, self.Y = torch.tensor(X, device=dev), torch.tensor(Y, device=dev)
        self.eta = [float(e) for e in eta]
        self.graph = None
        if graph:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.loss = self._step()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self._step()

    def _step(self):
        torch = self.torch
        f = self.X
        for v in self.V:
            f = v @ f
        loss = 0.5 * torch.sum((f - self.Y) ** 2)
        grads = torch.autograd.grad(loss, self.V)
        with torch.no_grad():
            for v, g, e in zip(self.V, grads, self.eta):
                v.sub_(e * g)
        return loss.detach()

    def run(self, k):
        for _ in range(k):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._step()
        self.torch.cuda.synchronize()


class JaxPeer:
    """JAX jit of lax.scan over steps on the GPU, gradients from value_and_grad."""

    def __init__(self, V, X, Y, eta):
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        self.jax = jax
        self.V = [jnp.asarray(v) for v in V]
        X, Y = jnp.asarray(X), jnp.asarray(Y)
        eta = [jnp.asarray(e, dtype=V[0].dtype) for e in eta]

        def loss_fn(Vs):
            f = X
            for v in Vs:
                f = v @ f
            return 0.5 * jnp.sum((f - Y) ** 2)

        def step(Vs, _):
            loss, grads = jax.value_and_grad(loss_fn)(Vs)
            return [v - e * g for v, g, e in zip(Vs, grads, eta)], loss

        self._run = jax.jit(lambda Vs, k: jax.lax.scan(step, Vs, None, length=k), static_argnums=1,
                            donate_argnums=0)

    def run(self, k):
        self.V, losses = self._run(self.V, k)
        losses.block_until_ready()


def importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def peers():
    out = {}
    if importable("torch"):
        import torch

        if torch.cuda.is_available():
            out["PyTorch eager"] = lambda *p: TorchPeer(*p)
            out["PyTorch + CUDA graph"] = lambda *p: TorchPeer(*p, graph=True)
    if importable("jax"):
        import jax

        if any(d.platform == "gpu" for d in jax.devices()):
            out["JAX jit + scan"] = lambda *p: JaxPeer(*p)
    return out


# sections


def check_correctness():
    from fastlin.kernels import cuda as backend
    from fastlin.kernels import reference

    print("## correctness against the NumPy reference (30 steps)")
    ok = True
    for (L, m), dtype, tol in [((6, 64), np.float64, 1e-10), ((16, 256), np.float64, 1e-10),
                               ((6, 64), np.float32, 1e-4)]:
        V, X, Y, eta = make_problem(L, m, dtype)
        ref = reference.init_state([v.copy() for v in V], X, Y, eta)
        want = np.empty(30)
        reference.run_steps(ref, want, -math.inf)
        for mode in ("coop", "block"):
            state = backend.init_state([v.copy() for v in V], X, Y, eta)
            state.mode = mode
            got = np.empty(30)
            backend.run_steps(state, got, -math.inf)
            err = float(np.max(np.abs(got - want) / np.maximum(want, 1e-8 * ref.loss0)))
            w_err = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                        for a, b in zip(backend.weights(state), reference.weights(ref)))
            good = err < tol and w_err < tol
            ok &= good
            print(f"L={L:4d} m={m:5d} {np.dtype(dtype).name:8s} {mode:5s}: loss rel err {err:.1e}, "
                  f"weights {w_err:.1e} {'ok' if good else 'FAIL'}")
    return ok


def copy_bandwidth(cuda, nbytes=1 << 30):
    """Device-to-device copy, bytes read + written per second."""
    a = cuda.device_array(nbytes // 8, dtype=np.float64)
    b = cuda.device_array(nbytes // 8, dtype=np.float64)
    b.copy_to_device(a)
    cuda.synchronize()
    best = math.inf
    for _ in range(5):
        start, stop = cuda.event(), cuda.event()
        start.record()
        b.copy_to_device(a)
        stop.record()
        stop.synchronize()
        best = min(best, cuda.event_elapsed_time(start, stop) / 1e3)
    return 2 * nbytes / best


def time_steps(bw, sizes, dtypes):
    peer_makers = peers()
    rows = []
    print("\n## one GD step, paper data (X 1024 x 16, Y 10 x 16), ms/step")
    for dtype in dtypes:
        for L, m in sizes:
            V, X, Y, eta = make_problem(L, m, dtype)
            # The weights a step reads and writes: layers 2..L (the first is
            # stepped through Z = V_1 X, an n x n product per column of Z).
            params = sum(v.size for v in V[1:])
            floor = 2 * np.dtype(dtype).itemsize * params / bw
            row = {"L": L, "m": m, "dtype": np.dtype(dtype).name, "floor": floor * 1e3}
            tick = time.perf_counter()
            ours = Fastlin(V, X, Y, eta)
            ours.run(2)  # compile
            row["compile_s"] = time.perf_counter() - tick
            row["mode"] = ours.state.mode
            row["fastlin"] = timed(ours.run) * 1e3
            for name, make in peer_makers.items():
                try:
                    peer = make(V, X, Y, eta)
                    peer.run(2)
                    row[name] = timed(peer.run, 2) * 1e3
                except Exception as exc:  # a peer failing must not end the benchmark
                    print(f"  {name} failed at L={L} m={m}: {type(exc).__name__}: {exc}")
            best = min((row[n] for n in peer_makers if n in row), default=math.nan)
            row["TB/s"] = 2 * np.dtype(dtype).itemsize * params / (row["fastlin"] * 1e-3) / 1e12
            row["x best peer"] = best / row["fastlin"]
            rows.append(row)
            print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in row.items()), flush=True)
    names = ["fastlin"] + list(peer_makers)
    print("\n| dtype | L | m | mode | one-pass floor | " + " | ".join(names)
          + " | fastlin TB/s | best peer / fastlin | compile s |")
    print("|" + "--:|" * (len(names) + 8))
    for r in rows:
        cells = [f"{r[n]:.3g}" if n in r else "n/a" for n in names]
        print(f"| {r['dtype']} | {r['L']} | {r['m']} | {r['mode']} | {r['floor']:.3g} | " + " | ".join(cells)
              + f" | {r['TB/s']:.2f} | {r['x best peer']:.1f} | {r['compile_s']:.1f} |")
    return rows


def batched(configs=128, L=64, m=32, dtype=np.float64):
    from fastlin.kernels import cuda as backend

    print(f"\n## batched: {configs} configurations of L={L}, m={m}, {np.dtype(dtype).name}, one launch per chunk")
    Vs, etas = [], []
    for c in range(configs):
        V, X, Y, eta = make_problem(L, m, dtype, seed=c)
        Vs.append(V)
        etas.append(eta)
    X, Y = make_problem(L, m, dtype)[1:3]
    batch = backend.init_batch(Vs, X, Y, etas)
    stop = np.full(configs, -math.inf)

    def run(k):
        out = np.empty((configs, k))
        backend.run_batch(batch, np.full(configs, k), stop, out)

    run(2)
    per_step = timed(run)
    rate = configs / per_step
    print(f"  {per_step * 1e3:.3g} ms per step of all {configs}: {rate:.4g} configuration-steps/s")
    if "PyTorch + CUDA graph" in peers():
        peer = TorchPeer(*make_problem(L, m, dtype), graph=True)
        peer.run(2)
        one = timed(peer.run, 2)
        print(f"  PyTorch + CUDA graph, one configuration: {one * 1e3:.3g} ms/step; "
              f"aggregate ratio {rate * one:.1f}x (target >= 50x)")
    return rate


def haar_timing(batch=700, size=1000):
    from fastlin.haar_gpu import gpu_array_module, haar_orthogonal_gpu

    xp = gpu_array_module()
    print(f"\n## Haar sampler: {batch} matrices of {size} x {size}, fp64")
    if xp is None:
        print("  CuPy not importable: the GPU sampler would fall back to NumPy on the CPU; not timed.")
        return None
    haar_orthogonal_gpu(size, batch=2, seed=0, xp=xp)
    xp.cuda.Device().synchronize()
    tick = time.perf_counter()
    Q = haar_orthogonal_gpu(size, batch=batch, seed=1, xp=xp)
    xp.cuda.Device().synchronize()
    seconds = time.perf_counter() - tick
    err = float(xp.max(xp.abs(Q[0].T @ Q[0] - xp.eye(size))))
    print(f"  {seconds:.3g} s (orthogonality error of one {err:.1e})")
    return seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two sizes, fp64 only")
    args = parser.parse_args(argv)
    cuda = gpu_or_exit()
    dev = cuda.get_current_device()
    print(f"# bench_cuda on {dev.name.decode() if isinstance(dev.name, bytes) else dev.name}")
    ok = check_correctness()
    bw = copy_bandwidth(cuda)
    print(f"\n## device copy bandwidth (read + write): {bw / 1e12:.2f} TB/s")
    sizes = SIZES[:1] + SIZES[3:4] if args.quick else SIZES
    rows = time_steps(bw, sizes, DTYPES[:1] if args.quick else DTYPES)
    batched()
    haar_s = haar_timing()
    big = next((r for r in rows if (r["L"], r["m"], r["dtype"]) == (256, 1024, "float64")), None)
    if haar_s is not None and big is not None:
        run_s = big["fastlin"] * 1e-3 * 700 / 256 * 10_000
        print(f"  vs a 10 000-step run of L=700, m=1000 (scaled from the L=256, m=1024 step): "
              f"{100 * haar_s / run_s:.2f} % (target <= 5 %)")
    if not ok:
        print("\nCORRECTNESS FAILED")
        sys.exit(1)


if __name__ == "__main__":
    main()
