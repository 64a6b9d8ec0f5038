"""``fastlin check DIR``: verify every record of a sweep store or a study, without changing anything.

A directory with ``sweep.json`` is a sweep store (:mod:`.store`), one with
``study.json`` a study (:mod:`.study`); both are checked by the same rules
(:mod:`.integrity`): every configuration of the grid or preset must have a
record that loads and matches it. Records of other grids or presets (an
earlier sweep into the same directory) are checked too, and count as
problems only if damaged. Files already moved to ``damaged/`` and temporary
files are reported, but are not problems.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .integrity import DamagedRecord, hole_label
from .store import ResultStore, hole_fields
from .study import SPEC_FILE, StudyStore, config_id

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class Problem:
    """One row of the check's table."""

    problem: str  # "damaged" or "missing"
    file: str  # relative to the checked directory
    configuration: str
    detail: str


@dataclass
class CheckReport:
    """What :func:`check_directory` found."""

    root: Path
    kind: str
    expected: int
    whole_records: int
    spec_file: str = SWEEP_FILE
    problems: list = field(default_factory=list)
    other_records: int = 0  # whole records of configurations not in the grid or preset
    kept_damaged: list = field(default_factory=list)  # files in damaged/
    temporaries: list = field(default_factory=list)

    @property
    def whole(self) -> bool:
        """Every expected configuration has a whole record, and no record file is damaged."""
        return not self.problems

    def format(self) -> str:
        """The report as printed by ``fastlin check``: a header, a table of problems, a verdict."""
        lines = [f"fastlin check {self.root}: {self.kind}, {self.expected} configurations"]
        if self.problems:
            header = Problem("problem", "file", "configuration", "detail")
            rows = [header] + self.problems
            widths = [max(len(getattr(r, name)) for r in rows) for name in ("problem", "file", "configuration")]
            for r in rows:
                lines.append(f"{r.problem:<{widths[0]}}  {r.file:<{widths[1]}}  "
                             f"{r.configuration:<{widths[2]}}  {r.detail}")
        notes = []
        if self.other_records:
            notes.append(f"{self.other_records} whole record(s) of configurations not in {self.spec_file}")
        if self.kept_damaged:
            notes.append(f"{len(self.kept_damaged)} damaged file(s) kept aside in "
                         f"{self.kept_damaged[0].parent.relative_to(self.root)}/")
        if self.temporaries:
            notes.append(f"{len(self.temporaries)} temporary file(s) (a writer at work, or left by one "
                         f"that died: the next run removes those)")
        if self.whole:
            lines.append(f"whole: {self.whole_records} of {self.expected} configurations have a whole record")
        else:
            damaged = sum(p.problem == "damaged" for p in self.problems)
            missing = sum(p.problem == "missing" for p in self.problems)
            lines.append(f"NOT whole: {self.whole_records} of {self.expected} configurations have a whole "
                         f"record; {damaged} damaged file(s), {missing} missing. Running the same sweep or "
                         f"study into this directory again moves damaged files to damaged/ (kept) and "
                         f"computes every configuration without a whole record.")
        if notes:
            lines.append("notes: " + "; ".join(notes))
        return "\n".join(lines)


def check_directory(directory) -> CheckReport:
    """Check every record of the sweep store or study in ``directory`` (read-only).

    FileNotFoundError if ``directory`` is neither (no sweep.json, no study.json).
    """
    root = Path(directory)
    if (root / SWEEP_FILE).is_file():
        store = ResultStore(root)
        grid = store.load_grid_spec()
        expected = {c.id: c for c in grid.configs()}
        kind = f"result store ({SWEEP_FILE})"

        def describe(config):
            return hole_label(hole_fields(config))
    elif (root / SPEC_FILE).is_file():
        store = StudyStore(root)
        name, preset, configs = store.load_spec()
        expected = {config_id(name, c): c for c in configs}
        kind = f"study {name}, preset {preset} ({SPEC_FILE})"

        def describe(config):
            return json.dumps(config, sort_keys=True, separators=(",", ":"))
    else:
        raise FileNotFoundError(f"{root} is neither a fastlin result store (no {SWEEP_FILE}) nor a study "
                                f"(no {SPEC_FILE})")
    inventory = store.inventory(expected)
    spec_file = SWEEP_FILE if isinstance(store, ResultStore) else SPEC_FILE
    report = CheckReport(root=root, kind=kind, expected=len(expected), whole_records=len(inventory.records),
                         spec_file=spec_file)

    def file_name(record_id):
        return str(store.path(record_id).relative_to(root))

    for record_id, problem, detail in inventory.holes():
        report.problems.append(Problem(problem, file_name(record_id), describe(expected[record_id]), detail))
    for record_id in sorted(store.record_ids() - set(expected)):
        try:
            store.read(record_id)
            report.other_records += 1
        except FileNotFoundError:  # removed or moved while we looked
            continue
        except DamagedRecord as exc:
            report.problems.append(Problem("damaged", file_name(record_id), f"(not in {spec_file})", str(exc)))
    report.kept_damaged = store.damaged_files()
    report.temporaries = store.temporaries()
    return report
