#!/usr/bin/env bash
# Everything issue 5 needs from a lent GPU, in one device call: each part has its own
# time limit, 540 s in all, so the call fits a device command's 600 s.
#
#   bash bench/gpu_session.sh            # quick benchmark (fewer sizes and repeats)
#   FULL=1 bash bench/gpu_session.sh     # the full benchmark of bench/bench_cuda.py
#
# Runs from the repository root without installing fastlin. The device image
# has numba, numba-cuda, numpy, torch, jax and cupy, and no network; the
# pure-Python rest (tqdm for fastlin, pytest and hypothesis for the tests)
# comes in .gpu-deps/, made here and carried along (bench/README.md, "CUDA"):
#   pip install --target .gpu-deps --no-deps tqdm pytest pluggy iniconfig packaging hypothesis sortedcontainers attrs
# Parts:
# 1. the versions and the GPU; 2. the CUDA kernel and Haar tests on the GPU
# (tests/test_cuda_kernel.py, tests/test_cuda_haar.py: real compilation,
# cooperative launches, results against the NumPy reference); 3. the compile
# report of the kernels for this GPU (registers, shared memory, blocks/SM);
# 4. bench/bench_cuda.py. Each part's output goes to $OUT (or bench-gpu/), so a
# part that fails or runs out of time still leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-gpu}
mkdir -p "$out"
# What the image has comes first; .gpu-deps only fills the gaps.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}:$PWD/.gpu-deps
unset NUMBA_ENABLE_CUDASIM
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    python -c "import numpy, numba, numba_cuda; print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__)"
} 2>&1 | tee "$out/versions.txt"
timeout 180 python -m pytest -q -p no:cacheprovider tests/test_cuda_kernel.py tests/test_cuda_haar.py 2>&1 \
    | tail -40 | tee "$out/tests.txt"
cc=$(python -c "from fastlin.kernels.cuda.compat import cuda; print('%d.%d' % cuda.get_current_device().compute_capability)" 2>/dev/null || echo 9.0)
timeout 90 python bench/cuda_compile.py --cc "$cc" 2>&1 | tee "$out/compile.txt"
quick=--quick
[ -n "${FULL:-}" ] && quick=
timeout 270 python bench/bench_cuda.py $quick 2>&1 | tee "$out/bench.txt"
