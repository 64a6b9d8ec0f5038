"""Studies: resumable experiments whose configurations are JSON dicts and whose results are arrays.

The sweep of ``runner``/``store`` is made for one kind of run (a deep linear
net's loss history, :class:`~fastlin.experiments.grid.Config`); a study is
any experiment that fits this shape:

* a name and presets (``"quick"``, ``"paper"``, ...), each a list of
  configurations, plain JSON-able dicts;
* ``run(config) -> dict``: a top-level (picklable) function returning named
  numpy arrays and scalars (bool, int, float, str, None);
* ``summarize(records) -> dict`` (JSON-able) and ``plot(records, out_dir)
  -> [paths]``, functions of the stored records only, so that
  ``fastlin plot DIR`` redraws without running anything;
* ``cost(config)``: relative cost, for the order of work, the progress bar
  and the run-time estimate (``probe(configs)`` may name the configuration
  whose measured time calibrates it; by default the one at the
  cost-weighted median), and optionally ``prepare`` (compile kernels before
  the progress bar starts) and ``format_summary``.

:func:`run_study` runs the configurations not yet stored, in a thread pool
(the kernels and NumPy's BLAS release the GIL), saving each as it finishes,
then writes the summary and the figures. Layout of an output directory::

    DIR/study.json            the study's name, preset and configurations
    DIR/records/<id>.npz      one finished configuration (id: hash of the study
                              name and the configuration's canonical JSON)
    DIR/<name>_summary.json   summarize(records)
    DIR/<name>*.png, *.pdf    plot(records, DIR)

Each record file holds the arrays under their names and ``meta``, a JSON
string with the configuration, the scalars, the wall time and the host; it
is written atomically (:func:`~fastlin.experiments.store.atomic_write_bytes`),
so an interrupted study loses at most the configurations in flight.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import io
import json
import math
import numbers
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from tqdm.auto import tqdm

from .executors import default_workers
from .store import TMP_MARK, atomic_write_bytes, hostname

# Modules that define the built-in studies; each registers its studies on import.
BUILTIN_STUDY_MODULES = ("fastlin.experiments.ntk_studies",)
SPEC_FILE = "study.json"
RECORDS_DIR = "records"


@dataclass(frozen=True)
class Study:
    """An experiment made of independent configurations (see the module docstring)."""

    name: str
    description: str
    presets: Mapping[str, Callable[..., list]]
    run: Callable[[dict], dict]
    summarize: Callable[[list], dict]
    plot: Callable[[list, Path], list]
    cost: Callable[[dict], float] = field(default=lambda config: 1.0)
    probe: Callable[[list], dict] | None = None
    prepare: Callable[..., None] | None = None
    format_summary: Callable[[dict], str] | None = None

    def configs(self, preset: str, **options) -> list[dict]:
        """The configurations of ``preset``, canonical (JSON round trip), duplicates refused."""
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r} of study {self.name!r}; "
                             f"choose one of {', '.join(self.presets)}")
        configs = [canonical(c) for c in self.presets[preset](**options)]
        ids = [config_id(self.name, c) for c in configs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"preset {preset!r} of study {self.name!r} lists a configuration twice")
        return configs


@dataclass
class StudyRecord:
    """One finished configuration: ``values`` maps names to numpy arrays or scalars."""

    config: dict
    values: dict
    seconds: float = 0.0
    host: str = ""

    def __getitem__(self, key):
        return self.values[key]


@dataclass
class StudyFailure:
    """A configuration that raised: reported, not stored (the next run retries it)."""

    config: dict
    error: str


@dataclass
class StudyRun:
    """What :func:`run_study` did, and what it wrote."""

    out: Path
    total: int
    done: int = 0
    skipped: int = 0
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)
    summary_path: Path | None = None
    figures: list = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        from .runner import format_seconds

        return (f"{self.total} configurations: {self.done} done, {self.skipped} skipped, "
                f"{self.failed} failed in {format_seconds(self.seconds)} -> {self.out}")


# -- registry ----------------------------------------------------------------------------

_STUDIES: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    """Make ``study`` known by its name (to ``fastlin reproduce`` and ``fastlin plot``)."""
    _STUDIES[study.name] = study
    return study


def _load_builtins() -> None:
    for module in BUILTIN_STUDY_MODULES:
        importlib.import_module(module)


def study_names() -> list[str]:
    """Names of the registered studies (the built-in ones loaded first)."""
    _load_builtins()
    return sorted(_STUDIES)


def get_study(name: str) -> Study:
    """The study called ``name``, or a ValueError listing the known ones."""
    _load_builtins()
    if name not in _STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join(sorted(_STUDIES))}")
    return _STUDIES[name]


# -- configurations and records ------------------------------------------------------------


def canonical(config) -> dict:
    """``config`` as a fresh dict that survives JSON unchanged, or a TypeError."""
    if not isinstance(config, dict):
        raise TypeError(f"a configuration must be a dict, got {type(config).__name__}")
    try:
        text = json.dumps(config, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"configuration {config!r} is not JSON-able: {exc}") from None
    out = json.loads(text)
    if out != config:
        raise TypeError(f"configuration {config!r} does not survive JSON unchanged "
                        f"(tuples, non-string keys?): it reads back as {out!r}")
    return out


def config_id(study_name: str, config: dict) -> str:
    """16 hex digits of SHA-256 over the study name and the configuration's canonical JSON."""
    text = json.dumps({"study": study_name, "config": config}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _split_values(values: dict) -> tuple[dict, dict]:
    """(arrays, scalars) of a run's result, or a TypeError naming the offending entry."""
    if not isinstance(values, dict):
        raise TypeError(f"a study's run must return a dict, got {type(values).__name__}")
    arrays, scalars = {}, {}
    for key, value in values.items():
        if not isinstance(key, str) or not key or key == "meta":
            raise TypeError(f"result names must be non-empty strings other than 'meta', got {key!r}")
        if value is None or isinstance(value, (bool, str)):
            scalars[key] = value
        elif isinstance(value, np.bool_):
            scalars[key] = bool(value)
        elif isinstance(value, numbers.Real):
            scalars[key] = value.item() if isinstance(value, np.generic) else value
        else:
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                raise TypeError(f"result {key!r} must be numeric, boolean or a scalar, "
                                f"got an array of dtype {array.dtype}")
            arrays[key] = array
    return arrays, scalars


class StudyStore:
    """A study's output directory (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)
        self.records = self.root / RECORDS_DIR

    def create(self) -> "StudyStore":
        self.records.mkdir(parents=True, exist_ok=True)
        return self

    def path(self, record_id: str) -> Path:
        return self.records / f"{record_id}.npz"

    def finished_ids(self) -> set[str]:
        if not self.records.is_dir():
            return set()
        return {p.name[:-4] for p in self.records.iterdir()
                if p.name.endswith(".npz") and TMP_MARK not in p.name}

    def save(self, study_name: str, record: StudyRecord) -> Path:
        arrays, scalars = _split_values(record.values)
        meta = {"study": study_name, "config": record.config, "scalars": scalars,
                "seconds": float(record.seconds), "host": record.host,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, meta=np.array(json.dumps(meta)), **arrays)
        path = self.path(config_id(study_name, record.config))
        atomic_write_bytes(path, buffer.getvalue())
        return path

    def load(self, record_id: str) -> StudyRecord | None:
        """The record ``record_id``, or None if absent or unreadable (then it is rerun)."""
        path = self.path(record_id)
        try:
            with np.load(path, allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                arrays = {key: np.array(npz[key]) for key in npz.files if key != "meta"}
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - any unreadable file means "not finished"
            import warnings

            warnings.warn(f"ignoring unreadable study record {path}: {exc}", stacklevel=2)
            return None
        return StudyRecord(config=meta["config"], values={**arrays, **meta["scalars"]},
                           seconds=meta["seconds"], host=meta.get("host", ""))

    def load_configs(self, study_name: str, configs: list[dict]) -> list[StudyRecord]:
        """The stored records of ``configs``, in their order (missing ones left out)."""
        out = []
        for config in configs:
            record = self.load(config_id(study_name, config))
            if record is not None:
                out.append(record)
        return out

    def save_spec(self, study: Study, preset: str, configs: list[dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        spec = {"study": study.name, "preset": preset, "configs": configs}
        atomic_write_bytes(self.root / SPEC_FILE, json.dumps(spec, indent=1).encode())

    def load_spec(self) -> tuple[str, str, list[dict]]:
        """(study name, preset, configurations) of the last study run into this directory."""
        path = self.root / SPEC_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{self.root} holds no study (no {SPEC_FILE}); "
                                    f"run `fastlin reproduce <study>` into it first")
        spec = json.loads(path.read_text())
        return spec["study"], spec["preset"], spec["configs"]

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files of writers that no longer run; return how many."""
        removed = 0
        for directory in (self.root, self.records):
            if not directory.is_dir():
                continue
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- running -------------------------------------------------------------------------------


def run_config(study: Study, config: dict, kernel_threads: int | None = None) -> StudyRecord | StudyFailure:
    """``study.run(config)`` with at most ``kernel_threads`` Numba threads; an exception becomes a failure."""
    from .task import set_kernel_threads

    try:
        set_kernel_threads(kernel_threads)
        started = time.perf_counter()
        values = study.run(dict(config))
        _split_values(values)  # a malformed result is this configuration's failure, not the study's
        return StudyRecord(config=config, values=values, seconds=time.perf_counter() - started,
                           host=hostname())
    except Exception as exc:  # noqa: BLE001 - reported per configuration, the study goes on
        tail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return StudyFailure(config=config, error=tail)


def run_study(study: Study | str, preset: str, out, *, workers: int | None = None, force: bool = False,
              progress: bool = True, stream=None, **options) -> StudyRun:
    """Run the configurations of ``study``'s ``preset`` not yet stored in ``out``, then summarize and plot.

    ``workers`` threads run configurations at once (default: all cores), each
    with its share of the cores for Numba kernels; ``force`` reruns stored
    ones; ``options`` go to the preset (e.g. ``backend=``). A configuration
    that raises is reported (``StudyRun.failures``) and not stored. The
    summary (``<name>_summary.json``) and figures cover the stored records
    of this preset.
    """
    study = get_study(study) if isinstance(study, str) else study
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    started = time.perf_counter()
    configs = study.configs(preset, **options)
    workers = workers or default_workers()
    kernel_threads = max(1, default_workers() // workers)
    store = StudyStore(out).create()
    store.remove_stale_temporaries()
    store.save_spec(study, preset, configs)
    finished = set() if force else store.finished_ids()
    todo = [c for c in configs if config_id(study.name, c) not in finished]
    todo.sort(key=study.cost, reverse=True)  # largest first: no straggler at the end
    summary = StudyRun(out=store.root, total=len(configs), skipped=len(configs) - len(todo))
    stream = stream or sys.stderr
    if todo:
        if study.prepare is not None:
            study.prepare(todo, progress, stream)
        costs = [study.cost(c) for c in todo]
        bar = tqdm(total=sum(costs), disable=not progress, file=stream, desc=f"{study.name} ({workers} threads)",
                   bar_format="{desc}{postfix} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")
        bar.set_postfix_str(f"0/{len(todo)} configs")
        try:
            with cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastlin-study") as pool:
                futures = {pool.submit(run_config, study, c, kernel_threads): k for k, c in enumerate(todo)}
                try:
                    for future in cf.as_completed(futures):
                        item = future.result()
                        if isinstance(item, StudyRecord):
                            store.save(study.name, item)
                            summary.done += 1
                        else:
                            summary.failures.append(item)
                        bar.update(costs[futures[future]])
                        bar.set_postfix_str(f"{summary.done + summary.failed}/{len(todo)} configs, "
                                            f"{summary.failed} failed")
                finally:
                    for future in futures:  # on interrupt: drop what has not started
                        future.cancel()
        finally:
            bar.close()
    for failure in summary.failures:
        print(f"failed: {study.name} {json.dumps(failure.config, sort_keys=True)}: {failure.error}",
              file=sys.stderr)
    if summary.done + summary.skipped:
        summary.summary, summary.summary_path, summary.figures = _draw(study, store, configs)
    summary.seconds = time.perf_counter() - started
    if progress:
        print(summary.line(), file=stream, flush=True)
    return summary


def _draw(study: Study, store: StudyStore, configs: list[dict]):
    from .analysis import write_summary

    records = store.load_configs(study.name, configs)
    data = study.summarize(records)
    data = {**data, "runs": {"expected": len(configs), "finished": len(records)}}
    path = write_summary(data, store.root / f"{study.name}_summary.json")
    figures = list(study.plot(records, store.root))
    return data, path, figures


def redraw(out) -> tuple[Study, dict, Path, list]:
    """Summary and figures of the study stored in ``out``, from its records only (no run).

    Returns (study, summary, summary path, figure paths).
    """
    store = StudyStore(out)
    name, _, configs = store.load_spec()
    study = get_study(name)
    records = store.load_configs(study.name, configs)
    if not records:
        raise ValueError(f"{store.root} holds no finished configuration of {name!r}")
    summary, path, figures = _draw(study, store, configs)
    return study, summary, path, figures


# -- run-time estimate -----------------------------------------------------------------------


def estimate_seconds(study: Study, configs: list[dict], *, workers: int = 1) -> dict:
    """Run time of ``configs`` on this machine, from one measured probe and the study's cost model.

    The probe (``study.probe(configs)``, default: the configuration at the
    cost-weighted median) runs once with the Numba threads each of
    ``workers`` workers would get; its seconds per cost unit times the
    summed cost, divided by ``workers``. Rough: the cost model is a count of
    weights and steps, and workers sharing the cores do not all run at full
    speed. The probe is a real configuration: its record is returned
    (``probe_record``) so that the run can store it instead of running it again.
    """
    probe = (study.probe or cost_weighted_median(study.cost))(configs)
    threads = max(1, default_workers() // workers)
    import numba

    previous = numba.get_num_threads()
    try:
        record = run_config(study, probe, threads)
    finally:
        numba.set_num_threads(previous)
    if isinstance(record, StudyFailure):
        raise RuntimeError(f"the probe {json.dumps(probe, sort_keys=True)} of the estimate failed: {record.error}")
    rate = record.seconds / max(study.cost(probe), 1e-300)
    total = sum(study.cost(c) for c in configs) * rate / workers
    return {"seconds": total, "configurations": len(configs), "workers": workers,
            "probe": probe, "probe_seconds": record.seconds, "probe_record": record}


def cost_weighted_median(cost: Callable[[dict], float]) -> Callable[[list], dict]:
    """A probe chooser: the configuration below which half of the total cost lies.

    Where the time goes, not the typical small configuration (whose fixed
    costs would dominate its time).
    """
    def probe(configs):
        ordered = sorted(configs, key=cost)
        half, acc = sum(cost(c) for c in ordered) / 2, 0.0
        for c in ordered:
            acc += cost(c)
            if acc >= half:
                return c
        return ordered[-1]
    return probe


def json_number(x):
    """A float for JSON, None where it is not finite."""
    return None if x is None or not math.isfinite(x) else float(x)
