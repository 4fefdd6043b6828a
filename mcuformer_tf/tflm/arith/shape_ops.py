"""RESHAPE, TRANSPOSE and UNPACK: data movement only, bytes unchanged, as stock TFLM.

tensorflow/lite/micro/kernels/reshape.cc (a copy into the output's shape),
transpose.cc with reference/transpose.h (output[i...] = input[perm-permuted
i...]), unpack.cc (slices along `axis`, the axis dropped).
"""
from __future__ import annotations

import numpy as np


def prepare_reshape(graph, op) -> tuple:
    return tuple(graph.tensor(op.outputs[0]).shape)


def reshape(output_shape: tuple, x: np.ndarray) -> np.ndarray:
    return np.asarray(x).reshape(output_shape).copy()


def prepare_transpose(graph, op) -> tuple:
    return tuple(int(p) for p in graph.tensor(op.inputs[1]).data)


def transpose(perm: tuple, x: np.ndarray) -> np.ndarray:
    return np.transpose(x, perm).copy()


def prepare_unpack(graph, op) -> int:
    return int(op.options["axis"]) % len(graph.tensor(op.inputs[0]).shape)


def unpack(axis: int, x: np.ndarray) -> list:
    return [part.copy() for part in np.moveaxis(np.asarray(x), axis, 0)]
