"""One file per configuration, written atomically and checked when read: the layer under both stores.

The sweep store (``runs/<id>.npz``, :mod:`.store`) and the study store
(``records/<id>.npz``, :mod:`.study`) keep one compressed NumPy file per
finished configuration. :class:`RecordFiles` is what they share:

* writing: :func:`atomic_write_bytes` (a temporary name, fsync, rename), so a
  file under its final name is always complete when it was written;
* reading: a record counts as finished only if it loads and matches the
  configuration it is filed under (each store says what "matches" means in
  its :meth:`RecordFiles.check` and raises :class:`DamagedRecord` otherwise);
* quarantine: a damaged file (cut short by a full disk, a bad copy or sync,
  or another configuration's record under this name) is moved to
  ``damaged/`` beside the records, under a name no later damage can reuse,
  with a ``.reason`` file saying why; it is never deleted, and its
  configuration is then missing, so the next run computes it again;
* temporaries left by writers that died are removed.

Several processes may write into one directory at once (two terminals, or a
rerun started while a sweep still runs): every write is an atomic rename of
a complete file, two writers of one configuration leave one of two equal
complete files, a temporary file is removed only when its writer is
certainly gone, and a file is quarantined by a rename that only one process
can win (see :meth:`RecordFiles.quarantine` for the one remaining race and
how it is undone).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TMP_MARK = ".tmp-"
DAMAGED_DIR = "damaged"
REASON_SUFFIX = ".reason"
LOCK_FILE = ".lock"
# A temporary file written on another machine (a store on a shared disk) is
# removed only when older than this: its writer's pid cannot be checked
# from here, and no write of a record takes anywhere near this long.
FOREIGN_TEMPORARY_SECONDS = 24 * 3600


class DamagedRecord(Exception):
    """A record file that cannot be read, or does not match the configuration it is filed under."""


def hostname() -> str:
    return socket.gethostname()


def _host_tag() -> str:
    """This machine's name as it appears in temporary file names (no separators)."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", hostname()) or "host"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is always absent, old or complete.

    The bytes go to a temporary file in the same directory (same file
    system, so the rename is atomic) named after the writer's pid and host
    (see :func:`remove_stale_temporaries`), are fsynced, then renamed over
    ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}@{_host_tag()}")
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


def temporary_is_stale(path: Path, now: float | None = None) -> bool:
    """Whether the temporary file ``path`` belongs to a writer that no longer runs.

    Its name ends in ``.tmp-<pid>-<random>@<host>`` (older files lack the
    host: taken as this one). On this host the writer is gone when its pid
    is; a file of another host is stale only after
    ``FOREIGN_TEMPORARY_SECONDS``. A name that cannot be parsed is left alone.
    """
    tail = path.name.split(TMP_MARK, 1)[1]
    owner, _, host = tail.partition("@")
    try:
        pid = int(owner.split("-", 1)[0])
    except ValueError:
        return False
    if host and host != _host_tag():
        try:
            age = (time.time() if now is None else now) - path.stat().st_mtime
        except FileNotFoundError:
            return False
        return age > FOREIGN_TEMPORARY_SECONDS
    return pid != os.getpid() and not _pid_alive(pid)


def remove_stale_temporaries(*directories: Path) -> int:
    """Delete the temporary files of dead writers in ``directories``; return how many."""
    removed = 0
    for directory in directories:
        if not directory.is_dir():
            continue
        for p in directory.iterdir():
            if TMP_MARK in p.name and temporary_is_stale(p):
                p.unlink(missing_ok=True)
                removed += 1
    return removed


@contextlib.contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``directory`` (``flock`` of its ``.lock`` file).

    Used around "read the records, write a table of them", so that of two
    writers the table written last was read last. Where ``fcntl`` is missing
    (Windows) it does nothing: every file is still written atomically.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_npz(path: Path) -> tuple[dict, dict]:
    """(meta, arrays) of a record file: ``meta`` the JSON dict stored as ``meta``, ``arrays`` the rest.

    FileNotFoundError if there is no file; :class:`DamagedRecord` for
    anything that is not a whole record file (cut short, not a zip, no or
    bad ``meta``, a member that does not decompress).
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise DamagedRecord("unreadable: not an .npz archive")
            if "meta" not in npz.files:
                raise DamagedRecord(f"malformed: no 'meta' entry (entries: {', '.join(npz.files) or 'none'})")
            meta = json.loads(str(npz["meta"]))
            arrays = {key: np.array(npz[key]) for key in npz.files if key != "meta"}
    except (FileNotFoundError, DamagedRecord):
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the reader raises, the file is not a record
        raise DamagedRecord(f"unreadable: {type(exc).__name__}: {exc}") from None
    if not isinstance(meta, dict):
        raise DamagedRecord(f"malformed: 'meta' is a JSON {type(meta).__name__}, not an object")
    return meta, arrays


@dataclass(frozen=True)
class Damage:
    """A damaged record file: where it was, why, and where it was moved (None if it was left)."""

    record_id: str
    path: Path
    reason: str
    moved_to: Path | None = None


@dataclass
class Inventory:
    """The expected records of a directory, sorted into whole, absent and damaged (in expected order).

    ``expected`` maps record ids to what each record must match (a sweep's
    Config, a study's configuration dict).
    """

    expected: dict
    records: dict = field(default_factory=dict)
    absent: list = field(default_factory=list)
    damaged: list = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.absent and not self.damaged

    def holes(self) -> list[tuple[str, str, str]]:
        """(record id, "missing" or "damaged", detail) of every expected record that is not whole."""
        damaged = {d.record_id: d for d in self.damaged}
        absent = set(self.absent)
        out = []
        for record_id in self.expected:
            if record_id in damaged:
                d = damaged[record_id]
                where = f"; moved to {d.moved_to.parent.name}/{d.moved_to.name}" if d.moved_to else ""
                out.append((record_id, "damaged", d.reason + where))
            elif record_id in absent:
                out.append((record_id, "missing", "no record file"))
        return out


class RecordFiles:
    """A directory of ``<id>.npz`` record files, checked when read (base of the sweep and study stores).

    Subclasses set ``self.root`` and ``self.directory`` and implement
    :meth:`check`, which turns (meta, arrays) into a record or raises
    :class:`DamagedRecord`.
    """

    root: Path
    directory: Path

    def path(self, record_id: str) -> Path:
        return self.directory / f"{record_id}.npz"

    @property
    def damaged_dir(self) -> Path:
        return self.directory / DAMAGED_DIR

    def record_ids(self) -> set[str]:
        """Ids of the record files present (not checked: see :meth:`inventory`)."""
        if not self.directory.is_dir():
            return set()
        return {p.name[:-4] for p in self.directory.iterdir()
                if p.name.endswith(".npz") and TMP_MARK not in p.name and p.is_file()}

    def check(self, meta: dict, arrays: dict, record_id: str, expected=None):
        """The record held by a file, or :class:`DamagedRecord`; ``expected`` None: only self-consistent."""
        raise NotImplementedError

    def read_file(self, path: Path, record_id: str, expected=None):
        meta, arrays = read_npz(path)
        try:
            return self.check(meta, arrays, record_id, expected)
        except DamagedRecord:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DamagedRecord(f"malformed: {type(exc).__name__}: {exc}") from None

    def read(self, record_id: str, expected=None):
        """The record ``record_id``, checked; FileNotFoundError if absent, DamagedRecord if damaged."""
        return self.read_file(self.path(record_id), record_id, expected)

    def inventory(self, expected: Mapping[str, object], *, quarantine: bool = False) -> Inventory:
        """Read and check every expected record; with ``quarantine``, move the damaged ones aside.

        ``expected`` maps record ids to what each must match. A damaged file
        that another process moved (or replaced by a whole record) first is
        taken as it is found then, and is that process's to report.
        """
        inventory = Inventory(expected=dict(expected))
        for record_id, want in inventory.expected.items():
            try:
                inventory.records[record_id] = self.read(record_id, want)
                continue
            except FileNotFoundError:
                inventory.absent.append(record_id)
                continue
            except DamagedRecord as exc:
                reason = str(exc)
            if not quarantine:
                inventory.damaged.append(Damage(record_id, self.path(record_id), reason))
                continue
            moved = self.quarantine(record_id, reason, want)
            if moved is not None:
                inventory.damaged.append(Damage(record_id, self.path(record_id), reason, moved))
                continue
            try:
                inventory.records[record_id] = self.read(record_id, want)
            except (FileNotFoundError, DamagedRecord):
                inventory.absent.append(record_id)
        return inventory

    def quarantine(self, record_id: str, reason: str, expected=None) -> Path | None:
        """Move the damaged file of ``record_id`` to ``damaged/`` (kept, never deleted); return its new path.

        The name there, ``<id>.<time>.<pid>-<random>.npz``, is new each time,
        so a file damaged again later never replaces an earlier one; a
        ``.reason`` file beside it says why. Returns None when there is
        nothing to move: the file is gone (another process moved it first;
        ``os.rename`` is atomic, one process wins) or is whole now (a writer
        replaced it by its new record after we read it). Quarantines hold
        the store's lock, as does the writing of a table of the records, so
        such a table never sees the one gap quarantine can open: a writer's
        new record renamed over the damaged file between our reading and our
        rename is moved aside with it, found whole, and put back.
        """
        path = self.path(record_id)
        with self.lock():
            try:
                self.read(record_id, expected)
                return None
            except FileNotFoundError:
                return None
            except DamagedRecord:
                pass
            self.damaged_dir.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%S")
            target = self.damaged_dir / f"{record_id}.{stamp}.{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
            try:
                os.rename(path, target)
            except FileNotFoundError:
                return None
            try:
                self.read_file(target, record_id, expected)
            except DamagedRecord:
                atomic_write_bytes(target.with_name(target.name + REASON_SUFFIX), (reason + "\n").encode())
                return target
            os.replace(target, path)  # a whole record, written after we read the damaged one
            return None

    def damaged_files(self) -> list[Path]:
        """Files kept in ``damaged/`` (their ``.reason`` notes left out)."""
        if not self.damaged_dir.is_dir():
            return []
        return sorted(p for p in self.damaged_dir.iterdir()
                      if p.name.endswith(".npz") and TMP_MARK not in p.name)

    def temporaries(self) -> list[Path]:
        """Temporary files in the store's directories (a live writer's, or a dead one's left over)."""
        return sorted(p for d in (self.root, self.directory) if d.is_dir()
                      for p in d.iterdir() if TMP_MARK in p.name)

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files left by writers that no longer run; return how many."""
        return remove_stale_temporaries(self.root, self.directory)

    def lock(self):
        """Exclusive lock of this store (:func:`directory_lock`)."""
        return directory_lock(self.root)


# How many missing configurations a figure or a terminal message names; the
# summary JSON and ``fastlin check`` list all of them.
NAMED_HOLES = 5


def missing_entries(inventory: Inventory, describe) -> list[dict]:
    """The holes of ``inventory`` for a summary JSON: {"id", **describe(expected), "problem", "detail"}."""
    return [{"id": record_id, **describe(inventory.expected[record_id]), "problem": problem, "detail": detail}
            for record_id, problem, detail in inventory.holes()]


def hole_label(entry: dict) -> str:
    """A short name of a missing configuration (a sweep's init, L, m, seed; else its configuration)."""
    if {"init", "depth", "width", "seed"} <= set(entry):
        return f"{entry['init']} L={entry['depth']} m={entry['width']} seed={entry['seed']}"
    return json.dumps(entry.get("config", entry["id"]), sort_keys=True, separators=(",", ":"))


def format_missing(entries: list[dict], total: int, where, summary=None) -> str:
    """One paragraph naming the first few of ``entries`` (missing and damaged configurations) of ``total``.

    ``summary``: the summary file that lists them all under "missing", if one was written.
    """
    damaged = sum(e["problem"] == "damaged" for e in entries)
    named = "; ".join(f"{hole_label(e)}" + (" (damaged)" if e["problem"] == "damaged" else "")
                      for e in entries[:NAMED_HOLES])
    more = f"; and {len(entries) - NAMED_HOLES} more" if len(entries) > NAMED_HOLES else ""
    listed = f"; {Path(summary).name} lists them under \"missing\"" if summary else ""
    return (f"incomplete: {len(entries)} of {total} configurations have no whole record ({damaged} damaged, "
            f"{len(entries) - damaged} missing): {named}{more}. Nothing is drawn or computed from "
            f"them{listed}; `fastlin check {where}` lists them all, and running the same sweep or study "
            f"again computes them.")
