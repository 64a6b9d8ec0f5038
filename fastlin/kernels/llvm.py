"""LLVM intrinsics Numba does not expose, in one place: explicit vectors, prefetch, atomics, spin-wait.

* **Explicit vectors.** LLVM vectorizes the kernels' plain loops over a row
  by itself, but only loops: it keeps a row-sum (``acc[c] += b * v[c]``) in
  memory, loading and storing the accumulator every few multiply-adds, and
  it will not keep a tile of several rows' accumulators in registers across
  a loop over rows. A ``Vec`` is an LLVM vector of as many elements as fill
  a cache line (8 float64, 16 float32), a value Numba keeps in registers;
  the backend splits it into the host's vector registers. The kernels then
  name their accumulators and the loads, broadcasts and multiply-adds
  themselves. The multiply-add carries only the ``contract`` flag (fused
  where the target can); no flag assumes finite values.
* **Prefetch.** The CPU kernel reads a tile from memory for the old chain,
  then updates it and runs the new chain on it from cache; asking for the
  next tile meanwhile overlaps its reads with this tile's arithmetic.
  ``llvm.prefetch`` is target-independent: x86 emits ``prefetcht1`` for the
  locality used here (into L2, so the tile being worked on stays in L1),
  other targets their own instruction or nothing. A prefetch never faults,
  but the pointer is computed from an in-range index only.
* **Atomics and the spin-wait hint**, for the CPU threads' barrier
  (``cpu/threads.py``): Numba has no atomics for CPU code, so they are
  emitted as LLVM atomic instructions, and the pause hint as an intrinsic
  (not inline assembly: Numba's code emitter, which caching uses, has no
  assembly parser).
"""

import platform

from llvmlite import ir
from numba.core import cgutils, types
from numba.core.datamodel import models, register_default
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .tuning import LINE_BYTES


def _element_pointer(context, builder, sig, args):
    """In an intrinsic's codegen: the LLVM pointer to args[0][args[1]] (an array and an index)."""
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])


@intrinsic
def load_acquire(typingctx, flags, i):
    """flags[i], read atomically; later reads see what was written before a matching release."""
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_element_pointer(context, builder, sig, args), "acquire", 8)
    return types.int64(flags, i), codegen


@intrinsic
def store_release(typingctx, flags, i, value):
    """flags[i] = value, atomically, after every earlier write of this thread."""
    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, _element_pointer(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()
    return types.void(flags, i, value), codegen


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
    ptr = _element_pointer(context, builder, sig, args)
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


# llvm.prefetch(ptr, rw, locality, cache type): read, locality 2 (L2 on x86), data cache.
_READ, _LOCALITY, _DATA = 0, 2, 1


@intrinsic
def prefetch(typingctx, flat, i):
    """Ask for the cache line of flat[i] (a 1-D array, 0 <= i < flat.size) to be brought into L2."""
    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig, args)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, _READ), ir.Constant(i32, _LOCALITY),
                          ir.Constant(i32, _DATA)])
        return context.get_dummy_value()
    return types.void(flat, i), codegen


# The spin-wait hint: lets a hyper-threaded sibling run (on a VM the two
# "cores" may be one core's two threads) and saves power while polling. An
# LLVM intrinsic, not inline assembly: Numba's code emitter (caching) has no
# assembly parser.
_PAUSE = {"x86_64": ("llvm.x86.sse2.pause", ()), "amd64": ("llvm.x86.sse2.pause", ()),
          "aarch64": ("llvm.aarch64.hint", (1,)), "arm64": ("llvm.aarch64.hint", (1,))}.get(
    platform.machine().lower())


@intrinsic
def pause(typingctx):
    """One spin-wait hint instruction (nothing on machines without one)."""
    def codegen(context, builder, sig, args):
        if _PAUSE is not None:
            name, imm = _PAUSE
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [i32] * len(imm)), name)
            builder.call(fn, [ir.Constant(i32, v) for v in imm])
        return context.get_dummy_value()
    return types.void(), codegen
