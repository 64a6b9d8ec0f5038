"""Training speed vs learning rate, Gaussian vs orthogonal init: Huang, Du & Xu (IJCAI 2021), Fig. 4, on digits.

Their claim: in the linear regime of tanh (sigma_w^2 = 1.05, sigma_b^2 =
2.01e-5) orthogonal nets train faster than Gaussian ones when the learning
rate or the depth is large. Their measure is tau, the first step at which
the training accuracy reaches a threshold, against the learning rate
eta = 10^(-k/10), for several depths and widths (CIFAR-10 there, SGD with
batches of 1000; here scikit-learn's digits, batches of 128).

* :func:`run_speed` trains one configuration (init, depth, width, eta,
  seed): SGD on the mean cross-entropy, tanh, batches of 128, the training
  accuracy on the whole training split at log-spaced steps
  (:func:`eval_schedule`), stopped once it reaches the threshold or at the
  step cap. It returns a plain record (JSON-ready): tau (None: never
  reached within the cap, whether the net stalled or diverged) and the
  accuracy curve.
* :func:`speed_preset` lists the configurations of a preset.
* :func:`speed_summary` reads per (init, depth, width) the largest rate at
  which the median tau over seeds is finite (``max_trainable_lr``), the
  smallest median tau (``min_tau``) and the median tau at every rate
  (``tau_at_lr``; None where the median seed never reaches the threshold).
* The figure is fastlin.mlp_plots.speed_figure, drawn from the records.

The study ``speed`` (registered with the study layer at the bottom of this
module) runs the presets resumably: ``fastlin reproduce speed --preset
quick --out DIR``.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

THRESHOLD = 0.5  # chance is 0.1 on digits
SIGMA_W2, SIGMA_B2 = 1.05, 2.01e-5  # the linear regime of tanh (Huang et al.)
BATCH_SIZE = 128
PRESETS = ("quick", "paper")

# quick (2 cores, <= 10 minutes): the two panels of Fig. 4 at small scale,
# depth at width 128 and width at depth 32; k from -10 (eta = 10: in a
# first run with k >= 0 orthogonal nets of depth <= 32 still trained at
# eta = 1) to 30 (eta = 1e-3, where every net is slow). Step cap 300: at
# k = 30 the Gaussian nets reached 0.5 by step 150-210, or not at all.
_QUICK = dict(shapes=[(16, 128), (64, 128), (32, 64), (32, 256)],
              ks=[-10, -5, 0, 3, 6, 9, 12, 15, 20, 25, 30], seeds=[0, 1, 2], max_steps=300)
# paper: the same question on a grid nearer the paper's (depths to 128,
# widths to 512, k in steps of 1, five seeds), for a larger machine.
_PAPER = dict(shapes=[(d, 256) for d in (16, 32, 64, 128)] + [(32, w) for w in (64, 128, 512)],
              ks=list(range(0, 31)), seeds=[0, 1, 2, 3, 4], max_steps=2000)


@dataclass(frozen=True)
class SpeedConfig:
    """One run: init, depth L, width m, learning rate eta, seed, and what it is measured with."""

    init: str
    depth: int
    width: int
    lr: float
    seed: int
    batch_size: int = BATCH_SIZE
    max_steps: int = 300
    threshold: float = THRESHOLD
    sigma_w2: float = SIGMA_W2
    sigma_b2: float = SIGMA_B2
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("depth", "width", "batch_size", "max_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SpeedConfig.{name} must be an int >= 1, got {value!r}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"SpeedConfig.threshold must lie in (0, 1], got {self.threshold!r}")

    @property
    def key(self) -> str:
        """A readable id, unique within a preset."""
        return f"{self.init}-L{self.depth}-m{self.width}-lr{self.lr:.6g}-s{self.seed}"

    @classmethod
    def from_dict(cls, data: dict) -> SpeedConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def lr_grid(ks) -> list[float]:
    """eta = 10^(-k/10) for each k."""
    return [10.0 ** (-k / 10) for k in ks]


def eval_schedule(max_steps: int, dense: int = 10, growth: float = 1.2) -> list[int]:
    """Steps 0..dense, then each about ``growth`` times the last, up to and including ``max_steps``.

    tau is then known to within 20% at every scale (a log axis) for about
    10 + log(max_steps / dense) / log(growth) evaluations: an evaluation is a
    forward pass over the whole training split, ~3.7 steps' work at batch 128.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 0:
        raise ValueError(f"max_steps must be an int >= 0, got {max_steps!r}")
    steps = list(range(min(dense, max_steps) + 1))
    while steps[-1] < max_steps:
        steps.append(min(max_steps, max(steps[-1] + 1, math.ceil(steps[-1] * growth))))
    return steps


def speed_preset(name: str) -> list[SpeedConfig]:
    """The configurations of preset ``name`` ("quick" or "paper"): shapes x inits x rates x seeds."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    spec = _QUICK if name == "quick" else _PAPER
    return [SpeedConfig(init, depth, width, lr, seed, max_steps=spec["max_steps"])
            for depth, width in spec["shapes"] for init in ("gaussian", "orthogonal")
            for lr in lr_grid(spec["ks"]) for seed in spec["seeds"]]


def run_speed(config: SpeedConfig, data=None, backend: str = "cpu") -> dict:
    """Train one configuration until its training accuracy reaches the threshold; return its record.

    ``data``: (X_train, Y_train) as ``fastlin.digits`` gives them, to share
    one copy among runs (by default loaded here, in ``config.dtype``). The
    init is drawn from ``seed`` (so every rate of one seed starts from the
    same net) and so are the batches.
    """
    from ..data import digits
    from ..mlp import REACHED, init_mlp, train_mlp

    dtype = np.dtype(config.dtype)
    if data is None:
        X, Y, _, _ = digits(dtype=dtype)
    else:
        X, Y = (np.asarray(a, dtype=dtype) for a in data[:2])
    dims = [X.shape[0]] + [config.width] * (config.depth - 1) + [Y.shape[0]]
    weights, biases = init_mlp(dims, config.init, sigma_w2=config.sigma_w2, sigma_b2=config.sigma_b2,
                               rng=config.seed, dtype=dtype)
    started = time.perf_counter()
    result = train_mlp(weights, biases, X, Y, activation="tanh", loss="cross_entropy", lr=config.lr,
                       steps=config.max_steps, batch_size=config.batch_size, rng=config.seed,
                       eval_at=eval_schedule(config.max_steps), stop_accuracy=config.threshold, backend=backend)
    last = result.loss[result.steps_run]
    return {"config": asdict(config), "key": config.key,
            "tau": int(result.steps_run) if result.status == REACHED else None,
            "status": result.status, "steps_run": int(result.steps_run),
            "eval_steps": result.eval_steps.tolist(), "train_accuracy": result.train_accuracy.tolist(),
            "final_loss": float(last) if math.isfinite(last) else None,
            "seconds": time.perf_counter() - started}


def median_tau(taus) -> float:
    """Median over seeds, never-reached counted as infinitely slow (inf if the median seed never reached)."""
    return float(np.median([math.inf if t is None else t for t in taus]))


# What every record pooled into one median must share, besides init, depth, width and rate.
SHARED_SETTINGS = ("batch_size", "max_steps", "threshold", "sigma_w2", "sigma_b2", "dtype")


def shared_settings(records) -> dict:
    """The settings of SHARED_SETTINGS common to all records; a ValueError naming the first that differs."""
    settings = {}
    for name in SHARED_SETTINGS:
        values = sorted({str(r["config"].get(name)) for r in records})
        if len(values) > 1:
            raise ValueError(f"the records mix {name} = {', '.join(values)}: medians over seeds would pool "
                             "different experiments; summarize or draw them apart")
        settings[name] = records[0]["config"].get(name) if records else None
    return settings


def speed_summary(records) -> dict:
    """Per "init/L{depth}/m{width}": max_trainable_lr, min_tau, tau_at_lr (median tau over seeds per rate).

    A rate counts as trainable when the median seed reaches the threshold
    within the step cap; ``tau_at_lr`` maps each rate to that median (None:
    never). ``max_trainable_lr`` and ``min_tau`` are None where no rate trains.
    All records must share the settings of SHARED_SETTINGS (a ValueError otherwise).
    """
    shared_settings(records)
    groups: dict = {}
    for rec in records:
        c = rec["config"]
        groups.setdefault((c["init"], c["depth"], c["width"]), {}).setdefault(c["lr"], []).append(rec["tau"])
    summary = {}
    for (init, depth, width), by_lr in sorted(groups.items()):
        medians = {lr: median_tau(taus) for lr, taus in sorted(by_lr.items())}
        finite = {lr: tau for lr, tau in medians.items() if math.isfinite(tau)}
        summary[f"{init}/L{depth}/m{width}"] = {
            "init": init, "depth": depth, "width": width,
            "seeds": max(len(taus) for taus in by_lr.values()),
            "max_trainable_lr": max(finite) if finite else None,
            "min_tau": min(finite.values()) if finite else None,
            "tau_at_lr": {lr: (tau if math.isfinite(tau) else None) for lr, tau in medians.items()},
        }
    return summary


def write_speed_summary(summary: dict, path) -> None:
    """``speed_summary`` as JSON (rates as keys become strings)."""
    with open(path, "w") as fh:
        json.dump(summary, fh, indent=1, sort_keys=True)


def format_speed_summary(summary: dict) -> str:
    """A plain-text read-out: per shape, both inits' largest trainable rate and median tau at each rate."""
    groups = [v for v in summary.values() if isinstance(v, dict) and "tau_at_lr" in v]  # not 'missing' etc.
    shapes = sorted({(v["depth"], v["width"]) for v in groups})
    lines = []
    for depth, width in shapes:
        lines.append(f"L = {depth}, m = {width}")
        entries = {v["init"]: v for v in groups if (v["depth"], v["width"]) == (depth, width)}
        rates = sorted({lr for v in entries.values() for lr in v["tau_at_lr"]}, reverse=True)
        lines.append("  eta        " + "".join(f"{init:>12}" for init in entries))
        for lr in rates:
            cells = []
            for v in entries.values():
                tau = v["tau_at_lr"].get(lr, "n/a")
                cells.append(f"{'never' if tau is None else tau:>12}")
            lines.append(f"  {lr:<11.4g}" + "".join(cells))
        lines.append("  max trainable eta: " + ", ".join(
            f"{init} {v['max_trainable_lr']}" for init, v in entries.items()))
    return "\n".join(lines)


# -- the study: fastlin reproduce speed --preset quick|paper --out DIR ------------------------


@functools.lru_cache(maxsize=2)
def _digits_train(dtype: str):
    from ..data import digits

    X, Y, _, _ = digits(dtype=np.dtype(dtype))
    X.setflags(write=False)
    Y.setflags(write=False)
    return X, Y


def _run(config: dict) -> dict:
    """One configuration of the study (a SpeedConfig as a dict, and the backend)."""
    speed_config = SpeedConfig.from_dict(config)
    record = run_speed(speed_config, data=_digits_train(speed_config.dtype), backend=config.get("backend", "cpu"))
    return {"tau": record["tau"], "status": record["status"], "steps_run": record["steps_run"],
            "eval_steps": np.asarray(record["eval_steps"], dtype=np.int64),
            "train_accuracy": np.asarray(record["train_accuracy"], dtype=np.float64),
            "final_loss": record["final_loss"]}


def _as_records(records) -> list[dict]:
    return [{"config": r.config, "tau": r["tau"]} for r in records]


def _presets():
    def configs(name, backend=None):
        return [dict(asdict(c), backend=backend or "cpu") for c in speed_preset(name)]

    def tiny(backend=None):
        return [dict(asdict(SpeedConfig(init, depth, 16, lr, seed, max_steps=8)), backend=backend or "numpy")
                for init in ("gaussian", "orthogonal") for depth in (2, 3) for lr in (0.5, 0.05) for seed in (0, 1)]

    return {"quick": lambda backend=None: configs("quick", backend),
            "paper": lambda backend=None: configs("paper", backend), "tiny": tiny}


def _cost(config: dict) -> float:
    """Relative cost: steps x layers x (width^2 + the evaluations' forward passes), about."""
    return config["max_steps"] * config["depth"] * config["width"] ** 2


def _prepare(configs, progress, stream):
    """Compile the nonlinear CPU kernel for the dtypes the configurations use, before the progress bar."""
    from ..mlp import init_mlp, train_mlp
    from .runner import format_seconds

    for dtype in sorted({c["dtype"] for c in configs if c.get("backend") == "cpu"}):
        if progress:
            print(f"preparing the nonlinear CPU kernel ({dtype}; Numba compiles it on first use and caches it) ...",
                  end="", file=stream, flush=True)
        started = time.perf_counter()
        X, Y = _digits_train(dtype)
        W, b = init_mlp([X.shape[0], 8, Y.shape[0]], "gaussian", rng=0, dtype=np.dtype(dtype))
        train_mlp(W, b, X, Y, lr=1e-3, steps=2, batch_size=16, rng=0, eval_at=[0, 2], backend="cpu")
        if progress:
            print(f" ready in {format_seconds(time.perf_counter() - started)}", file=stream, flush=True)


def _plot(records, out):
    from ..mlp_plots import speed_figure

    return speed_figure(_as_records(records), Path(out) / "speed")


def _register():
    from .study import Study, register_study

    return register_study(Study(
        name="speed", description="tau (first step at train accuracy >= 0.5) vs learning rate on digits, "
                                  "tanh, Gaussian vs orthogonal (Huang et al. Fig. 4)",
        presets=_presets(), run=_run, summarize=lambda records: speed_summary(_as_records(records)),
        plot=_plot, cost=_cost, prepare=_prepare, format_summary=format_speed_summary))


SPEED = _register()
