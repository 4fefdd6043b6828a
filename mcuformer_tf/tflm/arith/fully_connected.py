"""FULLY_CONNECTED and BATCH_MATMUL on int8 activations, as stock TFLM.

FULLY_CONNECTED — Prepare: tensorflow/lite/micro/kernels/fully_connected_common.cc
(CalculateOpDataFullyConnected: per-channel multipliers in double, or the
per-tensor GetQuantizedConvolutionMultipler of kernel_util.cc, also in double:
its bias-less overload reads static_cast<double>(s_in * s_filter), a C float
product, at tflite-micro HEAD of 2026-08, but the wheel's machine code
multiplies the two scales as doubles (cvtss2sd, cvtss2sd, mulsd); a float
product is off by up to 2^-24 relative and so, rarely, by 1 LSB in an output);
Eval: reference/integer_ops/fully_connected.h
(FullyConnectedPerChannel ignores the weights' zero point, FullyConnected
subtracts it). INT4 weights (fully_connected.cc: unpacked, then the per-tensor
FullyConnected) must be quantised per tensor: CalculateOpDataFullyConnected
refuses per-channel INT4.
BATCH_MATMUL — Prepare and Eval: tensorflow/lite/micro/kernels/batch_matmul.cc,
reference/batch_matmul.h: Σ (lhs - zp_lhs)(rhs - zp_rhs), one per-tensor
multiplier (GetQuantizedConvolutionMultipler, in double as above), clamped to
int8 (no fused activation).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith.common import (
    INT8_MAX,
    INT8_MIN,
    activation_range,
    integer_matmul,
    require_int8,
    scale,
    zero_point,
)
from mcuformer_tf.tflm.arith.conv import per_channel_multipliers
from mcuformer_tf.tflm.arith.quantization import multiply_by_quantized_multiplier, quantize_multiplier, wrap32


@dataclass(frozen=True)
class FullyConnectedParams:
    input_offset: int
    weights_offset: int  # 0 on the per-channel path, which ignores the weights' zero point
    output_offset: int
    multipliers: np.ndarray  # one per output channel (per-tensor: repeated)
    shifts: np.ndarray
    activation_min: int
    activation_max: int
    output_shape: tuple


@dataclass(frozen=True)
class BatchMatmulParams:
    lhs_offset: int
    rhs_offset: int
    output_offset: int
    multiplier: int
    shift: int
    adj_x: bool
    adj_y: bool
    output_shape: tuple


def convolution_multiplier(input_tensor, filter_tensor, output_tensor) -> float:
    """GetQuantizedConvolutionMultipler, as the wheel runs it: double(s_in)·double(s_w) / double(s_out)."""
    return float(scale(input_tensor)) * float(scale(filter_tensor)) / float(scale(output_tensor))


def prepare_fully_connected(graph, op) -> FullyConnectedParams:
    input_tensor, weights = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1])
    bias = graph.tensor(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    output_tensor = graph.tensor(op.outputs[0])
    require_int8(op.opcode, input_tensor, weights, output_tensor)
    if bias is not None and bias.dtype != np.int32:
        raise McuformerError(f"{op.opcode}: {bias.dtype} bias is not modelled by the numpy TFLM executor")
    channels = weights.shape[0]
    if weights.int4 and weights.quantization.per_channel:
        raise McuformerError(f"{op.opcode}: per-channel INT4 weights (TFLM's Prepare refuses them; "
                             f"INT4 weights of a FULLY_CONNECTED are quantised per tensor)")
    if weights.quantization.per_channel:
        multipliers, shifts = per_channel_multipliers(input_tensor, weights, output_tensor, channels)
        weights_offset = 0
    else:
        real = convolution_multiplier(input_tensor, weights, output_tensor)
        if bias is not None:
            input_product_scale = float(scale(input_tensor)) * float(scale(weights))
            difference = abs(input_product_scale - float(scale(bias)))
            if difference / float(scale(output_tensor)) > 0.02:
                raise McuformerError(f"{op.opcode}: bias scale differs from input × weights scale "
                                     f"(TFLM Prepare fails)")
        multiplier, shift = quantize_multiplier(real)
        multipliers = np.full(channels, multiplier, np.int64)
        shifts = np.full(channels, shift, np.int64)
        weights_offset = -zero_point(weights)
    low, high = activation_range(op.options["fused_activation_function"], output_tensor)
    return FullyConnectedParams(-zero_point(input_tensor), weights_offset, zero_point(output_tensor),
                                multipliers, shifts, low, high, tuple(output_tensor.shape))


def fully_connected(params: FullyConnectedParams, x: np.ndarray, weights: np.ndarray,
                    bias: np.ndarray | None) -> np.ndarray:
    """int8 input [..., K], int8 weights [O, K], int32 bias [O] or None -> int8 output."""
    depth = weights.shape[-1]
    rows = np.asarray(x, np.int64).reshape(-1, depth) + params.input_offset
    acc = wrap32(integer_matmul(rows, (np.asarray(weights, np.int64) + params.weights_offset).T))
    if bias is not None:
        acc = wrap32(acc + np.asarray(bias, np.int64))
    out = multiply_by_quantized_multiplier(acc, params.multipliers, params.shifts) + params.output_offset
    out = np.clip(out, params.activation_min, params.activation_max).astype(np.int8)
    return out.reshape(params.output_shape)


def prepare_batch_matmul(graph, op) -> BatchMatmulParams:
    lhs, rhs, output = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1]), graph.tensor(op.outputs[0])
    require_int8(op.opcode, lhs, rhs, output)
    multiplier, shift = quantize_multiplier(convolution_multiplier(lhs, rhs, output))
    return BatchMatmulParams(-zero_point(lhs), -zero_point(rhs), zero_point(output), multiplier, shift,
                             bool(op.options["adj_x"]), bool(op.options["adj_y"]), tuple(output.shape))


def batch_matmul(params: BatchMatmulParams, lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """int8 lhs [..., M, K] (adj_x: [..., K, M]) times int8 rhs [..., K, N] (adj_y: [..., N, K])."""
    a = np.asarray(lhs, np.int64) + params.lhs_offset
    b = np.asarray(rhs, np.int64) + params.rhs_offset
    if params.adj_x:
        a = np.swapaxes(a, -1, -2)
    if params.adj_y:
        b = np.swapaxes(b, -1, -2)
    acc = wrap32(integer_matmul(a, b))
    out = multiply_by_quantized_multiplier(acc, params.multiplier, params.shift) + params.output_offset
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8).reshape(params.output_shape)
