"""The result store: one file per configuration, written atomically, and a tidy table.

Layout of a store directory::

    DIR/sweep.json          the grid of the last sweep run into DIR (figures read it)
    DIR/runs/<id>.npz       one finished configuration (id = Config.id)
    DIR/runs/damaged/       damaged record files moved aside (kept, with a .reason each)
    DIR/results.csv         tidy table of all runs, rebuilt from runs/ after each sweep

Each ``runs/<id>.npz`` holds ``loss``, the full float64 history loss(t) for
t = 0..steps (the whole history, not a subset: 80 kB at 10 000 steps, and
every figure or read-out step can be chosen after the fact), and ``meta``, a
JSON string with the configuration, the status ("completed", "converged",
"diverged"), steps run, the learning rate eta, the backend, the host and the
wall time.

Every file is written to a temporary name in the same directory, flushed to
disk and renamed over its final name (``os.replace`` is atomic on POSIX), so
a run killed at any moment (kill -9) leaves either the old complete file or
the new complete file, never a torn one; a leftover temporary file is ignored
and removed by the next sweep.

A configuration counts as finished only if its file loads and matches it
(:meth:`ResultStore.check`): a file damaged after the fact (a full disk, a
bad copy or sync) is moved to ``runs/damaged/`` by the next sweep, which
computes the configuration again; figures and ``fastlin check`` name what
is missing or damaged (:meth:`ResultStore.grid_inventory`). The shared
machinery, and what several writers at once can and cannot do, is in
:mod:`.integrity`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..kernels import STATUS_NAMES
from .grid import Config, Grid
from .integrity import (TMP_MARK, DamagedRecord, Inventory, RecordFiles, atomic_write_bytes,  # noqa: F401
                        hostname)

STATUSES = tuple(STATUS_NAMES.values())


@dataclass
class RunRecord:
    """The outcome of one configuration: its loss history and how it ended.

    loss : float64 array, loss(t) for t = 0..config.steps (NaN after divergence,
        the last value repeated after convergence).
    """

    config: Config
    loss: np.ndarray
    status: str
    steps_run: int
    seconds: float
    lr: float
    backend: str
    host: str = ""

    @property
    def relative_loss(self) -> np.ndarray:
        """loss(t) / loss(0)."""
        return self.loss / self.loss[0]

    def meta(self) -> dict:
        return {"config": self.config.to_dict(), "id": self.config.id, "status": self.status,
                "steps_run": int(self.steps_run), "seconds": float(self.seconds),
                "lr": float(self.lr), "backend": self.backend, "host": self.host,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}

    @classmethod
    def from_meta(cls, meta: dict, loss: np.ndarray) -> "RunRecord":
        return cls(config=Config.from_dict(meta["config"]), loss=loss, status=meta["status"],
                   steps_run=meta["steps_run"], seconds=meta["seconds"], lr=meta["lr"],
                   backend=meta["backend"], host=meta.get("host", ""))


class ResultStore(RecordFiles):
    """A directory of finished configurations (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.directory = self.root / "runs"

    def create(self) -> "ResultStore":
        self.runs.mkdir(parents=True, exist_ok=True)
        return self

    def has(self, config_id: str) -> bool:
        """Whether a file is stored for ``config_id`` (not whether it is whole: see :meth:`read`)."""
        return self.path(config_id).is_file()

    def finished_ids(self) -> set[str]:
        """Ids of the record files present, unchecked (:meth:`inventory` checks them)."""
        return self.record_ids()

    def save(self, record: RunRecord) -> Path:
        """Write one record atomically; returns its path."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, loss=np.asarray(record.loss, dtype=np.float64),
                            meta=np.array(json.dumps(record.meta())))
        path = self.path(record.config.id)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def check(self, meta: dict, arrays: dict, record_id: str, expected: Config | None = None) -> RunRecord:
        """The RunRecord of a file filed as ``record_id``, or DamagedRecord saying what does not match.

        Whole means: its configuration's id is ``record_id`` (and, given
        ``expected``, its configuration is that one); the loss history is
        float64 of length steps + 1; the status is one of "completed",
        "converged", "diverged"; 0 <= steps_run <= steps; and a completed or
        converged run's history is finite.
        """
        record = RunRecord.from_meta(meta, np.asarray(arrays["loss"]))
        c = record.config
        if c.id != record_id or meta.get("id") != record_id:
            raise DamagedRecord(f"mismatch: holds configuration {c.id} ({c.init} L={c.depth} m={c.width} "
                                f"seed={c.seed}), not {record_id}")
        if expected is not None and c != expected:
            raise DamagedRecord(f"mismatch: its configuration differs from the grid's: {c.to_dict()}")
        loss = record.loss
        if loss.dtype != np.float64 or loss.shape != (c.steps + 1,):
            raise DamagedRecord(f"mismatch: loss history is {loss.dtype} of shape {loss.shape}, "
                                f"expected float64 of shape ({c.steps + 1},) (steps + 1)")
        if record.status not in STATUSES:
            raise DamagedRecord(f"malformed: status {record.status!r} is not one of {', '.join(STATUSES)}")
        if not isinstance(record.steps_run, int) or not 0 <= record.steps_run <= c.steps:
            raise DamagedRecord(f"malformed: steps_run {record.steps_run!r} is not in [0, {c.steps}]")
        if record.status != "diverged" and not np.isfinite(loss).all():
            t = int(np.flatnonzero(~np.isfinite(loss))[0])
            raise DamagedRecord(f"not finite: status {record.status!r} but loss({t}) = {loss[t]}")
        if not math.isfinite(record.lr):
            raise DamagedRecord(f"malformed: learning rate {record.lr!r}")
        return record

    def load(self, config_id: str) -> RunRecord | None:
        """The record of ``config_id`` if it is whole; None if absent or damaged (then a sweep reruns it).

        A damaged file is named in a warning; :meth:`inventory` (used by
        sweeps, figures and ``fastlin check``) says which and why.
        """
        try:
            return self.read(config_id)
        except FileNotFoundError:
            return None
        except DamagedRecord as exc:
            warnings.warn(f"ignoring damaged result file {self.path(config_id)}: {exc}", stacklevel=2)
            return None

    def load_all(self) -> list[RunRecord]:
        """Every whole record in ``runs/``, in id order (damaged files are left out, with a warning)."""
        out = []
        for config_id in sorted(self.finished_ids()):
            record = self.load(config_id)
            if record is not None:
                out.append(record)
        return out

    def grid_inventory(self, grid: Grid, *, quarantine: bool = False) -> Inventory:
        """:meth:`inventory` of ``grid``'s configurations: whole records, absent and damaged ids."""
        return self.inventory({c.id: c for c in grid.configs()}, quarantine=quarantine)

    def load_grid(self, grid: Grid) -> list[RunRecord]:
        """The whole records of ``grid``'s configurations (missing and damaged ones left out).

        To learn which are left out, use :meth:`grid_inventory`.
        """
        return list(self.grid_inventory(grid).records.values())

    # The grid of the last sweep, so that `fastlin plot DIR` knows what to draw.

    def save_grid(self, grid: Grid) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.root / "sweep.json",
                           json.dumps(grid.to_dict(), indent=2).encode())

    def load_grid_spec(self) -> Grid:
        path = self.root / "sweep.json"
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} is not a fastlin result store (no sweep.json); "
                                    f"run `fastlin sweep` or `fastlin reproduce` into it first")
        return Grid.from_dict(json.loads(path.read_text()), where=str(path))

    def write_table(self, records=None, steps=None) -> Path:
        """Write ``results.csv``: one row per (configuration, step), tidy.

        Rows are taken at log-spaced steps (1, 2, 5, 10, ...), the final step
        and the grid's read-out steps (``steps``), with loss and relative loss.
        """
        records = self.load_all() if records is None else records
        columns = ["config_id", "init", "depth", "width", "seed", "steps", "lr_rule", "lr_value",
                   "lr", "dtype", "data_seed", "dx", "n", "dy", "backend", "status", "steps_run",
                   "seconds", "step", "loss", "relative_loss"]
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        for r in sorted(records, key=_record_order):
            c = r.config
            ts = table_steps(c.steps, steps or ())
            rel = r.relative_loss
            head = [c.id, c.init, c.depth, c.width, c.seed, c.steps, c.lr.rule, c.lr.value,
                    repr(r.lr), c.dtype, c.data_seed, c.dx, c.n, c.dy, r.backend, r.status,
                    r.steps_run, f"{r.seconds:.3f}"]
            for t in ts:
                writer.writerow(head + [t, repr(float(r.loss[t])), repr(float(rel[t]))])
        path = self.root / "results.csv"
        atomic_write_bytes(path, out.getvalue().encode())
        return path


def hole_fields(config: Config) -> dict:
    """What names a sweep configuration in lists of missing ones: init, depth, width, seed."""
    return {"init": config.init, "depth": config.depth, "width": config.width, "seed": config.seed}


def _record_order(r: RunRecord):
    c = r.config
    return (c.init, c.depth, c.width, c.seed, c.steps, c.id)


def table_steps(steps: int, extra=()) -> list[int]:
    """0, 1, 2, 5, 10, 20, 50, ... up to ``steps``, plus ``steps`` and ``extra``."""
    out, decade = {0, steps}, 1
    while decade <= steps:
        out.update(k * decade for k in (1, 2, 5) if k * decade <= steps)
        decade *= 10
    out.update(t for t in extra if 0 <= t <= steps)
    return sorted(out)

