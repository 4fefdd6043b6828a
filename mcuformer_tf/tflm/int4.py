"""TFLM's packed INT4 tensors: two signed 4-bit values per byte.

A tensor of TensorType INT4 (schema value 17) holds its values in flat
(row-major) order, value 2i in the low nibble of byte i and value 2i + 1 in
its high nibble; an odd count leaves the last byte's high nibble 0. This is
what `tflite::tensor_utils::UnpackDenseInt4IntoInt8`
(tensorflow/lite/kernels/internal/portable_tensor_utils.cc) reads, and what
the TFLite converter writes for a 4-bit fake-quantised kernel. Stock TFLM
takes INT4 only as the filter of FULLY_CONNECTED (per-tensor quantised; its
Prepare refuses per-channel INT4) and CONV_2D / DEPTHWISE_CONV_2D (per-tensor
or per-channel); each unpacks the whole filter into an arena scratch buffer
of one byte per value before every Eval.
"""
from __future__ import annotations

import numpy as np

INT4_MIN, INT4_MAX = -8, 7


def packed_size(count: int) -> int:
    """Bytes of `count` packed INT4 values."""
    return (count + 1) // 2


def pack_int4(values: np.ndarray) -> bytes:
    """Values in [-8, 7] (any shape), packed in flat order as TFLM reads them."""
    flat = np.asarray(values).astype(np.int64).ravel()
    if flat.size and (flat.min() < INT4_MIN or flat.max() > INT4_MAX):
        raise ValueError(f"values outside [{INT4_MIN}, {INT4_MAX}] cannot be packed into INT4")
    nibbles = (flat & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(data: bytes, shape: tuple) -> np.ndarray:
    """The int8 values of packed INT4 `data`, shaped: UnpackDenseInt4IntoInt8."""
    count = int(np.prod(shape, dtype=np.int64))
    packed = np.frombuffer(data, np.int8)
    low = (packed << 4).astype(np.int8) >> 4
    high = packed >> 4
    return np.stack([low, high], axis=-1).ravel()[:count].astype(np.int8).reshape(shape)
