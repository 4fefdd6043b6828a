"""A numpy executor of a whole int8 .tflite graph, computing what stock TFLM computes.

`prepare` derives an operator's parameters from its tensors' quantisation as
the TFLM kernel's Prepare does; `run_graph` runs the operators in order and
returns every tensor (constants, inputs, each operator's outputs) by index, to
be held byte for byte against TFLM's kPreserveAllTensors run. Packed INT4
weights (read as their int8 values) are taken where stock TFLM takes them: as
the filter of FULLY_CONNECTED and CONV_2D, which unpack them and compute as
with int8 filters.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arith import conv, elementwise, fully_connected, logistic, quantize, reduce, shape_ops, softmax


@dataclass(frozen=True)
class Kernel:
    prepare: Callable  # (graph, operator) -> parameters
    evaluate: Callable  # (parameters, *input arrays) -> array, or a list of arrays
    arity: int  # how many leading inputs `evaluate` takes (an omitted one is None)


KERNELS = {
    "CONV_2D": Kernel(conv.prepare_conv_2d, conv.conv_2d, 3),
    "FULLY_CONNECTED": Kernel(fully_connected.prepare_fully_connected, fully_connected.fully_connected, 3),
    "BATCH_MATMUL": Kernel(fully_connected.prepare_batch_matmul, fully_connected.batch_matmul, 2),
    "SOFTMAX": Kernel(softmax.prepare_softmax, softmax.softmax, 1),
    "LOGISTIC": Kernel(logistic.prepare_logistic, logistic.logistic, 1),
    "ADD": Kernel(elementwise.prepare_add, elementwise.add, 2),
    "SUB": Kernel(elementwise.prepare_sub, elementwise.sub, 2),
    "MUL": Kernel(elementwise.prepare_mul, elementwise.mul, 2),
    "SQUARED_DIFFERENCE": Kernel(elementwise.prepare_squared_difference, elementwise.squared_difference, 2),
    "RSQRT": Kernel(elementwise.prepare_rsqrt, elementwise.rsqrt, 1),
    "MEAN": Kernel(reduce.prepare_mean, reduce.mean, 1),
    "RESHAPE": Kernel(shape_ops.prepare_reshape, shape_ops.reshape, 1),
    "TRANSPOSE": Kernel(shape_ops.prepare_transpose, shape_ops.transpose, 1),
    "UNPACK": Kernel(shape_ops.prepare_unpack, shape_ops.unpack, 1),
    "QUANTIZE": Kernel(quantize.prepare_quantize, quantize.quantize, 1),
    "DEQUANTIZE": Kernel(quantize.prepare_dequantize, quantize.dequantize, 1),
}
INT4_FILTER = 1  # the input position of the filter
INT4_FILTER_OPS = ("FULLY_CONNECTED", "CONV_2D")


def _kernel(op) -> Kernel:
    if op.opcode not in KERNELS:
        raise McuformerError(f"{op.opcode}: not modelled by the numpy TFLM executor")
    return KERNELS[op.opcode]


def _check_int4(graph, op) -> None:
    for position, index in enumerate(op.inputs):
        if index >= 0 and graph.tensor(index).int4 and (op.opcode not in INT4_FILTER_OPS
                                                         or position != INT4_FILTER):
            raise McuformerError(f"operator {op.index} ({op.opcode}) reads the INT4 tensor {index} as input "
                                 f"{position}: stock TFLM takes INT4 only as a FULLY_CONNECTED or "
                                 f"CONV_2D filter")


def prepare(graph, op):
    """The operator's Prepare-time parameters (multipliers, shifts, offsets, ranges, …)."""
    kernel = _kernel(op)
    _check_int4(graph, op)
    return kernel.prepare(graph, op)


def _graph_inputs(graph, input_arrays) -> dict:
    arrays = [input_arrays] if isinstance(input_arrays, np.ndarray) else list(input_arrays)
    if len(arrays) != len(graph.inputs):
        raise McuformerError(f"the graph has {len(graph.inputs)} inputs, {len(arrays)} arrays were given")
    values = {}
    for index, array in zip(graph.inputs, arrays):
        tensor = graph.tensor(index)
        array = np.asarray(array)
        if array.dtype != tensor.dtype or array.shape != tensor.shape:
            raise McuformerError(f"input tensor {index} ({tensor.name}) is {tensor.dtype} "
                                 f"{list(tensor.shape)}, the array given is {array.dtype} {list(array.shape)}")
        values[index] = array
    return values


def run_graph(graph, input_arrays) -> dict[int, np.ndarray]:
    """Every tensor's value by index after running `graph` on `input_arrays` (one per graph input)."""
    values = {t.index: t.data for t in graph.tensors if t.is_constant}
    values.update(_graph_inputs(graph, input_arrays))
    for op in graph.operators:
        kernel = _kernel(op)
        params = prepare(graph, op)
        arguments = []
        for index in (op.inputs + (-1,) * kernel.arity)[:kernel.arity]:
            if index >= 0 and index not in values:
                raise McuformerError(f"operator {op.index} ({op.opcode}) reads tensor {index} "
                                     f"before it is written")
            arguments.append(values[index] if index >= 0 else None)
        results = kernel.evaluate(params, *arguments)
        for index, result in zip(op.outputs, results if isinstance(results, list) else [results]):
            values[index] = result
    return values
