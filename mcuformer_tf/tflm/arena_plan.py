"""Stock TFLM's non-persistent arena plan of a model, buffer for buffer.

It repeats what TFLM does in `MicroAllocator::CommitStaticMemoryPlan`: lifetimes as
`AllocationInfoBuilder` marks them (graph inputs from scope 0, operator i at scope i + 1, graph
outputs to the end), each buffer rounded up to 16 bytes, the scratch each reference kernel requests
in Prepare (`RequestScratchBufferInArena`, read from tensorflow/lite/micro/kernels), and offsets
placed exactly as `GreedyMemoryPlanner` places them (offline-planned buffers, from the
`OfflineMemoryAllocation` metadata, first; then the rest by size, largest first, first fit among
buffers alive at the same time). The plan's size is the "head" TFLM reports. What TFLM itself takes
from the arena while it plans is stated here too (`planning_bytes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALIGNMENT = 16
OFFLINE_PLAN = "OfflineMemoryAllocation"
HOST_POINTER = 8  # bytes; ADD_N's scratch holds one pointer per input (the wheel is 64-bit)
# Builtins whose reference kernels request scratch not modelled here; other builtins request none.
UNMODELLED_SCRATCH = {"SVDF", "UNIDIRECTIONAL_SEQUENCE_LSTM"}


def _elements(tensor) -> int:
    return int(np.prod(tensor.shape, dtype=np.int64))


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _mean_or_sum(graph, op):
    x, axis = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    out = graph.tensors[op.outputs[0]]
    accumulator = [4 * _elements(out)] if x.dtype.name in ("int8", "int16") else []
    return accumulator + [4 * len(x.shape), 4 * _elements(axis)]


def _min_max_all(graph, op):
    x, axis = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
    return [4 * len(x.shape), 4 * _elements(axis)]


def _transpose_conv(graph, op):
    x, out = graph.tensors[op.inputs[2]], graph.tensors[op.outputs[0]]
    if x.dtype.name == "int8":
        return [4 * _elements(out)]
    if x.dtype.name == "int16":
        bias = graph.tensors[op.inputs[3]] if len(op.inputs) > 3 and op.inputs[3] >= 0 else None
        converted = [8 * _elements(bias)] if bias is not None and bias.dtype.name == "int16" else []
        return converted + [8 * _elements(out)]
    return []


def _add_n(graph, op):
    return [HOST_POINTER * len(op.inputs)] if graph.tensors[op.outputs[0]].dtype.name in (
        "float32", "int8") else []


def _mirror_pad(graph, op):
    return [4 * len(graph.tensors[op.inputs[0]].shape)] * 2


def _int4_filter(graph, op):
    """fully_connected.cc, conv_common.cc, depthwise_conv_common.cc: an INT4 filter is unpacked into
    a scratch buffer of one byte per value."""
    weights = graph.tensors[op.inputs[1]]
    return [_elements(weights)] if weights.int4 else []


# Scratch requests in Prepare, in request order (tensorflow/lite/micro/kernels: reduce_common.cc,
# transpose_conv.cc, add_n.cc, mirror_pad.cc, and the INT4 filters' unpacking). The other requests
# are UNMODELLED_SCRATCH; custom ops' come from the caller.
SCRATCH = {"MEAN": _mean_or_sum, "SUM": _mean_or_sum, "REDUCE_MAX": _min_max_all,
           "REDUCE_MIN": _min_max_all, "REDUCE_ALL": _min_max_all,
           "TRANSPOSE_CONV": _transpose_conv, "ADD_N": _add_n, "MIRROR_PAD": _mirror_pad,
           "FULLY_CONNECTED": _int4_filter, "CONV_2D": _int4_filter, "DEPTHWISE_CONV_2D": _int4_filter}


@dataclass
class PlannedBuffer:
    """One buffer of the non-persistent plan: a tensor, or an operator's scratch."""

    size: int  # bytes, rounded up to 16 as TFLM plans it
    first: int  # allocation scope: 0 for graph inputs, i + 1 for operator i
    last: int
    tensor: int | None = None
    operator: int | None = None  # for scratch: the operator that requested it
    offline_offset: int | None = None
    offset: int = -1

    def alive_at(self, scope: int) -> bool:
        return self.first <= scope <= self.last


def _offline_offsets(graph):
    raw = graph.metadata.get(OFFLINE_PLAN)
    if raw is None:
        return None
    words = np.frombuffer(raw, np.int32)
    return [None if int(v) == -1 else int(v) for v in words[3:3 + len(graph.tensors)]]


def planned_buffers(graph, custom_scratch: dict | None = None) -> list:
    """The buffers TFLM's planner receives, in its order: tensors, then scratch requests.

    `custom_scratch` maps a custom operator's name to a function (graph, op) -> the sizes of the
    scratch buffers its Prepare requests (the compiler's MCUF_SCRATCH); others request none."""
    requests = {**SCRATCH, **(custom_scratch or {})}
    scopes = {}
    for i in graph.inputs:
        scopes[i] = [0, 0]
    for op in graph.operators:
        for i in op.outputs:
            scopes.setdefault(i, [op.index + 1, op.index + 1])
        for i in op.inputs:
            if i >= 0:
                scopes.setdefault(i, [-1, -1])[1] = op.index + 1
        for i in op.outputs:
            scopes[i][1] = op.index + 1
    end = len(graph.operators)
    for i in graph.outputs:
        scopes.setdefault(i, [end, end])[1] = end
    offline = _offline_offsets(graph)
    buffers = []
    for tensor in graph.tensors:
        offset = offline[tensor.index] if offline is not None else None
        if tensor.is_constant or tensor.nbytes == 0 or (tensor.is_variable and offset is None):
            continue
        first, last = scopes.get(tensor.index, (-1, -1))
        buffers.append(PlannedBuffer(_align(tensor.nbytes), first, last, tensor=tensor.index,
                                     offline_offset=offset))
    for op in graph.operators:
        for size in requests[op.opcode](graph, op) if op.opcode in requests else []:
            buffers.append(PlannedBuffer(_align(size), op.index + 1, op.index + 1,
                                         operator=op.index))
    return buffers


def greedy_plan(buffers) -> int:
    """Set every buffer's offset as TFLM's GreedyMemoryPlanner does; returns the plan's size."""
    if not buffers:
        return 0
    offline = [b for b in buffers if b.offline_offset is not None]
    # Online buffers enter the sort array from its tail (so in reverse), then a stable sort by size.
    online = sorted(reversed([b for b in buffers if b.offline_offset is None]),
                    key=lambda b: -b.size)
    placed = []  # sorted by offset; a new buffer goes after those at the same offset
    for buffer in offline + online:
        if buffer.offline_offset is not None:
            candidate = buffer.offline_offset
        else:
            candidate = 0
            for other in placed:
                if other.first > buffer.last or buffer.first > other.last:
                    continue
                if other.offset - candidate >= buffer.size:
                    break
                candidate = max(candidate, other.offset + other.size)
        buffer.offset = candidate
        position = next((k for k, other in enumerate(placed) if other.offset > candidate),
                        len(placed))
        placed.insert(position, buffer)
    return max(b.offset + b.size for b in buffers)


# What TFLM's allocator takes from the free arena while it plans (micro_allocator.cc,
# CommitStaticMemoryPlan; 64-bit host sizes, which bound the 32-bit target's): the head of
# scratch buffer requests (room for kMaxScratchBuffersPerOp more), one size_t per subgraph, one
# AllocationInfo per tensor and scratch buffer, then the GreedyMemoryPlanner's workspace.
# The interpreter allocates its input and output TfLiteTensors after planning, so they are not
# in the persistent tail yet (measured: 208 bytes, one input and one output).
SCRATCH_REQUEST_BYTES, MAX_SCRATCH_PER_OP = 16, 12
ALLOCATION_INFO_BYTES = 32
PLANNER_BYTES_PER_BUFFER = 40
PERSISTENT_AFTER_PLANNING = 208


def planning_bytes(tensors: int, activations: int, scratch: int) -> int:
    """The free arena TFLM needs to plan a one-subgraph model: `tensors` in all (constants too),
    `activations` of them planned, and `scratch` scratch buffers."""
    return (_align(SCRATCH_REQUEST_BYTES * (scratch + MAX_SCRATCH_PER_OP)) + _align(8)
            + _align(ALLOCATION_INFO_BYTES * (tensors + scratch))
            + PLANNER_BYTES_PER_BUFFER * (activations + scratch))
