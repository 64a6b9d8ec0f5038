"""Where the CUDA tests run: a real GPU, the numba CUDA simulator, or nowhere (skip).

The simulator must be chosen before ``numba.cuda`` is first imported. With
numba-cuda 0.30.4, setting ``numba.config.ENABLE_CUDASIM`` after ``import
numba`` (which the CPU kernel tests do first) but before ``import numba.cuda``
works; this module does that at collection time when no GPU is present. The
GPU is probed through the driver library (libcuda), so probing imports
nothing of numba.cuda. If something imported numba.cuda for real before and
there is no GPU, the in-process tests are skipped and one test re-runs the
file in a subprocess with ``NUMBA_ENABLE_CUDASIM=1``.

Note for other tests: once this module has switched the simulator on, every
later ``import numba.cuda`` in the same pytest process gets the simulator.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys


def gpu_present() -> bool:
    """A CUDA driver with at least one device, asked without importing numba.cuda."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return False
    try:
        if lib.cuInit(0) != 0:
            return False
        count = ctypes.c_int(0)
        return lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except AttributeError:
        return False


def cuda_mode() -> tuple[str | None, str]:
    """("gpu" | "sim" | "subprocess" | None, reason)."""
    if importlib.util.find_spec("numba_cuda") is None:
        return None, "numba-cuda is not installed (pip install -e '.[cuda]')"
    import numba

    if "numba.cuda" in sys.modules:
        if numba.config.ENABLE_CUDASIM:
            return "sim", "numba.cuda already runs the simulator"
        from fastlin.kernels.cuda.compat import available

        if available():
            return "gpu", "numba.cuda already imported, GPU available"
        return "subprocess", "numba.cuda was imported without the simulator and there is no GPU"
    if gpu_present():
        return "gpu", "CUDA GPU found"
    numba.config.ENABLE_CUDASIM = True
    return "sim", "no GPU: numba CUDA simulator"


MODE, REASON = cuda_mode()
SIM = MODE == "sim"
