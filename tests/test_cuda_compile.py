"""The CUDA step kernels compile for an H100/H200 (sm_90), without a GPU (issue 5).

The simulator tests (test_cuda_kernel.py) run the kernels' Python source and
never show it to Numba's CUDA compiler; ``bench/cuda_compile.py`` types every
variant, compiles it with NVVM and links it with nvJitLink. It runs in a
subprocess because this pytest process has switched numba.cuda to the
simulator (cuda_setup). Skipped when numba-cuda or its CUDA toolkit wheels
(``numba-cuda[cu13]``, in the test extra) are missing.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compiled():
    if importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "cuda_compile.py"), "--cc", "9.0", "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if proc.returncode == 2:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_every_variant_compiles_and_links(compiled):
    variants = {(k["n"], k["dy"], k["dtype"], k["mode"]) for k in compiled}
    assert len(variants) == 8  # (d_y <= n, d_y > n) x (float64, float32) x (coop, block)
    assert {k["mode"] for k in compiled} == {"coop", "block"}
    assert all(k["cubin_bytes"] > 0 for k in compiled)


def test_no_spills_and_resident_blocks(compiled):
    """No local-memory spills, within the static shared limit, at least one block of 128 per SM."""
    for k in compiled:
        # The linker counts the 1 KiB that sm_90 reserves per block on top of the
        # kernel's static arrays, which Batch checks against the limit beforehand.
        assert k["smem"] - k["smem_declared"] in (0, 1024), k
        assert k["lmem"] == 0, k
        assert 0 < k["smem"] <= 48 * 1024, k
        assert 0 < k["registers"] <= 255, k
        assert k["blocks_per_sm"] >= 1, k
