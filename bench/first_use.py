"""First use from an empty Numba cache: how long until ``fastlin train`` has trained, per net shape.

    python bench/first_use.py [--shapes 8x16,50x64,16x1024] [--steps 10]

For each shape (depth x width, paper's data, orthogonal init, float64, cpu
backend) runs ``fastlin train --depth L --width m --init orthogonal --steps
N --quiet`` in a fresh process whose Numba cache is a new empty directory
(NUMBA_CACHE_DIR), so the kernel compiles, and then once more with that
cache filled. Prints the wall time of both and the training time the
command itself reports.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time


def run_train(depth: int, width: int, steps: int, cache: str) -> tuple[float, float]:
    """(wall seconds of the whole command, seconds of training it reports)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    command = [sys.executable, "-m", "fastlin", "train", "--depth", str(depth), "--width", str(width),
               "--init", "orthogonal", "--steps", str(steps), "--quiet"]
    started = time.perf_counter()
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    match = re.search(r"time=([0-9.]+) s", out)
    return wall, float(match.group(1)) if match else float("nan")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="8x16,50x64,16x1024", help="LxM,... (default 8x16,50x64,16x1024)")
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    print(f"{'L':>4} {'m':>5} {'empty cache s':>14} {'cached s':>9} {'training s':>11}")
    for item in args.shapes.split(","):
        depth, _, width = item.partition("x")
        with tempfile.TemporaryDirectory(prefix="fastlin-first-use-") as cache:
            cold, trained = run_train(int(depth), int(width), args.steps, cache)
            warm, _ = run_train(int(depth), int(width), args.steps, cache)
        print(f"{int(depth):4d} {int(width):5d} {cold:14.1f} {warm:9.1f} {trained:11.2f}", flush=True)


if __name__ == "__main__":
    main()
