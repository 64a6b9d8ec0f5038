"""A memory hint Numba does not expose: software prefetch, as an LLVM intrinsic.

The CPU kernel sweeps each layer tile by tile: it reads a tile from memory
for the old chain, then updates it and runs the new chain on it from cache.
The hardware prefetchers follow the rows while they are being read, but the
memory sits idle during the two in-cache sub-steps; asking for the next
tile meanwhile overlaps its reads with this tile's arithmetic (measured in
bench/README.md, "Second session of 2026-12-02": 1.11-1.21x at L64 m256).

``llvm.prefetch`` is target-independent: x86 emits ``prefetcht1`` for the
locality used here (into L2, so the tile being worked on stays in L1: at
d_in = 1024 a 4-row tile in float64 is all of a 32 KiB L1), other targets
their own instruction or nothing. A prefetch never faults, but the pointer
is computed from an in-range index only.
"""

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .sync import element_pointer

# llvm.prefetch(ptr, rw, locality, cache type): read, locality 2 (L2 on x86), data cache.
_READ, _LOCALITY, _DATA = 0, 2, 1


@intrinsic
def prefetch(typingctx, flat, i):
    """Ask for the cache line of flat[i] (a 1-D array, 0 <= i < flat.size) to be brought into L2."""
    def codegen(context, builder, sig, args):
        ptr = element_pointer(context, builder, sig, args)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, _READ), ir.Constant(i32, _LOCALITY),
                          ir.Constant(i32, _DATA)])
        return context.get_dummy_value()
    return types.void(flat, i), codegen
