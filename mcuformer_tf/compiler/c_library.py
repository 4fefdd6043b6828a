"""ctypes binding of libmcuf (tflm_custom_ops/): TFLM's integer requantisation primitives in C.

The library is built on first use by host_runner.build_mcuf_library. Arguments
are checked here, because outside their documented ranges the C functions have
undefined behaviour. The sanitized build (load(sanitize=True)) loads only in a
process started with host_runner.sanitizer_env().
"""
from __future__ import annotations

import ctypes
import functools
import os

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.host_runner import build_mcuf_library

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_MCUF_OK = 0


@functools.lru_cache(maxsize=None)
def load(sanitize: bool = False) -> ctypes.CDLL:
    """The shared libmcuf, built if needed, with its function signatures declared."""
    if sanitize and "libasan" not in os.environ.get("LD_PRELOAD", ""):
        raise McuformerError("the sanitized libmcuf needs ASan preloaded: run this in a "
                             "process started with host_runner.sanitizer_env()")
    lib = ctypes.CDLL(str(build_mcuf_library(sanitize)))
    i32, c_int = ctypes.c_int32, ctypes.c_int
    signatures = {
        "mcuf_version": (ctypes.c_char_p, []),
        "mcuf_saturating_rounding_doubling_high_mul": (i32, [i32, i32]),
        "mcuf_rounding_divide_by_pot": (i32, [i32, c_int]),
        "mcuf_multiply_by_quantized_multiplier": (i32, [i32, i32, c_int]),
        "mcuf_quantize_multiplier": (c_int, [ctypes.c_double, ctypes.POINTER(i32), ctypes.POINTER(c_int)]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    return lib


def _int32(name: str, value: int) -> int:
    if not _INT32_MIN <= int(value) <= _INT32_MAX:
        raise McuformerError(f"{name}={value} is outside int32")
    return int(value)


def _in_range(name: str, value: int, low: int, high: int) -> int:
    if not low <= int(value) <= high:
        raise McuformerError(f"{name}={value} is outside [{low}, {high}]")
    return int(value)


def version(sanitize: bool = False) -> str:
    return load(sanitize).mcuf_version().decode()


def saturating_rounding_doubling_high_mul(a: int, b: int, sanitize: bool = False) -> int:
    return load(sanitize).mcuf_saturating_rounding_doubling_high_mul(_int32("a", a), _int32("b", b))


def rounding_divide_by_pot(x: int, exponent: int, sanitize: bool = False) -> int:
    return load(sanitize).mcuf_rounding_divide_by_pot(_int32("x", x), _in_range("exponent", exponent, 0, 31))


def multiply_by_quantized_multiplier(x: int, multiplier: int, shift: int, sanitize: bool = False) -> int:
    return load(sanitize).mcuf_multiply_by_quantized_multiplier(
        _int32("x", x), _int32("multiplier", multiplier), _in_range("shift", shift, -31, 30))


def quantize_multiplier(real: float, sanitize: bool = False) -> tuple[int, int]:
    """(multiplier, shift) with real ≈ multiplier * 2^(shift - 31), as TFLM's QuantizeMultiplier."""
    multiplier, shift = ctypes.c_int32(), ctypes.c_int()
    lib = load(sanitize)
    status = lib.mcuf_quantize_multiplier(float(real), ctypes.byref(multiplier), ctypes.byref(shift))
    if status != _MCUF_OK:
        raise McuformerError(f"cannot quantize the multiplier {real}")
    return multiplier.value, shift.value
