"""CONV_2D, int8 with per-channel (or per-tensor) int8 weights and int32 bias, as stock TFLM.

Prepare: tensorflow/lite/micro/kernels/conv_common.cc (CalculateOpDataConv),
tensorflow/lite/kernels/kernel_util.cc (PopulateConvolutionQuantizationParams),
tensorflow/lite/kernels/padding.h. Eval:
tensorflow/lite/kernels/internal/reference/integer_ops/conv.h (ConvPerChannel):
acc = Σ w·(x - zp_in) over the window (points outside the image add nothing),
+ bias, MultiplyByQuantizedMultiplier per output channel, + zp_out, clamp.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith.common import activation_range, integer_matmul, require_int8, scale, zero_point
from mcuformer_tf.tflm.arith.quantization import multiply_by_quantized_multiplier, quantize_multiplier, wrap32

PADDING_SAME = 0


@dataclass(frozen=True)
class ConvParams:
    input_offset: int  # -input zero point
    output_offset: int
    multipliers: np.ndarray  # per output channel, int64
    shifts: np.ndarray  # per output channel, TFLM convention (> 0: left)
    stride: tuple  # (h, w)
    dilation: tuple  # (h, w)
    padding: tuple  # (top, left)
    activation_min: int
    activation_max: int
    output_shape: tuple


def per_channel_multipliers(input_tensor, filter_tensor, output_tensor, channels: int):
    """PopulateConvolutionQuantizationParams' per-channel (multiplier, shift) arrays."""
    filter_scales = np.asarray(filter_tensor.quantization.scale, np.float32)
    if filter_scales.size not in (1, channels):
        raise McuformerError(f"tensor {filter_tensor.index} has {filter_scales.size} scales for "
                             f"{channels} output channels")
    pairs = [quantize_multiplier(float(scale(input_tensor)) * float(filter_scales[i % filter_scales.size])
                                 / float(scale(output_tensor)))
             for i in range(channels)]
    return np.array([m for m, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64)


def _padding(padding: int, stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    if padding != PADDING_SAME:
        return 0
    effective_filter = (filter_size - 1) * dilation + 1
    return max((out_size - 1) * stride + effective_filter - in_size, 0) // 2


def prepare_conv_2d(graph, op) -> ConvParams:
    input_tensor, filter_tensor = graph.tensor(op.inputs[0]), graph.tensor(op.inputs[1])
    output_tensor = graph.tensor(op.outputs[0])
    require_int8(op.opcode, input_tensor, filter_tensor, output_tensor)
    if filter_tensor.shape[3] != input_tensor.shape[3]:
        raise McuformerError(f"{op.opcode}: grouped convolution is not modelled by the numpy TFLM executor")
    o = op.options
    stride = (o["stride_h"], o["stride_w"])
    dilation = (o["dilation_hfactor"], o["dilation_wfactor"])
    padding = tuple(_padding(o["padding"], stride[i], dilation[i], input_tensor.shape[1 + i],
                             filter_tensor.shape[1 + i], output_tensor.shape[1 + i]) for i in range(2))
    multipliers, shifts = per_channel_multipliers(input_tensor, filter_tensor, output_tensor,
                                                  filter_tensor.shape[0])
    low, high = activation_range(o["fused_activation_function"], output_tensor)
    return ConvParams(-zero_point(input_tensor), zero_point(output_tensor), multipliers, shifts,
                      stride, dilation, padding, low, high, tuple(output_tensor.shape))


def conv_2d(params: ConvParams, x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """int8 NHWC input, OHWI weights, int32 bias (or None) -> int8 NHWC output."""
    batches, out_h, out_w, channels = params.output_shape
    _, kernel_h, kernel_w, _ = weights.shape
    (stride_h, stride_w), (dil_h, dil_w), (pad_h, pad_w) = params.stride, params.dilation, params.padding
    centred = np.asarray(x, np.int64) + params.input_offset
    need_h = (out_h - 1) * stride_h + (kernel_h - 1) * dil_h + 1
    need_w = (out_w - 1) * stride_w + (kernel_w - 1) * dil_w + 1
    padded = np.pad(centred, ((0, 0), (pad_h, max(need_h - pad_h - x.shape[1], 0)),
                              (pad_w, max(need_w - pad_w - x.shape[2], 0)), (0, 0)))
    acc = np.zeros((batches, out_h, out_w, channels), np.int64)
    w = np.asarray(weights, np.int64)
    for ky in range(kernel_h):
        for kx in range(kernel_w):
            window = padded[:, ky * dil_h:ky * dil_h + (out_h - 1) * stride_h + 1:stride_h,
                            kx * dil_w:kx * dil_w + (out_w - 1) * stride_w + 1:stride_w, :]
            acc += integer_matmul(window, w[:, ky, kx, :].T)
    acc = wrap32(acc)
    if bias is not None:
        acc = wrap32(acc + np.asarray(bias, np.int64))
    out = multiply_by_quantized_multiplier(acc, params.multipliers, params.shifts) + params.output_offset
    return np.clip(out, params.activation_min, params.activation_max).astype(np.int8)
