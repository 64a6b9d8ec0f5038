"""Where the first use's compile time goes: Numba's compile events per function, from an empty cache.

    python bench/compile_time.py [--dtype float64|float32] [--top 25] [--opt 3]

``--opt`` builds the kernels at another LLVM level than ``options.KERNEL_OPT``
(run it alternately with and without to compare).

Runs ``fastlin.prepare("cpu", dtype)`` in a fresh Python process whose Numba
cache is a new empty directory (NUMBA_CACHE_DIR), so everything compiles,
and records Numba's ``numba:compile`` events: for each compiled function
(module.name) how many specializations were built, the time inside its
compile events (inclusive: with the functions it compiled on the way) and
without them (exclusive: typing, lowering and LLVM's optimization of what
it links in). Then a second fresh process loads the same cache: the start-up
of every later run. Prints both, and the import time of fastlin.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import json, sys, time
started = time.perf_counter()
import fastlin
if len(sys.argv) > 2:
    import fastlin.kernels.options
    fastlin.kernels.options.KERNEL_OPT = int(sys.argv[2])
from numba.core.event import install_recorder
imported = time.perf_counter()
with install_recorder("numba:compile") as rec:
    fastlin.prepare("cpu", sys.argv[1])
done = time.perf_counter()
stack, rows = [], {}
for ts, ev in rec.buffer:
    disp = ev.data["dispatcher"]
    name = f"{disp.py_func.__module__.replace('fastlin.kernels.', '')}.{disp.py_func.__name__}"
    if ev.is_start:
        stack.append([name, ts, 0.0])
    else:
        name, start, inner = stack.pop()
        total = ts - start
        if stack:
            stack[-1][2] += total
        row = rows.setdefault(name, [0, 0.0, 0.0])
        row[0] += 1
        row[1] += total
        row[2] += total - inner
print(json.dumps({"import": imported - started, "prepare": done - imported, "rows": rows}))
"""


def measure(dtype: str, cache: str, opt=None) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    command = [sys.executable, "-c", _CHILD, dtype] + ([] if opt is None else [str(opt)])
    out = subprocess.run(command, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--top", type=int, default=25, help="rows of the table (default 25)")
    parser.add_argument("--opt", type=int, choices=(0, 1, 2, 3), default=None,
                        help="LLVM level for the kernels instead of options.KERNEL_OPT")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fastlin-numba-cache-") as cache:
        started = time.perf_counter()
        cold = measure(args.dtype, cache, args.opt)
        cold_wall = time.perf_counter() - started
        started = time.perf_counter()
        warm = measure(args.dtype, cache, args.opt)
        warm_wall = time.perf_counter() - started
    rows = sorted(cold["rows"].items(), key=lambda item: -item[1][2])
    print(f"fastlin.prepare('cpu', {args.dtype!r}) from an empty Numba cache: "
          f"{cold['prepare']:.1f} s (process {cold_wall:.1f} s, import {cold['import']:.1f} s); "
          f"from the cache: {warm['prepare']:.2f} s (process {warm_wall:.1f} s)")
    print(f"{'function':44} {'builds':>6} {'inclusive s':>12} {'exclusive s':>12}")
    for name, (builds, inclusive, exclusive) in rows[:args.top]:
        print(f"{name:44} {builds:6d} {inclusive:12.2f} {exclusive:12.2f}")
    print(f"{'all ' + str(len(rows)) + ' functions':44} {sum(r[0] for _, r in rows):6d} "
          f"{'':12} {sum(r[2] for _, r in rows):12.2f}")


if __name__ == "__main__":
    main()
