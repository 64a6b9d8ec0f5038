"""Preset grids for the paper's figures: ``quick`` (2 CPU cores, minutes) and ``paper``.

Data: always the paper's (Section 6): X in R^{1024 x 16}, W* in R^{10 x 1024},
Y = W* X, entries iid N(0, 1), from data seed 0.

Learning rate: every preset uses a multiple c of the Theorem 4.1 rate,
eta = c * d_y / (2 L ||X||_2^2). The 1/L scaling is the theorem's: it keeps
the largest eigenvalue of the NTK Gram matrix P(t) times eta of order one at
every depth, so depth enters only through the init. The theorem proves
convergence for m >= d_x = 1024; the figures go down to m = 10, where the
first layer is a projection and P(0) fluctuates more: with c = 1, measured,
even orthogonal nets of width 8-16 diverge at depths 4-8 in the first 20
steps, with c = 0.5 they do not. So c = 0.5.
"""

from __future__ import annotations

from .grid import Grid, LRRule, log_spaced_ints

FIGURES = ("figure1", "figure2")
PRESET_NAMES = ("quick", "paper")

PAPER_LR = LRRule("theorem", 0.5)


def available_backend(*, allow_cuda: bool) -> str:
    """The fastest backend that loads on this machine: cuda (if allowed), cpu, numpy."""
    from ..train import get_backend

    for name in (("cuda",) if allow_cuda else ()) + ("cpu",):
        try:
            get_backend(name)
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


def _figure1_quick() -> Grid:
    return Grid(depths=(8, 16, 32, 64, 128), widths=(10, 16, 25, 40, 64, 100, 160, 256),
                seeds=(0,), steps=1000, lr=PAPER_LR, readout_steps=(126, 1000), threshold=1e-2,
                figure2_depths=(16, 32, 64))


def _figure1_paper() -> Grid:
    return Grid(depths=log_spaced_ints(1, 700, 13), widths=log_spaced_ints(10, 1000, 13),
                seeds=(0,), steps=10_000, lr=PAPER_LR, readout_steps=(1258, 10_000),
                threshold=1e-2)


def _figure2_quick() -> Grid:
    return Grid(depths=(16, 32, 64), widths=(16, 32, 64, 128, 256), seeds=(0,), steps=1000,
                lr=PAPER_LR, readout_steps=(126, 1000), figure2_depths=(16, 32, 64))


def _figure2_paper() -> Grid:
    return Grid(depths=(50, 200, 400), widths=(50, 100, 200, 400, 800, 1200), seeds=(0,),
                steps=10_000, lr=PAPER_LR, readout_steps=(1258, 10_000),
                figure2_depths=(50, 200, 400))


_PRESETS = {
    ("figure1", "quick"): _figure1_quick,
    ("figure1", "paper"): _figure1_paper,
    ("figure2", "quick"): _figure2_quick,
    ("figure2", "paper"): _figure2_paper,
}
