"""The compiler's IR writes back the graph it read: same tensors, operators and TFLM outputs."""
import random

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from mcuformer_tf.compiler import ir
from mcuformer_tf.errors import McuformerError
from mcuformer_tf.tflm.arena_plan import OFFLINE_PLAN
from mcuformer_tf.tflm.runtime import model_inputs, run_tflm
from mcuformer_tf.tflm.tflite_graph import read_model

SEEDS = (0, 3)  # patch 8, low-rank, 2 heads; patch 4, dense and low-rank layers, 1 and 2 heads


@pytest.fixture(scope="module")
def models(digits_space, fresh_int8_tflite):
    return [fresh_int8_tflite(digits_space.sample(random.Random(seed))).read_bytes()
            for seed in SEEDS]


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else value


def _tensor_key(t):
    q = t.quantization
    return (t.name, t.shape, t.dtype.str, t.is_variable,
            None if q is None else (q.scale.tolist(), q.zero_point.tolist(), q.axis),
            None if t.data is None else t.data.tobytes())


def _graph_key(graph):
    """Everything read_model sees in a graph, in comparable form."""
    return ([_tensor_key(t) for t in graph.tensors],
            [(op.opcode, op.inputs, op.outputs, {k: _plain(v) for k, v in op.options.items()},
              op.custom_options) for op in graph.operators],
            graph.inputs, graph.outputs, graph.metadata)


@pytest.mark.parametrize("which", range(len(SEEDS)))
def test_round_trip_keeps_the_graph_and_tflm_outputs(models, which):
    original = models[which]
    written = ir.write(ir.read(original))
    assert _graph_key(read_model(written)) == _graph_key(read_model(original))
    assert ir.write(ir.read(written)) == written
    graph = read_model(original)
    for seed in (1, 2):
        inputs = model_inputs(graph, seed)
        expected, actual = run_tflm(original, inputs), run_tflm(written, inputs)
        assert len(expected) == len(actual) == 1
        np.testing.assert_array_equal(actual[0], expected[0])


def test_unused_tensors_and_buffers_are_dropped_and_shared_buffers_kept_once(models):
    model = ir.read(models[0])
    baseline = ir.write(model)
    weight = next(op.inputs[1] for op in model.operators if op.opcode == "FULLY_CONNECTED")
    model.tensors.append(ir.Tensor("unused", (4,), np.dtype(np.int8), buffer=ir.Buffer(b"abcd")))
    model.tensors.append(ir.Tensor("unused activation", (8,), np.dtype(np.int8)))
    assert ir.write(model) == baseline
    twin = ir.Tensor("twin", weight.shape, weight.dtype, weight.quantization, weight.buffer)
    model.outputs.append(twin)  # a second output sharing the weight's buffer
    buffers = schema.Model.GetRootAs(ir.write(model), 0).BuffersLength()
    assert buffers == schema.Model.GetRootAs(baseline, 0).BuffersLength()
    model.prune()
    assert model.tensors[-1] is twin and all(t.name not in ("unused", "unused activation")
                                             for t in model.tensors)


def test_custom_operators_and_metadata_are_written(models):
    model = ir.read(models[0])
    head = model.operators[-1]
    options = bytes(range(7))
    custom = ir.Op.custom("MCUF_TEST", head.inputs, head.outputs, options)
    model.replace_ops([head], [custom])
    model.metadata["mcuf_note"] = b"\x01\x02\x03"
    raw = ir.write(model)
    graph = read_model(raw)
    last = graph.operators[-1]
    assert (last.opcode, last.is_custom, last.custom_options) == ("MCUF_TEST", True, options)
    assert graph.metadata["mcuf_note"] == b"\x01\x02\x03"
    assert len(graph.operators) == len(model.operators)
    codes = schema.Model.GetRootAs(raw, 0)
    custom_codes = [codes.OperatorCodes(i) for i in range(codes.OperatorCodesLength())
                    if codes.OperatorCodes(i).BuiltinCode() == schema.BuiltinOperator.CUSTOM]
    assert [c.CustomCode() for c in custom_codes] == [b"MCUF_TEST"]
    again = ir.read(raw)
    assert again.operators[-1].custom_options == options and again.operators[-1].is_custom


def test_buffers_start_on_16_byte_boundaries(models):
    raw = ir.write(ir.read(models[1]))
    model = schema.Model.GetRootAs(raw, 0)
    starts = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            starts.append(buffer._tab.Vector(buffer._tab.Offset(4)))
    assert len(starts) > 10 and all(start % 16 == 0 for start in starts)


def test_a_stale_offline_plan_is_refused(models):
    model = ir.read(models[0])
    n = len(model.tensors)
    model.metadata[OFFLINE_PLAN] = np.asarray([1, 0, n - 1] + [-1] * (n - 1), "<i4").tobytes()
    with pytest.raises(McuformerError, match="does not cover the model's"):
        ir.write(model)
    with pytest.raises(McuformerError, match="not a TFLite flatbuffer"):
        ir.read(b"not a model at all")
