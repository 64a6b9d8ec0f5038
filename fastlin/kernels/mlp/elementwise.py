"""Activations phi and their slopes phi', written so that LLVM vectorizes a loop over them.

Numba's ``math.tanh`` is a call into the C library, one element at a time:
21 ns per element on the CI machine, as much time as the whole product of
a 256-wide layer spends on that element. :func:`tanh` here is arithmetic
only (no calls, no branches LLVM cannot turn into selects), so a loop
over it is vectorized: 1.4 ns per element, within 2 ulp of NumPy's tanh
over [-30, 30] and down to subnormal inputs (measured while writing it).

    tanh x = e / (e + 2),  e = expm1(2x) = 2^k (expm1(r) + 1) - 1,
    2x = k ln 2 + r, |r| <= ln(2)/2,

expm1(r) from its Taylor series to r^13 (truncation below 1e-17
relative), ln 2 split in two parts (Cody & Waite) so r is exact enough,
2^k built from its bits. |x| is clamped at 22, where tanh is +-1 in float64;
NaN passes through every step (comparisons with NaN are false), so a
diverging net still shows NaN. Two LLVM operations Numba does not offer
plainly are emitted directly: a bit cast, and a division without Numba's
zero-divisor check (which raises, and so keeps the loop from being
vectorized; here e + 2 >= 1).
"""

import math

import numpy as np
from numba import types
from numba.extending import intrinsic

from ..options import serial
from . import RELU, TANH

_LOG2_E = 1.4426950408889634
_LN2_HIGH = 6.93147180369123816490e-01  # ln 2 rounded to 32 bits: k * _LN2_HIGH is exact
_LN2_LOW = 1.90821492927058770002e-10
_CLAMP = 44.0  # on 2x: tanh(22) = 1 - 2e-19 rounds to 1
_KMAX = 64.0
_EXPONENT_BIAS = 1023
_MANTISSA_BITS = 52
_I2, _I3, _I4, _I5, _I6, _I7, _I8, _I9, _I10, _I11, _I12, _I13 = (1.0 / math.factorial(i) for i in range(2, 14))


@intrinsic
def _float64_from_bits(typingctx, bits):
    """The float64 whose IEEE-754 bits are the int64 ``bits``."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return types.float64(types.int64), codegen


@intrinsic
def _divide(typingctx, a, b):
    """a / b as plain IEEE division (no ZeroDivisionError check); a and b of one float type."""
    def codegen(context, builder, sig, args):
        return builder.fdiv(args[0], args[1])
    return a(a, b), codegen


@serial
def tanh(x):
    """tanh(x) in float64 (module docstring), for float64 or float32 x."""
    t = 2.0 * x
    if t > _CLAMP:
        t = _CLAMP
    elif t < -_CLAMP:
        t = -_CLAMP
    k = np.floor(t * _LOG2_E + 0.5)
    if not abs(k) <= _KMAX:  # NaN: any k will do, the result is NaN through r
        k = 0.0
    r = (t - k * _LN2_HIGH) - k * _LN2_LOW
    p = _I13
    p = p * r + _I12
    p = p * r + _I11
    p = p * r + _I10
    p = p * r + _I9
    p = p * r + _I8
    p = p * r + _I7
    p = p * r + _I6
    p = p * r + _I5
    p = p * r + _I4
    p = p * r + _I3
    p = p * r + _I2
    expm1_r = r + r * r * p
    two_k = _float64_from_bits((np.int64(k) + _EXPONENT_BIAS) << _MANTISSA_BITS)
    e = two_k * expm1_r + (two_k - 1.0)
    return _divide(e, e + 2.0)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 ``bits``."""
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))
    return types.float32(types.int32), codegen


_F32 = np.float32
_LOG2_E_32 = _F32(_LOG2_E)
_LN2_HIGH_32 = _F32(0.693145751953125)  # 12 bits: k * _LN2_HIGH_32 is exact for |k| <= 64
_LN2_LOW_32 = _F32(1.428606765330187045e-06)
_CLAMP_32, _KMAX_32, _HALF_32, _ONE_32, _TWO_32 = _F32(_CLAMP), _F32(_KMAX), _F32(0.5), _F32(1), _F32(2)
_J2, _J3, _J4, _J5, _J6, _J7 = (_F32(1.0 / math.factorial(i)) for i in range(2, 8))


@serial
def tanh32(x):
    """:func:`tanh` in float32 arithmetic (twice the lanes): expm1(r) to r^7 (truncation 5e-9 relative).

    Within 3 float32 ulp of NumPy's float32 tanh over [-30, 30].
    """
    t = _F32(x) * _TWO_32
    if t > _CLAMP_32:
        t = _CLAMP_32
    elif t < -_CLAMP_32:
        t = -_CLAMP_32
    k = np.floor(t * _LOG2_E_32 + _HALF_32)
    if not abs(k) <= _KMAX_32:
        k = _F32(0)
    r = (t - k * _LN2_HIGH_32) - k * _LN2_LOW_32
    p = _J7
    p = p * r + _J6
    p = p * r + _J5
    p = p * r + _J4
    p = p * r + _J3
    p = p * r + _J2
    expm1_r = r + r * r * p
    two_k = _float32_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))
    e = two_k * expm1_r + (two_k - _ONE_32)
    return _divide(e, e + _TWO_32)


@serial
def activate(z, code):
    """phi(z) in float64: tanh, relu (NaN stays NaN) or the identity."""
    if code == TANH:
        return tanh(z)
    if code == RELU:
        return 0.0 if z <= 0 else np.float64(z)
    return np.float64(z)


@serial
def slope(h, code):
    """phi'(z) written through h = phi(z): 1 - h^2 (tanh), [h > 0] (relu), 1 (linear)."""
    if code == TANH:
        return 1.0 - np.float64(h) * h
    if code == RELU:
        return 1.0 if h > 0 else 0.0
    return 1.0
