"""Run a sweep: skip finished configurations, run the rest, store each as it finishes.

:func:`run_sweep` is resumable: a configuration whose result file is whole
(it loads and matches the configuration) is skipped (``force=True``
recomputes it); a damaged one is moved to ``runs/damaged/``, reported and
computed again. Results are saved one by one as they arrive, so an
interrupted sweep loses at most the configurations in flight; two sweeps
into one store at once may compute a configuration twice but lose or mix
none (:mod:`.integrity`).
A diverged configuration is a stored result like any other; a configuration
that raises is reported in the summary, not stored (the next run retries it),
and never stops the sweep.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .executors import Executor, default_workers, make_executor
from .grid import Config, Grid, LRRule
from .store import ResultStore, RunRecord
from ..train import prepare
from .task import run_config, set_kernel_threads

# Rough cost model of one GD step (seconds ~ a * step_weights + b * depth):
# the per-layer term stands for the fixed work of each layer (loop and
# chain bookkeeping), which dominates at small widths.
_LAYER_COST_IN_PARAMETERS = 2000
# Each probe of :func:`estimate_sweep_seconds` runs for at least this long,
# and each of its run lengths is timed this many times (the fastest counts).
DEFAULT_PROBE_SECONDS = 1.0
PROBE_REPEATS = 3


def config_cost(config: Config) -> float:
    """Relative cost of a configuration, for ordering work and weighting the progress bar."""
    return config.steps * (config.step_weights + _LAYER_COST_IN_PARAMETERS * config.depth)


@dataclass
class SweepSummary:
    """What a sweep did: counts, wall time and the failures (if any)."""

    out: Path
    total: int
    done: int = 0
    skipped: int = 0
    diverged: int = 0
    failures: list = field(default_factory=list)
    damaged: list = field(default_factory=list)  # integrity.Damage: moved aside, then rerun
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        rerun = f", {len(self.damaged)} damaged, rerun" if self.damaged else ""
        return (f"{self.total} configurations: {self.done} done, {self.skipped} skipped, "
                f"{self.diverged} diverged, {self.failed} failed{rerun} in {format_seconds(self.seconds)} "
                f"-> {self.out}")


def format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def pending_configs(grid: Grid, store: ResultStore, force: bool = False) -> tuple[list, int, list]:
    """(configurations to run, largest first; number skipped as finished; damaged files moved aside).

    Finished means whole (:meth:`ResultStore.check`); every damaged file is
    moved to ``runs/damaged/`` (with ``force`` too, so that no file is
    overwritten unseen) and its configuration is run again.
    """
    configs = grid.configs()
    inventory = store.grid_inventory(grid, quarantine=True)
    todo = configs if force else [c for c in configs if c.id not in inventory.records]
    # Largest first: the pool never ends waiting on one big straggler.
    todo.sort(key=config_cost, reverse=True)
    return todo, len(configs) - len(todo), inventory.damaged


def run_sweep(grid: Grid, out, *, executor: str | Executor = "threads", workers: int | None = None,
              scheduler: str | None = None, force: bool = False, progress: bool = True,
              stream=None) -> SweepSummary:
    """Run every configuration of ``grid`` not yet in the store at ``out``.

    Parameters
    ----------
    grid : the sweep (see :class:`~fastlin.experiments.grid.Grid`).
    out : directory of the result store; created if needed.
    executor : "threads" (default), "processes", "dask", a registered name,
        or an :class:`~fastlin.experiments.executors.Executor` instance.
    workers : parallel workers (default: all cores).
    scheduler : address of a Dask scheduler (``executor="dask"`` only);
        without it Dask starts a LocalCluster.
    force : recompute configurations that are already stored.
    progress : show a progress bar over configurations (weighted by cost, with ETA).
    stream : where the bar and the summary line go (default stderr / stdout).

    Returns the :class:`SweepSummary`; its one-line form is printed at the end.
    """
    started = time.perf_counter()
    runner = make_executor(executor, workers=workers, scheduler=scheduler)  # bad names fail here
    store = ResultStore(out).create()
    store.remove_stale_temporaries()
    store.save_grid(grid)
    todo, skipped, damaged = pending_configs(grid, store, force)
    summary = SweepSummary(out=store.root, total=skipped + len(todo), skipped=skipped, damaged=damaged)
    for d in damaged:
        print(f"damaged: {d.path} ({d.reason}); moved to {d.moved_to}, rerun", file=sys.stderr)
    if todo:
        if runner.local:  # remote Dask workers compile for themselves
            prepare_kernels(todo, progress, stream or sys.stderr)
        costs = {c.id: config_cost(c) for c in todo}
        bar = tqdm(total=sum(costs.values()), disable=not progress, file=stream or sys.stderr,
                   desc=f"sweep ({runner.describe()})",
                   bar_format="{desc}{postfix} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        bar.set_postfix_str(f"0/{len(todo)} configs")
        try:
            with runner:
                for item in runner.run(todo):
                    if isinstance(item, RunRecord):
                        store.save(item)
                        summary.done += 1
                        summary.diverged += item.status == "diverged"
                    else:
                        summary.failures.append(item)
                    finished = summary.done + summary.failed
                    bar.update(costs[item.config.id])
                    bar.set_postfix_str(f"{finished}/{len(todo)} configs, "
                                        f"{summary.diverged} diverged, {summary.failed} failed")
        finally:
            bar.close()
    with store.lock():  # of two sweeps into this store, the table written last is read last
        store.write_table(store.load_grid(grid), steps=grid.readout_steps)
    summary.seconds = time.perf_counter() - started
    for failure in summary.failures:
        print(f"failed: {failure.config.init} L={failure.config.depth} m={failure.config.width} "
              f"seed={failure.config.seed}: {failure.error}", file=sys.stderr)
    if progress:
        print(summary.line(), file=stream or sys.stdout, flush=True)
    return summary


def prepare_kernels(configs: list[Config], progress: bool, stream) -> None:
    """Compile here (or load from Numba's cache) the CPU kernel of each dtype the configurations use.

    See :func:`prepare_cpu_kernel`.
    """
    for dtype in sorted({c.dtype for c in configs if c.backend == "cpu"}):
        prepare_cpu_kernel(dtype, progress, stream)


def prepare_cpu_kernel(dtype: str, progress: bool, stream) -> None:
    """Compile the CPU kernel of ``dtype`` now (or load it from Numba's cache), saying so if ``progress``.

    Numba compiles it on first use and caches it; left to the first training
    run, that time would pass with its progress bar at 0 and no word why,
    and every worker would compile the same code at once.
    """
    if progress:
        print(f"preparing the CPU kernel ({dtype}; Numba compiles it on first use and caches it) ...",
              end="", file=stream, flush=True)
    seconds = prepare("cpu", dtype)
    if progress:
        print(f" ready in {format_seconds(seconds)}", file=stream, flush=True)


def estimate_sweep_seconds(grid: Grid, *, workers: int = 1, probe_seconds: float | None = None,
                           progress: bool = False, stream=None) -> dict:
    """Estimate a sweep's run time from step rates measured on this machine.

    Two probe shapes are timed with the grid's backend: the widest width at a
    moderate depth (L <= 16, so the probe fits in memory even when the
    grid's largest net does not) and the narrowest width at the largest
    depth. They fix a and b in seconds per step = a * step_weights + b * L,
    which is summed over the grid and divided by ``workers``. Probes use
    Gaussian weights and a tiny fixed rate, so they never diverge (the step
    rate depends on neither). The kernels are prepared first (``progress``:
    say so on ``stream``, default stderr), so compiling is not timed.
    """
    probe_seconds = DEFAULT_PROBE_SECONDS if probe_seconds is None else probe_seconds
    configs = grid.configs()
    prepare_kernels(configs, progress, stream or sys.stderr)
    base = configs[0]
    wide = dataclasses.replace(base, width=max(grid.widths), depth=min(max(grid.depths), 16))
    deep = dataclasses.replace(base, width=min(grid.widths), depth=max(grid.depths))
    # Time the probes with the kernel threads each of ``workers`` workers gets.
    previous = _kernel_threads_now()
    set_kernel_threads(max(1, default_workers() // workers))
    try:
        t_wide = _seconds_per_step(wide, probe_seconds)
        t_deep = _seconds_per_step(deep, probe_seconds) if deep != wide else t_wide
    finally:
        set_kernel_threads(previous)
    a = t_wide / wide.step_weights  # the wide probe is dominated by weight traffic
    b = max(0.0, (t_deep - a * deep.step_weights) / deep.depth)
    probes = [(wide, t_wide), (deep, t_deep)]
    total = sum(c.steps * (a * c.step_weights + b * c.depth) for c in configs)
    return {"seconds": total / workers, "configurations": len(configs), "workers": workers,
            "backend": grid.backend,
            "probes": [{"depth": p.depth, "width": p.width, "seconds_per_step": t} for p, t in probes]}


def _kernel_threads_now() -> int:
    import numba

    return numba.get_num_threads()


def _seconds_per_step(config: Config, probe_seconds: float) -> float:
    """Measured seconds per GD step of ``config``'s shape.

    A one-step warm-up compiles the kernels; then runs of k and 2k steps are
    timed, k doubling until the k extra steps of the longer run take
    ``probe_seconds``; their difference divided by k cancels the fixed cost
    of a run (weight conversion, first touch of fresh memory), which can
    exceed a second at paper scale. Each length is timed ``PROBE_REPEATS``
    times and the fastest kept: on a shared machine one disturbed run of a
    few long steps would otherwise set the rate (seen: 310 ms/step measured
    for a 55 ms/step net).
    """
    probe = dataclasses.replace(config, init="gaussian", lr=LRRule("fixed", 1e-30), rtol_stop=None)
    run_config(dataclasses.replace(probe, steps=1))

    def fastest(steps):
        return min(run_config(dataclasses.replace(probe, steps=steps)).seconds for _ in range(PROBE_REPEATS))

    k = 1
    while True:
        short, long = fastest(k), fastest(2 * k)
        if long - short >= probe_seconds or k >= 4096:
            return max(long - short, 1e-9) / k
        k *= 2
