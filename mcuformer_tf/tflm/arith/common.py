"""What every int8 kernel's Prepare reads from a tensor: scale, zero point, activation range.

TFLM kernels read `TfLiteTensor::params` (the first scale and zero point, a C
float and int32) for activations; per-channel scales only for weights.
Modelled on tensorflow/lite/kernels/kernel_util.cc
(CalculateActivationRangeQuantized).
"""
from __future__ import annotations

import numpy as np

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith.quantization import tflite_round

INT8_MIN, INT8_MAX = -128, 127
# Schema ActivationFunctionType codes.
RELU, RELU_N1_TO_1, RELU6 = 1, 2, 3


def scale(tensor) -> np.float32:
    """The tensor's params.scale, a C float."""
    if tensor.quantization is None:
        raise McuformerError(f"tensor {tensor.index} ({tensor.name}) has no quantisation parameters")
    return np.float32(tensor.quantization.scale[0])


def zero_point(tensor) -> int:
    """The tensor's params.zero_point."""
    if tensor.quantization is None:
        raise McuformerError(f"tensor {tensor.index} ({tensor.name}) has no quantisation parameters")
    return int(tensor.quantization.zero_point[0])


def _quantize(output, value: float) -> int:
    return zero_point(output) + tflite_round(float(np.float32(value) / scale(output)))


def activation_range(activation: int, output) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for an int8 output; other activations clamp to int8 only."""
    if activation == RELU:
        return max(INT8_MIN, _quantize(output, 0.0)), INT8_MAX
    if activation == RELU6:
        return max(INT8_MIN, _quantize(output, 0.0)), min(INT8_MAX, _quantize(output, 6.0))
    if activation == RELU_N1_TO_1:
        return max(INT8_MIN, _quantize(output, -1.0)), min(INT8_MAX, _quantize(output, 1.0))
    return INT8_MIN, INT8_MAX


def require_int8(opcode: str, *tensors) -> None:
    """Raise unless every tensor is int8: only TFLM's int8 kernels are modelled."""
    for tensor in tensors:
        if tensor.dtype != np.int8:
            raise McuformerError(f"{opcode}: {tensor.dtype} tensors are not modelled by the numpy TFLM "
                                 f"executor")


def integer_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b (batched, broadcasting) of int32 values with C's wrapping int32 accumulator, as int64.

    TFLM accumulates in int32; a sum modulo 2^32 does not depend on the order of its terms.
    """
    product = np.einsum("...mk,...kn->...mn", np.asarray(a, np.int32), np.asarray(b, np.int32))
    return product.astype(np.int64)
