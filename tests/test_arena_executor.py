"""Link (4) of the chain of trust: the fused graph runs in ONE arena laid out by its offline plan
(C kernels for MCUF operators, the numpy TFLM model for builtins), so a wrong plan shows; its
equality with the stock TFLM wheel over random subnets is test_fused_equals_unfused.py."""
import numpy as np
import pytest
from supernets import digits_models

from mcuformer_tf.compiler import ir
from mcuformer_tf.compiler.arena_executor import Arena, run_planned
from mcuformer_tf.compiler.pipeline import compile_model
from mcuformer_tf.compiler.plan import plan
from mcuformer_tf.compiler.unfuse import MCUF_SCRATCH
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.memory import report as memory_report
from mcuformer_tf.tflm import arena_plan
from mcuformer_tf.tflm.arena_plan import OFFLINE_PLAN
from mcuformer_tf.tflm.runtime import model_inputs, run_tflm
from mcuformer_tf.tflm.tflite_graph import read_model

FRESH_SEEDS = (0, 1, 3, 7)  # as test_compiler_fuse: both patch sizes, dense and low-rank, 1-2 heads
PERTURBED_SEEDS = (0, 4)  # LayerNorm affine and biases kept; tokens larger than the image
INPUT_SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def models(digits_space, fresh_int8_tflite, perturbed_int8_tflite):
    """(label, unfused bytes, fused and planned bytes) of every model under test."""
    return [(label, raw, compile_model(raw).model_bytes) for label, _, raw in digits_models(
        digits_space, fresh_int8_tflite, perturbed_int8_tflite, FRESH_SEEDS, PERTURBED_SEEDS)]


def _same(outputs, expected) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(outputs, expected))


def test_the_arena_is_the_plan_in_place_tensors_share_bytes(models):
    _, _, fused = models[0]
    arena = Arena(read_model(fused))
    assert arena.size == memory_report.memory_report(fused).peak
    graph = arena.graph
    mlp = next(op for op in graph.operators if op.opcode == "MCUF_MLP")
    x, y = arena.tensor(mlp.inputs[0]), arena.tensor(mlp.outputs[0])
    assert np.shares_memory(x, y) and x.ctypes.data == y.ctypes.data


def _overlapping_pair(graph, buffers):
    """(a, b): activation b is written while a is alive and a is read after that, so b on a's
    bytes corrupts a (the first such pair in graph order)."""
    by_tensor = {b.tensor: b for b in buffers if b.tensor is not None}
    for op in graph.operators:
        for written in op.outputs:
            for alive in by_tensor.values():
                if alive.tensor != written and alive.first < op.index + 1 < alive.last and \
                        alive.tensor not in graph.outputs:
                    return alive.tensor, written
    raise AssertionError("no two tensors alive together")


def test_two_live_tensors_on_one_offset_change_the_result(models):
    for label, raw, fused in models[:3]:
        graph = read_model(fused)
        a, b = _overlapping_pair(graph, arena_plan.planned_buffers(graph, MCUF_SCRATCH))
        words = np.frombuffer(graph.metadata[OFFLINE_PLAN], "<i4").copy()
        words[3 + b] = words[3 + a]
        model = ir.read(fused)
        model.metadata[OFFLINE_PLAN] = words.tobytes()
        clobbered = ir.write(model)
        inputs = model_inputs(read_model(raw), 1)
        expected = run_tflm(raw, inputs)
        assert _same(run_planned(fused, inputs), expected)
        assert not _same(run_planned(clobbered, inputs), expected), label


def test_scratch_over_live_tokens_changes_the_result(models):
    """Scratch is arena memory, filled with junk before each operator and written by the C
    kernels: an attention kernel's scratch placed over its own tokens corrupts them."""
    label, raw, fused = models[0]
    graph = read_model(fused)
    inputs = model_inputs(read_model(raw), 2)
    expected = run_tflm(raw, inputs)
    arena = Arena(graph)
    assert _same(arena.run(inputs), expected)
    attention = next(op for op in graph.operators if op.opcode == "MCUF_ATTENTION")
    (_, size), = arena.scratch[attention.index]
    arena.scratch[attention.index] = [(arena.offsets[attention.inputs[0]], size)]
    assert not _same(arena.run(inputs), expected), label


def test_a_plan_without_in_place_memory_copies_and_still_agrees(models):
    label, raw, fused = models[1]
    model = ir.read(fused)  # read back, its operators carry no in-place pairs
    planned = plan(model)
    separate = ir.write(model)
    graph = read_model(separate)
    op = next(op for op in graph.operators if op.opcode == "MCUF_MLP")
    assert planned.offsets[op.inputs[0]] != planned.offsets[op.outputs[0]]
    assert planned.size > memory_report.memory_report(fused).peak
    inputs = model_inputs(read_model(raw), 3)
    assert _same(run_planned(separate, inputs), run_tflm(raw, inputs)), label


def test_a_model_without_a_plan_or_inputs_that_do_not_fit_are_refused(models):
    _, raw, fused = models[0]
    with pytest.raises(McuformerError, match="no OfflineMemoryAllocation metadata: compile it"):
        run_planned(raw, model_inputs(read_model(raw), 0))
    with pytest.raises(McuformerError, match=r"input tensor 0 is int8 \[1, 32, 32, 3\], the array "
                                             r"given is float32 \[1, 32, 32, 3\]"):
        run_planned(fused, np.zeros((1, 32, 32, 3), np.float32))
