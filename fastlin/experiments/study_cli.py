"""``fastlin reproduce <study>`` and ``fastlin plot DIR`` for studies (:mod:`.study`)."""

from __future__ import annotations

import sys

from .integrity import format_missing
from .study import StudyStore, estimate_seconds, get_study, redraw, run_study


def _print_drawn(study, summary_path, figures, summary, directory) -> None:
    print(f"{study.name}: " + ", ".join(str(p) for p in figures))
    print(f"summary: {summary_path}")
    if study.format_summary is not None:
        print(study.format_summary(summary))
    if summary.get("missing"):
        print(format_missing(summary["missing"], summary["runs"]["expected"], directory, summary_path))


def reproduce_study(args) -> int:
    """Run a study's preset into ``args.out`` (resumable), then draw it; paper presets print an estimate first."""
    from .executors import default_workers
    from .runner import format_seconds

    if args.executor != "threads" or args.scheduler is not None:
        raise ValueError(f"{args.figure} runs in threads in this process: --executor {args.executor} "
                         f"and --scheduler do not apply")
    study = get_study(args.figure)
    options = {} if args.backend is None else {"backend": args.backend}
    configs = study.configs(args.preset, **options)
    print(f"fastlin reproduce {study.name} --preset {args.preset}: {len(configs)} configurations "
          f"({study.description})")
    if args.preset == "paper" or args.estimate_only:
        workers = args.workers or default_workers()
        if study.prepare is not None:
            study.prepare(configs, not args.quiet, sys.stderr)
        est = estimate_seconds(study, configs, workers=workers)
        print(f"estimated run time: {format_seconds(est['seconds'])} with {workers} worker(s) "
              f"(one configuration measured, {format_seconds(est['probe_seconds'])}, scaled by the "
              f"study's cost model; rough; finished configurations are skipped)", flush=True)
        if args.estimate_only:
            return 0
        # The probe is a configuration of the preset: keep it rather than run it again.
        StudyStore(args.out).create().save(study.name, est["probe_record"])
    run = run_study(study, args.preset, args.out, workers=args.workers, force=args.force,
                    progress=not args.quiet, **options)
    if args.quiet:
        print(run.line())
    if run.done + run.skipped == 0:
        raise RuntimeError("no configuration finished; nothing to plot")
    _print_drawn(study, run.summary_path, run.figures, run.summary, args.out)
    return 1 if run.failed else 0


def plot_study(directory) -> int:
    """Redraw the summary and figures of the study stored in ``directory``."""
    study, summary, path, figures = redraw(directory)
    _print_drawn(study, path, figures, summary, directory)
    return 0
