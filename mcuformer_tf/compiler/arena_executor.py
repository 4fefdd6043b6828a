"""Run a planned (fused) .tflite in one byte buffer laid out by its offline plan, as the chip would.

Link (4) of the chain of trust (DESIGN.md §7). The arena is one numpy byte
array as large as the plan: every activation lives at its
OfflineMemoryAllocation offset, every scratch buffer where TFLM places it
around them (`arena_plan.planned_buffers` and `greedy_plan`, the plan the
report of the model shows). A builtin operator is computed by `tflm_arith`
from its input tensors' bytes in the arena and writes its outputs' bytes
back; an MCUF operator runs its C kernel (`unfuse.kernel`) through ctypes on
pointers into the same array, its tokens in place (copied from its input
first if the plan put its output elsewhere), the patch embedding from the
image's bytes to the tokens' wherever the plan put both. Every operator's
scratch is filled with junk before it runs, as another kernel's leftovers
would be. So a plan that lets two live tensors, or a live tensor and
scratch, share a byte corrupts the result as it would on the chip; 64 guard
bytes on each side of the arena catch writes past it. A builtin reads all its
inputs before writing its outputs, so only the MCUF kernels are tested on an
output that overlaps their input.
"""
from __future__ import annotations

import numpy as np

from mcuformer_tf.compiler import kernels as mcuf_kernels
from mcuformer_tf.compiler.unfuse import MCUF_SCRATCH, kernel
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm import arena_plan
from mcuformer_tf.tflm.arena_plan import OFFLINE_PLAN
from mcuformer_tf.tflm.arith.executor import KERNELS
from mcuformer_tf.tflm.tflite_graph import read_model

GUARD = np.resize(np.frombuffer(b"\xde\xad\xbe\xef", np.int8), 64)
JUNK = np.int8(-91)  # 0xa5


class Arena:
    """The planned model's arena: its tensors and scratch buffers as views of one int8 array."""

    def __init__(self, graph):
        if OFFLINE_PLAN not in graph.metadata:
            raise McuformerError(f"the model has no {OFFLINE_PLAN} metadata: compile it first "
                                 "(mcuformer-tf compile)")
        self.graph = graph
        buffers = arena_plan.planned_buffers(graph, MCUF_SCRATCH)
        unplanned = [b.tensor for b in buffers if b.tensor is not None and b.offline_offset is None]
        if unplanned:
            raise McuformerError(f"the offline plan gives tensor {unplanned[0]} no offset")
        self.size = arena_plan.greedy_plan(buffers)
        self.memory = np.concatenate([GUARD, np.zeros(self.size, np.int8), GUARD])
        self.offsets = {b.tensor: b.offset for b in buffers if b.tensor is not None}
        self.scratch = {}  # operator -> its scratch buffers' (offset, size)
        self.kernels = {}  # MCUF operator -> its C kernel, prepared on first use
        for b in buffers:
            if b.operator is not None:
                self.scratch.setdefault(b.operator, []).append((b.offset, b.size))

    def region(self, offset: int, size: int) -> np.ndarray:
        return self.memory[GUARD.size + offset:GUARD.size + offset + size]

    def tensor(self, index: int) -> np.ndarray:
        """Tensor `index`: a constant's values, or a view of the activation's arena bytes."""
        t = self.graph.tensor(index)
        if t.is_constant:
            return t.data
        return self.region(self.offsets[index], t.nbytes).view(t.dtype).reshape(t.shape)

    def guards_intact(self) -> bool:
        return np.array_equal(self.memory[:GUARD.size], GUARD) and \
            np.array_equal(self.memory[-GUARD.size:], GUARD)

    def run(self, inputs) -> list:
        """The graph's outputs for `inputs` (one array per graph input), run in this arena."""
        self._set_inputs(inputs)
        for op in self.graph.operators:
            for offset, size in self.scratch.get(op.index, []):
                self.region(offset, size)[...] = JUNK
            if op.is_custom:
                self._run_mcuf(op)
            else:
                self._run_builtin(op)
            if not self.guards_intact():
                raise McuformerError(f"operator {op.index} ({op.opcode}) wrote outside the "
                                     f"{self.size}-byte arena")
        return [np.array(self.tensor(index)) for index in self.graph.outputs]

    def _set_inputs(self, inputs) -> None:
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        if len(arrays) != len(self.graph.inputs):
            raise McuformerError(f"the graph has {len(self.graph.inputs)} inputs, {len(arrays)} "
                                 "arrays were given")
        for index, array in zip(self.graph.inputs, arrays):
            target = self.tensor(index)
            array = np.asarray(array)
            if array.dtype != target.dtype or array.shape != target.shape:
                raise McuformerError(f"input tensor {index} is {target.dtype} "
                                     f"{list(target.shape)}, the array given is {array.dtype} "
                                     f"{list(array.shape)}")
            target[...] = array

    def _run_builtin(self, op) -> None:
        if op.opcode not in KERNELS:
            raise McuformerError(f"operator {op.index} ({op.opcode}): not modelled by the numpy "
                                 "TFLM executor")
        run = KERNELS[op.opcode]
        arguments = [np.array(self.tensor(index)) if index >= 0 else None
                     for index in (op.inputs + (-1,) * run.arity)[:run.arity]]
        results = run.evaluate(run.prepare(self.graph, op), *arguments)
        for index, result in zip(op.outputs, results if isinstance(results, list) else [results]):
            self.tensor(index)[...] = np.reshape(result, self.graph.tensor(index).shape)

    def _run_mcuf(self, op) -> None:
        if op.index not in self.kernels:
            self.kernels[op.index] = kernel(self.graph, op)
        fused = self.kernels[op.index]
        (offset, size), = self.scratch[op.index]
        scratch = self.region(offset, size)
        x, y = self.tensor(op.inputs[0]), self.tensor(op.outputs[0])
        if isinstance(fused, mcuf_kernels.PatchEmbedKernel):
            fused.run(x.reshape(-1), y.reshape(-1), scratch)
            return
        if self.offsets[op.inputs[0]] != self.offsets[op.outputs[0]]:
            y[...] = x  # numpy copies through a temporary where the two overlap, as memmove
        fused.run(y.reshape(-1), scratch)


def run_planned(model_bytes: bytes, inputs) -> list:
    """The outputs of a planned .tflite run in its arena (one array per graph output)."""
    return Arena(read_model(model_bytes)).run(inputs)


