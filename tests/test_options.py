"""The Numba options fastlin sets: the feature string without the 256-bit preference on AVX-512 hosts."""

import os
import subprocess
import sys

import pytest
from numba.core.codegen import get_host_cpu_features

from fastlin.kernels.options import wide_vectors


def test_wide_vectors_drops_the_256_bit_preference_on_avx512():
    out = wide_vectors("+avx2,+avx512f,+prefer-256-bit,-avx512fp16")
    assert out.split(",") == ["+avx2", "+avx512f", "-avx512fp16", "-prefer-256-bit"]
    assert wide_vectors("+avx512f,+fma").split(",") == ["+avx512f", "+fma", "-prefer-256-bit"]


@pytest.mark.parametrize("features", ["", "+avx2,+fma", "+avx2,-avx512f,+prefer-256-bit", "+avx512fp16"])
def test_wide_vectors_leaves_hosts_without_avx512(features):
    assert wide_vectors(features) is None


def _used(code, **env):
    environ = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
    environ.update(env)
    out = subprocess.run([sys.executable, "-c", code + "\nfrom fastlin.kernels.options import wide_vectors_used\n"
                          "print(wide_vectors_used())"], env=environ, capture_output=True, text=True, check=True)
    return out.stdout.split()[-1] == "True"


def test_wide_vectors_used_when_fastlin_is_imported_first():
    avx512 = wide_vectors(get_host_cpu_features()) is not None
    assert _used("import fastlin") == avx512


def test_user_choices_are_kept():
    # The user's NUMBA_CPU_FEATURES stands, and so does a code generator
    # that something else started before fastlin was imported.
    features = get_host_cpu_features()
    assert not _used("import fastlin", NUMBA_CPU_FEATURES=features)
    assert not _used("import numba\nnumba.njit(lambda: 1)()\nimport fastlin")


def _compile_levels(monkeypatch, user_level):
    """The optimization levels Numba's pass managers saw while a fresh fastlin dispatcher compiled, and OPT after."""
    import numba
    from numba.core import codegen

    from fastlin.kernels import options

    seen = []
    original = codegen.CPUCodegen._module_pass_manager

    def spy(self, **kwargs):
        seen.append(int(numba.config.OPT))
        return original(self, **kwargs)

    monkeypatch.setattr(codegen.CPUCodegen, "_module_pass_manager", spy)
    monkeypatch.setattr(numba.config, "OPT", type(numba.config.OPT)(user_level))
    before = numba.config.OPT

    def add_one(x):
        return x + 1

    # Not cached: every run of the test compiles.
    kernel = options._PlainTypesDispatcher(py_func=add_one, locals={},
                                           targetoptions={"nopython": True, "fastmath": set(options.FASTMATH)})
    assert kernel(41) == 42
    return seen, numba.config.OPT is before


def test_kernels_compile_at_kernel_opt_and_leave_numbas_level_alone(monkeypatch):
    from fastlin.kernels.options import KERNEL_OPT

    seen, restored = _compile_levels(monkeypatch, 3)
    assert seen and set(seen) == {KERNEL_OPT}
    assert restored


def test_a_lower_level_the_user_set_is_kept(monkeypatch):
    seen, restored = _compile_levels(monkeypatch, 1)
    assert seen and set(seen) == {1}
    assert restored
