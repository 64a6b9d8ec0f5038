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
    DIR/records/damaged/      damaged record files moved aside (kept, with a .reason each)
    DIR/<name>_summary.json   summarize(records)
    DIR/<name>*.png, *.pdf    plot(records, DIR)

Each record file holds the arrays under their names and ``meta``, a JSON
string with the configuration, the scalars, the wall time and the host; it
is written atomically (:func:`~fastlin.experiments.integrity.atomic_write_bytes`),
so an interrupted study loses at most the configurations in flight. As in
the sweep store (:mod:`.integrity`, shared by both), a record counts only if
it loads and matches its configuration: a damaged one is moved to
``records/damaged/`` and run again, and the summary lists the
configurations without a whole record under ``missing``.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import io
import json
import math
import numbers
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from tqdm.auto import tqdm

from .executors import default_workers
from .integrity import (TMP_MARK, DamagedRecord, Inventory, RecordFiles, atomic_write_bytes,  # noqa: F401
                        hostname, missing_entries)

# Modules that define the built-in studies; each registers its studies on import.
BUILTIN_STUDY_MODULES = ("fastlin.experiments.ntk_studies", "fastlin.experiments.speed")
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
    damaged: list = field(default_factory=list)  # integrity.Damage: moved aside, then rerun
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)
    summary_path: Path | None = None
    figures: list = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        from .runner import format_seconds

        rerun = f", {len(self.damaged)} damaged, rerun" if self.damaged else ""
        return (f"{self.total} configurations: {self.done} done, {self.skipped} skipped, "
                f"{self.failed} failed{rerun} in {format_seconds(self.seconds)} -> {self.out}")


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


class StudyStore(RecordFiles):
    """A study's output directory (see the module docstring)."""

    def __init__(self, root):
        self.root = Path(root)
        self.records = self.directory = self.root / RECORDS_DIR

    def create(self) -> "StudyStore":
        self.records.mkdir(parents=True, exist_ok=True)
        return self

    def finished_ids(self) -> set[str]:
        """Ids of the record files present, unchecked (:meth:`inventory` checks them)."""
        return self.record_ids()

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

    def check(self, meta: dict, arrays: dict, record_id: str, expected: dict | None = None) -> StudyRecord:
        """The StudyRecord of a file filed as ``record_id``, or DamagedRecord saying what does not match.

        Whole means: the id of its study name and configuration is
        ``record_id`` and, given ``expected``, its configuration equals it.
        """
        config = meta["config"]
        held = config_id(meta["study"], config)
        if held != record_id:
            raise DamagedRecord(f"mismatch: holds configuration {held} of study {meta['study']!r} "
                                f"({json.dumps(config, sort_keys=True)}), not {record_id}")
        if expected is not None and config != expected:
            raise DamagedRecord(f"mismatch: its configuration {json.dumps(config, sort_keys=True)} "
                                f"differs from the study's")
        scalars = meta["scalars"]
        if not isinstance(scalars, dict) or set(scalars) & set(arrays):
            raise DamagedRecord("malformed: scalars are not a table of names apart from the arrays")
        return StudyRecord(config=config, values={**arrays, **scalars}, seconds=float(meta["seconds"]),
                           host=meta.get("host", ""))

    def load(self, record_id: str) -> StudyRecord | None:
        """The record ``record_id`` if it is whole; None if absent or damaged (then it is rerun)."""
        try:
            return self.read(record_id)
        except FileNotFoundError:
            return None
        except DamagedRecord as exc:
            warnings.warn(f"ignoring damaged study record {self.path(record_id)}: {exc}", stacklevel=2)
            return None

    def configs_inventory(self, study_name: str, configs: list[dict], *, quarantine: bool = False) -> Inventory:
        """:meth:`inventory` of ``configs``: whole records, absent and damaged ids."""
        return self.inventory({config_id(study_name, c): c for c in configs}, quarantine=quarantine)

    def load_configs(self, study_name: str, configs: list[dict]) -> list[StudyRecord]:
        """The whole records of ``configs``, in their order (missing and damaged ones left out)."""
        return list(self.configs_inventory(study_name, configs).records.values())

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

    A stored record counts only if it is whole (it loads, and its study and
    configuration are the ones it is filed under); a damaged one is moved to
    ``records/damaged/``, reported (``StudyRun.damaged``) and run again.
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
    inventory = store.configs_inventory(study.name, configs, quarantine=True)
    todo = configs if force else [c for c in configs if config_id(study.name, c) not in inventory.records]
    todo.sort(key=study.cost, reverse=True)  # largest first: no straggler at the end
    summary = StudyRun(out=store.root, total=len(configs), skipped=len(configs) - len(todo),
                       damaged=inventory.damaged)
    stream = stream or sys.stderr
    for d in inventory.damaged:
        print(f"damaged: {d.path} ({d.reason}); moved to {d.moved_to}, rerun", file=sys.stderr)
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
    """(summary, its path, figures) of the whole records of ``configs``; the others listed under "missing"."""
    from .analysis import write_summary

    inventory = store.configs_inventory(study.name, configs)
    records = list(inventory.records.values())
    missing = missing_entries(inventory, lambda config: {"config": config})
    data = study.summarize(records)
    data = {**data, "runs": {"expected": len(configs), "finished": len(records), "missing": len(missing)},
            "missing": missing}
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
    if not store.configs_inventory(study.name, configs).records:
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
