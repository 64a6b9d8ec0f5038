"""Explicit vectors for the CPU tile kernels: one cache line of floats as one value.

LLVM vectorizes the kernels' plain loops over a row by itself, but only
loops: it keeps a row-sum (``acc[c] += b * v[c]``) in memory, loading and
storing the accumulator for every few multiply-adds, and it will not keep a
tile of several rows' accumulators in registers across a loop over rows (a
register tile written as scalars is not vectorized, bench/README.md). Here a
``Vec`` is an LLVM vector of as many elements as fill a 64-byte cache line
(8 float64, 16 float32), a value Numba keeps in registers; the backend
splits it into the host's vector registers (two 256-bit ones on AVX2, one
512-bit one where that is preferred). The kernels then name their
accumulators, and the loads, broadcasts and multiply-adds, themselves.

The multiply-add carries only the ``contract`` flag (a fused multiply-add
where the target has one, as options.FASTMATH allows for the plain loops);
no flag assumes finite values.
"""

from llvmlite import ir
from numba.core import types
from numba.core.datamodel import models, register_default
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .sync import element_pointer

LINE_BYTES = 64


class Vec(types.Type):
    """``lanes`` elements of a float dtype (one cache line of them), held as one LLVM vector."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = LINE_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vec({dtype}x{self.lanes})")


@register_default(Vec)
class VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _vector_pointer(context, builder, sig, args):
    vec = Vec(sig.args[0].dtype)
    ptr = element_pointer(context, builder, sig, args)
    return builder.bitcast(ptr, context.get_value_type(vec).as_pointer())


def _check_row(row):
    if not (isinstance(row, types.Array) and row.ndim == 1 and row.layout == "C"
            and isinstance(row.dtype, types.Float)):
        raise TypingError(f"simd: a contiguous 1-D float array is needed, got {row}")


@intrinsic
def load(typingctx, row, i):
    """row[i : i + lanes] as a Vec (the caller keeps i + lanes <= row.size; no alignment needed)."""
    _check_row(row)

    def codegen(context, builder, sig, args):
        return builder.load(_vector_pointer(context, builder, sig, args), align=sig.args[0].dtype.bitwidth // 8)
    return Vec(row.dtype)(row, i), codegen


@intrinsic
def store(typingctx, row, i, v):
    """row[i : i + lanes] = v."""
    _check_row(row)
    if not (isinstance(v, Vec) and v.dtype == row.dtype):
        raise TypingError(f"simd.store: a Vec({row.dtype}) is needed, got {v}")

    def codegen(context, builder, sig, args):
        builder.store(args[2], _vector_pointer(context, builder, sig, args), align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.void(row, i, v), codegen


@intrinsic
def splat(typingctx, x):
    """x in every lane (x a float scalar; its type is the Vec's)."""
    if not isinstance(x, types.Float):
        raise TypingError(f"simd.splat: a float scalar is needed, got {x}")
    vec = Vec(x)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vec)
        lane0 = builder.insert_element(ir.Constant(vty, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(lane0, ir.Constant(vty, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), vec.lanes), [0] * vec.lanes))
    return vec(x), codegen


@intrinsic
def madd(typingctx, acc, a, b):
    """acc + a * b, lane by lane (fused where the target can)."""
    if not (isinstance(acc, Vec) and acc == a == b):
        raise TypingError(f"simd.madd: three Vecs of one dtype are needed, got {acc}, {a}, {b}")

    def codegen(context, builder, sig, args):
        product = builder.fmul(args[1], args[2], flags=("contract",))
        return builder.fadd(args[0], product, flags=("contract",))
    return acc(acc, a, b), codegen
