"""QUANTIZE (float32 or int8 -> int8) and DEQUANTIZE (int8 -> float32), as stock TFLM.

Prepare: tensorflow/lite/micro/kernels/quantize_common.cc (requantise
multiplier QuantizeMultiplier(s_in / s_out)), dequantize_common.cc. Eval:
reference/quantize.h (AffineQuantize: round(x / float(scale)) + zp),
reference/requantize.h (Requantize), reference/dequantize.h
(float(double(scale) · (q - zp))).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith.common import INT8_MAX, INT8_MIN, scale, zero_point
from mcuformer_tf.tflm.arith.quantization import multiply_by_quantized_multiplier, quantize_multiplier


@dataclass(frozen=True)
class QuantizeParams:
    from_float: bool
    input_zero_point: int  # int8 input only
    output_scale: np.float32
    output_zero_point: int
    multiplier: int  # int8 input only
    shift: int


def prepare_quantize(graph, op) -> QuantizeParams:
    input_tensor, output_tensor = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    if output_tensor.dtype != np.int8 or input_tensor.dtype not in (np.float32, np.int8):
        raise McuformerError(f"{op.opcode}: {input_tensor.dtype} -> {output_tensor.dtype} is not modelled "
                             f"by the numpy TFLM executor")
    if input_tensor.dtype == np.float32:
        return QuantizeParams(True, 0, scale(output_tensor), zero_point(output_tensor), 0, 0)
    multiplier, shift = quantize_multiplier(float(scale(input_tensor)) / float(scale(output_tensor)))
    return QuantizeParams(False, zero_point(input_tensor), scale(output_tensor), zero_point(output_tensor),
                          multiplier, shift)


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """std::round elementwise, exactly (adding 0.5 before flooring would round 0.49999997 up)."""
    magnitude = np.abs(values)
    floor = np.floor(magnitude)
    return np.sign(values) * (floor + (magnitude - floor >= 0.5))


def quantize(params: QuantizeParams, x: np.ndarray) -> np.ndarray:
    if params.from_float:
        quotient = np.asarray(x, np.float32) / params.output_scale
        out = _round_half_away(quotient).astype(np.int64) + params.output_zero_point
    else:
        out = multiply_by_quantized_multiplier(np.asarray(x, np.int64) - params.input_zero_point,
                                               params.multiplier, params.shift) + params.output_zero_point
    return np.clip(out, INT8_MIN, INT8_MAX).astype(np.int8)


@dataclass(frozen=True)
class DequantizeParams:
    scale: float
    zero_point: int


def prepare_dequantize(graph, op) -> DequantizeParams:
    input_tensor, output_tensor = graph.tensor(op.inputs[0]), graph.tensor(op.outputs[0])
    if input_tensor.dtype != np.int8 or output_tensor.dtype != np.float32:
        raise McuformerError(f"{op.opcode}: {input_tensor.dtype} -> {output_tensor.dtype} is not modelled "
                             f"by the numpy TFLM executor")
    return DequantizeParams(float(scale(input_tensor)), zero_point(input_tensor))


def dequantize(params: DequantizeParams, x: np.ndarray) -> np.ndarray:
    return (params.scale * (np.asarray(x, np.int64) - params.zero_point)).astype(np.float32)
