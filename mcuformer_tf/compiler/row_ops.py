"""libmcuf's int8 row primitives (mcuf/int8_ops.h) one row at a time, for tests and for checking
the C against `tflm.arith`: FULLY_CONNECTED, ADD, SUB, MUL, MEAN, RSQRT, LOGISTIC, SOFTMAX and
BATCH_MATMUL rows with TFLM's parameters."""
from __future__ import annotations

import ctypes

import numpy as np

from mcuformer_tf.compiler.kernel_params import (
    MCUF_OK,
    P32,
    add_params,
    batch_matmul_params,
    fc_params,
    int8_buffer,
    load,
    logistic_params,
    mean_params,
    mul_params,
    output_buffer,
    p8,
    rsqrt_params,
    softmax_params,
)
from mcuformer_tf.errors import McuformerError


def fully_connected_row(params, x, weights, bias=None, out=None, sanitize: bool = False) -> np.ndarray:
    """One row x [K] through int8 weights [O, K] and int32 bias [O] (or None): int8 [O]."""
    x, weights = int8_buffer("x", x), int8_buffer("weights", weights)
    if weights.ndim != 2 or weights.shape[1] != x.size:
        raise McuformerError(f"weights: [outputs, {x.size}] expected, got {list(weights.shape)}")
    keep: list = []
    struct = fc_params(params, keep)
    bias_pointer = None
    if bias is not None:
        bias = np.ascontiguousarray(bias, np.int32)
        if bias.shape != (weights.shape[0],):
            raise McuformerError(f"bias: [{weights.shape[0]}] expected, got {list(bias.shape)}")
        bias_pointer = bias.ctypes.data_as(P32)
    out = output_buffer(out, weights.shape[0])
    load(sanitize).mcuf_fully_connected_row(ctypes.byref(struct), p8(x), x.size, p8(weights), bias_pointer,
                                            weights.shape[0], p8(out))
    return out


def _binary_row(function: str, struct, x1, x2, out, sanitize: bool) -> np.ndarray:
    x1, x2 = int8_buffer("x1", x1), int8_buffer("x2", x2)
    size = max(x1.size, x2.size)
    if {x1.size, x2.size} - {1, size}:
        raise McuformerError(f"operands of {x1.size} and {x2.size} elements: each must be a row of the "
                             f"output's size or one broadcast value")
    out = output_buffer(out, size)
    getattr(load(sanitize), function)(ctypes.byref(struct), p8(x1), int(x1.size == size), p8(x2),
                                      int(x2.size == size), p8(out), size)
    return out


def add_row(params, x1, x2, out=None, sanitize: bool = False) -> np.ndarray:
    """ADD of two rows, or of a row and one broadcast value (either side)."""
    return _binary_row("mcuf_add_row", add_params(params), x1, x2, out, sanitize)


def sub_row(params, x1, x2, out=None, sanitize: bool = False) -> np.ndarray:
    return _binary_row("mcuf_sub_row", add_params(params), x1, x2, out, sanitize)


def mul_row(params, x1, x2, out=None, sanitize: bool = False) -> np.ndarray:
    return _binary_row("mcuf_mul_row", mul_params(params), x1, x2, out, sanitize)


def mean_row(params, x, sanitize: bool = False) -> int:
    """MEAN of one row's values."""
    x = int8_buffer("x", x)
    return load(sanitize).mcuf_mean_row(ctypes.byref(mean_params(params)), p8(x), x.size)


def rsqrt(params, value: int, sanitize: bool = False) -> int:
    result = ctypes.c_int8()
    if load(sanitize).mcuf_rsqrt(ctypes.byref(rsqrt_params(params)), value, ctypes.byref(result)) != MCUF_OK:
        raise McuformerError(f"RSQRT: {value} is below the input zero point {params.input_offset}; TFLM "
                             f"fails with 'Rsqrt is only defined for positive values'")
    return result.value


def logistic(params, value: int, sanitize: bool = False) -> int:
    return load(sanitize).mcuf_logistic(ctypes.byref(logistic_params(params)), value)


def softmax_row(params, x, out=None, sanitize: bool = False) -> np.ndarray:
    x = int8_buffer("x", x)
    out = output_buffer(out, x.size)
    if load(sanitize).mcuf_softmax_row(ctypes.byref(softmax_params(params)), p8(x), x.size,
                                       p8(out)) != MCUF_OK:
        raise McuformerError(f"SOFTMAX: the row's sum of exponentials reaches 512 ({x.size} values); TFLM's "
                             f"TFLITE_CHECK on the reciprocal's exponent fails there")
    return out


def batch_matmul_row(params, lhs_row, rhs, out=None, sanitize: bool = False) -> np.ndarray:
    """One lhs row [K] times rhs [K, N] (adj_y: [N, K]): int8 [N]."""
    lhs_row, rhs = int8_buffer("lhs_row", lhs_row), int8_buffer("rhs", rhs)
    depth_axis = 1 if params.adj_y else 0
    if rhs.ndim != 2 or rhs.shape[depth_axis] != lhs_row.size:
        raise McuformerError(f"rhs: {lhs_row.size} along axis {depth_axis} expected, got {list(rhs.shape)}")
    columns = rhs.shape[1 - depth_axis]
    out = output_buffer(out, columns)
    load(sanitize).mcuf_batch_matmul_row(ctypes.byref(batch_matmul_params(params)), p8(lhs_row), lhs_row.size,
                                         p8(rhs), columns, p8(out))
    return out


# --- the fused kernels --------------------------------------------------------------------------

