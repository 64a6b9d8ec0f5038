"""Sweep grids: configurations with stable ids, learning-rate rules, TOML files.

A :class:`Config` is one training run: an init, a depth L, a width m, a
seed, a number of GD steps, a learning-rate rule, a dtype and the data
(paper data of :func:`fastlin.paper_data`: X in R^{dx x n}, Y = W* X in
R^{dy x n}, drawn from ``data_seed``). Its id is a hash of every field that
changes the numbers it produces; the backend only changes how fast they are
produced (backends agree to 1e-10 relative), so it is recorded with each
result but is not part of the id: a sweep finished on the CPU is not redone
on the GPU.

A :class:`Grid` is the product inits x depths x widths x seeds with the other
fields shared, plus the analysis parameters (read-out steps, threshold) that
the figures use. Grids are read from TOML files (see :meth:`Grid.from_toml`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..init import INITS, network_dims
from ..kernels import BACKENDS
from ..model import DTYPES

LR_RULES = ("theorem", "fixed")


class GridError(ValueError):
    """A grid specification (TOML file or dict) is invalid; the message says where."""


@dataclass(frozen=True)
class LRRule:
    """How the learning rate eta of a configuration is chosen.

    ``rule="theorem"``: eta = value * d_y / (2 L ||X||_2^2), a multiple of the
    Theorem 4.1 rate (it scales as 1/L, so deeper nets take smaller steps).
    ``rule="fixed"``: eta = value for every configuration.
    """

    rule: str = "theorem"
    value: float = 1.0

    def __post_init__(self):
        if self.rule not in LR_RULES:
            raise GridError(f"lr rule must be one of {', '.join(map(repr, LR_RULES))}, got {self.rule!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, numbers.Real) \
                or not math.isfinite(self.value) or self.value <= 0:
            raise GridError(f"lr value must be a finite number > 0, got {self.value!r}")
        object.__setattr__(self, "value", float(self.value))

    def learning_rate(self, X, depth: int, dy: int) -> float:
        """The rate eta on the raw weights W_i for a depth-L net on data X."""
        if self.rule == "fixed":
            return self.value
        from ..model import theorem_lr

        return self.value * theorem_lr(X, depth, dy)

    def describe(self) -> str:
        if self.rule == "fixed":
            return f"eta = {self.value:g}"
        return f"eta = {self.value:g} * dy / (2 L ||X||^2)"


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What every configuration of a sweep shares: steps, learning-rate rule, dtype, data, stop rule, backend.

    The data are the paper's (:func:`fastlin.paper_data` with seed
    ``data_seed`` and sizes dx, n, dy). ``backend`` is not part of a
    configuration's identity (see the module docstring).
    """

    steps: int = 1000
    lr: LRRule = LRRule()
    dtype: str = "float64"
    data_seed: int = 0
    dx: int = 1024
    n: int = 16
    dy: int = 10
    rtol_stop: float | None = None
    backend: str = field(default="cpu", compare=False)

    def run_settings(self) -> dict:
        """These fields as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RunSettings)}


@dataclass(frozen=True, kw_only=True)
class Config(RunSettings):
    """One training run of a sweep (all fields are plain, hashable values)."""

    init: str
    depth: int
    width: int
    seed: int

    def identity(self) -> dict:
        """The fields that determine the result, as a JSON-ready dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        out["lr"] = {"rule": self.lr.rule, "value": self.lr.value}
        return out

    @property
    def id(self) -> str:
        """Stable 16-hex-digit id: sha256 of the canonical JSON of :meth:`identity`."""
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def dims(self) -> list[int]:
        return network_dims(self.depth, self.width, self.dx, self.dy)

    @property
    def parameters(self) -> int:
        """Number of weights sum_i d_i d_{i-1}."""
        d = self.dims
        return sum(d[i] * d[i - 1] for i in range(1, len(d)))

    @property
    def step_weights(self) -> int:
        """Weights one GD step of this configuration's backend sweeps (66-72 flops each).

        All of them on "numpy"; the "cpu" and "cuda" kernels step the first
        layer through Z = V_1 X (fastlin/kernels/cpu and cuda) and
        sweep layers 2..L.
        """
        if self.backend in ("cpu", "cuda"):
            return self.parameters - self.dims[0] * self.dims[1]
        return self.parameters

    def to_dict(self) -> dict:
        out = self.identity()
        out["backend"] = self.backend
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        d = dict(d)
        lr = d.pop("lr")
        return cls(lr=LRRule(lr["rule"], lr["value"]), **d)


def log_spaced_ints(start: int, stop: int, num: int) -> list[int]:
    """``num`` integers log-spaced from ``start`` to ``stop`` (rounded, duplicates dropped)."""
    if num == 1:
        return [int(start)]
    ratio = (stop / start) ** (1.0 / (num - 1))
    return sorted({int(round(start * ratio**k)) for k in range(num)})


_GRID_KEYS = {"inits", "depths", "widths", "seeds", "steps", "lr", "dtype", "backend", "data",
              "rtol_stop", "analysis"}
_DATA_KEYS = {"seed", "dx", "n", "dy"}
_LR_KEYS = {"rule", "value"}
_ANALYSIS_KEYS = {"readout_steps", "threshold", "figure2_depths"}


@dataclass(frozen=True, kw_only=True)
class Grid(RunSettings):
    """inits x depths x widths x seeds, the run settings shared; plus analysis parameters.

    ``readout_steps``: steps t at which Figure 1 reads loss(t)/loss(0) (the
    paper: 1258 and 10000); the last one is used for the critical width.
    ``threshold``: the critical width m*(L) is the smallest width with
    loss(t)/loss(0) below it. ``figure2_depths``: the depths of Figure 2.
    """

    inits: tuple = INITS
    depths: tuple = (8, 16, 32)
    widths: tuple = (16, 32, 64)
    seeds: tuple = (0,)
    readout_steps: tuple = ()
    threshold: float = 1e-2
    figure2_depths: tuple = ()

    def __post_init__(self):
        for name in ("inits", "depths", "widths", "seeds", "readout_steps", "figure2_depths"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()
        if not self.readout_steps:
            object.__setattr__(self, "readout_steps", default_readout_steps(self.steps))

    def _validate(self):
        if not self.inits:
            raise GridError("inits must list at least one of " + ", ".join(INITS))
        for init in self.inits:
            if init not in INITS:
                raise GridError(f"unknown init {init!r} in inits; choose from {', '.join(INITS)}")
        for name in ("depths", "widths", "seeds"):
            values = getattr(self, name)
            if not values:
                raise GridError(f"{name} must be a non-empty list")
            low = 0 if name == "seeds" else 1
            for v in values:
                if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
                    raise GridError(f"{name} must be integers >= {low}, got {v!r}")
            if len(set(values)) != len(values):
                raise GridError(f"{name} has duplicates: {list(values)}")
        for name in ("steps", "dx", "n", "dy"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise GridError(f"{name} must be an integer >= 1, got {v!r}")
        if isinstance(self.data_seed, bool) or not isinstance(self.data_seed, numbers.Integral) \
                or self.data_seed < 0:
            raise GridError(f"data seed must be an integer >= 0, got {self.data_seed!r}")
        if not isinstance(self.lr, LRRule):
            raise GridError(f"lr must be an LRRule, got {self.lr!r}")
        if self.dtype not in {str(d) for d in DTYPES}:
            raise GridError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if self.backend not in BACKENDS:
            raise GridError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, "
                            f"got {self.backend!r}")
        if self.rtol_stop is not None and (isinstance(self.rtol_stop, bool)
                                           or not isinstance(self.rtol_stop, numbers.Real)
                                           or not 0 < self.rtol_stop < 1):
            raise GridError(f"rtol_stop must be a number in (0, 1), got {self.rtol_stop!r}")
        for t in self.readout_steps:
            if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 1 <= t <= self.steps:
                raise GridError(f"readout_steps must be integers in [1, steps={self.steps}], got {t!r}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, numbers.Real) \
                or not 0 < self.threshold < 1:
            raise GridError(f"threshold must be a number in (0, 1), got {self.threshold!r}")
        for d in self.figure2_depths:
            if d not in self.depths:
                raise GridError(f"figure2_depths entry {d!r} is not one of the grid's depths "
                                f"{list(self.depths)}")

    def configs(self) -> list[Config]:
        """Every configuration of the grid, in init, depth, width, seed order."""
        shared = self.run_settings()
        shared.update(steps=int(self.steps), data_seed=int(self.data_seed), dx=int(self.dx), n=int(self.n),
                      dy=int(self.dy), rtol_stop=None if self.rtol_stop is None else float(self.rtol_stop))
        return [Config(init=init, depth=int(L), width=int(m), seed=int(s), **shared)
                for init in self.inits for L in self.depths for m in self.widths for s in self.seeds]

    def replace(self, **changes) -> "Grid":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The grid in the nested form of a TOML grid file (JSON-ready)."""
        out = {"inits": list(self.inits), "depths": list(self.depths), "widths": list(self.widths),
               "seeds": list(self.seeds), "steps": self.steps,
               "lr": {"rule": self.lr.rule, "value": self.lr.value},
               "dtype": self.dtype, "backend": self.backend,
               "data": {"seed": self.data_seed, "dx": self.dx, "n": self.n, "dy": self.dy},
               "analysis": {"readout_steps": list(self.readout_steps), "threshold": self.threshold,
                            "figure2_depths": list(self.figure2_depths)}}
        if self.rtol_stop is not None:
            out["rtol_stop"] = self.rtol_stop
        return out

    @classmethod
    def from_dict(cls, spec: dict, *, where: str = "grid") -> "Grid":
        """Build a grid from the nested dict of a grid file; errors name the bad entry."""
        if not isinstance(spec, dict):
            raise GridError(f"{where}: expected a table of grid settings, got {type(spec).__name__}")
        unknown = set(spec) - _GRID_KEYS
        if unknown:
            raise GridError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_GRID_KEYS)}")
        missing = {"depths", "widths", "steps"} - set(spec)
        if missing:
            raise GridError(f"{where}: missing required key(s) {sorted(missing)}")
        kwargs = {}
        for name in ("inits", "seeds"):
            if name in spec:
                kwargs[name] = _as_list(spec[name], name, where)
        for name in ("depths", "widths"):
            kwargs[name] = _int_axis(spec[name], name, where)
        for name in ("steps", "dtype", "backend", "rtol_stop"):
            if name in spec:
                kwargs[name] = spec[name]
        if "lr" in spec:
            lr = _table(spec["lr"], "lr", _LR_KEYS, where)
            try:
                kwargs["lr"] = LRRule(lr.get("rule", "theorem"), lr.get("value", 1.0))
            except GridError as exc:
                raise GridError(f"{where}: [lr]: {exc}") from None
        if "data" in spec:
            data = _table(spec["data"], "data", _DATA_KEYS, where)
            for key in ("dx", "n", "dy"):
                if key in data:
                    kwargs[key] = data[key]
            if "seed" in data:
                kwargs["data_seed"] = data["seed"]
        if "analysis" in spec:
            analysis = _table(spec["analysis"], "analysis", _ANALYSIS_KEYS, where)
            for key in ("readout_steps", "figure2_depths"):
                if key in analysis:
                    kwargs[key] = _as_list(analysis[key], key, where)
            if "threshold" in analysis:
                kwargs["threshold"] = analysis["threshold"]
        try:
            return cls(**kwargs)
        except GridError as exc:
            raise GridError(f"{where}: {exc}") from None

    @classmethod
    def from_toml(cls, path) -> "Grid":
        """Read a grid file. Example::

            inits = ["gaussian", "orthogonal"]
            depths = {start = 4, stop = 128, num = 6}   # or a list: [4, 8, 16]
            widths = [16, 32, 64, 128]
            seeds = [0]
            steps = 1000
            backend = "cpu"            # numpy | cpu | cuda
            dtype = "float64"
            [lr]
            rule = "theorem"           # eta = value * dy / (2 L ||X||^2); or "fixed": eta = value
            value = 0.5
            [data]                     # fastlin.paper_data(seed, dx, n, dy)
            seed = 0
            [analysis]
            readout_steps = [126, 1000]
            threshold = 1e-2
        """
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise GridError(f"cannot read grid file {path}: {exc.strerror or exc}") from None
        try:
            spec = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise GridError(f"{path}: not valid TOML: {exc}") from None
        return cls.from_dict(spec, where=str(path))


def default_readout_steps(steps: int) -> tuple:
    """Two read-out steps as in the paper: t = floor(10^(log10 T - 0.9)) and T (10000 -> 1258, 10000)."""
    early = int(10 ** (math.log10(steps) - 0.9)) if steps >= 10 else 1
    return tuple(sorted({max(1, early), steps}))


def _as_list(value, name, where):
    if not isinstance(value, list):
        raise GridError(f"{where}: {name} must be a list, got {value!r}")
    return value


def _table(value, name, allowed, where):
    if not isinstance(value, dict):
        raise GridError(f"{where}: [{name}] must be a table, got {value!r}")
    unknown = set(value) - allowed
    if unknown:
        raise GridError(f"{where}: [{name}] has unknown key(s) {sorted(unknown)}; "
                        f"allowed: {sorted(allowed)}")
    return value


def _int_axis(value, name, where):
    """A list of ints, or {start, stop, num} for log-spaced integers."""
    if isinstance(value, dict):
        keys = {"start", "stop", "num"}
        if set(value) != keys:
            raise GridError(f"{where}: {name} as a table needs exactly the keys start, stop, num "
                            f"(log-spaced integers), got {sorted(value)}")
        for k in keys:
            v = value[k]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise GridError(f"{where}: {name}.{k} must be an integer >= 1, got {v!r}")
        if value["stop"] < value["start"]:
            raise GridError(f"{where}: {name}.stop must be >= {name}.start, got {value}")
        return log_spaced_ints(value["start"], value["stop"], value["num"])
    return _as_list(value, name, where)
