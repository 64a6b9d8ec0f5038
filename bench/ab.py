"""Whole GD steps of the CPU kernel now against the kernel of a git revision, interleaved.

    python bench/ab.py REV [--sizes 32x32,128x64,64x256,16x1024] [--rounds 15] [--mode auto|one|all]
                           [--dtype float64|float32]

REV's whole ``fastlin/kernels`` package (``git archive``) is unpacked beside
the current one as ``fastlin/_kernels_ab`` and its CPU backend imported from
there (``fastlin._kernels_ab.cpu``, a module or a package depending on the
revision), so each version runs with its own helpers; the copy and its Numba
cache are removed at the end (this needs the editable install of the
README). For each size (L x m, the benchmark problem of peers.py), one
state per version is built and warmed up; then chunks of steps (256, 32, 8,
2 at m = 32, 64, 256, 1024) are timed on the two states in alternation (the
order swapped every round), so that both see the same machine. Prints min
and median ms/step of both, the ratio of the minima REV / now (> 1: now is
faster) and the median of the per-round ratios with its quartiles (robust
where other tenants slow the host down for seconds at a time).

Both states stay in memory: at the largest sizes the second one's weights
evict the first one's from the caches between chunks, for both versions
alike. ``--mode one`` / ``all`` forces one thread / all threads (``auto``:
the kernel's timed choice).
"""

from __future__ import annotations

import argparse
import importlib
import io
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import machine  # noqa: E402
import peers  # noqa: E402

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fastlin"
COPY = "_kernels_ab"
CHUNK = {32: 256, 64: 32, 256: 8, 1024: 2}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'32x32,64x256' -> [(32, 32), (64, 256)] (depth L, width m)."""
    sizes = []
    for item in text.split(","):
        L, _, m = item.partition("x")
        if not (L.isdigit() and m.isdigit() and int(L) >= 1 and int(m) >= 1):
            raise SystemExit(f"--sizes: a size is LxM with positive integers, got {item!r}")
        sizes.append((int(L), int(m)))
    return sizes


def timing_parser(doc: str, sizes: str, sizes_help: str, rounds: int, rounds_help: str) -> argparse.ArgumentParser:
    """The arguments every timing script here takes: --sizes, --rounds (checked by ``parse_timing``) and --dtype."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--sizes", default=sizes, help=sizes_help)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"{rounds_help} (default {rounds})")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    return parser


def parse_timing(parser: argparse.ArgumentParser, argv, script: str) -> argparse.Namespace:
    """``parser.parse_args(argv)``, stopping with a message naming ``script`` unless --rounds is at least 1."""
    args = parser.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit(f"{script}: --rounds must be at least 1")
    return args


def load_revision(rev: str):
    """The CPU backend of git revision ``rev``: its ``fastlin/kernels`` unpacked as ``fastlin._kernels_ab``."""
    try:
        archive = subprocess.run(["git", "archive", "--format=tar", rev, "fastlin/kernels"], cwd=PACKAGE.parent,
                                 check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"ab.py: no fastlin/kernels at {rev!r}: {err.stderr.decode().strip()}") from None
    remove_revision()
    target = PACKAGE / COPY
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            path = target / pathlib.Path(member.name).relative_to("fastlin/kernels")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tar.extractfile(member).read())
    return importlib.import_module(f"fastlin.{COPY}.cpu")


def remove_revision() -> None:
    """Remove what ``load_revision`` made: the copy (with its Numba cache) and its imports."""
    for name in [n for n in sys.modules if n == f"fastlin.{COPY}" or n.startswith(f"fastlin.{COPY}.")]:
        del sys.modules[name]
    shutil.rmtree(PACKAGE / COPY, ignore_errors=True)


def fresh_state(mod, problem, mode, k):
    """A state of ``mod``'s kernel on ``problem`` (V, X, Y, eta), forced to ``mode``, warmed up by k steps."""
    V, X, Y, eta = problem
    state = mod.init_state([v.copy() for v in V], X, Y, eta)
    state.mode = mode
    mod.run_steps(state, np.zeros(k), -np.inf)  # compile, warm up
    return state


def timed_chunk(mod, states, i, problem, mode, k):
    """ms/step of one chunk of k steps on states[i]; a state whose chunk stopped early is rebuilt and timed again.

    At the Theorem 4.1 rate the narrow nets oscillate and may diverge after
    thousands of steps; a chunk that stopped at a non-finite loss would time
    fewer steps than k (and steps on NaNs).
    """
    for _ in range(3):
        start = time.perf_counter()
        done, _ = mod.run_steps(states[i], np.zeros(k), -np.inf)
        elapsed = time.perf_counter() - start
        if done == k:
            return elapsed / k * 1e3
        states[i] = fresh_state(mod, problem, mode, k)
    raise SystemExit(f"ab.py: {mod.__name__} stops within {k} steps from a fresh state")


def compare(mods, L, m, rounds, mode, dtype):
    """ms/step of each module's kernel on one size, chunks timed in alternation: a list of arrays."""
    problem = peers.make_problem(L, m, dtype)
    k = CHUNK.get(m, 4)
    states = [fresh_state(mod, problem, mode, k) for mod in mods]
    times = [[] for _ in mods]
    machine.settle_cores()
    for j in range(rounds):
        for i in (range(len(mods)) if j % 2 == 0 else reversed(range(len(mods)))):
            times[i].append(timed_chunk(mods[i], states, i, problem, mode, k))
    return [np.array(t) for t in times]


def paired_ratio(t_old, t_new):
    """Median and quartiles of the per-round ratios old / new."""
    return np.percentile(np.asarray(t_old) / np.asarray(t_new), [50, 25, 75])


def main(argv=None):
    parser = timing_parser(__doc__, "32x32,128x64,64x256,16x1024", "LxM,... (default: the benchmark's)",
                           15, "timed chunks per version and size")
    parser.add_argument("rev", help="git revision whose CPU kernel is compared with the current one")
    parser.add_argument("--mode", choices=("auto", "one", "all"), default="auto")
    args = parse_timing(parser, argv, "ab.py")
    sizes = parse_sizes(args.sizes)
    from fastlin.kernels import cpu
    try:
        old = load_revision(args.rev)
        print(f"{args.rev} against the working tree, {args.dtype}, mode {args.mode}, {args.rounds} rounds; ms/step")
        print(f"{'L':>4} {'m':>5} {'rev min':>9} {'rev med':>9} {'now min':>9} {'now med':>9} {'rev/now':>8}"
              f" {'paired (quartiles)':>22}")
        for L, m in sizes:
            t_old, t_new = compare([old, cpu], L, m, args.rounds, args.mode, args.dtype)
            ratio = np.min(t_old) / np.min(t_new)
            mid, lo, hi = paired_ratio(t_old, t_new)
            print(f"{L:4d} {m:5d} {np.min(t_old):9.4g} {np.median(t_old):9.4g} "
                  f"{np.min(t_new):9.4g} {np.median(t_new):9.4g} {ratio:7.3f}x"
                  f" {mid:7.3f}x ({lo:.3f}-{hi:.3f})", flush=True)
    finally:
        remove_revision()


if __name__ == "__main__":
    main()
