"""Compile the CUDA step kernels for a GPU architecture on a machine without a GPU.

    python bench/cuda_compile.py               # sm_90 (H100/H200), a table
    python bench/cuda_compile.py --cc 8.0      # another architecture
    python bench/cuda_compile.py --json        # one JSON object per kernel

The numba CUDA simulator runs the kernels' Python source, so it never types
them with Numba's CUDA target nor hands them to NVVM: a kernel can pass every
simulator test and still fail to compile on the first GPU it meets (one did:
a shared array shaped by an expression, not a constant). This script does what
a first launch would do up to loading the code: types every variant of
``kernels.cuda.step.make_step_kernel`` (both modes, both dtypes, d_y <= n and d_y > n)
with the signature ``Batch.run`` launches it with, compiles it to PTX with
NVVM and links it into a cubin with nvJitLink, cooperative-groups runtime
included, then prints what the assembler reports per thread and block:
registers, stack, local memory (spills), shared memory, and the blocks per SM
that registers and shared memory allow (cooperative grids are capped there).

Needs numba-cuda with its CUDA 13 toolkit wheels (``pip install -e
'.[test]'`` installs them: ``numba-cuda[cu13]``); no driver, no GPU. Exits 1
when a kernel does not compile or link, 2 when the toolkit libraries (NVVM,
nvJitLink, the cooperative-groups runtime) are not found. Run it without
``NUMBA_ENABLE_CUDASIM``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
import types as pytypes

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    sys.exit("cuda_compile: unset NUMBA_ENABLE_CUDASIM (the simulator compiles nothing)")

import numpy as np  # noqa: E402

from fastlin.kernels.cuda.compat import cuda  # noqa: E402  (the np.row_stack shim first)

import numba.cuda.dispatcher as _dispatcher  # noqa: E402
from numba.cuda.cudadrv.libs import get_cudalib  # noqa: E402

from fastlin.kernels.cuda.step import make_step_kernel, shared_bytes, step_signature  # noqa: E402

# (n, d_y) of the compiled variants: the paper's data (d_y <= n: Rf = E A^T
# going up) and one with d_y > n (the other factorization); the kernel's
# branches on them are resolved at compile time.
SHAPES = [(16, 10), (3, 9)]
DTYPES = [np.float64, np.float32]
# Per-SM limits of the register file and shared memory (sm_80 and sm_90 both
# have 64 K registers; shared memory per SM: 164 KiB on sm_80, 228 KiB on sm_90).
REGISTERS_PER_SM = 65536
SHARED_PER_SM = {(8, 0): 164 * 1024, (9, 0): 228 * 1024}
SHARED_PER_SM_OTHER = 164 * 1024  # the smaller of the two, for an architecture not listed
BLOCKS_PER_SM_MAX = 32  # the hardware's cap on resident blocks per SM (sm_80, sm_90)


def _fake_device(cc):
    """Numba compiles the kernel's device functions for the current device; there is none here."""
    return lambda: pytypes.SimpleNamespace(compute_capability=cc)


def compile_variant(n, dy, dtype, coop, cc, tpb=128):
    """PTX of one step-kernel variant, linked into a cubin; returns the assembler's figures."""
    kernel = make_step_kernel(n, dy, dtype, coop, tpb)
    tick = time.perf_counter()
    ptx, _ = cuda.compile_ptx(kernel.py_func, step_signature(dtype), cc=cc)
    compiled = time.perf_counter() - tick
    from cuda.core import Linker, LinkerOptions, ObjectCode

    codes = [ObjectCode.from_ptx(ptx.encode())]
    if coop:  # grid sync lives in the cooperative-groups runtime library
        codes.append(ObjectCode.from_library(get_cudalib("cudadevrt", static=True)))
    linker = Linker(*codes, options=LinkerOptions(arch=f"sm_{cc[0]}{cc[1]}", verbose=True))
    cubin = linker.link("cubin")
    info = linker.get_info_log()
    figures = _parse_info(info)
    figures.update(n=n, dy=dy, dtype=np.dtype(dtype).name, mode="coop" if coop else "block", tpb=tpb,
                   cc=f"{cc[0]}.{cc[1]}", ptx_bytes=len(ptx), cubin_bytes=len(cubin.code),
                   compile_s=round(compiled, 2), smem_declared=shared_bytes(n, dy, dtype, tpb))
    figures["blocks_per_sm"] = blocks_per_sm(figures["registers"], figures["smem"], tpb,
                                             SHARED_PER_SM.get(cc, SHARED_PER_SM_OTHER))
    return figures


def _parse_info(info):
    """registers, stack, smem, lmem of the (one) entry function in nvJitLink's verbose log."""
    line = [ln for ln in info.splitlines() if "registers" in ln][-1]

    def number(pattern):
        match = re.search(pattern, line)
        return int(match.group(1)) if match else 0

    return dict(registers=number(r"(\d+) registers"), stack=number(r"(\d+) stack"),
                smem=number(r"(\d+) bytes smem"), lmem=number(r"(\d+) bytes lmem"))


def blocks_per_sm(registers, smem, tpb, shared_per_sm):
    """Co-resident blocks per SM: registers are allocated per warp in units of 256."""
    per_warp = math.ceil(registers * 32 / 256) * 256
    by_registers = REGISTERS_PER_SM // (per_warp * math.ceil(tpb / 32))
    by_shared = shared_per_sm // max(smem, 1)
    return min(by_registers, by_shared, BLOCKS_PER_SM_MAX)


def missing_toolkit():
    """Why the kernels cannot be compiled here, or None: NVVM, nvJitLink, libcudadevrt."""
    try:
        from numba.cuda.cudadrv.nvvm import NVVM

        NVVM()
        from cuda.core import Linker  # noqa: F401  (nvJitLink behind it, loaded on first link)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    path = get_cudalib("cudadevrt", static=True)
    if not os.path.isfile(path):
        return f"libcudadevrt.a not found (got {path!r})"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cc", default="9.0", help="compute capability, e.g. 9.0 (H100/H200) or 8.0 (A100)")
    parser.add_argument("--json", action="store_true", help="one JSON object per kernel instead of a table")
    args = parser.parse_args(argv)
    cc = tuple(int(part) for part in args.cc.split("."))
    _dispatcher.get_current_device = _fake_device(cc)
    missing = missing_toolkit()
    if missing:
        print(f"cuda_compile: no CUDA toolkit to compile with ({missing}); "
              "pip install 'numba-cuda[cu13]'", file=sys.stderr)
        return 2
    failed = 0
    if not args.json:
        print("| n | d_y | dtype | mode | registers | stack B | local B | shared B | blocks/SM | compile s |")
        print("|--:|--:|:--|:--|--:|--:|--:|--:|--:|--:|")
    for n, dy in SHAPES:
        for dtype in DTYPES:
            for coop in (True, False):
                try:
                    f = compile_variant(n, dy, dtype, coop, cc)
                except Exception as exc:  # report every variant, then fail
                    failed += 1
                    print(f"FAILED n={n} dy={dy} {np.dtype(dtype).name} coop={coop}: "
                          f"{type(exc).__name__}: {exc}", file=sys.stderr)
                    continue
                if args.json:
                    print(json.dumps(f))
                else:
                    print(f"| {n} | {dy} | {f['dtype']} | {f['mode']} | {f['registers']} | {f['stack']} | "
                          f"{f['lmem']} | {f['smem']} | {f['blocks_per_sm']} | {f['compile_s']} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
