"""Import numba.cuda for fastlin, after one compatibility shim; say whether it can run.

numba-cuda 0.30.4 still calls ``np.row_stack``, which NumPy 2.5 removed, so
``import numba.cuda`` fails there. Setting ``np.row_stack = np.vstack`` (the
function it had long been an alias of) before the import works around it.
The shim is applied only when the attribute is missing and can go once
fastlin requires a numba-cuda release that no longer uses ``np.row_stack``.

The simulator (``NUMBA_ENABLE_CUDASIM=1``, or ``numba.config.ENABLE_CUDASIM``
set before this import) is honoured: kernels then run on the CPU, slowly,
with ONE block per cooperative grid.
"""

import numpy as np

if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

import numba  # noqa: E402
from numba import cuda  # noqa: E402

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)


def available() -> bool:
    """True when kernels can run: a usable GPU, or the simulator."""
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install reads as "no GPU"
        return False
