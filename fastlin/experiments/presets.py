"""Preset grids for the paper's figures: ``quick`` (2 CPU cores, minutes) and ``paper``.

Data: always the paper's (Section 6): X in R^{1024 x 16}, W* in R^{10 x 1024},
Y = W* X, entries iid N(0, 1), from data seed 0. fp64.

Learning rate (all presets): eta = c * d_y / (2 L ||X||_2^2), c = 0.5, a
multiple of the Theorem 4.1 rate. Its 1/L scaling keeps eta times the
largest eigenvalue of the NTK Gram matrix P(t) of order one at every depth,
so depth acts only through the init, which is what the figures are about.
The theorem's proof needs m >= d_x = 1024; the figures go down to m = 10.
Measured (300 steps, depths 8/32/128, widths 20..64): at c = 1 every
Gaussian net of depth >= 32 diverges, even at width 64, and orthogonal nets
converge more slowly than at c = 0.5 (GD at the edge of stability); at
c = 0.5 no orthogonal net of width >= 20 diverges and wide Gaussian nets
converge. So c = 0.5.

``quick`` (Figure 1): depths 8..128 (x2 apart, 5 depths) x 15 widths
10..256 (x1.26 apart) x 2 inits, 1000 steps, read out at t = 126 and 1000
(the paper's 1258 = 10^3.1 and 10000, one decade earlier). Depth stops at
128 because the Gaussian critical width at L = 128 is already ~256, the
most 2 cores train for 1000 steps in the time budget. Threshold 1e-3:
nets that do not train sit on plateaus at 1e-1..1e-2.7 (orthogonal nets of
width <= 25, rank-starved), nets that do train pass 1e-4 within 1000 steps;
1e-3 separates the two. Runs stop once loss(t)/loss(0) <= 1e-10
(``rtol_stop``; fp64 is at its floor soon after and the colour scale ends
there), which saves most of the time of the wide orthogonal nets.

``paper``: the paper's grid: 13 log-spaced widths 10..1000 x 13 log-spaced
depths 1..700 x 2 inits, 10 000 steps, read out at 1258 and 10 000, full
histories (no early stop), for a GPU.
"""

from __future__ import annotations

from .grid import Grid, LRRule, log_spaced_ints

FIGURES = ("figure1", "figure2")
PRESET_NAMES = ("quick", "paper")

PAPER_LR = LRRule("theorem", 0.5)


def available_backend(*, allow_cuda: bool) -> str:
    """The fastest backend that loads on this machine: cuda (if allowed), cpu, numpy."""
    from ..kernels import load_backend

    for name in (("cuda",) if allow_cuda else ()) + ("cpu",):
        try:
            load_backend(name)
        except (RuntimeError, ValueError):
            continue
        if name == "cuda" and not _cuda_device_present():
            continue
        return name
    return "numpy"


def _cuda_device_present() -> bool:
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - any failure means no usable GPU
        return False


def preset_grid(figure: str, preset: str, *, backend: str | None = None) -> Grid:
    """The grid of ``figure`` ("figure1" or "figure2") at scale ``preset`` ("quick" or "paper").

    ``backend`` overrides the preset's choice (the fastest available: CPU
    kernel for ``quick``, CUDA when present for ``paper``).
    """
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; choose one of {', '.join(FIGURES)}")
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    grid = _PRESETS[figure, preset]()
    chosen = backend or available_backend(allow_cuda=preset == "paper")
    return grid.replace(backend=chosen)


QUICK_WIDTHS = (10, 13, 16, 20, 25, 32, 40, 50, 64, 80, 100, 128, 160, 200, 256)


def _figure1_quick() -> Grid:
    return Grid(depths=(8, 16, 32, 64, 128), widths=QUICK_WIDTHS, seeds=(0,), steps=1000,
                lr=PAPER_LR, readout_steps=(126, 1000), threshold=1e-3, rtol_stop=1e-10,
                figure2_depths=(16, 32, 64))


def _figure1_paper() -> Grid:
    return Grid(depths=log_spaced_ints(1, 700, 13), widths=log_spaced_ints(10, 1000, 13),
                seeds=(0,), steps=10_000, lr=PAPER_LR, readout_steps=(1258, 10_000),
                threshold=1e-3, figure2_depths=(46, 235, 406))


def _figure2_quick() -> Grid:
    # Same configurations as the quick Figure 1 at these depths and widths, so a
    # shared --out directory reuses them.
    return Grid(depths=(16, 32, 64), widths=(16, 32, 64, 128, 256), seeds=(0,), steps=1000,
                lr=PAPER_LR, readout_steps=(126, 1000), threshold=1e-3, rtol_stop=1e-10,
                figure2_depths=(16, 32, 64))


def _figure2_paper() -> Grid:
    return Grid(depths=(50, 200, 400), widths=(50, 100, 200, 400, 800, 1200), seeds=(0,),
                steps=10_000, lr=PAPER_LR, readout_steps=(1258, 10_000), threshold=1e-3,
                figure2_depths=(50, 200, 400))


_PRESETS = {
    ("figure1", "quick"): _figure1_quick,
    ("figure1", "paper"): _figure1_paper,
    ("figure2", "quick"): _figure2_quick,
    ("figure2", "paper"): _figure2_paper,
}
