"""Numba decorators and their options: the one place they are set.

fastmath is a subset, never ``True``: ``contract`` lets LLVM fuse a*b + c
into one FMA and ``reassoc`` lets it vectorize the dot-product reductions of
the tile kernels. Neither assumes finite values (no ``nnan``/``ninf``), so a
NaN or inf still propagates to the loss and divergence is detected.

``nogil`` lets several configurations, and the threads of one, run in
parallel Python threads; ``cache`` stores the compiled machine code next to
the module (safe here: no function-valued arguments). No kernel uses
Numba's ``parallel=True``: a parallel variant would be a second compile of
every kernel, and its thread pool's workers keep spinning after a region
ends, taking cores from BLAS and from other configurations.

On a host with AVX-512, LLVM's tuning for most such CPUs prefers 256-bit
vectors ("prefer-256-bit"): its vectorizer then builds the plain loops of
the tile kernels (``cpu.tiles.up_chain``) from 256-bit registers. fastlin asks
Numba for the host's features without that preference (``wide_vectors``),
unless the user set NUMBA_CPU_FEATURES: on an AVX-512 host of the CI class
the upward pass then ran faster (docs/performance.md). This is Numba's
process-wide setting, and it takes effect only if fastlin is imported
before anything makes Numba compile for the CPU (``wide_vectors_used``
says whether it did).

Numba's cache checks only the source file of each cached function, but the
kernels read constants and helpers from other files (``tuning``, ``llvm``,
sibling modules). ``drop_stale_cache`` therefore keeps one digest of the
kernel sources (every file under ``kernels/`` that defines compiled code,
``tuning.py`` and this file) beside each cache directory and drops the kernels'
cached machine code when it changes.
"""

import hashlib
from pathlib import Path

import numba
from numba.core import caching, registry, types
from numba.core.compiler_lock import global_compiler_lock
from numba.core.registry import CPUDispatcher
from numba.core.codegen import get_host_cpu_features

FASTMATH = {"contract", "reassoc"}


def wide_vectors(features: str) -> str | None:
    """The LLVM feature string ``features`` without the 256-bit preference, where it has AVX-512; else None.

    ``features`` is a comma-separated list as Numba's
    ``get_host_cpu_features()`` gives it ("+avx512f,-avx512fp16,...").
    """
    names = features.split(",") if features else []
    if "+avx512f" not in names:
        return None
    kept = [f for f in names if f.lstrip("+-") != "prefer-256-bit"]
    return ",".join(kept + ["-prefer-256-bit"])


def _codegen_started() -> bool:
    # Numba's CPU target context (and with it the code generator, which reads
    # config.CPU_FEATURES once) is created by the first @njit decoration.
    return "_toplevel_target_context" in vars(registry.cpu_target)


if numba.config.CPU_FEATURES is None and not _codegen_started():
    numba.config.CPU_FEATURES = wide_vectors(get_host_cpu_features())


def compile_target() -> tuple[str, str]:
    """(CPU name, feature string) that Numba compiles for in this process (its code generator's cache key)."""
    _, cpu, features = registry.cpu_target.target_context.codegen().magic_tuple()
    return cpu, features


def wide_vectors_used() -> bool:
    """Whether Numba compiles for this host's AVX-512 without the 256-bit preference (see the module docstring)."""
    return "-prefer-256-bit" in compile_target()[1].split(",")


KERNELS = Path(__file__).resolve().parent
_STAMP = "fastlin-kernels.stamp"


# Kernel sources: files that define compiled code, and the constants they read.
_COMPILED_MARKS = (b"@serial", b"@specialized", b"@intrinsic", b"njit(")


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(KERNELS.rglob("*.py")):
        text = path.read_bytes()
        if path.name in ("tuning.py", "options.py") or any(mark in text for mark in _COMPILED_MARKS):
            digest.update(str(path.relative_to(KERNELS)).encode())
            digest.update(text)
    return digest.hexdigest()


def _cache_dirs():
    """The directory where Numba keeps cached code of each kernel folder: the first of its locators that applies."""
    def anchor():
        pass

    for folder in sorted({p.parent for p in KERNELS.rglob("*.py")}):
        source = str(folder / "__init__.py")
        for locator in caching.CacheImpl._locator_classes:
            try:
                found = locator.from_function(anchor, source)
            except Exception:  # noqa: BLE001 - a locator that does not apply here
                found = None
            if found is not None:
                yield Path(found.get_cache_path())
                break


def drop_stale_cache() -> int:
    """Delete the kernels' cached machine code where it was compiled from other kernel sources; returns files deleted.

    Best effort: a directory that cannot be written is left as it is.
    """
    digest = _sources_digest()
    dropped = 0
    for folder in _cache_dirs():
        stamp = folder / _STAMP
        try:
            if stamp.is_file() and stamp.read_text() == digest:
                continue
            for path in list(folder.glob("*.nbi")) + list(folder.glob("*.nbc")):
                path.unlink(missing_ok=True)
                dropped += 1
            stamp.write_text(digest)
        except OSError:
            continue
    return dropped


drop_stale_cache()

# LLVM's optimization level for fastlin's kernels (Numba's NUMBA_OPT, 3 by
# default, is process-wide and stays as the user set it for other code). At
# 2 the float64 kernel compiled in 26 s instead of 35 s with steps as fast
# (the kernels' hot loops are written in explicit vectors; docs/performance.md).
KERNEL_OPT = 2


class _KernelDispatcher(CPUDispatcher):
    """A CPU dispatcher that compiles at KERNEL_OPT: Numba reads its optimization level when it builds a pass manager."""

    def compile(self, sig):
        with global_compiler_lock:
            saved = numba.config.OPT
            if int(saved) > KERNEL_OPT and not getattr(saved, "is_opt_max", False):
                numba.config.OPT = type(saved)(KERNEL_OPT)
            try:
                return super().compile(sig)
            finally:
                numba.config.OPT = saved


class _PlainTypesDispatcher(_KernelDispatcher):
    """A CPU dispatcher that builds a call from compiled code for the arguments' plain types.

    Numba compiles a callee once per distinct argument types, and a literal
    argument (the 0 in ``add_product(out, C, M, K, alpha, 0, n, c0, c1)``,
    or a loop counter's first value) has a type of its own, so every
    function called once with a literal and once with a variable is built
    twice. For the passes and layer sweeps that doubled the compile time for
    nothing; the small tile kernels, whose loops start at such literals, are
    ``specialized`` instead (their literal builds were a few percent faster).
    """

    def get_call_template(self, args, kws):
        return super().get_call_template(tuple(types.unliteral(a) for a in args),
                                         {k: types.unliteral(v) for k, v in kws.items()})


def _dispatcher(kind, func):
    if numba.config.DISABLE_JIT:
        return func
    dispatcher = kind(py_func=func, locals={},
                      targetoptions={"nopython": True, "nogil": True, "fastmath": set(FASTMATH)})
    dispatcher.enable_caching()
    return dispatcher


def specialized(func):
    """``njit`` with fastlin's options, built anew for each pattern of literal arguments (the small tile kernels)."""
    return _dispatcher(_KernelDispatcher, func)


def serial(func):
    """``njit`` with fastlin's options (module docstring), built once per plain argument types."""
    return _dispatcher(_PlainTypesDispatcher, func)
