"""The result store: one file per configuration, written atomically, and a tidy table.

Layout of a store directory::

    DIR/sweep.json          the grid of the last sweep run into DIR (figures read it)
    DIR/runs/<id>.npz       one finished configuration (id = Config.id)
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
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .grid import Config, Grid

TMP_MARK = ".tmp-"


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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always absent, old or complete.

    The bytes go to a temporary file in the same directory (same file
    system, so the rename is atomic), are fsynced, then renamed over ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable (best effort: not every platform allows it)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultStore:
    """A directory of finished configurations (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def create(self) -> "ResultStore":
        self.runs.mkdir(parents=True, exist_ok=True)
        return self

    def path(self, config_id: str) -> Path:
        return self.runs / f"{config_id}.npz"

    def has(self, config_id: str) -> bool:
        return self.path(config_id).is_file()

    def finished_ids(self) -> set[str]:
        if not self.runs.is_dir():
            return set()
        return {p.name[:-4] for p in self.runs.iterdir()
                if p.name.endswith(".npz") and TMP_MARK not in p.name}

    def save(self, record: RunRecord) -> Path:
        """Write one record atomically; returns its path."""
        buffer = io.BytesIO()
        np.savez_compressed(buffer, loss=np.asarray(record.loss, dtype=np.float64),
                            meta=np.array(json.dumps(record.meta())))
        path = self.path(record.config.id)
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def load(self, config_id: str) -> RunRecord | None:
        """The record of ``config_id``, or None if absent or unreadable (then it is rerun)."""
        path = self.path(config_id)
        try:
            with np.load(path, allow_pickle=False) as npz:
                loss = np.array(npz["loss"], dtype=np.float64)
                meta = json.loads(str(npz["meta"]))
            return RunRecord.from_meta(meta, loss)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any unreadable file means "not finished"
            warnings.warn(f"ignoring unreadable result file {path}: {exc}", stacklevel=2)
            return None

    def load_all(self) -> list[RunRecord]:
        out = []
        for config_id in sorted(self.finished_ids()):
            record = self.load(config_id)
            if record is not None:
                out.append(record)
        return out

    def load_grid(self, grid: Grid) -> list[RunRecord]:
        """The finished records of ``grid``'s configurations (missing ones left out)."""
        out = []
        for config in grid.configs():
            record = self.load(config.id)
            if record is not None:
                out.append(record)
        return out

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by writers that no longer run; return how many."""
        removed = 0
        if not self.runs.is_dir():
            return 0
        for directory in (self.root, self.runs):
            for p in directory.iterdir():
                if TMP_MARK not in p.name:
                    continue
                try:
                    pid = int(p.name.split(TMP_MARK, 1)[1].split("-", 1)[0])
                except ValueError:
                    continue
                if pid != os.getpid() and not _pid_alive(pid):
                    p.unlink(missing_ok=True)
                    removed += 1
        return removed

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


def hostname() -> str:
    return socket.gethostname()
