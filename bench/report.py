"""Per-step floors and the benchmark report: ms/step, GFLOP/s and GB/s against this machine.

The report is printed at the end of a ``pytest bench/`` run (bench/conftest.py)
and can be printed again from a saved run::

    python bench/report.py results.json      # a file from --benchmark-json

Achieved rates are *floor work over measured time*: GFLOP/s = floor flops per
step / seconds per step, GB/s = one-pass bytes per step / seconds per step
(:func:`step_floor`). A backend that moves more bytes or does more flops than
the floor (every peer does) shows a lower achieved rate than it really
sustains; the numbers answer "how far from the floor is this step".
"""

from __future__ import annotations

import json
import sys

# Filled by the benchmark tests (bench/test_bench_cpu.py), one dict per
# benchmark; printed by bench/conftest.py at the end of the session.
RESULTS: list[dict] = []

FASTLIN_PREFIX = "fastlin-"


# A run is quiet while other processes use at most this many cores.
QUIET_CORES = 0.2


def pass_flops(dims, n: int, dy: int) -> tuple[float, float]:
    """Flops of one upward and of one downward pass over the swept layers 2..L.

    Per weight: upward 2(n + 2r), the new prefix chain (n) and the old chain
    carried as the update's factor (E A^T on dy rows, or A itself on n: r
    either way) plus the rank-r update, r = min(n, dy); downward 2(2dy + r),
    both suffix chains and the update (docs/design.md, "The one-pass fused step").
    The first layer's Z step is not counted (see ``step_floor``).
    """
    swept = sum(int(dims[i]) * int(dims[i - 1]) for i in range(2, len(dims)))
    r = min(n, dy)
    return swept * 2 * (n + 2 * r), swept * 2 * (2 * dy + r)


def step_floor(dims, n: int, dy: int, itemsize: int) -> dict:
    """Floor work of one exact GD step of the deep linear net ``dims = [d_0, ..., d_L]``.

    From docs/design.md, "The one-pass fused step", for layers 2..L:

    * bytes = 2 * itemsize * params: each weight read once and written once
      per step, the floor for exact GD on this model.
    * flops = the mean of an upward and a downward pass (``pass_flops``),
      params * (2n + 4r + 4dy + 2r) / 2 = params * (n + 2dy + 3r): 66 per
      parameter for n = 16, dy = 10, against 2(n + dy + r) = 72 for the
      textbook forward / backward / update.

    The first layer (d_1 x d_0) enters the step only through Z = V_1 X
    (fastlin/kernels/cpu, "The first layer"): 2 d_1 n (dy + n) flops and
    Z and its running sum read and written, 4 itemsize n d_1 bytes. ``params``
    still counts every weight.
    """
    params = sum(int(dims[i]) * int(dims[i - 1]) for i in range(1, len(dims)))
    swept = params - int(dims[1]) * int(dims[0])
    up, down = pass_flops(dims, n, dy)
    d1 = int(dims[1])
    return {"params": params,
            "flops": (up + down) / 2 + 2 * d1 * n * (dy + n),
            "bytes": 2 * itemsize * swept + 4 * itemsize * n * d1}


def _gemm_limit(machine: dict, dtype: str) -> float:
    return machine["sgemm_GFLOPs"] if dtype == "float32" else machine["dgemm_GFLOPs"]


def _cores(row: dict) -> str:
    cores = row.get("other_cores")
    return "?" if cores is None else f"{cores:.2f}"


def format_report(rows: list[dict], machine: dict | None) -> str:
    """The report table, one block per (L, m, dtype), fastlin rows with their speedup.

    ``rows`` hold the ``extra_info`` of each benchmark plus ``min_s`` and
    ``median_s`` (seconds per round of ``steps_per_round`` steps).
    """
    if not rows:
        return "fastlin bench: no results"
    lines = ["fastlin bench: one full-batch GD step, X 1024x16, Y 10x16 (paper_data), orthogonal init, "
             "Theorem 4.1 rate"]
    if machine:
        lines.append(f"machine (measured by bench/machine.py): {machine['cores']} cores, "
                     f"copy {machine['copy_GBps']:.1f} GB/s (read+write), "
                     f"dgemm {machine['dgemm_GFLOPs']:.1f} GFLOP/s, sgemm {machine['sgemm_GFLOPs']:.1f} GFLOP/s"
                     f" (other processes meanwhile: {machine.get('other_cores', '?')} cores)"
                     + _build(machine))
    lines.append("ms/step = min over rounds (median in brackets); GFLOP/s and GB/s = floor work / min time "
                 "(bench/report.py:step_floor); first call = first chunk incl. compile; "
                 "others = cores used by other processes while timing (> ~0.2: noisy); "
                 "speedup = best peer ms / this ms")
    header = (f"{'L':>4} {'m':>5} {'dtype':<8}{'backend':<15}{'ms/step':>10} {'(median)':>10}"
              f"{'GFLOP/s':>9}{'GB/s':>8}{'first call s':>14}{'others':>8}  speedup vs best peer")
    lines += [header, "-" * len(header)]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["L"], row["m"], row["dtype"]), []).append(row)
    for (L, m, dtype), group in groups.items():
        first = group[0]
        floor_cells = f"{first['flops'] / 1e6:.3g} MFLOP, {first['bytes'] / 1e6:.3g} MB"
        if machine:
            t_flops = first["flops"] / (_gemm_limit(machine, dtype) * 1e9) * 1e3
            t_bytes = first["bytes"] / (machine["copy_GBps"] * 1e9) * 1e3
            floor_cells += f": {t_flops:.3g} ms at gemm rate, {t_bytes:.3g} ms at copy bandwidth"
        lines.append(f"{L:>4} {m:>5} {dtype:<8}{'floor':<15}{floor_cells}")
        peers = [r for r in group if not r["backend"].startswith(FASTLIN_PREFIX)]
        best = min(peers, key=lambda r: r["min_s"] / r["steps_per_round"]) if peers else None
        for row in group:
            k = row["steps_per_round"]
            ms = row["min_s"] / k * 1e3
            ms_median = row["median_s"] / k * 1e3
            gflops = row["flops"] / (ms / 1e3) / 1e9
            gbps = row["bytes"] / (ms / 1e3) / 1e9
            speedup = ""
            if row["backend"].startswith(FASTLIN_PREFIX) and best is not None:
                best_ms = best["min_s"] / best["steps_per_round"] * 1e3
                speedup = f"{best_ms / ms:.2f}x ({best['backend']})"
            lines.append(f"{'':>4} {'':>5} {'':<8}{row['backend']:<15}{ms:>10.4g} {'(' + format(ms_median, '.4g') + ')':>10}"
                         f"{gflops:>9.1f}{gbps:>8.1f}{row['first_call_s']:>14.3f}{_cores(row):>8}  {speedup}")
    return "\n".join(lines)


def _build(machine: dict) -> str:
    """``; LLVM cpu NAME, kernels with 512-bit vectors`` (or default width); nothing for runs saved without it."""
    if "llvm_cpu" not in machine:
        return ""
    width = "512-bit vectors" if machine["wide_vectors"] else "LLVM's default vector width"
    return f"; LLVM cpu {machine['llvm_cpu']}, kernels with {width}"


def rows_from_json(data: dict) -> tuple[list[dict], dict | None]:
    """Report rows and machine limits from a pytest-benchmark ``--benchmark-json`` file."""
    rows = []
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info", {})
        if "steps_per_round" not in info:
            continue
        rows.append({**info, "min_s": bench["stats"]["min"], "median_s": bench["stats"]["median"]})
    return rows, data.get("machine_info", {}).get("fastlin_limits")


def best_of_runs(runs: list[list[dict]], quiet: float = QUIET_CORES) -> list[dict]:
    """One row per (L, m, dtype, backend): the fastest over several runs.

    On a shared machine a run is disturbed when other processes take cores
    while it is timed, so rows whose ``other_cores`` exceeds ``quiet`` are
    used only where no quiet row exists. Order follows the first run.
    """
    best: dict[tuple, dict] = {}
    for rows in runs:
        for row in rows:
            key = (row["L"], row["m"], row["dtype"], row["backend"])
            noisy = (row.get("other_cores") or 0.0) > quiet
            rank = (noisy, row["min_s"] / row["steps_per_round"])
            if key not in best or rank < best[key][0]:
                best[key] = (rank, row)
    return [row for _, row in best.values()]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python bench/report.py RESULTS.json [MORE.json ...]  (from pytest --benchmark-json;"
              " several files: the fastest quiet run of each cell)", file=sys.stderr)
        return 2
    runs, machine = [], None
    for path in argv:
        with open(path) as fh:
            rows, limits = rows_from_json(json.load(fh))
        runs.append(rows)
        machine = machine or limits
    print(format_report(best_of_runs(runs), machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
