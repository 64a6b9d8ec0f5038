"""Threads of one parallel region meeting without leaving it: a start handshake and a barrier.

The CPU kernel runs a whole chunk of GD steps in ONE parallel region (one
iteration of ``prange(T)`` per thread) and lets the threads wait for each
other between layers here, instead of opening a parallel region per layer
(a few microseconds each, L of them per step). A barrier costs 0.04-0.35
microseconds on the 2-core VM, depending on how far apart its vCPUs are.

Numba has no atomics for CPU code, so the four used here are emitted as LLVM
atomic instructions (and the spin-wait hint as an LLVM intrinsic). ``flags``
is an int64 array of at least ``(T + 2) * FLAG_STRIDE`` zeros before the
region opens; each thread's word lies on its own cache line.
"""

import os
import platform

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from .options import serial

FLAG_STRIDE = 8  # int64 words per cache line
# A waiting thread polls this many times (a few microseconds, far longer than
# a barrier takes when all threads are running) and then yields its core to
# the OS at every further poll: with more busy threads than cores (several
# trainings in parallel Python threads), the thread it waits for may need it.
SPINS_BEFORE_YIELD = 1 << 10
# The start handshake gives up after this many polls (tens of milliseconds):
# then the threads were not all running at once and the caller goes serial.
JOIN_POLLS = 1 << 15
NEVER = 1 << 62


def element_pointer(context, builder, sig, args):
    """In an intrinsic's codegen: the LLVM pointer to args[0][args[1]] (an array and an index)."""
    aryty = sig.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])


@intrinsic
def load_acquire(typingctx, flags, i):
    """flags[i], read atomically; later reads see what was written before a matching release."""
    def codegen(context, builder, sig, args):
        return builder.load_atomic(element_pointer(context, builder, sig, args), "acquire", 8)
    return types.int64(flags, i), codegen


@intrinsic
def store_release(typingctx, flags, i, value):
    """flags[i] = value, atomically, after every earlier write of this thread."""
    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(value, element_pointer(context, builder, sig, args), "release", 8)
        return context.get_dummy_value()
    return types.void(flags, i, value), codegen


@intrinsic
def fetch_add(typingctx, flags, i, value):
    """flags[i] += value, atomically; returns the old value."""
    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", element_pointer(context, builder, sig, args), value, "seq_cst")
    return types.int64(flags, i, value), codegen


@intrinsic
def compare_swap(typingctx, flags, i, expected, value):
    """If flags[i] == expected set it to value, atomically; returns the value found."""
    def codegen(context, builder, sig, args):
        expected = context.cast(builder, args[2], sig.args[2], types.int64)
        value = context.cast(builder, args[3], sig.args[3], types.int64)
        pair = builder.cmpxchg(element_pointer(context, builder, sig, args), expected, value,
                               "seq_cst", "seq_cst")
        return builder.extract_value(pair, 0)
    return types.int64(flags, i, expected, value), codegen


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


if os.name == "posix":
    _sched_yield = types.ExternalFunction("sched_yield", types.int32())

    @serial
    def yield_core():
        """Let the OS run another thread on this core (sched_yield)."""
        _sched_yield()
else:
    @serial
    def yield_core():
        pause()


@serial
def wait_for(flags, i, value, polls):
    """Poll until flags[i] >= value or ``polls`` polls are spent; returns whether it got there."""
    k = 0
    while load_acquire(flags, i) < value:
        if k >= polls:
            return False
        if k < SPINS_BEFORE_YIELD:
            pause()
        else:
            yield_core()
        k += 1
    return True


@serial
def join(flags, t, T, polls):
    """True for every thread if all T threads reached here while the others were running, else False for all.

    A threading layer may run the T iterations of a ``prange`` one after
    another (TBB can, and nested regions get one thread), and a barrier would
    then wait forever. So each thread counts itself in and waits at most
    ``polls`` polls for the others; the first thread to decide (all in, or
    gave up) sets the verdict once, by compare-and-swap, and all follow it.
    A thread that arrives after the verdict went against it does no work.
    """
    if T == 1:
        return True
    count, verdict = T * FLAG_STRIDE, (T + 1) * FLAG_STRIDE
    fetch_add(flags, count, 1)
    if wait_for(flags, count, T, polls):
        compare_swap(flags, verdict, 0, 1)
    else:
        compare_swap(flags, verdict, 0, 2)
    return load_acquire(flags, verdict) == 1


@serial
def barrier(flags, t, T, epoch):
    """Wait until all T threads have passed ``epoch`` barriers; returns epoch + 1.

    Each thread publishes how many barriers it has reached in its own word
    (release) and waits until every other word has caught up (acquire), so
    all writes made before the barrier are visible after it.
    """
    epoch += 1
    if T == 1:
        return epoch
    store_release(flags, t * FLAG_STRIDE, epoch)
    for u in range(T):
        wait_for(flags, u * FLAG_STRIDE, epoch, NEVER)
    return epoch
